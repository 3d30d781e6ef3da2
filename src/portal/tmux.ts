/**
 * The portal's tmux commands, as argv arrays, and the shell line that logs
 * into the agent's account. Every value that ends up in a shell string is
 * single-quoted; tmux itself gets argv, never a line to split. Pure.
 */
import path from "node:path";
import { shellQuote } from "../approval/wrappers.ts";

/** The session the portal starts (or reuses) when it runs outside tmux. */
export const PORTAL_SESSION = "nuketown";

/** Environment variable naming the tmux server: a socket name (`-L`) or a path (`-S`). */
export const SOCKET_ENV = "NUKETOWN_TMUX_SOCKET";

/** `<agent>:<project>`: one window per agent and project, found again by this name. */
export const windowName = (agent: string, project: string) => `${agent}:${project}`;

/** The arguments that pick the tmux server: none for the default one. */
export function serverArgs(socket: string | undefined): string[] {
  if (socket === undefined || socket === "") return [];
  return socket.includes("/") ? ["-S", socket] : ["-L", socket];
}

/**
 * Whether the portal runs inside a pane of the tmux server it will talk to:
 * `$TMUX` is `<socket path>,<pid>,<session>`; a named server (`-L`) lives at
 * `<dir>/<name>`.
 */
export function insideTmux(tmuxEnv: string | undefined, socket: string | undefined): boolean {
  if (tmuxEnv === undefined || tmuxEnv === "") return false;
  if (socket === undefined || socket === "") return true;
  const current = tmuxEnv.split(",")[0] ?? "";
  return socket.includes("/")
    ? path.resolve(current) === path.resolve(socket)
    : path.basename(current) === socket;
}

/** The bottom pane's share in percent, from the declared `agent/human` split. */
export function humanPercent(layout: { readonly agent: number; readonly human: number }): number {
  const total = layout.agent + layout.human;
  if (total <= 0) return 25;
  return Math.min(90, Math.max(10, Math.round((layout.human * 100) / total)));
}

/**
 * What runs in the agent's login shell: enter the project, run the portal
 * command, and when it ends stay in the agent's own shell there, so the pane
 * never closes on a runtime that quit. `command` is the declared command
 * line (shell syntax on purpose, like an entry in a crontab); every other
 * value is quoted.
 */
export function agentScript(
  dir: string,
  command: string,
  session?: { readonly socket: string; readonly name: string },
): string {
  // With a session: the agent's own tmux session for the project (the one its
  // daemon runs interactive tasks in), attached if it exists, so the command
  // never starts twice.
  const run = session
    ? `tmux -S ${shellQuote(session.socket)} new-session -A -s ${shellQuote(session.name)} -c ${shellQuote(dir)} ${shellQuote(command)}`
    : command;
  return [
    `if cd -- ${shellQuote(dir)}; then`,
    `  ${run}`,
    "else",
    `  echo ${shellQuote(`nuketown portal: cannot enter ${dir} as`)} "$(id -un)" >&2`,
    "fi",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion
    'exec "${SHELL:-/bin/bash}" -l',
  ].join("\n");
}

export interface LoginMethod {
  /** systemd is PID 1: `machinectl shell` gives a real logind session. */
  readonly systemd: boolean;
  /** The portal runs as root: no sudo in front. */
  readonly root: boolean;
  /** runuser is installed (util-linux); otherwise su. */
  readonly runuser: boolean;
}

/**
 * The argv of a login session as the agent running `script`: `machinectl
 * shell` where systemd runs, else `runuser -l` (or `su -`), behind sudo for a
 * mayor who is not root (agents have no password to type).
 */
export function agentLoginArgv(agent: string, script: string, method: LoginMethod): string[] {
  const login = method.systemd
    ? ["machinectl", "shell", `${agent}@`, "/bin/bash", "-lc", script]
    : method.runuser
      ? ["runuser", "-l", agent, "-c", script]
      : ["su", "-", agent, "-c", script];
  return method.root ? login : ["sudo", "--", ...login];
}

/** An argv as one sh line, every word quoted: what tmux hands to `sh -c`. */
export const shellLine = (argv: readonly string[]) => argv.map(shellQuote).join(" ");

