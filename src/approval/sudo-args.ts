/**
 * The sudo command line, twice.
 *
 * `parseSudoArgs` reads what an agent types after `sudo` the way sudo(8)
 * 1.9 does (getopt_long with `+`: options stop at `--` or at the first
 * non-option, clustered short flags, `-uUSER` and `-u USER`, `--user=USER`
 * and `--user USER`, unambiguous prefixes of long options), so the shim
 * accepts exactly what real sudo accepts and says no where sudo would.
 *
 * `gateArguments` / `parseGateArguments` are the gate's own format: one
 * spelling per option, each value in its own argument, a mandatory `--`
 * before the command, which is never parsed. The gate runs as root and an
 * agent can call it directly, so it takes this strict format and never
 * re-implements sudo's grammar.
 *
 * Options that cannot mean anything through a human-approved gate are
 * refused with a reason rather than silently dropped; options that only
 * shape sudo's own password prompt are accepted and ignored, because the gate
 * never asks for a password (a human approves instead), just as sudo with
 * NOPASSWD ignores them. Pure: no file system, no processes.
 */

/** What the gate needs to run a command: the run-relevant part of an invocation. */
export interface GateRequest {
  /** Target user (`-u`): a name or `#uid`; absent means root. */
  user?: string;
  /** Target group (`-g`): a name or `#gid`. */
  group?: string;
  /** `-E` keeps the whole environment; `--preserve-env=A,B` those names only. */
  preserveEnv: boolean | string[];
  /** `-H`. */
  setHome: boolean;
  /** `-i`: the target's login shell, with the command (if any) run through it. */
  login: boolean;
  /** `-s`: the target's shell, with the command (if any) run through it. */
  shell: boolean;
  /** `-n`. */
  nonInteractive: boolean;
  /** `-D dir`: the working directory of the command. */
  cwd?: string;
  /** As typed; for `-i`/`-s` see `shellArgv`. Empty only with `-i` or `-s`. */
  command: string[];
}

export type RunInvocation = { mode: "run" } & GateRequest;

export type SudoInvocation =
  | RunInvocation
  /** `-v`: refresh credentials; nothing to do, the gate keeps none. */
  | { mode: "validate" }
  /** `-k` alone, `-K`. */
  | { mode: "invalidate" }
  /** `-l`, `-ll`; with a command, `sudo -l [-u user] cmd` checks that command. */
  | { mode: "list"; command: string[]; user?: string; group?: string }
  | { mode: "help" }
  | { mode: "version" };

/** A command line sudo itself would refuse; the message reads like sudo's. */
export class SudoUsageError extends Error {
  constructor(message: string) {
    super(`sudo: ${message}`);
    this.name = "SudoUsageError";
  }
}

/** The gate was called with arguments the shim never produces. */
export class GateUsageError extends Error {
  constructor(message: string) {
    super(`nuketown gate: ${message}`);
    this.name = "GateUsageError";
  }
}

type ArgKind = "none" | "required" | "optional";

/** sudo's own option string: "+Aa:BbC:c:D:Eeg:Hh::iKklNnPp:R:r:SsT:t:U:u:Vv". */
const SHORT_OPTIONS: Readonly<Record<string, ArgKind>> = {
  A: "none",
  a: "required",
  B: "none",
  b: "none",
  C: "required",
  c: "required",
  D: "required",
  E: "none",
  e: "none",
  g: "required",
  H: "none",
  h: "optional",
  i: "none",
  K: "none",
  k: "none",
  l: "none",
  N: "none",
  n: "none",
  P: "none",
  p: "required",
  R: "required",
  r: "required",
  S: "none",
  s: "none",
  T: "required",
  t: "required",
  U: "required",
  u: "required",
  V: "none",
  v: "none",
};

/** sudo's long options and the short option each stands for ("host" has none). */
const LONG_OPTIONS: readonly (readonly [name: string, kind: ArgKind, short: string])[] = [
  ["background", "none", "b"],
  ["preserve-env", "optional", "E"],
  ["edit", "none", "e"],
  ["set-home", "none", "H"],
  ["login", "none", "i"],
  ["remove-timestamp", "none", "K"],
  ["list", "none", "l"],
  ["preserve-groups", "none", "P"],
  ["shell", "none", "s"],
  ["other-user", "required", "U"],
  ["validate", "none", "v"],
  ["askpass", "none", "A"],
  ["auth-type", "required", "a"],
  ["bell", "none", "B"],
  ["close-from", "required", "C"],
  ["login-class", "required", "c"],
  ["chdir", "required", "D"],
  ["group", "required", "g"],
  ["help", "none", "h"],
  ["host", "required", "host"],
  ["reset-timestamp", "none", "k"],
  ["no-update", "none", "N"],
  ["non-interactive", "none", "n"],
  ["prompt", "required", "p"],
  ["chroot", "required", "R"],
  ["role", "required", "r"],
  ["stdin", "none", "S"],
  ["command-timeout", "required", "T"],
  ["type", "required", "t"],
  ["user", "required", "u"],
  ["version", "none", "V"],
];

