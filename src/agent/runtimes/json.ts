/** Reading runtimes' JSON output, whose shape is the vendor's, not ours. */

export type Json = Record<string, unknown>;

export const isObject = (value: unknown): value is Json =>
  value !== null && typeof value === "object" && !Array.isArray(value);

export const str = (value: unknown): string | undefined =>
  typeof value === "string" ? value : undefined;
