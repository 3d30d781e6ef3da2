/**
 * Interactive mode: the runtime runs in a window of the agent's own tmux
 * session for the project, `<agent>-<project>` on the tmux server at
 * `<agent.runtimeDir>/tmux.sock` (a path, not tmux's default under /tmp: the
 * agent's service has a private /tmp, and the portal must find the same
 * server). Anyone who attaches sees it work and may type into it; the task
 * ends when the runtime exits. The window stays, dead, with its output, until
 * the next interactive task in that session.
 */
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Runner } from "../../os/process.ts";
import type { ResolvedAgent } from "../../town/types.ts";
import { joinCgroupScript } from "../cgroup.ts";
import { KILL_GRACE_MS } from "./process.ts";
import type { TaskProcesses } from "./types.ts";

/** The tmux server of an agent: `tmux -S <this>`. */
export function tmuxSocket(agent: Pick<ResolvedAgent, "runtimeDir">): string {
  return path.join(agent.runtimeDir, "tmux.sock");
}

/** The agent's tmux session for a project (tmux forbids "." and ":" in names). */
export function tmuxSessionName(agent: string, project: string): string {
  return `${agent}-${project}`.replace(/[.:]/g, "_");
}

export interface TmuxRun {
  readonly agent: Pick<ResolvedAgent, "name" | "runtimeDir">;
  readonly project: string;
  readonly taskId: string;
  readonly cwd: string;
  readonly command: string;
  readonly args: readonly string[];
  /** Set in the window, on top of the tmux server's environment. */
  readonly env: Readonly<Record<string, string>>;
  /** The command's stdin is this file (the command runtime's task JSON); else the terminal. */
  readonly stdinFile?: string;
  /**
   * Typed into the runtime once its screen has settled, as a bracketed paste
   * and Enter: a prompt in argv is readable by every user in /proc/<pid>/cmdline.
   */
  readonly typed?: string;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  readonly runner: Runner;
  readonly pollMs?: number;
  readonly killGraceMs?: number;
  /**
   * The task's processes: the window's command joins the task's cgroup before
   * exec (when the tmux server is in the daemon's cgroup; one a portal
   * started is not, and then its processes are found by their marker), and
   * the timeout and cancel reach them all.
   */
  readonly processes?: TaskProcesses;
}

export type TmuxOutcome =
  | {
      readonly kind: "exited";
      /** Null when the window was closed from outside. */
      readonly code: number | null;
      readonly output: string;
      readonly session: string;
    }
  | { readonly kind: "timeout"; readonly output: string; readonly session: string }
  | { readonly kind: "aborted"; readonly output: string; readonly session: string };

export async function runInTmux(run: TmuxRun): Promise<TmuxOutcome> {
  const socket = tmuxSocket(run.agent);
  const session = tmuxSessionName(run.agent.name, run.project);
  const tmux = (args: string[], allowFailure = false, input?: string) =>
    run.runner.run("tmux", ["-S", socket, ...args], {
      allowFailure,
      timeoutMs: 10_000,
      ...(input !== undefined && { input }),
    });

  if ((await tmux(["has-session", "-t", `=${session}`], true)).code !== 0) {
    await tmux(["new-session", "-d", "-s", session, "-c", run.cwd, "-x", "200", "-y", "50"]);
  }
  await removeDeadTaskWindows(tmux, session);

  // A placeholder first, so remain-on-exit is set before the runtime can exit.
  const created = await tmux([
    "new-window",
    "-d",
    "-t",
    `=${session}:`,
    "-n",
    `task-${run.taskId}`,
    "-c",
    run.cwd,
    "-P",
    "-F",
    "#{pane_id}",
    "sleep",
    "infinity",
  ]);
  const pane = created.stdout.trim();
  await tmux(["set-option", "-w", "-t", pane, "remain-on-exit", "on"]);
  const joinFile = run.processes?.joinFile;
  const script =
    joinFile !== undefined
      ? joinCgroupScript({ optional: true, stdinFile: run.stdinFile !== undefined })
      : run.stdinFile
        ? 'exec "$@" < "$NUKETOWN_TASK_FILE"'
        : 'exec "$@"';
  const env = { ...run.env, ...(run.stdinFile && { NUKETOWN_TASK_FILE: run.stdinFile }) };
  await tmux([
    "respawn-pane",
    "-k",
    "-t",
    pane,
    "-c",
    run.cwd,
    ...Object.entries(env).flatMap(([key, value]) => ["-e", `${key}=${value}`]),
    "--",
    // Several arguments: tmux execs them without a shell; sh only applies the redirect.
    "sh",
    "-c",
    script,
    "nuketown-task",
    ...(joinFile !== undefined ? [joinFile] : []),
    run.command,
    ...run.args,
  ]);

  const started = Date.now();
  if (run.typed !== undefined) await typeWhenSettled(tmux, pane, run.typed, run.taskId, run.pollMs);

  let ending: "timeout" | "aborted" | undefined;
  let killAt: number | undefined;
  const onAbort = () => {
    ending ??= "aborted";
  };
  run.signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const state = await tmux(
        ["display-message", "-p", "-t", pane, "#{pane_dead} #{pane_dead_status} #{pane_pid}"],
        true,
      );
      if (state.code !== 0) return { kind: "exited", code: null, output: "", session };
      const [dead, status, pid] = state.stdout.trim().split(" ");
      if (dead === "1") {
        const output = await capture(tmux, pane);
        if (ending) return { kind: ending, output, session };
        return { kind: "exited", code: Number(status ?? 1), output, session };
      }
      if (!ending && Date.now() - started > run.timeoutMs) ending = "timeout";
      if (ending && pid) {
        const now = Date.now();
        if (killAt === undefined) {
          killAt = now + (run.killGraceMs ?? KILL_GRACE_MS);
          killGroup(Number(pid), "SIGTERM");
          await run.processes?.signal("SIGTERM").catch(() => {});
        } else if (now >= killAt) {
          killGroup(Number(pid), "SIGKILL");
          await run.processes?.signal("SIGKILL").catch(() => {});
        }
      }
      await sleep(run.pollMs ?? 100);
    }
  } finally {
    run.signal.removeEventListener("abort", onAbort);
  }
}