/**
 * Refused options and why. Each would change what runs, or how, in a way the
 * gate cannot show a human or cannot honour.
 */
const REFUSED: Readonly<Record<string, string>> = {
  // The gate must wait for the approval and report it, and the agent must
  // see the command's exit status: there is no background to go to.
  b: "-b (background) is not supported: the approval gate waits for a human and reports the command's exit status",
  // sudoedit copies files as the invoking user and writes them back as root:
  // not an argv a human can approve. Edit a copy and ask to install it.
  e: "-e (sudoedit) is not supported through the approval gate; edit a copy and ask to install it with sudo install",
  // The gate always runs the command with the target user's own groups.
  P: "-P (preserve groups) is not supported: the command runs with the target user's groups",
  // sudo already closes descriptors >= 3 before running the gate.
  C: "-C (close from) is not supported: the approval gate runs with sudo's default descriptor closing",
  // No time limit is enforced on an approved command.
  T: "-T (command timeout) is not supported by the approval gate",
  R: "-R (chroot) is not supported by the approval gate",
  r: "-r (SELinux role) is not supported by the approval gate",
  t: "-t (SELinux type) is not supported by the approval gate",
  c: "-c (BSD login class) is not supported by the approval gate",
  a: "-a (BSD auth type) is not supported by the approval gate",
  U: "-U (list another user's privileges) is not supported by the approval gate",
  host: "-h host (run on another host) is not supported by the approval gate",
};

const EXCLUSIVE_MODES = "Only one of the -e, -h, -i, -K, -l, -s, -v or -V options may be specified";

type Mode = "help" | "invalidate" | "kill" | "list" | "validate" | "version";

interface State {
  mode?: Mode;
  /** How the mode was asked for, for messages: "-l", "--validate"... */
  modeOption?: string;
  /** Mode flags (b E H i n P s), each with how it was spelled. */
  flags: Map<string, string>;
  preserveList: string[];
  ignoreTicket: boolean;
  noUpdate: boolean;
  askpass: boolean;
  stdin: boolean;
  values: Map<string, string>;
}

/**
 * Parse the arguments after `sudo` like sudo(8).
 *
 * `-i`/`-s` with a command: sudo runs `shell -c 'cmd args'`, each argument
 * escaped (see `shellArgv`); the invocation keeps the command as typed and
 * the flag, and the gate builds the shell argv for the target. Without a
 * command: an interactive (login) shell.
 *
 * `VAR=value` before the command sets a variable in sudo; it is refused
 * here, since the gate runs commands in a clean environment.
 *
 * @throws SudoUsageError where sudo would print an error or its usage.
 */
export function parseSudoArgs(args: readonly string[]): SudoInvocation {
  const state: State = {
    flags: new Map(),
    preserveList: [],
    ignoreTicket: false,
    noUpdate: false,
    askpass: false,
    stdin: false,
    values: new Map(),
  };
  let i = 0;
  while (i < args.length) {
    const arg = args[i] as string;
    if (arg === "--") {
      i++;
      break;
    }
    if (arg.startsWith("--")) {
      i = longOption(args, i, state);
      continue;
    }
    if (arg.startsWith("-") && arg !== "-") {
      i = shortOptions(args, i, state);
      continue;
    }
    if (isEnvVar(arg)) {
      throw new SudoUsageError(
        `setting environment variables (${arg}) is not supported by the approval gate, which runs commands in a clean environment`,
      );
    }
    break;
  }
  return finish(state, args.slice(i));
}

