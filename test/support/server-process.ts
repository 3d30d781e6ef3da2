/**
 * A server process that a test starts and owns (Synapse, Prosody): its own
 * process group, output to a log file, killed when stopped, when the test
 * process exits, and (through the parent-death signal) when the test process
 * is killed outright.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";

export interface ServerProcess {
  readonly pid: number;
  /** Set once the process has exited; a description such as "exit code 1". */
  readonly exited: string | undefined;
  /** SIGTERM to the process group, SIGKILL after `graceMs`; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Map<number, { dir: string }>();
let hooked = false;

function killOnExit(): void {
  for (const [pid, { dir }] of live) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {}
    rmSync(dir, { recursive: true, force: true });
  }
  live.clear();
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolve(address.port);
        else reject(new Error("no port from listen(0)"));
      });
    });
  });
}

/**
 * Starts `command` in a new process group with stdout and stderr appended to
 * `logFile`. `dir` (the server's temp dir) is removed by the exit hook if the
 * test process exits without stopping the server.
 */
export function startServerProcess(options: {
  command: string;
  args: readonly string[];
  cwd: string;
  dir: string;
  logFile: string;
  env?: NodeJS.ProcessEnv;
}): ServerProcess {
  if (!hooked) {
    process.on("exit", killOnExit);
    hooked = true;
  }
  const log = openSync(options.logFile, "a");
  let child: ChildProcess;
  try {
    // setpriv (util-linux) sets PR_SET_PDEATHSIG then execs: the server gets
    // SIGTERM if this process dies without running its exit hooks.
    child = spawn("setpriv", ["--pdeathsig", "SIGTERM", "--", options.command, ...options.args], {
      cwd: options.cwd,
      env: options.env ?? process.env,
      detached: true,
      stdio: ["ignore", log, log],
    });
  } finally {
    closeSync(log);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${options.command}`);
  live.set(pid, { dir: options.dir });
  let exited: string | undefined;
  const gone = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = signal ? `signal ${signal}` : `exit code ${code}`;
      live.delete(pid);
      resolve();
    });
  });
  child.once("error", (error) => {
    exited = `error ${error.message}`;
  });
  const signal = (name: NodeJS.Signals) => {
    try {
      process.kill(-pid, name);
    } catch {}
  };
  return {
    pid,
    get exited() {
      return exited;
    },
    async stop(graceMs = 10_000) {
      if (exited === undefined) {
        signal("SIGTERM");
        const timer = setTimeout(() => signal("SIGKILL"), graceMs);
        await gone;
        clearTimeout(timer);
      }
      // Anything the server forked into its group goes too.
      signal("SIGKILL");
    },
  };
}

/** Polls `ready` every 100 ms until it returns true; fails early when the process exits. */
export async function waitUntilReady(
  server: ServerProcess,
  ready: () => Promise<boolean>,
  options: { what: string; timeoutMs: number; logFile: string },
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    if (await ready().catch(() => false)) return;
    const problem =
      server.exited !== undefined
        ? `exited (${server.exited})`
        : Date.now() > deadline
          ? `not ready after ${options.timeoutMs / 1000} s`
          : undefined;
    if (problem)
      throw new Error(
        `${options.what} ${problem}; the end of its log (${options.logFile}):\n${tail(options.logFile)}`,
      );
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function tail(file: string, lines = 40): string {
  if (!existsSync(file)) return "(no log file)";
  return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
}
