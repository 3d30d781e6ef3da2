/**
 * The desktop channel: a dialog in the mayor's graphical session, when there
 * is one. The session is detected per request (logind where it runs, the
 * environment of the mayor's processes otherwise); without one, or without
 * zenity, the channel says so once and stays silent while the other channels
 * carry on.
 */
import { readdir, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { changeLines } from "../change/present.ts";
import { MissingToolError } from "../errors.ts";
import {
  type CommandResult,
  type Runner,
  type RunOptions,
  startProcess,
  systemRunner,
} from "../os/process.ts";
import { type PasswdEntry, parsePasswd } from "../os/tables.ts";
import type { ResolvedHuman, ResolvedTown } from "../town/types.ts";
import type { ApprovalChannel, DecideResult, HumanAnswer } from "./channel.ts";
import { type Decision, type PendingRequest, writableLines } from "./protocol.ts";

/** Where a user's dialogs can be shown, and the environment a client needs to get there. */
export interface GraphicalSession {
  user: string;
  uid: number;
  /** X11 display, e.g. `:0` (XWayland's, in a wayland session). */
  display?: string;
  /** Wayland socket name (relative to `runtimeDir`) or path. */
  waylandDisplay?: string;
  xauthority?: string;
  /** XDG_RUNTIME_DIR of the user. */
  runtimeDir?: string;
}

export interface SessionLookupOptions {
  /** @default "/proc" */
  readonly proc?: string;
  /** Where `passwd` is read, for the user's uid. @default "/etc" */
  readonly etc?: string;
  /** Where local X servers put their sockets. @default "/tmp/.X11-unix" */
  readonly x11SocketDir?: string;
}

/**
 * The user's local graphical session, or undefined.
 *
 * 1. Where systemd-logind runs: the user's sessions from `loginctl
 *    list-sessions`, the first that `loginctl show-session` reports as an
 *    active, local (`Remote=no`) `x11` or `wayland` session. Its `Display`
 *    is the X display; the runtime dir is the user's `RuntimePath`.
 *    WAYLAND_DISPLAY (and XAUTHORITY, and XWayland's DISPLAY) are not kept by
 *    logind, so they are read from `/proc/<pid>/environ` of the user's
 *    processes: the session's leader and the processes in the session's
 *    scope (`session-<id>.scope` in `/proc/<pid>/cgroup`) first, then any
 *    other process of the user (compositors often run in `user@.service`).
 *    A wayland display counts only if its socket exists.
 * 2. Otherwise (no logind, as in a container; or no graphical logind
 *    session, as after `startx` from a text console): the first process of
 *    the user, by pid, whose environment names a local display whose socket
 *    exists: `DISPLAY=:N` with `<x11SocketDir>/XN`, or `WAYLAND_DISPLAY`
 *    with its socket under that process's XDG_RUNTIME_DIR. Remote displays
 *    (`host:N`, ssh's X forwarding) are never used.
 */
export async function findGraphicalSession(
  user: string,
  runner: Runner,
  options: SessionLookupOptions = {},
): Promise<GraphicalSession | undefined> {
  const proc = options.proc ?? "/proc";
  const x11SocketDir = options.x11SocketDir ?? "/tmp/.X11-unix";
  const account = await lookupUser(user, options.etc ?? "/etc");
  if (!account) return undefined;
  const processes = await userProcesses(proc, account.uid);
  const fromLogind = await logindSession(account, runner, processes, x11SocketDir);
  if (fromLogind) return fromLogind;
  for (const p of processes) {
    const found = await sessionFromEnvironment(account, p.env, x11SocketDir);
    if (found) return found;
  }
  return undefined;
}

interface UserProcess {
  readonly pid: number;
  readonly env: ReadonlyMap<string, string>;
  /** The contents of /proc/<pid>/cgroup. */
  readonly cgroup: string;
}

async function lookupUser(user: string, etc: string): Promise<PasswdEntry | undefined> {
  const text = await readFile(path.join(etc, "passwd"), "utf8").catch(() => "");
  return parsePasswd(text).find((u) => u.name === user);
}

/** Every process of `uid` that root can read, by pid; processes that vanish meanwhile are skipped. */
async function userProcesses(proc: string, uid: number): Promise<UserProcess[]> {
  const pids = (await readdir(proc).catch(() => []))
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .sort((a, b) => a - b);
  const found: UserProcess[] = [];
  for (const pid of pids) {
    const dir = path.join(proc, String(pid));
    const info = await stat(dir).catch(() => undefined);
    if (info?.uid !== uid) continue;
    const environ = await readFile(path.join(dir, "environ"), "utf8").catch(() => undefined);
    if (environ === undefined) continue;
    const cgroup = await readFile(path.join(dir, "cgroup"), "utf8").catch(() => "");
    found.push({ pid, env: parseEnviron(environ), cgroup });
  }
  return found;
}

function parseEnviron(text: string): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of text.split("\0")) {
    const equals = entry.indexOf("=");
    if (equals > 0) env.set(entry.slice(0, equals), entry.slice(equals + 1));
  }
  return env;
}