function shortOptions(args: readonly string[], index: number, state: State): number {
  const arg = args[index] as string;
  const chars = [...arg.slice(1)];
  for (let j = 0; j < chars.length; j++) {
    const c = chars[j] as string;
    const kind = SHORT_OPTIONS[c];
    if (kind === undefined) throw new SudoUsageError(`unknown option -- '${c}'`);
    if (kind === "none") {
      option(c, `-${c}`, undefined, state);
      continue;
    }
    const attached = chars.slice(j + 1).join("");
    if (kind === "optional") {
      // -h: -hHOST names a host; a lone -h followed by a word does too.
      const next = args[index + 1];
      const alone = arg === "-h";
      if (
        attached === "" &&
        alone &&
        next !== undefined &&
        !next.startsWith("-") &&
        !isEnvVar(next)
      ) {
        option("host", "-h", next, state);
        return index + 2;
      }
      option(attached === "" ? c : "host", `-${c}`, attached === "" ? undefined : attached, state);
      return index + 1;
    }
    if (attached !== "") {
      option(c, `-${c}`, attached, state);
      return index + 1;
    }
    const value = args[index + 1];
    if (value === undefined) throw new SudoUsageError(`option requires an argument -- '${c}'`);
    option(c, `-${c}`, value, state);
    return index + 2;
  }
  return index + 1;
}

function longOption(args: readonly string[], index: number, state: State): number {
  const arg = args[index] as string;
  const eq = arg.indexOf("=");
  const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
  const inline = eq < 0 ? undefined : arg.slice(eq + 1);
  const exact = LONG_OPTIONS.find(([long]) => long === name);
  const candidates = exact ? [exact] : LONG_OPTIONS.filter(([long]) => long.startsWith(name));
  if (name === "" || candidates.length === 0) {
    throw new SudoUsageError(`unrecognized option '--${name}'`);
  }
  if (candidates.length > 1) {
    const list = candidates.map(([long]) => `'--${long}'`).join(" ");
    throw new SudoUsageError(`option '--${name}' is ambiguous; possibilities: ${list}`);
  }
  const [long, kind, short] = candidates[0] as (typeof LONG_OPTIONS)[number];
  const spelled = `--${long}`;
  if (kind === "none") {
    if (inline !== undefined)
      throw new SudoUsageError(`option '${spelled}' doesn't allow an argument`);
    option(short, spelled, undefined, state);
    return index + 1;
  }
  if (kind === "optional" || inline !== undefined) {
    option(short, spelled, inline, state);
    return index + 1;
  }
  const value = args[index + 1];
  if (value === undefined) throw new SudoUsageError(`option '${spelled}' requires an argument`);
  option(short, spelled, value, state);
  return index + 2;
}

/** sudo's test for `VAR=value` among the options. */
function isEnvVar(arg: string): boolean {
  return !arg.startsWith("/") && !arg.startsWith("=") && arg.includes("=");
}

function option(c: string, spelled: string, value: string | undefined, state: State): void {
  const refused = REFUSED[c];
  if (refused !== undefined) throw new SudoUsageError(refused);
  switch (c) {
    case "u":
    case "g":
    case "D":
    case "p": {
      const v = value as string;
      // An empty prompt is allowed, as in sudo; an empty user, group or directory is not.
      if (v === "" && c !== "p")
        throw new SudoUsageError(`the ${spelled} option needs a non-empty argument`);
      // getopt would take `--` as the value; no user, group or directory is
      // called that, and the gate's format reserves it for the command.
      if (v === "--" && c !== "p")
        throw new SudoUsageError(`the ${spelled} option needs an argument before --`);
      if (state.values.has(c))
        throw new SudoUsageError(`the ${spelled} option may only be given once`);
      state.values.set(c, v);
      return;
    }
    case "E":
      if (value === undefined) state.flags.set("E", spelled);
      else preserveList(value, state);
      return;
    case "H":
    case "i":
    case "n":
    case "s":
      state.flags.set(c, spelled);
      return;
    case "A":
      // Password prompting options: the gate never prompts (a human approves
      // instead), so they change nothing, as with sudo and NOPASSWD.
      state.askpass = true;
      return;
    case "S":
      state.stdin = true;
      return;
    case "B":
      return;
    case "N":
      if (state.ignoreTicket)
        throw new SudoUsageError("Only one of the -K, -k or -N options may be specified");
      state.noUpdate = true;
      return;
    case "K":
      setMode("kill", spelled, state);
      ticket(state);
      return;
    case "k":
      ticket(state);
      return;
    case "l":
      // -ll is the long format of the same listing.
      if (state.mode !== "list") setMode("list", spelled, state);
      return;
    case "h":
      setMode("help", spelled, state);
      return;
    case "v":
      setMode("validate", spelled, state);
      return;
    case "V":
      setMode("version", spelled, state);
      return;
    default:
      throw new Error(`unhandled sudo option ${spelled}`);
  }
}

