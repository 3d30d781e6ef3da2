/**
 * An agent's sudo policy: ordered allow / ask / deny rules on argv patterns,
 * the first match wins, otherwise the default.
 *
 * The agent controls its PATH, its working directory and every file it can
 * write, so a rule never trusts the name the agent typed: a pattern's first
 * element is matched against the command the gate resolved on a fixed secure
 * path. A rule for `systemctl` matches `/usr/bin/systemctl`, never a
 * `systemctl` the agent wrote into its home. For the same reason the gate
 * must run exactly `resolvedCommand`, never look argv[0] up again.
 *
 * Patterns, element by element (a `*` never spans arguments):
 * - `*` any characters (also `/`, as in sudoers: write allow rules on paths
 *   with care), `?` one character, `[a-z]` `[!x]` `[[:digit:]]` one of a set,
 *   `\` makes the next character literal (`\*` is the argument `*`);
 * - a final `**` matches zero or more remaining arguments (a lone `["**"]`
 *   matches every command) — in an allow rule only arguments that are not
 *   options (none starting with `-`): an option an allow rule accepts is
 *   written out (`systemctl status -H` lets a status run on another host);
 *   anywhere else `**` is an ordinary glob, the same as `*`; the element
 *   `\**` is the literal argument `**`;
 * - without a final `**` the argument counts must be equal.
 *
 * An allow rule without `runAs` approves running as root only: running as
 * another user (an agent, a human) is another request, which another rule
 * (or a human) answers. Ask and deny rules without `runAs` match any target.
 * Targets are compared by uid, not by name: a rule about `root` is about
 * every name of uid 0 (`toor`), a rule about `ada` about every name that
 * shares ada's uid. Names are looked up in the `accounts` given (the
 * passwd table); only a name found nowhere is compared as a name.
 *
 * A deny rule matches more, never less, than it says, because a deny that
 * is easy to step around is no deny (an allow rule matches exactly as it is
 * written: over-matching there would approve what nobody wrote):
 * - its program matches by name wherever it resolved and however it was
 *   typed (`rm` denies `/bin/rm`, `/usr/bin/rm` and `./rm` alike);
 * - options are compared as a set: combined short flags are split (`-rf` is
 *   `-r -f`), order does not count, extra options in the request do not
 *   save it, and the long forms of the common destructive tools count as
 *   their short ones (`rm --recursive --force` is `rm -r -f`);
 * - path operands are compared normalized (`//`, `/.`, `/tmp/../` and a
 *   trailing `/` are the path they name); operands keep their order and
 *   count, and their globs.
 * Pure: no file system, no processes; `path.posix` only normalizes strings.
 */

import path from "node:path";
import { fnmatch } from "../glob.ts";
import type { PolicyAction, PolicyRule } from "../town/types.ts";

/** Where a bare command name is looked up, like sudo's secure_path; never the caller's PATH. */
export const SECURE_PATH: readonly string[] = [
  "/usr/local/sbin",
  "/usr/local/bin",
  "/usr/sbin",
  "/usr/bin",
  "/sbin",
  "/bin",
];

export interface PolicyRequest {
  /** The argv to run, argv[0] as typed. */
  readonly argv: readonly string[];
  /** The target user's name (the gate turns `#uid` into a name first). */
  readonly runAs: string;
  /** The target user's uid, as the gate resolved it; else looked up in `accounts` by name. */
  readonly runAsUid?: number;
  /** argv[0] resolved by `resolveCommand`: the absolute path that would run. */
  readonly resolvedCommand: string;
}

export interface PolicyDecision {
  readonly action: PolicyAction;
  /** Index of the matching rule, when a rule decided. */
  readonly rule?: number;
  /** The matching rule's reason, if it has one. */
  readonly reason?: string;
  readonly source: "rule" | "default";
}

export interface PolicyOptions {
  /** Where bare pattern names may resolve. @default SECURE_PATH */
  readonly securePath?: readonly string[];
  /** The accounts (passwd), to compare targets by uid. @default none: names are compared */
  readonly accounts?: readonly { readonly name: string; readonly uid: number }[];
}

/**
 * The first rule that matches `request` decides; otherwise the policy's
 * default. A rule with `runAs` only matches requests for that target user,
 * by uid.
 */