/** `:N`, `:N.S` or `unix:N`: a display on this machine, with the number of its socket. */
function localDisplayNumber(display: string): number | undefined {
  const match = /^(?:unix)?:(\d+)(?:\.\d+)?$/.exec(display);
  return match ? Number(match[1]) : undefined;
}

/**
 * A live display socket of root's or the mayor's: /tmp/.X11-unix is world-writable,
 * so an agent could otherwise stand up a fake X server the dialog would talk to.
 */
const isSocket = async (file: string, owner: number) => {
  const info = await stat(file).catch(() => undefined);
  return info?.isSocket() === true && (info.uid === 0 || info.uid === owner);
};

async function localX11Display(
  display: string | undefined,
  x11SocketDir: string,
  owner: number,
): Promise<string | undefined> {
  const number = display === undefined ? undefined : localDisplayNumber(display);
  if (number === undefined) return undefined;
  return (await isSocket(path.join(x11SocketDir, `X${number}`), owner)) ? display : undefined;
}

async function liveWaylandDisplay(
  wayland: string | undefined,
  runtimeDir: string | undefined,
  owner: number,
): Promise<string | undefined> {
  if (!wayland) return undefined;
  const socket = path.isAbsolute(wayland) ? wayland : runtimeDir && path.join(runtimeDir, wayland);
  return socket && (await isSocket(socket, owner)) ? wayland : undefined;
}

async function sessionFromEnvironment(
  account: PasswdEntry,
  env: ReadonlyMap<string, string>,
  x11SocketDir: string,
): Promise<GraphicalSession | undefined> {
  const runtimeDir = env.get("XDG_RUNTIME_DIR");
  const display = await localX11Display(env.get("DISPLAY"), x11SocketDir, account.uid);
  const waylandDisplay = await liveWaylandDisplay(
    env.get("WAYLAND_DISPLAY"),
    runtimeDir,
    account.uid,
  );
  if (!display && !waylandDisplay) return undefined;
  const xauthority = display ? env.get("XAUTHORITY") : undefined;
  return {
    user: account.name,
    uid: account.uid,
    ...(display && { display }),
    ...(waylandDisplay && { waylandDisplay }),
    ...(xauthority && { xauthority }),
    ...(runtimeDir && { runtimeDir }),
  };
}

/** `key=value` lines of `loginctl show-*`. */
function parseProperties(text: string): Map<string, string> {
  const properties = new Map<string, string>();
  for (const line of text.split("\n")) {
    const equals = line.indexOf("=");
    if (equals > 0) properties.set(line.slice(0, equals), line.slice(equals + 1));
  }
  return properties;
}