function ticket(state: State): void {
  if (state.noUpdate)
    throw new SudoUsageError("Only one of the -K, -k or -N options may be specified");
  state.ignoreTicket = true;
}

function setMode(mode: Mode, spelled: string, state: State): void {
  if (state.mode !== undefined && state.mode !== mode) throw new SudoUsageError(EXCLUSIVE_MODES);
  state.mode = mode;
  state.modeOption = spelled;
}

function preserveList(list: string, state: State): void {
  for (const name of list.split(",")) {
    if (name === "") continue;
    if (name.includes("=")) throw new SudoUsageError(`invalid environment variable name: ${name}`);
    if (!state.preserveList.includes(name)) state.preserveList.push(name);
  }
}

/** Mode flags each mode accepts, as sudo's valid_flags. */
const VALID_FLAGS: Readonly<Record<Mode | "run", readonly string[]>> = {
  run: ["E", "H", "i", "n", "s"],
  list: ["n"],
  validate: ["n"],
  help: [],
  version: [],
  kill: [],
  invalidate: [],
};

function finish(state: State, command: string[]): SudoInvocation {
  let mode: Mode | "run" = state.mode ?? "run";
  let modeOption = state.modeOption ?? "";
  if (state.mode === undefined && state.ignoreTicket) {
    // -k alone invalidates; -k with a command (or -i/-s) runs it.
    if (command.length === 0 && !state.flags.has("s") && !state.flags.has("i")) {
      mode = "invalidate";
      modeOption = "-k";
    }
  }
  const login = state.flags.get("i");
  if (login !== undefined) {
    if (state.flags.has("s"))
      throw new SudoUsageError("you may not specify both the -i and -s options");
    if (state.flags.has("E"))
      throw new SudoUsageError("you may not specify both the -i and -E options");
  }
  for (const [flag, spelled] of state.flags) {
    if (VALID_FLAGS[mode].includes(flag)) continue;
    if (flag === "i" || flag === "s") throw new SudoUsageError(EXCLUSIVE_MODES);
    throw new SudoUsageError(`the ${spelled} option cannot be used with ${modeOption}`);
  }
  if (state.askpass && state.stdin) {
    throw new SudoUsageError("the -A and -S options may not be used together");
  }
  const user = state.values.get("u");
  const group = state.values.get("g");
  const cwd = state.values.get("D");
  if ((user !== undefined || group !== undefined) && !["run", "validate", "list"].includes(mode)) {
    throw new SudoUsageError(`the -u and -g options cannot be used with ${modeOption}`);
  }
  if (mode === "list") {
    if ((user !== undefined || group !== undefined) && command.length === 0) {
      throw new SudoUsageError("-l with -u or -g needs a command to check");
    }
    return {
      mode: "list",
      command,
      ...(user !== undefined && { user }),
      ...(group !== undefined && { group }),
    };
  }
  if (mode !== "run") {
    if (command.length > 0) throw new SudoUsageError(`${modeOption} does not take a command`);
    if (mode === "kill") return { mode: "invalidate" };
    return { mode };
  }
  const shell = state.flags.has("s");
  if (command.length === 0 && !shell && login === undefined) {
    throw new SudoUsageError("a command is required unless -i or -s is given");
  }
  const preserveEnv = state.flags.has("E")
    ? true
    : state.preserveList.length > 0
      ? state.preserveList
      : false;
  return {
    mode: "run",
    ...(user !== undefined && { user }),
    ...(group !== undefined && { group }),
    preserveEnv,
    setHome: state.flags.has("H"),
    login: login !== undefined,
    shell,
    nonInteractive: state.flags.has("n"),
    ...(cwd !== undefined && { cwd }),
    command,
  };
}

/**
 * sudo's quoting for `-i`/`-s` with a command: the arguments joined by spaces,
 * every character but ASCII letters, digits, `_`, `-` and `$` escaped with a
 * backslash (so `$VAR` still expands in the target's shell, as with sudo).
 */
export function shellCommandLine(command: readonly string[]): string {
  return command.map((arg) => arg.replace(/[^A-Za-z0-9_$-]/gu, (c) => `\\${c}`)).join(" ");
}

/**
 * The argv sudo would run for a request: the command itself, or for `-i`/`-s`
 * the target's shell (`[shell]` alone, or `[shell, "-c", shellCommandLine]`).
 * For `-i` the gate runs it as a login shell (argv[0] prefixed with `-`, in
 * the target's home). `targetShell` comes from the target's passwd entry,
 * never from the agent's `$SHELL`.
 */
