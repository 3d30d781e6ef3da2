/**
 * Stop everything that runs as an agent, and prove it before a round rolls
 * anything back. `pkill -u` reads /proc and then signals what it read: a
 * process that forks and exits in between (or keeps doing so) outlives it,
 * and a zombie its slow parent has not reaped yet reads as a survivor.
 *
 * Here: the agent's own cgroups (delegated to it: the supervisor's, or the
 * agent unit's with Delegate=yes) are frozen first, so nothing in them runs
 * or forks, root's commands it started through sudo included. Then a
 * process running AS the agent calls kill(-1, SIGKILL): the kernel signals
 * every process the agent may signal — all of its own, wherever they run
 * (cron, at, su, a lingering user manager) — in one pass over the process
 * list that a fork cannot slip through (a process with a pending SIGKILL
 * cannot complete a fork). The cgroups are then killed with cgroup.kill,
 * and /proc is read until a scan finds no live process of the agent and its
 * cgroups are empty; zombies are dead and do not count. Whatever a root
 * launcher started as the agent meanwhile is killed on the next pass.
 */
import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { locateCgroup } from "../agent/cgroup.ts";
import { cgroupPids, cgroupPopulated, freezeCgroup, killCgroup } from "../agent/containment.ts";
import { FailedError } from "../errors.ts";
import type { Runner } from "../os/process.ts";
import { type ProcStatus, parseProcStatus, runsAs } from "../os/tables.ts";