async function loginctl(runner: Runner, args: string[]): Promise<string | undefined> {
  try {
    const result = await runner.run("loginctl", ["--no-pager", ...args], {
      allowFailure: true,
      timeoutMs: 5000,
    });
    return result.code === 0 ? result.stdout : undefined;
  } catch {
    // loginctl not installed: there is no logind to ask.
    return undefined;
  }
}

async function logindSession(
  account: PasswdEntry,
  runner: Runner,
  processes: readonly UserProcess[],
  x11SocketDir: string,
): Promise<GraphicalSession | undefined> {
  const list = await loginctl(runner, ["list-sessions", "--no-legend"]);
  if (list === undefined) return undefined;
  // SESSION UID USER SEAT ...: the first three columns are the same in every systemd version.
  const ids = list
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([id, uid, user]) => id && (user === account.name || Number(uid) === account.uid))
    .map(([id]) => id as string);
  for (const id of ids) {
    const shown = await loginctl(runner, [
      "show-session",
      id,
      "-p",
      "Name",
      "-p",
      "Type",
      "-p",
      "Display",
      "-p",
      "State",
      "-p",
      "Remote",
      "-p",
      "Leader",
    ]);
    if (shown === undefined) continue;
    const session = parseProperties(shown);
    const type = session.get("Type");
    if (type !== "x11" && type !== "wayland") continue;
    if (session.get("State") !== "active" || session.get("Remote") !== "no") continue;

    const userInfo = parseProperties(
      (await loginctl(runner, ["show-user", account.name, "-p", "RuntimePath"])) ?? "",
    );
    const leader = Number(session.get("Leader"));
    const inSession = (p: UserProcess) =>
      p.pid === leader || p.cgroup.includes(`/session-${id}.scope`);
    const ordered = [...processes.filter(inSession), ...processes.filter((p) => !inSession(p))];
    const runtimeDir =
      userInfo.get("RuntimePath") ||
      ordered.map((p) => p.env.get("XDG_RUNTIME_DIR")).find((dir) => dir) ||
      undefined;

    let display = session.get("Display") || undefined;
    let waylandDisplay: string | undefined;
    if (type === "wayland") {
      for (const p of ordered) {
        waylandDisplay = await liveWaylandDisplay(
          p.env.get("WAYLAND_DISPLAY"),
          runtimeDir,
          account.uid,
        );
        if (waylandDisplay) break;
      }
      waylandDisplay ??= await liveWaylandDisplay("wayland-0", runtimeDir, account.uid);
      // XWayland's display, if the compositor runs one.
      for (const p of ordered) {
        display ??= await localX11Display(p.env.get("DISPLAY"), x11SocketDir, account.uid);
        if (display) break;
      }
    }
    if (!display && !waylandDisplay) continue;
    const xauthority = display
      ? ordered.find((p) => p.env.get("DISPLAY") === display)?.env.get("XAUTHORITY")
      : undefined;
    return {
      user: account.name,
      uid: account.uid,
      ...(display && { display }),
      ...(waylandDisplay && { waylandDisplay }),
      ...(xauthority && { xauthority }),
      ...(runtimeDir && { runtimeDir }),
    };
  }
  return undefined;
}

// ---- the dialog ------------------------------------------------------------

/**
 * Runs a program that may be stopped before it ends: the dialog of a request
 * decided elsewhere. (The host's `Runner` only runs programs to completion.)
 */
export interface DialogRunner {
  run(
    program: string,
    args: readonly string[],
    options: RunOptions & { readonly signal: AbortSignal },
  ): Promise<CommandResult>;
}