export function shellArgv(request: GateRequest, targetShell: string): string[] {
  if (!request.login && !request.shell) return [...request.command];
  if (request.command.length === 0) return [targetShell];
  return [targetShell, "-c", shellCommandLine(request.command)];
}

/**
 * The arguments the shim passes to the gate (after the gate's path):
 * `--user U --group G --preserve-env | --preserve-env-var NAME... --set-home
 * --login --shell --non-interactive --cwd DIR -- command...`, only the
 * options that apply.
 */
export function gateArguments(inv: SudoInvocation): string[] {
  if (inv.mode !== "run")
    throw new TypeError(`only a run invocation goes to the gate, not ${inv.mode}`);
  const values = [
    inv.user,
    inv.group,
    inv.cwd,
    ...(inv.preserveEnv === true ? [] : inv.preserveEnv || []),
  ];
  for (const value of values) {
    if (value === "" || value === "--") {
      throw new TypeError(`${JSON.stringify(value)} cannot be a gate option value`);
    }
  }
  const out: string[] = [];
  if (inv.user !== undefined) out.push("--user", inv.user);
  if (inv.group !== undefined) out.push("--group", inv.group);
  if (inv.preserveEnv === true) out.push("--preserve-env");
  else if (inv.preserveEnv !== false) {
    for (const name of inv.preserveEnv) out.push("--preserve-env-var", name);
  }
  if (inv.setHome) out.push("--set-home");
  if (inv.login) out.push("--login");
  if (inv.shell) out.push("--shell");
  if (inv.nonInteractive) out.push("--non-interactive");
  if (inv.cwd !== undefined) out.push("--cwd", inv.cwd);
  out.push("--", ...inv.command);
  return out;
}

const GATE_FLAGS = ["--preserve-env", "--set-home", "--login", "--shell", "--non-interactive"];
const GATE_VALUES = ["--user", "--group", "--cwd", "--preserve-env-var"];

/**
 * The inverse of `gateArguments`, strict: every option spelled exactly,
 * each at most once (`--preserve-env-var` once per name), each value the
 * next argument, and a `--` before the command; everything after the first
 * `--` is the command, never parsed.
 *
 * @throws GateUsageError for anything `gateArguments` would not produce.
 */
export function parseGateArguments(args: readonly string[]): GateRequest {
  const end = args.indexOf("--");
  if (end < 0) throw new GateUsageError("expected -- before the command");
  const flags = new Set<string>();
  const values = new Map<string, string>();
  const vars: string[] = [];
  for (let i = 0; i < end; i++) {
    const arg = args[i] as string;
    if (GATE_FLAGS.includes(arg)) {
      if (flags.has(arg)) throw new GateUsageError(`${arg} given twice`);
      flags.add(arg);
    } else if (GATE_VALUES.includes(arg)) {
      if (i + 1 >= end) throw new GateUsageError(`${arg} needs a value`);
      const value = args[++i] as string;
      if (value === "" || value.includes("\0"))
        throw new GateUsageError(`${arg} needs a non-empty value`);
      if (arg === "--preserve-env-var") {
        if (value.includes("="))
          throw new GateUsageError(`invalid environment variable name: ${value}`);
        if (vars.includes(value)) throw new GateUsageError(`${arg} ${value} given twice`);
        vars.push(value);
      } else {
        if (values.has(arg)) throw new GateUsageError(`${arg} given twice`);
        values.set(arg, value);
      }
    } else {
      throw new GateUsageError(`unknown option ${JSON.stringify(arg)}`);
    }
  }
  const command = args.slice(end + 1);
  const login = flags.has("--login");
  const shell = flags.has("--shell");
  const preserveAll = flags.has("--preserve-env");
  if (login && shell) throw new GateUsageError("--login and --shell exclude each other");
  if (login && preserveAll)
    throw new GateUsageError("--login and --preserve-env exclude each other");
  if (preserveAll && vars.length > 0) {
    throw new GateUsageError("--preserve-env and --preserve-env-var exclude each other");
  }
  if (command.length === 0 && !login && !shell) {
    throw new GateUsageError("a command is required unless --login or --shell is given");
  }
  const user = values.get("--user");
  const group = values.get("--group");
  const cwd = values.get("--cwd");
  return {
    ...(user !== undefined && { user }),
    ...(group !== undefined && { group }),
    preserveEnv: preserveAll ? true : vars.length > 0 ? vars : false,
    setHome: flags.has("--set-home"),
    login,
    shell,
    nonInteractive: flags.has("--non-interactive"),
    ...(cwd !== undefined && { cwd }),
    command,
  };
}
