/**
 * fnmatch(3)-style globs, shared by udev attribute matching (devices) and
 * sudo policy rules (approval). Pure.
 */

type CharTest = (c: string) => boolean;
type GlobToken = { readonly kind: "star" } | { readonly kind: "one"; readonly test: CharTest };

/** A character test from inclusive code point ranges. */
const ranges =
  (...spans: readonly (readonly [number, number])[]): CharTest =>
  (c) => {
    const code = c.codePointAt(0) as number;
    return spans.some(([lo, hi]) => code >= lo && code <= hi);
  };

const DIGIT: readonly [number, number] = [0x30, 0x39];
const UPPER: readonly [number, number] = [0x41, 0x5a];
const LOWER: readonly [number, number] = [0x61, 0x7a];

/** The POSIX classes of the C locale (ASCII). */
const CHAR_CLASSES: Readonly<Record<string, CharTest>> = {
  alnum: ranges(DIGIT, UPPER, LOWER),
  alpha: ranges(UPPER, LOWER),
  blank: ranges([0x20, 0x20], [0x09, 0x09]),
  cntrl: ranges([0x00, 0x1f], [0x7f, 0x7f]),
  digit: ranges(DIGIT),
  graph: ranges([0x21, 0x7e]),
  lower: ranges(LOWER),
  print: ranges([0x20, 0x7e]),
  punct: ranges([0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e]),
  space: ranges([0x20, 0x20], [0x09, 0x0d]),
  upper: ranges(UPPER),
  xdigit: ranges(DIGIT, [0x41, 0x46], [0x61, 0x66]),
};

/**
 * fnmatch(3) with no flags, in the C locale: `*` (also across `/` and
 * leading dots), `?`, bracket expressions (`[abc]`, `[a-z]`, `[!x]`, `[^x]`,
 * `[]x]`, `[[:digit:]]`), `\` quoting the next character. An unclosed `[` is
 * an ordinary character; an unknown character class or a trailing `\` makes
 * the pattern match nothing (as glibc does).
 */
export function fnmatch(pattern: string, text: string): boolean {
  const tokens = compileGlob(pattern);
  if (tokens === undefined) return false;
  const chars = [...text];
  // Greedy match, backtracking to the last star only: linear in practice.
  let t = 0;
  let p = 0;
  let starP = -1;
  let starT = 0;
  while (t < chars.length) {
    const token = tokens[p];
    if (token?.kind === "star") {
      starP = p++;
      starT = t;
    } else if (token?.kind === "one" && token.test(chars[t] as string)) {
      p++;
      t++;
    } else if (starP >= 0) {
      p = starP + 1;
      t = ++starT;
    } else {
      return false;
    }
  }
  while (tokens[p]?.kind === "star") p++;
  return p === tokens.length;
}

function compileGlob(pattern: string): GlobToken[] | undefined {
  const chars = [...pattern];
  const tokens: GlobToken[] = [];
  let i = 0;
  while (i < chars.length) {
    const c = chars[i] as string;
    if (c === "*") {
      if (tokens.at(-1)?.kind !== "star") tokens.push({ kind: "star" });
      i++;
    } else if (c === "?") {
      tokens.push({ kind: "one", test: () => true });
      i++;
    } else if (c === "[") {
      const bracket = parseBracket(chars, i);
      if (bracket === null) return undefined;
      if (bracket === undefined) {
        tokens.push(literal("["));
        i++;
      } else {
        tokens.push({ kind: "one", test: bracket.test });
        i = bracket.end;
      }
    } else if (c === "\\") {
      // glibc: a trailing backslash quotes nothing, so nothing matches.
      if (i + 1 >= chars.length) return undefined;
      tokens.push(literal(chars[i + 1] as string));
      i += 2;
    } else {
      tokens.push(literal(c));
      i++;
    }
  }
  return tokens;
}

function literal(c: string): GlobToken {
  return { kind: "one", test: (x) => x === c };
}

/**
 * Parse the bracket expression opening at `start`. undefined: not closed, so
 * `[` is literal; null: an unknown character class, so the pattern is invalid.
 */
function parseBracket(
  chars: readonly string[],
  start: number,
): { test: CharTest; end: number } | undefined | null {
  let i = start + 1;
  const negate = chars[i] === "!" || chars[i] === "^";
  if (negate) i++;
  const tests: CharTest[] = [];
  let first = true;
  while (i < chars.length) {
    let c = chars[i] as string;
    if (c === "]" && !first) {
      const test: CharTest = (x) => tests.some((t) => t(x)) !== negate;
      return { test, end: i + 1 };
    }
    first = false;
    if (c === "[" && chars[i + 1] === ":") {
      const close = chars.indexOf(":", i + 2);
      if (close >= 0 && chars[close + 1] === "]") {
        const name = chars.slice(i + 2, close).join("");
        const cls = CHAR_CLASSES[name];
        if (cls === undefined) return null;
        tests.push(cls);
        i = close + 2;
        continue;
      }
    }
    if (c === "\\" && i + 1 < chars.length) c = chars[++i] as string;
    i++;
    // A range, unless the `-` is the last character before `]`.
    if (chars[i] === "-" && i + 1 < chars.length && chars[i + 1] !== "]") {
      let hi = chars[i + 1] as string;
      i += 2;
      if (hi === "\\" && i < chars.length) hi = chars[i++] as string;
      const lo = c.codePointAt(0) as number;
      const top = hi.codePointAt(0) as number;
      tests.push((x) => {
        const code = x.codePointAt(0) as number;
        return code >= lo && code <= top;
      });
    } else {
      const member = c;
      tests.push((x) => x === member);
    }
  }
  return undefined;
}