/** Runs real programs; an abort sends SIGTERM, and the result's code is then 128 + 15. */
export const systemDialogRunner: DialogRunner = {
  run(program, args, options) {
    return new Promise((resolve, reject) => {
      if (options.signal.aborted) {
        const nothing = Buffer.alloc(0);
        return resolve({ code: 143, stdout: "", stderr: "", stdoutBytes: nothing });
      }
      const child = startProcess(program, args, {
        env: options.env ?? process.env,
        cwd: options.cwd ?? "/",
        uid: options.uid,
        gid: options.gid,
        stdio: ["ignore", "pipe", "pipe"],
      });
      const stop = () => child.kill("SIGTERM");
      options.signal.addEventListener("abort", stop, { once: true });
      // Not spawn's own `timeout`: its timer outlives a program that failed to start.
      const timer = options.timeoutMs ? setTimeout(stop, options.timeoutMs) : undefined;
      const done = () => {
        clearTimeout(timer);
        options.signal.removeEventListener("abort", stop);
      };
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
      child.on("error", (error: NodeJS.ErrnoException) => {
        done();
        const missing = new MissingToolError(program, path.basename(program));
        reject(error.code === "ENOENT" ? missing : error);
      });
      child.on("close", (code, signal) => {
        done();
        const stdoutBytes = Buffer.concat(out);
        resolve({
          code: code ?? 128 + (signal === "SIGKILL" ? 9 : 15),
          stdout: stdoutBytes.toString("utf8"),
          stderr: Buffer.concat(err).toString("utf8"),
          stdoutBytes,
        });
      });
    });
  },
};

/** Longer argvs are not shown whole, and such a dialog can only deny. */
export const MAX_SHOWN_ARGV = 2000;

/** Each argument as the human should read it: bare when plain, else quoted with every invisible character escaped. */
export function showArgument(argument: string): string {
  if (/^[\w@%+=:,./-]+$/.test(argument)) return argument;
  // JSON escapes quotes, backslashes and control characters; format characters
  // (bidi overrides), odd spaces and line separators would mislead the eye.
  return JSON.stringify(argument).replace(
    /[\p{Cf}\p{Zl}\p{Zp}\p{Co}\p{Cn}]|(?! )\p{Zs}/gu,
    (c) => `\\u{${(c.codePointAt(0) ?? 0).toString(16)}}`,
  );
}

/** Pango markup for text zenity shows: zenity also undoes C escapes (`\n`, `\101`), so backslashes are doubled. */
export function zenityText(text: string): string {
  return text
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;")
    .replace(/\\/g, "\\\\");
}

/** The dialog's title: it names the request id, so a test (or a window rule) can find it. */
const dialogTitle = (request: PendingRequest) =>
  `nuketown: ${request.agent.name} asks for sudo (${request.id})`;

/** What the dialog must look like, for `zenity --question`; undefined once the request has expired. */
export function dialogArguments(
  request: PendingRequest,
  now: Date,
): { args: string[]; complete: boolean; seconds: number } | undefined {
  const seconds = Math.ceil((Date.parse(request.expires) - now.getTime()) / 1000);
  if (!(seconds > 0)) return undefined;
  const m = zenityText;
  const argv = request.argv.map(showArgument).join(" ");
  // `nuketown unlock NAME` asks for a declared secret, not to run a command.
  const unlock = request.unlock;
  const complete = unlock !== undefined || argv.length <= MAX_SHOWN_ARGV;
  const target = request.runAs.group
    ? `${request.runAs.user}:${request.runAs.group}`
    : request.runAs.user;
  const what = request.change
    ? changeLines(request.agent.name, request.change).map((l, i) =>
        i === 0 ? `<b>${m(l)}</b>` : m(l),
      )
    : unlock
      ? [
          `<b>${m(request.agent.name)}</b> asks to unlock the secret <b>${m(showArgument(unlock.secret))}</b>`,
        ]
      : [
          `<b>${m(request.agent.name)}</b> asks to run, as <b>${m(target)}</b>:`,
          "",
          complete
            ? `<tt>${m(argv)}</tt>`
            : `<tt>${m(argv.slice(0, MAX_SHOWN_ARGV))}</tt> …\n<b>${argv.length - MAX_SHOWN_ARGV} more characters are not shown.</b> Review the whole request with <tt>nuketown approvals --json</tt>; this dialog can only deny it.`,
          "",
          `in <tt>${m(request.cwd)}</tt>`,
          `program <tt>${m(request.command)}</tt>`,
          // The agent could change these: their contents are part of the hash approved here.
          ...writableLines(request, showArgument).map((l) => `<b>⚠ ${m(l)}</b>`),
          ...(request.shell
            ? [
                `through ${m(request.runAs.user)}'s ${request.shell === "login" ? "login " : ""}shell`,
              ]
            : []),
        ];
  const lines = [
    ...what,
    `request ${m(request.id)} · hash <tt>${m(request.hash.slice(0, 12))}</tt>`,
    `expires ${m(request.expires)} (in ${seconds} s)`,
  ];
  const buttons = complete
    ? ["--ok-label=Approve", "--cancel-label=Deny"]
    : ["--ok-label=Deny", "--cancel-label=Not here"];
  return {
    args: [
      "--question",
      `--title=${dialogTitle(request)}`,
      `--text=${lines.join("\n")}`,
      ...buttons,
      // A keystroke meant for another window must never approve.
      "--default-cancel",
      "--icon-name=dialog-password",
      "--width=560",
      `--timeout=${seconds}`,
    ],
    complete,
    seconds,
  };
}

