/**
 * String kinds shared by the schema. Each one refuses what would let a value
 * escape the files we render from it (udev rules, sudoers, unit files, TOML,
 * git config), so a renderer never has to guess whether its input is safe.
 */
import { z } from "zod";

/** C0 controls except tab and newline, DEL, and C1 controls. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
const NEWLINE_OR_TAB = /[\n\t]/;

function describeChar(ch: string): string {
  const code = ch.codePointAt(0) ?? 0;
  if (ch === "\n") return "a newline";
  if (ch === "\t") return "a tab";
  if (ch === "\r") return "a carriage return";
  return `control character U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
}

/** JSON.stringify without the surrounding noise, for quoting a value in an error. */
export function quote(value: string): string {
  return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
}

/** Multi-line free text (descriptions, prompts, file bodies): newlines and tabs pass. */
export function text() {
  return z.string().check((ctx) => {
    const bad = CONTROL.exec(ctx.value);
    if (bad) ctx.issues.push(issue(ctx.value, `must not contain ${describeChar(bad[0])}`));
  });
}

/** A single-line value: no control characters, no newline, no tab. */
export function line() {
  return z.string().check((ctx) => {
    const bad = CONTROL.exec(ctx.value) ?? NEWLINE_OR_TAB.exec(ctx.value);
    if (bad) ctx.issues.push(issue(ctx.value, `must be one line without ${describeChar(bad[0])}`));
  });
}

function issue(value: string, message: string) {
  return { code: "custom" as const, input: value, message };
}

/** A non-empty single line matching `pattern`, with `expected` said in the error. */
export function matching(pattern: RegExp, expected: string) {
  // .regex() (not a custom check) so the JSON Schema carries the pattern too.
  return line().regex(pattern, {
    error: (iss) => `expected ${expected}, got ${quote(String(iss.input))}`,
  });
}

/** A POSIX-portable user or group name as useradd(8) accepts by default. */
export const UNIX_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
export const unixName = () =>
  matching(UNIX_NAME, "a Unix user name (lowercase letter or _, then a-z 0-9 _ -, at most 32)");

/**
 * An absolute path safe to write into sudoers, unit files and udev RUN keys:
 * no spaces, quotes, `=`, `,`, `:`, `%`, `$`, `\` or wildcards, and no `..`.
 */
export const SAFE_ABSOLUTE_PATH = /^(\/[A-Za-z0-9._@+-]+)+\/?$|^\/$/;
export function absolutePath() {
  return matching(SAFE_ABSOLUTE_PATH, "an absolute path of letters, digits and ._@+- only").check(
    (ctx) => {
      if (ctx.value.split("/").some((part) => part === ".." || part === ".")) {
        ctx.issues.push(
          issue(ctx.value, `must not contain . or .. segments, got ${quote(ctx.value)}`),
        );
      }
    },
  );
}

/**
 * A path relative to an agent's home: not absolute, no `~`, no `.`/`..`
 * segments or empty segments, no backslash, so it can never climb out.
 */
export function homeRelativePath() {
  return line().check((ctx) => {
    const value = ctx.value;
    const reason = relativePathProblem(value);
    if (reason) ctx.issues.push(issue(value, `${reason}, got ${quote(value)}`));
  });
}

export function relativePathProblem(value: string): string | undefined {
  if (value === "") return "must not be empty";
  if (value.startsWith("/")) return "must be relative to the agent's home, not absolute";
  if (value.startsWith("~")) return "must be relative to the agent's home (drop the ~/)";
  if (value.includes("\\")) return "must not contain a backslash";
  const parts = value.replace(/\/$/, "").split("/");
  if (parts.includes("..")) return "must not climb out of the home with ..";
  if (parts.some((p) => p === "" || p === ".")) return "must not contain empty or . segments";
  return undefined;
}

/** A DNS name (the town's domain, host names). */
export const DNS_NAME =
  /^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
export const dnsName = () => matching(DNS_NAME, "a DNS name such as example.org");

export const EMAIL = /^[A-Za-z0-9._%+-]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/;
export const email = () => matching(EMAIL, "an email address such as ada@example.org");

export const MATRIX_USER_ID = /^@[a-z0-9._=/+-]+:[A-Za-z0-9.-]+(:[0-9]{1,5})?$/;
export const matrixUserId = () =>
  matching(MATRIX_USER_ID, "a Matrix user id such as @ada:example.org");

export const JID = /^[^\s@/"'<>&]+@[A-Za-z0-9.-]+$/;
export const jid = () => matching(JID, "an XMPP address such as ada@example.org");

/**
 * A package name as apt-get, dnf, pacman and Nix take it: a letter or digit
 * first (never `-`, so it cannot be read as an option), then no spaces,
 * slashes (a local file), wildcards, `=` (a pinned version) or shell syntax.
 */
export const PACKAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9+._@:-]{0,127}$/;
export const packageName = () =>
  matching(
    PACKAGE_NAME,
    "a package name (a letter or digit, then letters, digits and + . _ @ : -) such as ripgrep",
  );

export const OCTAL_MODE = /^0?[0-7]{3}$/;
export const fileMode = () => matching(OCTAL_MODE, "an octal file mode such as 0600");

/** An http(s) URL with a host, nothing that could break out of a JSON or TOML string. */
export function httpUrl() {
  return line().check((ctx) => {
    let parsed: URL | undefined;
    try {
      parsed = new URL(ctx.value);
    } catch {}
    if (
      !parsed ||
      (parsed.protocol !== "http:" && parsed.protocol !== "https:") ||
      parsed.hostname === "" ||
      /[\s"'\\]/.test(ctx.value)
    )
      ctx.issues.push(
        issue(ctx.value, `expected an http:// or https:// URL, got ${quote(ctx.value)}`),
      );
  });
}