type Tmux = (
  args: string[],
  allowFailure?: boolean,
) => Promise<{ code: number; stdout: string; stderr: string }>;
type TmuxWithInput = (
  args: string[],
  allowFailure?: boolean,
  input?: string,
) => Promise<{ code: number; stdout: string; stderr: string }>;

async function removeDeadTaskWindows(tmux: Tmux, session: string): Promise<void> {
  const windows = await tmux(
    ["list-windows", "-t", `=${session}`, "-F", "#{window_id} #{window_name} #{pane_dead}"],
    true,
  );
  for (const line of windows.stdout.split("\n")) {
    const [id, name, dead] = line.trim().split(" ");
    if (id && name?.startsWith("task-") && dead === "1")
      await tmux(["kill-window", "-t", id], true);
  }
}

/** How long a screen must stay unchanged to count as waiting for input, and the longest wait. */
const SETTLE_MS = 400;
const SETTLE_LIMIT_MS = 20_000;

/**
 * Waits until the pane shows something and stops changing (the TUI has drawn
 * its input), then pastes the text through a tmux buffer fed on stdin (never
 * a file, never an argument) and presses Enter. A runtime that exits first
 * is left to the caller, which sees the dead pane.
 */
async function typeWhenSettled(
  tmux: TmuxWithInput,
  pane: string,
  text: string,
  taskId: string,
  pollMs = 100,
): Promise<void> {
  const deadline = Date.now() + SETTLE_LIMIT_MS;
  let last = "";
  let sameSince = Date.now();
  for (;;) {
    const state = await tmux(["display-message", "-p", "-t", pane, "#{pane_dead}"], true);
    if (state.code !== 0 || state.stdout.trim() === "1") return;
    const screen = (await tmux(["capture-pane", "-p", "-t", pane], true)).stdout;
    const now = Date.now();
    if (screen !== last) {
      last = screen;
      sameSince = now;
    } else if (screen.trim() !== "" && now - sameSince >= SETTLE_MS) break;
    if (now > deadline) break;
    await sleep(pollMs);
  }
  const buffer = `nuketown-${taskId}`;
  await tmux(["load-buffer", "-b", buffer, "-"], false, text);
  await tmux(["paste-buffer", "-p", "-d", "-b", buffer, "-t", pane]);
  // Apart from the paste, so the runtime reads it as a key, not as pasted text.
  await sleep(150);
  await tmux(["send-keys", "-t", pane, "Enter"]);
}

async function capture(tmux: Tmux, pane: string): Promise<string> {
  const result = await tmux(["capture-pane", "-p", "-J", "-S", "-", "-t", pane], true);
  return result.stdout
    .split("\n")
    .filter((line) => !/^Pane is dead/.test(line))
    .join("\n")
    .trimEnd();
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    // The pane's process leads its own session and group (tmux forks it with setsid).
    process.kill(-pid, signal);
  } catch {
    // ESRCH: already gone.
  }
}