/** The mayor, if the town has one who may approve: the human the desktop channel asks. */
export function approvingMayor(town: ResolvedTown): ResolvedHuman | undefined {
  return town.mayor?.approver ? town.mayor : undefined;
}

export interface DesktopChannelOptions {
  /** Whose session gets the dialogs; must be an approver. */
  readonly mayor: ResolvedHuman;
  /** Runs loginctl. @default systemRunner */
  readonly runner?: Runner;
  /** Runs zenity. @default systemDialogRunner */
  readonly dialogs?: DialogRunner;
  readonly lookup?: SessionLookupOptions;
  /** How long a detected session (or its absence) is trusted. @default 5000 */
  readonly cacheMs?: number;
  /** @default "zenity" */
  readonly zenity?: string;
  readonly clock?: () => Date;
  /** @default a line on stderr */
  readonly log?: (line: string) => void;
}

type Decide = (answer: HumanAnswer) => Promise<DecideResult>;

/**
 * Exit codes of `zenity --question`. Cancel and Escape (or closing the
 * window) are moved off 1 through zenity's ZENITY_CANCEL and ZENITY_ESC,
 * because GTK also exits 1 when it cannot open the display: a dialog that
 * never showed must not deny in the mayor's name.
 */
const ZENITY = { ok: 0, cancel: 10, escape: 11, timeout: 5 } as const;

export class DesktopChannel implements ApprovalChannel {
  readonly name = "desktop";
  readonly #mayor: ResolvedHuman;
  readonly #runner: Runner;
  readonly #dialogs: DialogRunner;
  readonly #lookup: SessionLookupOptions;
  readonly #cacheMs: number;
  readonly #zenity: string;
  readonly #clock: () => Date;
  readonly #log: (line: string) => void;
  /** Open (or opening) dialogs by request id. */
  readonly #open = new Map<string, AbortController>();
  readonly #running = new Set<Promise<void>>();
  #cached: { at: number; session: Promise<GraphicalSession | undefined> } | undefined;
  #saidNoSession = false;
  #saidNoZenity = false;

  constructor(options: DesktopChannelOptions) {
    if (!options.mayor.approver)
      throw new Error(
        `the desktop channel asks the mayor, but ${options.mayor.name} is no approver`,
      );
    this.#mayor = options.mayor;
    this.#runner = options.runner ?? systemRunner;
    this.#dialogs = options.dialogs ?? systemDialogRunner;
    this.#lookup = options.lookup ?? {};
    this.#cacheMs = options.cacheMs ?? 5000;
    this.#zenity = options.zenity ?? "zenity";
    this.#clock = options.clock ?? (() => new Date());
    this.#log = options.log ?? ((line) => process.stderr.write(`nuketown approvald: ${line}\n`));
  }

