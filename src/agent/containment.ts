/**
 * Everything a task starts dies with it. Each task gets a cgroup v2 of its
 * own, `task-<id>` under the agent daemon's cgroup (delegated to the agent:
 * systemd's Delegate=yes, or `nuketown up` does the same), and its runtime
 * joins it before it execs; a process cannot leave it, whatever setsid or
 * double fork it does. Stopping a task signals every process in the cgroup,
 * kills what is left with cgroup.kill, waits for `populated 0` and removes
 * it. Where the daemon has no delegated cgroup (started by hand, cgroup v2
 * absent), the fallback is the runtime's process group plus a scan of /proc
 * for the agent's processes whose environment carries the task's
 * NUKETOWN_TASK_ID; the scan runs in both cases, so a window of a tmux server
 * started outside the daemon's cgroup is still found.
 *
 * The only code that touches /sys/fs/cgroup and /proc for this; the parsing
 * is src/agent/cgroup.ts.
 */
import { constants } from "node:fs";
import { access, chown, mkdir, readdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { startProcess } from "../os/process.ts";
import {
  environHas,
  locateCgroup,
  parseCgroupEvents,
  parsePids,
  TASK_CGROUP_PREFIX,
  TASK_MARKER,
  taskCgroupName,
} from "./cgroup.ts";
import type { TaskProcesses } from "./runtimes/types.ts";

/** How long stopping a task may take to see every process of it gone. */
const GONE_WITHIN_MS = 5000;
const POLL_MS = 20;
/** How long a SIGKILL keeps scanning for the marker while it still finds processes. */
const MARKER_KILL_MS = 1000;
/** The short-lived cgroup that shows, at start, that a process can be moved below ours. */
const PROBE_PREFIX = "probe-";

// ---- cgroup directories -----------------------------------------------------

/** This process's own cgroup v2 directory, or why there is none. */
export async function ownCgroup(
  proc = "/proc",
): Promise<{ ok: true; dir: string } | { ok: false; reason: string }> {
  try {
    const [mountinfo, cgroup] = await Promise.all([
      readFile(path.join(proc, "self", "mountinfo"), "utf8"),
      readFile(path.join(proc, "self", "cgroup"), "utf8"),
    ]);
    const located = locateCgroup(mountinfo, cgroup);
    return located.ok ? { ok: true, dir: located.dir } : located;
  } catch (error) {
    return { ok: false, reason: `cannot read ${proc}: ${(error as Error).message}` };
  }
}

/** The cgroup and every cgroup below it, deepest first (the order to remove them in). */
async function cgroupTree(dir: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = (await readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
  const below = await Promise.all(entries.map((name) => cgroupTree(path.join(dir, name))));
  return [...below.flat(), dir];
}

/** Pids in a cgroup and below it. */
export async function cgroupPids(dir: string): Promise<number[]> {
  const pids = await Promise.all(
    (await cgroupTree(dir)).map((d) =>
      readFile(path.join(d, "cgroup.procs"), "utf8").then(parsePids, () => []),
    ),
  );
  return pids.flat();
}

/** Whether any process lives in the cgroup or below it (false once the cgroup is gone). */
export async function cgroupPopulated(dir: string): Promise<boolean> {
  try {
    return parseCgroupEvents(await readFile(path.join(dir, "cgroup.events"), "utf8")).populated;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw error;
  }
}

/** Signal every process in the cgroup and below it; the pids it found there. */
export async function signalCgroup(dir: string, signal: NodeJS.Signals): Promise<number[]> {
  if (signal === "SIGKILL") return killCgroup(dir);
  const pids = await cgroupPids(dir);
  for (const pid of pids) sendSignal(pid, signal);
  return pids;
}

/**
 * SIGKILL everything in the cgroup and below it, at once: cgroup.kill (Linux
 * 5.14), else freeze it, kill each process and thaw (nothing can fork in
 * between). Returns the pids that were there.
 */
export async function killCgroup(dir: string): Promise<number[]> {
  const pids = await cgroupPids(dir);
  if (pids.length === 0) return [];
  try {
    await writeFile(path.join(dir, "cgroup.kill"), "1");
    return pids;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const freeze = path.join(dir, "cgroup.freeze");
  await writeFile(freeze, "1").catch(() => {});
  try {
    for (const pid of await cgroupPids(dir)) sendSignal(pid, "SIGKILL");
  } finally {
    await writeFile(freeze, "0").catch(() => {});
  }
  return pids;
}

/**
 * Freeze (or thaw) a cgroup and all below it: its processes stop where they
 * are and fork nothing until thawed; SIGKILL (cgroup.kill) still ends them.
 */
export async function freezeCgroup(dir: string, frozen: boolean): Promise<void> {
  await writeFile(path.join(dir, "cgroup.freeze"), frozen ? "1" : "0");
}

/** Wait until nothing lives in the cgroup; false when `withinMs` passed first. */
export async function cgroupEmptied(dir: string, withinMs = GONE_WITHIN_MS): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    if (!(await cgroupPopulated(dir))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(POLL_MS);
  }
}

/** Kill everything in the cgroup, wait until it is empty, remove it (and its children). */
export async function destroyCgroup(
  dir: string,
  withinMs = GONE_WITHIN_MS,
): Promise<{ killed: number; removed: boolean }> {
  const deadline = Date.now() + withinMs;
  const killed = new Set<number>();
  for (;;) {
    for (const pid of await killCgroup(dir).catch(() => [])) killed.add(pid);
    if (
      await cgroupEmptied(dir, Math.min(500, Math.max(0, deadline - Date.now()))).catch(() => true)
    )
      break;
    if (Date.now() >= deadline) return { killed: killed.size, removed: false };
  }
  let removed = true;
  for (const d of await cgroupTree(dir)) {
    try {
      await rmdir(d);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") removed = false;
    }
  }
  return { killed: killed.size, removed };
}

/**
 * Make a cgroup (and its parents) and hand it to `uid`, as systemd's
 * Delegate=yes does: the directory and the files that let its owner make
 * child cgroups and move its processes between them. Controllers are never
 * enabled: the daemon lives in this cgroup beside its tasks' children, which
 * cgroup v2 allows only while `cgroup.subtree_control` stays empty.
 */
export async function delegateCgroup(dir: string, uid: number, gid: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const file of ["", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"]) {
    await chown(path.join(dir, file), uid, gid);
  }
}

/** Move a process into a cgroup. */
export async function moveToCgroup(dir: string, pid: number): Promise<void> {
  await writeFile(path.join(dir, "cgroup.procs"), `${pid}\n`);
}

// ---- processes by marker ----------------------------------------------------

/**
 * Processes of `uid` whose environment has NUKETOWN_TASK_ID=<taskId>. A
 * process that cleared its environment is not found: that is what the
 * cgroup is for.
 */
export async function markedProcesses(
  taskId: string,
  options: { uid?: number; proc?: string } = {},
): Promise<number[]> {
  const proc = options.proc ?? "/proc";
  const uid = options.uid ?? process.getuid?.();
  let names: string[];
  try {
    names = await readdir(proc);
  } catch {
    return [];
  }
  const found = await Promise.all(
    names
      .filter((name) => /^[1-9][0-9]*$/.test(name) && Number(name) !== process.pid)
      .map(async (name) => {
        try {
          const dir = path.join(proc, name);
          if (uid !== undefined && (await stat(dir)).uid !== uid) return [];
          const environ = await readFile(path.join(dir, "environ"), "latin1");
          return environHas(environ, TASK_MARKER, taskId) ? [Number(name)] : [];
        } catch {
          // Gone meanwhile, or not ours to read.
          return [];
        }
      }),
  );
  return found.flat();
}

function sendSignal(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // ESRCH: gone already; EPERM: not ours.
  }
}

// ---- per task -----------------------------------------------------------------

export interface ContainerEnd {
  /** Processes killed because they outlived the runtime, by how they were found. */
  readonly killed: { readonly cgroup: number; readonly marker: number };
  /** Pids still alive when giving up (empty: verified gone). */
  readonly left: readonly number[];
  /** The task's cgroup could not be removed. */
  readonly cgroupLeft?: string;
}

export class TaskContainer implements TaskProcesses {
  readonly taskId: string;
  /** The task's cgroup directory; undefined in the fallback. */
  readonly cgroup: string | undefined;
  /** How the task's processes are kept, for the log. */
  readonly description: string;
  readonly #uid: number | undefined;
  readonly #proc: string;
  #closed = false;

  constructor(
    taskId: string,
    cgroup: string | undefined,
    description: string,
    options: { uid?: number; proc?: string } = {},
  ) {
    this.taskId = taskId;
    this.cgroup = cgroup;
    this.description = description;
    this.#uid = options.uid;
    this.#proc = options.proc ?? "/proc";
  }

  get joinFile(): string | undefined {
    return this.cgroup === undefined ? undefined : path.join(this.cgroup, "cgroup.procs");
  }

  async signal(signal: NodeJS.Signals): Promise<void> {
    await this.#signal(signal);
  }

  async #signal(signal: NodeJS.Signals): Promise<{ cgroup: number[]; marker: number[] }> {
    const cgroup =
      this.cgroup === undefined ? [] : await signalCgroup(this.cgroup, signal).catch(() => []);
    const marker = new Set<number>();
    // A scan misses what forks after it read /proc: SIGKILL scans again until one finds nothing
    // (a killed process drops out once it is dead: a zombie's environ is empty).
    const deadline = Date.now() + MARKER_KILL_MS;
    for (;;) {
      const found = await this.#marked();
      for (const pid of found) {
        sendSignal(pid, signal);
        marker.add(pid);
      }
      if (signal !== "SIGKILL" || found.length === 0 || Date.now() >= deadline) break;
      await sleep(5);
    }
    return { cgroup, marker: [...marker] };
  }

  #marked(): Promise<number[]> {
    return markedProcesses(this.taskId, {
      ...(this.#uid !== undefined && { uid: this.#uid }),
      proc: this.#proc,
    });
  }

  /**
   * The task is over: kill whatever of it is still alive, make sure it is
   * gone (the cgroup says `populated 0`, no marked process is left), and
   * remove the cgroup. Never throws.
   */
  async close(withinMs = GONE_WITHIN_MS): Promise<ContainerEnd> {
    const cgroup = new Set<number>();
    const marker = new Set<number>();
    const end = (left: number[], cgroupLeft?: string): ContainerEnd => ({
      killed: { cgroup: cgroup.size, marker: [...marker].filter((p) => !cgroup.has(p)).length },
      left,
      ...(cgroupLeft !== undefined && { cgroupLeft }),
    });
    if (this.#closed) return end([]);
    this.#closed = true;
    const deadline = Date.now() + withinMs;
    let left: number[] = [];
    for (;;) {
      const round = await this.#signal("SIGKILL").catch(() => ({ cgroup: [], marker: [] }));
      for (const pid of round.cgroup) cgroup.add(pid);
      for (const pid of round.marker) marker.add(pid);
      const populated =
        this.cgroup !== undefined && (await cgroupPopulated(this.cgroup).catch(() => false));
      left = [
        ...(populated && this.cgroup !== undefined ? await cgroupPids(this.cgroup) : []),
        ...(await this.#marked()),
      ];
      if (!populated && left.length === 0) break;
      if (Date.now() >= deadline) break;
      await sleep(POLL_MS);
    }
    if (this.cgroup === undefined) return end(left);
    const { removed } = await destroyCgroup(this.cgroup, Math.max(0, deadline - Date.now())).catch(
      () => ({ removed: false }),
    );
    return end(left, removed ? undefined : this.cgroup);
  }
}

export interface TaskContainmentOptions {
  /** Where proc is mounted. @default "/proc" */
  readonly proc?: string;
  /** Whose processes the marker scan looks at. @default this process's uid */
  readonly uid?: number;
}

/** Makes each task's container: a cgroup under the daemon's own when it is delegated, else the fallback. */
export class TaskContainment {
  /** The daemon's cgroup, when its tasks get cgroups below it. */
  readonly cgroup: string | undefined;
  /** Why there are no task cgroups. */
  readonly reason: string | undefined;
  readonly #options: TaskContainmentOptions;

  private constructor(
    cgroup: string | undefined,
    reason: string | undefined,
    options: TaskContainmentOptions,
  ) {
    this.cgroup = cgroup;
    this.reason = reason;
    this.#options = options;
  }

  /**
   * Find the daemon's own cgroup and check, by moving a short-lived process
   * into a child of it, that tasks can be put in cgroups there; remove what
   * an earlier daemon's tasks left in it.
   */
  static async detect(options: TaskContainmentOptions = {}): Promise<TaskContainment> {
    const fallback = (reason: string) => new TaskContainment(undefined, reason, options);
    const own = await ownCgroup(options.proc);
    if (!own.ok) return fallback(own.reason);
    const dir = own.dir;
    try {
      await access(path.join(dir, "cgroup.procs"), constants.W_OK);
      await access(dir, constants.W_OK);
    } catch {
      return fallback(`its cgroup ${dir} is not delegated to it`);
    }
    for (const name of await readdir(dir).catch(() => [])) {
      if (name.startsWith(TASK_CGROUP_PREFIX) || name.startsWith(PROBE_PREFIX))
        await destroyCgroup(path.join(dir, name), 2000);
    }
    const probe = path.join(dir, `${PROBE_PREFIX}${process.pid}`);
    try {
      await mkdir(probe);
      await joinFromChild(path.join(probe, "cgroup.procs"));
    } catch (error) {
      return fallback(`cannot put a process in a cgroup under ${dir}: ${(error as Error).message}`);
    } finally {
      await destroyCgroup(probe, 2000).catch(() => {});
    }
    return new TaskContainment(dir, undefined, options);
  }

  /** One line for the daemon's log: how tasks are contained. */
  describe(): string {
    return this.cgroup !== undefined
      ? `each task runs in its own cgroup under ${this.cgroup}`
      : `tasks run without a cgroup (${this.reason}): what they start is found by its process group and ${TASK_MARKER}, and a process that leaves both can outlive its task`;
  }

  /** The task's container; a cgroup that cannot be made falls back, saying why. Never throws. */
  async forTask(taskId: string): Promise<TaskContainer> {
    const options = {
      ...(this.#options.uid !== undefined && { uid: this.#options.uid }),
      ...(this.#options.proc !== undefined && { proc: this.#options.proc }),
    };
    if (this.cgroup === undefined)
      return new TaskContainer(
        taskId,
        undefined,
        `no cgroup (${this.reason}): process group and ${TASK_MARKER}`,
        options,
      );
    const dir = path.join(this.cgroup, taskCgroupName(taskId));
    try {
      await mkdir(dir);
      return new TaskContainer(taskId, dir, `cgroup ${dir}`, options);
    } catch (error) {
      return new TaskContainer(
        taskId,
        undefined,
        `no cgroup (cannot make ${dir}: ${(error as Error).message}): process group and ${TASK_MARKER}`,
        options,
      );
    }
  }
}

/** Start `sh` that writes its pid into `procsFile`; resolves when it did, rejects with its complaint. */
function joinFromChild(procsFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = startProcess("/bin/sh", ["-c", 'echo $$ > "$1"', "nuketown-probe", procsFile], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve() : reject(new Error(stderr.trim() || `sh exited ${code}`)),
    );
  });
}