export interface StopTarget {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

export interface StopOptions {
  readonly runner: Runner;
  /** Where proc is mounted. @default "/proc" */
  readonly proc?: string;
  /** How long the processes may take to be gone before it fails. @default 5000 */
  readonly withinMs?: number;
}

export interface StopResult {
  /** The processes found running as the user (all gone now). */
  readonly killed: readonly ProcStatus[];
  /** The user's own cgroups that were frozen, emptied and thawed again. */
  readonly cgroups: readonly string[];
}

/** The head of a status file holds Name, State and Uid: one read, into one buffer. */
const statusBuffer = Buffer.alloc(4096);

function readStatus(file: string): string {
  const fd = openSync(file, "r");
  try {
    const n = readSync(fd, statusBuffer, 0, statusBuffer.length, 0);
    return statusBuffer.toString("latin1", 0, n);
  } finally {
    closeSync(fd);
  }
}

export interface Scan {
  /** Live processes of the user. */
  readonly found: ProcStatus[];
  /**
   * A process listed in /proc was gone before its status could be read: it
   * may have been the user's, forking its successor after the listing (a
   * process that keeps changing pid looks like this). Nothing found then
   * proves nothing.
   */
  readonly vanished: boolean;
}

/** Live processes running as `uid` (real, effective or saved), read from /proc now. */
export function scanProcesses(uid: number, proc = "/proc"): Scan {
  let names: string[];
  try {
    names = readdirSync(proc);
  } catch {
    return { found: [], vanished: false };
  }
  const found: ProcStatus[] = [];
  let vanished = false;
  for (const name of names) {
    const first = name.charCodeAt(0);
    if (first < 0x31 || first > 0x39) continue;
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let text: string;
    try {
      text = readStatus(`${proc}/${name}/status`);
    } catch {
      vanished = true;
      continue;
    }
    const status = parseProcStatus(pid, text);
    if (status !== undefined && runsAs(status, uid)) found.push(status);
  }
  return { found, vanished };
}

export const processesOf = (uid: number, proc = "/proc"): ProcStatus[] =>
  scanProcesses(uid, proc).found;

/**
 * The topmost cgroups owned by `uid` that hold these processes: what was
 * delegated to the user, which nobody else's processes can be moved into.
 */
function ownCgroups(processes: readonly ProcStatus[], uid: number, proc: string): string[] {
  if (processes.length === 0) return [];
  let mountinfo: string;
  try {
    mountinfo = readFileSync(path.join(proc, "self", "mountinfo"), "utf8");
  } catch {
    return [];
  }
  const owner = (dir: string) => {
    try {
      return statSync(dir).uid;
    } catch {
      return undefined;
    }
  };
  const tops = new Set<string>();
  for (const p of processes) {
    let text: string;
    try {
      text = readFileSync(path.join(proc, String(p.pid), "cgroup"), "utf8");
    } catch {
      continue;
    }
    const located = locateCgroup(mountinfo, text);
    if (!located.ok) continue;
    let top: string | undefined;
    for (let dir = located.dir; dir !== located.mount && owner(dir) === uid; ) {
      top = dir;
      dir = path.dirname(dir);
    }
    if (top !== undefined) tops.add(top);
  }
  return [...tops].sort();
}

/**
 * kill(-1, SIGKILL) from a shell running as the user: every process whose
 * real or saved uid is the user's, except the shell itself. False when the
 * shell could not even start (the other passes still run).
 */
async function killAllAs(user: StopTarget, runner: Runner): Promise<boolean> {
  try {
    await runner.run("/bin/sh", ["-c", "kill -9 -1"], {
      uid: user.uid,
      gid: user.gid,
      cwd: "/",
      env: { PATH: "/usr/bin:/bin" },
      allowFailure: true,
    });
    return true;
  } catch {
    return false;
  }
}

/** SIGKILL from root, after checking that the pid is still a process of the user. */
function killAsRoot(pid: number, uid: number, proc: string): void {
  try {
    const status = parseProcStatus(pid, readStatus(`${proc}/${pid}/status`));
    if (status !== undefined && runsAs(status, uid)) process.kill(pid, "SIGKILL");
  } catch {
    // Gone already.
  }
}

async function anyPopulated(cgroups: readonly string[]): Promise<boolean> {
  for (const dir of cgroups) if (await cgroupPopulated(dir).catch(() => false)) return true;
  return false;
}

/** Wait up to `ms` for no live process of the user and empty cgroups; what is left. */
async function gone(
  uid: number,
  cgroups: readonly string[],
  proc: string,
  ms: number,
): Promise<ProcStatus[]> {
  const deadline = Date.now() + ms;
  let pause = 1;
  for (;;) {
    const left = processesOf(uid, proc);
    if (left.length === 0 && !(await anyPopulated(cgroups))) return [];
    if (Date.now() >= deadline) return left;
    await sleep(pause);
    pause = Math.min(pause * 2, 25);
  }
}

async function describe(left: readonly ProcStatus[], cgroups: readonly string[]): Promise<string> {
  const parts = left.map((p) => `${p.pid} ${p.name} (state ${p.state})`);
  for (const dir of cgroups) {
    const pids = await cgroupPids(dir).catch(() => []);
    if (pids.length > 0) parts.push(`pids ${pids.join(" ")} in its cgroup ${dir}`);
  }
  return parts.join(", ");
}

/**
 * Stop every process of the user and verify that none is left; throws
 * FailedError naming the survivors when some outlive SIGKILL for `withinMs`
 * (a process stuck in the kernel: state D).
 */
export async function stopUser(user: StopTarget, options: StopOptions): Promise<StopResult> {
  // kill(-1) as root would end every process on the host.
  if (!Number.isInteger(user.uid) || user.uid <= 0)
    throw new Error(`refusing to stop every process of uid ${user.uid} (${user.name})`);
  const proc = options.proc ?? "/proc";
  const deadline = Date.now() + (options.withinMs ?? 5000);
  // The kill below runs whatever the scan says: a scan alone can miss a process that keeps
  // changing pid (see Scan.vanished), and the agent's daemon is there to kill anyway.
  const found = processesOf(user.uid, proc);
  const cgroups = ownCgroups(found, user.uid, proc);
  const killed = new Map(found.map((p) => [p.pid, p]));
  // Frozen first: between here and the kill nothing in them runs, forks or writes.
  for (const dir of cgroups) await freezeCgroup(dir, true).catch(() => {});
  try {
    let left: readonly ProcStatus[] = found;
    for (;;) {
      const asUser = await killAllAs(user, options.runner);
      for (const dir of cgroups) await killCgroup(dir).catch(() => []);
      // kill(-1) as the user reaches processes whose real or saved uid is the user's; one that
      // only has it as its effective uid (or when the shell could not start) gets root's SIGKILL.
      for (const p of left) {
        if (!asUser || (p.uids[0] !== user.uid && p.uids[2] !== user.uid))
          killAsRoot(p.pid, user.uid, proc);
      }
      left = await gone(
        user.uid,
        cgroups,
        proc,
        Math.max(0, Math.min(1000, deadline - Date.now())),
      );
      for (const p of left) killed.set(p.pid, p);
      if (left.length === 0 && !(await anyPopulated(cgroups))) break;
      if (Date.now() >= deadline) {
        throw new FailedError(
          `processes of ${user.name} (uid ${user.uid}) outlive SIGKILL: ${await describe(left, cgroups)}`,
        );
      }
    }
  } finally {
    // Thawed again (empty now): the next daemon is started into the same cgroup.
    for (const dir of cgroups) await freezeCgroup(dir, false).catch(() => {});
  }
  return { killed: [...killed.values()], cgroups };
}

/**
 * After a stop, prove that nothing started as the user since: a scan that
 * finds none and misses nothing (a listed process gone before it was read
 * may have been one that keeps changing pid; looked at again, three times
 * at most) ends it; anything else gets the whole stopUser.
 */
export async function ensureStopped(user: StopTarget, options: StopOptions): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const scan = scanProcesses(user.uid, options.proc);
    if (scan.found.length > 0) break;
    if (!scan.vanished) return;
  }
  await stopUser(user, options);
}
