/** Plain-text output helpers shared by commands. */

/** Left-aligned columns separated by two spaces; the header is upper-cased. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header.map((h) => h.toUpperCase()), ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((row) => (row[i] ?? "").length)));
  return all
    .map((row) =>
      row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  "),
    )
    .join("\n");
}

export interface Streams {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

export const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
