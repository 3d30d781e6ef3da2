/**
 * A runtime's process: its own process group, and the task's cgroup when it
 * has one (so a timeout or a cancel stops everything it started, and what it
 * leaves behind dies when it exits), stdout read line by line, the tail of
 * stderr kept for failure reports, a missing executable told apart from a
 * crash.
 */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import path from "node:path";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { type ChildProcessByStdio, startProcess } from "../../os/process.ts";
import { joinCgroupScript } from "../cgroup.ts";
import type { TaskProcesses } from "./types.ts";

/** How long a runtime gets between SIGTERM and SIGKILL. */
export const KILL_GRACE_MS = 3000;
const STDERR_TAIL_BYTES = 8 * 1024;
/** How long output may stay open once the runtime is gone (a grandchild that escaped its group). */
export const DRAIN_MS = 2000;

export interface ProcessSpec {
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd: string;
  readonly env: NodeJS.ProcessEnv;
  /** Written to stdin, which is then closed; stdin is /dev/null when absent. */
  readonly input?: string;
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  readonly onLine: (line: string) => void;
  readonly killGraceMs?: number;
  /** How long stdout and stderr may stay open after the runtime exited or was killed. */
  readonly drainMs?: number;
  /** The task's processes: the runtime joins its cgroup before exec, and every stop reaches them all. */
  readonly processes?: TaskProcesses;
}

export type ProcessOutcome =
  | {
      readonly kind: "exited";
      readonly code: number | null;
      readonly signal: NodeJS.Signals | null;
      readonly stderr: string;
    }
  | { readonly kind: "missing"; readonly error: string }
  | { readonly kind: "timeout"; readonly stderr: string }
  | { readonly kind: "aborted"; readonly stderr: string };

export async function runProcess(spec: ProcessSpec): Promise<ProcessOutcome> {
  if (spec.signal.aborted) return { kind: "aborted", stderr: "" };
  const joinFile = spec.processes?.joinFile;
  if (joinFile !== undefined) {
    // Started through sh, which would only say "not found" with exit 127: ask first.
    const unusable = await whyNotExecutable(spec.command, spec.env.PATH, spec.cwd);
    if (unusable) return { kind: "missing", error: `${spec.command}: ${unusable}` };
  }
  const [command, args] =
    joinFile === undefined
      ? [spec.command, [...spec.args]]
      : [
          "/bin/sh",
          ["-c", joinCgroupScript(), "nuketown-task", joinFile, spec.command, ...spec.args],
        ];
  return new Promise((resolve) => {
    if (spec.signal.aborted) return resolve({ kind: "aborted", stderr: "" });
    const child = startProcess(command, args, {
      cwd: spec.cwd,
      env: spec.env,
      // A new session and process group: killing -pid reaches every process the runtime started.
      detached: true,
      stdio: [spec.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    }) as ChildProcessByStdio<Writable | null, Readable, Readable>;
    let stderr = Buffer.alloc(0);
    let ending: "timeout" | "aborted" | undefined;
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let killTimer: NodeJS.Timeout | undefined;
    let drainTimer: NodeJS.Timeout | undefined;
    let settled = false;
    const drainMs = spec.drainMs ?? DRAIN_MS;

    /** Signals sent to the task's processes, awaited before the outcome is told. */
    const sent: Promise<void>[] = [];
    const killGroup = (signal: NodeJS.Signals) => {
      if (spec.processes) sent.push(spec.processes.signal(signal).catch(() => {}));
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        // ESRCH: the group is already gone.
      }
    };
    const finish = () => {
      if (settled) return;
      settled = true;
      cleanup();
      lines.close();
      child.stdout.destroy();
      child.stderr.destroy();
      const tail = stderrTail(stderr);
      const outcome: ProcessOutcome = ending
        ? { kind: ending, stderr: tail }
        : { kind: "exited", code: exit?.code ?? null, signal: exit?.signal ?? null, stderr: tail };
      void Promise.all(sent).then(() => resolve(outcome));
    };
    /**
     * Something outside the group (a grandchild started with setsid) may hold
     * stdout or stderr open for ever: a little while after the runtime is gone
     * (or was killed), stop waiting for them.
     */
    const drainSoon = () => {
      if (drainTimer === undefined) drainTimer = setTimeout(finish, drainMs);
    };
    const stop = (why: "timeout" | "aborted") => {
      if (ending || settled) return;
      ending = why;
      if (exit) {
        // The runtime already exited and only its output is still open: end now.
        finish();
        return;
      }
      killGroup("SIGTERM");
      killTimer = setTimeout(() => {
        killGroup("SIGKILL");
        drainSoon();
      }, spec.killGraceMs ?? KILL_GRACE_MS);
    };
    const timer = setTimeout(() => stop("timeout"), spec.timeoutMs);
    const onAbort = () => stop("aborted");
    spec.signal.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      clearTimeout(drainTimer);
      spec.signal.removeEventListener("abort", onAbort);
    };

    child.stderr.on("data", (chunk: Buffer) => {
      stderr = Buffer.concat([stderr, chunk]);
      if (stderr.length > STDERR_TAIL_BYTES * 2) stderr = stderr.subarray(-STDERR_TAIL_BYTES);
    });
    child.stdout.on("error", () => {});
    child.stderr.on("error", () => {});
    const lines = createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY });
    lines.on("line", (line) => {
      if (line.trim() !== "" && !settled) spec.onLine(line);
    });
    child.stdin?.on("error", () => {});
    child.stdin?.end(spec.input);

    child.on("error", (error: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      cleanup();
      lines.close();
      const why =
        error.code === "ENOENT"
          ? "not found"
          : error.code === "EACCES"
            ? "not executable (permission denied)"
            : error.message;
      resolve({ kind: "missing", error: `${spec.command}: ${why}` });
    });
    // The runtime itself ended: whatever it left behind in its group goes with it.
    child.on("exit", (code, signal) => {
      exit = { code, signal };
      killGroup("SIGKILL");
      drainSoon();
    });
    child.on("close", finish);
  });
}

/** Why `command` cannot be executed as spawn would look it up (PATH, or relative to cwd), if it cannot. */
async function whyNotExecutable(
  command: string,
  pathEnv: string | undefined,
  cwd: string,
): Promise<string | undefined> {
  const candidates = command.includes("/")
    ? [path.resolve(cwd, command)]
    : (pathEnv ?? "/usr/local/bin:/usr/bin:/bin")
        .split(":")
        .map((dir) => path.resolve(cwd, dir || ".", command));
  let denied = false;
  for (const file of candidates) {
    try {
      if (!(await stat(file)).isFile()) continue;
    } catch {
      continue;
    }
    try {
      await access(file, constants.X_OK);
      return undefined;
    } catch {
      denied = true;
    }
  }
  return denied ? "not executable (permission denied)" : "not found";
}

function stderrTail(buffer: Buffer): string {
  const text = buffer.subarray(-STDERR_TAIL_BYTES).toString("utf8");
  return text.split("\n").slice(-20).join("\n").trim();
}
