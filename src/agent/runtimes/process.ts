/**
 * A runtime's process: its own process group (so a timeout or a cancel
 * stops everything it started), stdout read line by line, the tail of
 * stderr kept for failure reports, a missing executable told apart from a
 * crash.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";

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

export function runProcess(spec: ProcessSpec): Promise<ProcessOutcome> {
  return new Promise((resolve) => {
    if (spec.signal.aborted) return resolve({ kind: "aborted", stderr: "" });
    const child = spawn(spec.command, [...spec.args], {
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

    const killGroup = (signal: NodeJS.Signals) => {
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
      if (ending) resolve({ kind: ending, stderr: tail });
      else
        resolve({
          kind: "exited",
          code: exit?.code ?? null,
          signal: exit?.signal ?? null,
          stderr: tail,
        });
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

function stderrTail(buffer: Buffer): string {
  const text = buffer.subarray(-STDERR_TAIL_BYTES).toString("utf8");
  return text.split("\n").slice(-20).join("\n").trim();
}
