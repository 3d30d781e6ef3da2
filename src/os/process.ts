/**
 * The one seam through which host code runs programs. Commands are always
 * an argv (never a shell string); a missing program becomes a MissingToolError
 * naming the Debian package that provides it.
 */
import { spawn } from "node:child_process";
import { constants as osConstants } from "node:os";

export type { ChildProcess, ChildProcessByStdio, SpawnOptions } from "node:child_process";

import { EXIT, MissingToolError, NuketownError } from "../errors.ts";

export interface RunOptions {
  /** Bytes or text written to the program's stdin (then closed). */
  readonly input?: string | Buffer;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Run as this uid/gid (the caller must be root). */
  readonly uid?: number;
  readonly gid?: number;
  /** Return a non-zero exit instead of throwing CommandError. */
  readonly allowFailure?: boolean;
  /** Kill the program after this many milliseconds. */
  readonly timeoutMs?: number;
  /** Kill the program when this aborts. */
  readonly signal?: AbortSignal;
  /** Kill the program once its stdout passes this many bytes (it exits 1, saying so on stderr). */
  readonly maxOutputBytes?: number;
  /**
   * For programs that may start others we do not trust (git in an agent's
   * repo): run in a process group of its own, which the timeout and the abort
   * kill whole (SIGKILL), and stop reading its output this long after it
   * exited, so a descendant holding the pipes open cannot keep us waiting.
   */
  readonly untrustedChildren?: { readonly exitGraceMs: number };
}

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout as raw bytes, for programs that print secrets or binary data. */
  readonly stdoutBytes: Buffer;
}

export interface Runner {
  run(program: string, args: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

/** Debian packages for the programs nuketown runs, for "is X installed?" errors. */
export const DEBIAN_PACKAGE: Readonly<Record<string, string>> = {
  age: "age",
  "age-keygen": "age",
  btrfs: "btrfs-progs",
  "mkfs.btrfs": "btrfs-progs",
  setfacl: "acl",
  getfacl: "acl",
  visudo: "sudo",
  sudo: "sudo",
  udevadm: "udev",
  "systemd-analyze": "systemd",
  systemctl: "systemd",
  loginctl: "systemd",
  git: "git",
  "ssh-keygen": "openssh-client",
  useradd: "passwd",
  userdel: "passwd",
  usermod: "passwd",
  groupadd: "passwd",
  groupdel: "passwd",
  gpasswd: "passwd",
  mount: "mount",
  umount: "mount",
  losetup: "mount",
  pkill: "procps",
  pgrep: "procps",
  runuser: "util-linux",
  gpg: "gnupg",
  sops: "bash scripts/install-sops.sh, or a release from https://github.com/getsops/sops/releases",
};

export class CommandError extends NuketownError {
  readonly result: CommandResult;
  constructor(program: string, args: readonly string[], result: CommandResult) {
    const detail = (result.stderr || result.stdout).trim().split("\n").slice(-5).join("\n");
    super(
      `${[program, ...args].join(" ")} exited ${result.code}${detail ? `: ${detail}` : ""}`,
      EXIT.failed,
    );
    this.result = result;
  }
}

/** Runs real programs. */
export const systemRunner: Runner = {
  run(program, args, options = {}) {
    return new Promise((resolve, reject) => {
      const child = spawn(program, args, {
        env: options.env ?? process.env,
        cwd: options.cwd,
        uid: options.uid,
        gid: options.gid,
        stdio: ["pipe", "pipe", "pipe"],
        detached: options.untrustedChildren !== undefined,
      });
      const untrusted = options.untrustedChildren;
      const stop = () => {
        if (untrusted && child.pid !== undefined) {
          try {
            process.kill(-child.pid, "SIGKILL");
          } catch {
            // The group is gone already.
          }
          child.stdout.destroy();
          child.stderr.destroy();
        } else child.kill("SIGTERM");
      };
      // Our own timer, not spawn's: spawn's outlives a program that failed to start.
      const timer =
        options.timeoutMs === undefined ? undefined : setTimeout(stop, options.timeoutMs);
      const onAbort = stop;
      options.signal?.addEventListener("abort", onAbort, { once: true });
      child.once("close", () => options.signal?.removeEventListener("abort", onAbort));
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outBytes = 0;
      let overflow = false;
      child.stdout.on("data", (chunk: Buffer) => {
        if (overflow) return;
        outBytes += chunk.length;
        if (options.maxOutputBytes !== undefined && outBytes > options.maxOutputBytes) {
          overflow = true;
          child.kill("SIGTERM");
          return;
        }
        out.push(chunk);
      });
      child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
      child.on("error", (error: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (error.code === "ENOENT")
          reject(new MissingToolError(program, DEBIAN_PACKAGE[program] ?? program));
        else reject(error);
      });
      let grace: NodeJS.Timeout | undefined;
      if (untrusted)
        child.once("exit", () => {
          // What it wrote before exiting is in the pipe already; this only cuts off a holder.
          grace = setTimeout(() => {
            child.stdout.destroy();
            child.stderr.destroy();
          }, untrusted.exitGraceMs);
        });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        clearTimeout(grace);
        const stdoutBytes = Buffer.concat(out);
        const result: CommandResult = overflow
          ? {
              code: 1,
              stdout: "",
              stderr: `its output passed ${options.maxOutputBytes} bytes: stopped`,
              stdoutBytes: Buffer.alloc(0),
            }
          : {
              code: code ?? (signal ? 128 : 1),
              stdout: stdoutBytes.toString("utf8"),
              stderr:
                Buffer.concat(err).toString("utf8") + (signal ? `\n(killed by ${signal})` : ""),
              stdoutBytes,
            };
        if (result.code !== 0 && !options.allowFailure)
          reject(new CommandError(program, args, result));
        else resolve(result);
      });
      // A program that exits without reading its input must not crash us with EPIPE.
      child.stdin.on("error", () => {});
      child.stdin.end(options.input ?? "");
    });
  },
};

/**
 * A child process the caller watches itself: a runtime streaming its output,
 * a supervised daemon, a dialog. The one place a program is started, besides
 * `systemRunner` and `runInherit`.
 */
export const startProcess: typeof spawn = spawn;

/**
 * Runs a program on this process's terminal (stdio inherited) and resolves
 * with its exit code (128 + n for a signal); `signal` stops it.
 */
export function runInherit(
  program: string,
  args: readonly string[],
  options: {
    readonly env?: NodeJS.ProcessEnv;
    readonly cwd?: string;
    readonly signal?: AbortSignal;
  } = {},
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, [...args], {
      stdio: "inherit",
      env: options.env ?? process.env,
      ...(options.cwd !== undefined && { cwd: options.cwd }),
    });
    const onAbort = () => child.kill("SIGTERM");
    options.signal?.addEventListener("abort", onAbort, { once: true });
    child.once("error", (error: NodeJS.ErrnoException) => {
      options.signal?.removeEventListener("abort", onAbort);
      if (error.code === "ENOENT")
        reject(new MissingToolError(program, DEBIAN_PACKAGE[program] ?? program));
      else reject(error);
    });
    child.once("close", (code, signal) => {
      options.signal?.removeEventListener("abort", onAbort);
      resolve(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 1) : 1));
    });
  });
}
