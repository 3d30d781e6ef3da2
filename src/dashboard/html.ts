/**
 * HTML built from tagged templates: every interpolated value is escaped
 * unless it is already `Html` made by this module, so text an agent controls
 * (argv, answers, task prompts, branch names) can only ever render as text.
 * Pure.
 */

const SAFE = Symbol("html");

/** Markup known to be safe: made by `html`, `join` or `attr` from escaped parts. */
export interface Html {
  readonly [SAFE]: true;
  readonly text: string;
}

export type Value = Html | string | number | boolean | null | undefined | readonly Value[];

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
  "`": "&#96;",
};

/** Text → markup that shows exactly that text, in element content and in quoted attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c] ?? c);
}

function isHtml(value: unknown): value is Html {
  return typeof value === "object" && value !== null && SAFE in value;
}

function render(value: Value): string {
  if (value === null || value === undefined || value === false) return "";
  if (isHtml(value)) return value.text;
  if (Array.isArray(value)) return value.map((v) => render(v as Value)).join("");
  return escapeHtml(String(value));
}

function safe(text: string): Html {
  return { [SAFE]: true, text };
}

/** `html\`<b>${name}</b>\``: the literal parts as written, every value escaped. */
export function html(strings: TemplateStringsArray, ...values: Value[]): Html {
  let out = strings[0] ?? "";
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? "");
  return safe(out);
}

/** Values joined by a separator, each escaped. */
export function join(values: readonly Value[], separator: Value = ""): Html {
  return safe(values.map(render).join(render(separator)));
}

/** The document as a string, for the response body. */
export function htmlText(value: Html): string {
  return value.text;
}