export function evaluatePolicy(
  policy: { readonly default: PolicyAction; readonly rules: readonly PolicyRule[] },
  request: PolicyRequest,
  options: PolicyOptions = {},
): PolicyDecision {
  const securePath = options.securePath ?? SECURE_PATH;
  const accounts = options.accounts ?? [];
  const uidOf = (name: string): number | undefined =>
    /^#\d+$/.test(name) ? Number(name.slice(1)) : accounts.find((a) => a.name === name)?.uid;
  const requestUid = request.runAsUid ?? uidOf(request.runAs);
  const isTarget = (rule: PolicyRule): boolean => {
    // Root only, by uid: whatever the name of uid 0 is on this host.
    if (rule.runAs === undefined)
      return requestUid !== undefined ? requestUid === 0 : request.runAs === "root";
    const ruleUid = uidOf(rule.runAs);
    return ruleUid !== undefined && requestUid !== undefined
      ? ruleUid === requestUid
      : rule.runAs === request.runAs;
  };
  const command = (element: string, argv0: string) =>
    matchesCommand(element, argv0, request.resolvedCommand, securePath);
  for (const [index, rule] of policy.rules.entries()) {
    if ((rule.runAs !== undefined || rule.action === "allow") && !isTarget(rule)) continue;
    const matches =
      rule.action === "deny"
        ? matchesDeny(rule.argv, request.argv, request.resolvedCommand)
        : matchElements(rule.argv, request.argv, command, rule.action === "allow");
    if (!matches) continue;
    return {
      action: rule.action,
      rule: index,
      ...(rule.reason !== undefined && { reason: rule.reason }),
      source: "rule",
    };
  }
  return { action: policy.default, source: "default" };
}

/**
 * A deny that came from a rule: a human may only approve past it with an
 * explicit override, unlike a default deny.
 */
export function isHardDeny(decision: PolicyDecision): boolean {
  return decision.action === "deny" && decision.source === "rule";
}

/**
 * Element-wise match of `pattern` against `argv`, every element (argv[0]
 * included) as a glob on one argument. `evaluatePolicy` matches argv[0]
 * against the resolved command instead.
 */
export function matchesPattern(pattern: readonly string[], argv: readonly string[]): boolean {
  return matchElements(pattern, argv, (element, arg) => globMatch(element, arg));
}

function matchElements(
  pattern: readonly string[],
  argv: readonly string[],
  first: (element: string, arg: string) => boolean,
  noOptionsInTail = false,
): boolean {
  const tail = pattern.at(-1) === "**";
  const fixed = tail ? pattern.slice(0, -1) : pattern;
  if (tail ? argv.length < fixed.length : argv.length !== fixed.length) return false;
  // The element matching argv[0] is the command: a lone "**" covers it, options or not.
  if (tail && noOptionsInTail && fixed.length > 0) {
    if (argv.slice(fixed.length).some((arg) => arg.startsWith("-"))) return false;
  }
  return fixed.every((element, i) =>
    i === 0 ? first(element, argv[0] as string) : globMatch(element, argv[i] as string),
  );
}

/**
 * A deny rule against a request, by the looser reading above: the program
 * by name, options as a set, path operands normalized.
 */
export function matchesDeny(
  pattern: readonly string[],
  argv: readonly string[],
  resolved: string,
): boolean {
  const [element, ...patternArgs] = pattern;
  if (element === undefined || argv.length === 0) return pattern.length === 0;
  if (element !== "**") {
    const name = path.posix.basename(resolved || (argv[0] as string));
    const wanted = element.includes("/") ? path.posix.basename(element) : element;
    if (!globMatch(wanted, name)) return false;
  } else return true;
  const program = path.posix.basename(element);
  const rule = splitArgs(program, patternArgs);
  const asked = splitArgs(program, argv.slice(1));
  for (const flag of rule.flags) if (!asked.flags.has(flag)) return false;
  const tail = rule.operands.at(-1) === "**";
  const fixed = tail ? rule.operands.slice(0, -1) : rule.operands;
  if (tail ? asked.operands.length < fixed.length : asked.operands.length !== fixed.length)
    return false;
  return fixed.every((operand, i) => globMatch(operand, asked.operands[i] as string));
}

