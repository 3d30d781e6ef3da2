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

/**
 * Text someone else controls (an agent's answer, a commit subject, an argv),
 * made safe for a terminal: control characters and the invisible format and
 * bidi characters that could redraw or disguise a line are shown escaped.
 * Newlines and tabs stay.
 */
// Control characters (C0 but tab and newline, DEL, C1), zero-width and bidi controls, and the
// invisible ones that pass for a space or for nothing: no-break space, word joiner and invisible
// operators, fillers (Hangul, Mongolian), the byte-order mark.
export const UNPRINTABLE = new RegExp(
  `[${["\\u0000-\\u0008", "\\u000b-\\u001f", "\\u007f-\\u00a0", "\\u115f-\\u1160", "\\u180e", "\\u200b-\\u200f", "\\u202a-\\u202f", "\\u2060-\\u2064", "\\u2066-\\u2069", "\\u3164", "\\ufeff", "\\uffa0"].join("")}]`,
  "gu",
);

export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    if (c === "\r") return "\\r";
    const code = c.codePointAt(0) ?? 0;
    return code > 0xff ? `\\u{${code.toString(16)}}` : `\\x${code.toString(16).padStart(2, "0")}`;
  });
}
