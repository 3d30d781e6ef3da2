/**
 * Markdown building blocks for the instructions we render. Declared values
 * (names, emails, paths) are single-line but otherwise free, so they go
 * through these helpers instead of being interpolated raw.
 */

/**
 * `value` as an inline code span that no backtick inside it can close:
 * the fence is one backtick longer than the longest run in the value.
 */
export function inlineCode(value: string): string {
  if (value === "") return "` `";
  const longestRun = Math.max(0, ...(value.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(longestRun + 1);
  // CommonMark strips one space from each side of a code span, so pad when the
  // value starts or ends with a backtick (it would merge with the fence) or is
  // itself wrapped in spaces (they would be eaten).
  const pad =
    value.startsWith("`") ||
    value.endsWith("`") ||
    (value.startsWith(" ") && value.endsWith(" ") && value.trim() !== "");
  return pad ? `${fence} ${value} ${fence}` : `${fence}${value}${fence}`;
}

/** Backslash-escape characters that markdown would read as emphasis, links, HTML or code. */
export function escapeText(value: string): string {
  return value.replace(/[\\`*_[\]<>|~]/g, (ch) => `\\${ch}`);
}

/** Join list items as a markdown bullet list. */
export function bullets(items: readonly string[], indent = ""): string {
  return items.map((item) => `${indent}- ${item}`).join("\n");
}

/** "a", "a and b", "a, b and c" (or with another conjunction). */
export function joinWords(words: readonly string[], conjunction = "and"): string {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} ${conjunction} ${words.at(-1)}`;
}