/** Long options that mean a short one, for the tools deny rules are written about. */
const LONG_AS_SHORT: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  rm: { recursive: "r", force: "f", dir: "d", verbose: "v" },
  cp: { recursive: "r", force: "f", archive: "a" },
  mv: { force: "f" },
  chmod: { recursive: "R" },
  chown: { recursive: "R" },
  chgrp: { recursive: "R" },
  ln: { force: "f", symbolic: "s" },
  shred: { remove: "u", zero: "z" },
};

/** Options as a set of names (short ones split, long ones by name), operands in order. */
function splitArgs(
  program: string,
  args: readonly string[],
): { flags: Set<string>; operands: string[] } {
  const flags = new Set<string>();
  const operands: string[] = [];
  const long = LONG_AS_SHORT[program] ?? {};
  let ended = false;
  for (const arg of args) {
    if (ended || arg === "-" || !arg.startsWith("-")) {
      operands.push(normalizeOperand(arg));
    } else if (arg === "--") {
      ended = true;
    } else if (arg.startsWith("--")) {
      const name = arg.slice(2).split("=")[0] as string;
      flags.add(long[name] ?? `--${name}`);
    } else {
      for (const letter of arg.slice(1)) flags.add(letter);
    }
  }
  return { flags, operands };
}

/** A path operand as the path it names; anything else as it is. */
function normalizeOperand(arg: string): string {
  if (!arg.startsWith("/")) return arg;
  const normalized = path.posix.normalize(arg);
  return normalized.length > 1 && normalized.endsWith("/") ? normalized.slice(0, -1) : normalized;
}

/**
 * argv[0] against a pattern's first element. With a `/`, the element must be
 * absolute and is matched against the resolved path, a glob per path
 * component (a `*` never spans a `/` there). Without, the
 * typed name must be bare, resolve directly inside a secure-path directory,
 * and match by name.
 */
function matchesCommand(
  element: string,
  argv0: string,
  resolved: string,
  securePath: readonly string[],
): boolean {
  if (!isCanonicalAbsolute(resolved)) return false;
  if (element.includes("/")) return element.startsWith("/") && pathMatch(element, resolved);
  if (argv0.includes("/")) return false;
  const dir = path.posix.dirname(resolved);
  const name = path.posix.basename(resolved);
  return securePath.includes(dir) && name === argv0 && globMatch(element, name);
}

function isCanonicalAbsolute(p: string): boolean {
  return (
    p.startsWith("/") && !p.includes("\0") && path.posix.normalize(p) === p && !p.endsWith("/")
  );
}

function pathMatch(pattern: string, resolved: string): boolean {
  const parts = pattern.split("/");
  const names = resolved.split("/");
  return (
    parts.length === names.length && parts.every((part, i) => globMatch(part, names[i] as string))
  );
}

/**
 * Where the gate finds argv[0]: an absolute path as is (normalized), one with
 * a `/` against `cwd`, a bare name in the first `securePath` directory where
 * `exists` says so; `undefined` when a bare name is nowhere there. Never the
 * caller's PATH. `cwd` must be absolute.
 */
export function resolveCommand(
  argv0: string,
  cwd: string,
  exists: (path: string) => boolean,
  securePath: readonly string[] = SECURE_PATH,
): string | undefined {
  if (argv0 === "" || argv0.includes("\0")) return undefined;
  if (argv0.includes("/")) {
    if (argv0.startsWith("/")) return path.posix.normalize(argv0);
    if (!cwd.startsWith("/"))
      throw new TypeError(`cwd must be absolute, got ${JSON.stringify(cwd)}`);
    return path.posix.join(cwd, argv0);
  }
  if (argv0 === "." || argv0 === "..") return undefined;
  for (const dir of securePath) {
    const candidate = `${dir}/${argv0}`;
    if (exists(candidate)) return candidate;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Globs within one argument

/** `*`, `?`, `[...]` and `\` escapes within one string; the element `\**` is the literal `**`. */
function globMatch(pattern: string, text: string): boolean {
  if (pattern === "\\**") return text === "**";
  return fnmatch(pattern, text);
}