/** A window as `list-windows -a -F WINDOW_FORMAT` prints it. */
export interface TmuxWindow {
  readonly session: string;
  /** `$N`: stable even when a session has an odd name. */
  readonly sessionId: string;
  readonly id: string;
  /** The `@nuketown-portal` window option: the name the portal gave it. */
  readonly tag: string;
  readonly name: string;
}

/** A window option that marks the portal's windows, which survives a rename of the window. */
export const TAG_OPTION = "@nuketown-portal";

export const WINDOW_FORMAT = `#{session_name}\t#{session_id}\t#{window_id}\t#{${TAG_OPTION}}\t#{window_name}`;

export function parseWindows(output: string): TmuxWindow[] {
  return output.split("\n").flatMap((line) => {
    const [session, sessionId, id, tag = "", ...rest] = line.split("\t");
    if (!session || !sessionId?.startsWith("$") || !id?.startsWith("@")) return [];
    return [{ session, sessionId, id, tag, name: rest.join("\t") }];
  });
}

/**
 * The window a portal opened earlier, preferring one in `session`: tagged
 * with `name`, or untagged but named so (opened an instant ago, or by hand).
 */
export function findWindow(
  windows: readonly TmuxWindow[],
  name: string,
  session?: string,
): TmuxWindow | undefined {
  const matches = windows.filter((w) => w.tag === name || (w.tag === "" && w.name === name));
  return matches.find((w) => w.session === session) ?? matches[0];
}

/**
 * Mark the new window as the portal's, and keep programs in it from
 * renaming it with escape sequences.
 */
export const tagArgvs = (pane: string, name: string) => [
  ["set-option", "-w", "-t", pane, TAG_OPTION, name],
  ["set-option", "-w", "-t", pane, "allow-rename", "off"],
];

export interface PortalPlan {
  /** `window`: open one in the current session (inside tmux); `session`: start `nuketown`. */
  readonly open: "window" | "session";
  readonly name: string;
  readonly dir: string;
  /** The agent pane's command, one sh line. */
  readonly agentCommand: string;
  readonly humanPercent: number;
  /** Size for a detached new session, so the split is right before anyone attaches. */
  readonly size?: { readonly columns: number; readonly rows: number };
}

/** The argv (after `tmux` and its server arguments) that opens the agent's pane. */
export function openArgv(plan: PortalPlan, sessionExists: boolean): string[] {
  const print = ["-P", "-F", "#{pane_id}"];
  if (plan.open === "window")
    return ["new-window", ...print, "-n", plan.name, "-c", plan.dir, plan.agentCommand];
  if (sessionExists)
    return [
      "new-window",
      ...print,
      "-t",
      `=${PORTAL_SESSION}:`,
      "-n",
      plan.name,
      "-c",
      plan.dir,
      plan.agentCommand,
    ];
  const size = plan.size ? ["-x", String(plan.size.columns), "-y", String(plan.size.rows)] : [];
  return [
    "new-session",
    "-d",
    ...print,
    "-s",
    PORTAL_SESSION,
    ...size,
    "-n",
    plan.name,
    "-c",
    plan.dir,
    plan.agentCommand,
  ];
}

/** The human's shell below the agent's pane, in the same directory. */
export function splitArgv(plan: PortalPlan, agentPane: string): string[] {
  return ["split-window", "-v", "-t", agentPane, "-l", `${plan.humanPercent}%`, "-c", plan.dir];
}

/** Back to the agent's pane, the one you talk to. */
export const focusArgv = (pane: string) => ["select-pane", "-t", pane];

/**
 * Show an existing window: select it, and when inside tmux bring the client
 * there (it may be in another session; failing that, e.g. with no client
 * attached, the selected window is still what the session shows next).
 */
export function showArgvs(window: TmuxWindow, inside: boolean): string[][] {
  const select = ["select-window", "-t", window.id];
  // A target with ':' makes switch-client change session and window at once.
  return inside ? [select, ["switch-client", "-t", `${window.sessionId}:${window.id}`]] : [select];
}

/** Outside tmux: attach the terminal to a session, by id (`$N`) or exact name. */
export const attachArgv = (session: string) => [
  "attach-session",
  "-t",
  session.startsWith("$") ? session : `=${session}`,
];