  requested(request: PendingRequest, decide: Decide): void {
    const controller = new AbortController();
    this.#open.get(request.id)?.abort();
    this.#open.set(request.id, controller);
    const asking = this.#ask(request, decide, controller.signal)
      .catch((error: Error) => this.#log(`desktop: request ${request.id}: ${error.message}`))
      .finally(() => {
        if (this.#open.get(request.id) === controller) this.#open.delete(request.id);
        this.#running.delete(asking);
      });
    this.#running.add(asking);
  }

  resolved(request: PendingRequest, _decision: Decision): void {
    this.#open.get(request.id)?.abort();
  }

  async close(): Promise<void> {
    for (const controller of this.#open.values()) controller.abort();
    await Promise.all(this.#running);
  }

  #session(): Promise<GraphicalSession | undefined> {
    const now = Date.now();
    if (!this.#cached || now - this.#cached.at > this.#cacheMs) {
      const session = findGraphicalSession(this.#mayor.unixUser, this.#runner, this.#lookup);
      this.#cached = { at: now, session };
    }
    return this.#cached.session;
  }

  async #ask(request: PendingRequest, decide: Decide, signal: AbortSignal): Promise<void> {
    const session = await this.#session();
    if (!session) {
      if (!this.#saidNoSession)
        this.#log(`desktop: no graphical session for ${this.#mayor.unixUser}`);
      this.#saidNoSession = true;
      return;
    }
    this.#saidNoSession = false;
    const account = await lookupUser(this.#mayor.unixUser, this.#lookup.etc ?? "/etc");
    const dialog = dialogArguments(request, this.#clock());
    if (!account || !dialog || signal.aborted) return;

    const env: Record<string, string> = {
      HOME: account.home,
      // GOption reads argv in the locale's charset; in C, any non-ASCII argument is refused.
      LC_ALL: "C.UTF-8",
      ZENITY_CANCEL: String(ZENITY.cancel),
      ZENITY_ESC: String(ZENITY.escape),
    };
    if (session.display) env.DISPLAY = session.display;
    if (session.waylandDisplay) env.WAYLAND_DISPLAY = session.waylandDisplay;
    if (session.xauthority) env.XAUTHORITY = session.xauthority;
    if (session.runtimeDir) env.XDG_RUNTIME_DIR = session.runtimeDir;
    let result: CommandResult;
    try {
      result = await this.#dialogs.run(this.#zenity, dialog.args, {
        uid: account.uid,
        gid: account.gid,
        env,
        cwd: "/",
        signal,
        // zenity times out by itself; this only bounds a zenity that hangs.
        timeoutMs: (dialog.seconds + 10) * 1000,
      });
    } catch (error) {
      if (!(error instanceof MissingToolError)) throw error;
      if (!this.#saidNoZenity) this.#log("desktop: zenity not installed (apt-get install zenity)");
      this.#saidNoZenity = true;
      return;
    }
    this.#saidNoZenity = false;
    if (signal.aborted) return;
    const dismissed = result.code === ZENITY.cancel || result.code === ZENITY.escape;
    let approve: boolean;
    if (result.code === ZENITY.ok) approve = dialog.complete;
    else if (dismissed && dialog.complete) approve = false;
    else {
      if (result.code !== ZENITY.timeout && !dismissed) {
        const detail = result.stderr.trim().split("\n").slice(-1)[0] ?? "";
        this.#log(`desktop: zenity exited ${result.code}${detail ? `: ${detail}` : ""}`);
      }
      return;
    }
    const answer = await decide({ approve, human: this.#mayor.name, hash: request.hash });
    if (!answer.ok) this.#log(`desktop: request ${request.id}: ${answer.error}`);
  }
}
