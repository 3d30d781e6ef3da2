/**
 * cgroup v2, read from text: where the unified hierarchy is mounted, which
 * cgroup a process is in, what `cgroup.events` and `cgroup.procs` say, and
 * whether a process's environment carries a task's marker. Also the shell
 * lines that put a process into a cgroup before it execs anything. Pure: the
 * file system side is src/agent/containment.ts.
 */
import path from "node:path";
import { parseMountinfo } from "../os/tables.ts";

/** Each task's cgroup, under the agent daemon's own: `task-<id>`. */
export const TASK_CGROUP_PREFIX = "task-";

/** The variable every process of a task inherits; found in /proc/<pid>/environ when no cgroup holds the task. */
export const TASK_MARKER = "NUKETOWN_TASK_ID";

export function taskCgroupName(taskId: string): string {
  return `${TASK_CGROUP_PREFIX}${taskId}`;
}

/**
 * A process's cgroup v2 path (relative to its cgroup namespace's root) from
 * its /proc/<pid>/cgroup: the `0::` line. Undefined on a host without the
 * unified hierarchy, or when the cgroup was removed under it.
 */
export function unifiedCgroupPath(procCgroup: string): string | undefined {
  for (const line of procCgroup.split("\n")) {
    if (!line.startsWith("0::")) continue;
    const cgroup = line.slice(3).trim();
    if (!cgroup.startsWith("/") || cgroup.endsWith(" (deleted)")) return undefined;
    return cgroup;
  }
  return undefined;
}

export type CgroupLocation =
  | { readonly ok: true; readonly mount: string; readonly dir: string }
  | { readonly ok: false; readonly reason: string };

/**
 * The directory of a process's own cgroup v2, from /proc/self/mountinfo and
 * /proc/self/cgroup: a cgroup2 mount whose root holds the cgroup, joined
 * with the rest of its path. A hybrid host mounts it at
 * /sys/fs/cgroup/unified, a unified one at /sys/fs/cgroup; never assumed.
 */
export function locateCgroup(mountinfo: string, procCgroup: string): CgroupLocation {
  const cgroup = unifiedCgroupPath(procCgroup);
  if (cgroup === undefined)
    return {
      ok: false,
      reason: "the process is in no cgroup v2 (no 0:: line in /proc/self/cgroup)",
    };
  const mounts = parseMountinfo(mountinfo).filter((m) => m.fsType === "cgroup2");
  if (mounts.length === 0) return { ok: false, reason: "no cgroup2 file system is mounted" };
  // The mount whose root is the longest prefix of our path: a mount of a subtree (a container's
  // bind mount) shows only what lies below its root.
  const fits = mounts
    .filter((m) => m.root === "/" || cgroup === m.root || cgroup.startsWith(`${m.root}/`))
    .sort((a, b) => b.root.length - a.root.length);
  const mount = fits[0];
  if (!mount)
    return {
      ok: false,
      reason: `no cgroup2 mount shows ${cgroup} (mounted: ${mounts.map((m) => `${m.mountPoint} of ${m.root}`).join(", ")})`,
    };
  const rest = mount.root === "/" ? cgroup : cgroup.slice(mount.root.length);
  const dir = path.join(mount.mountPoint, rest);
  return { ok: true, mount: mount.mountPoint, dir: dir.length > 1 ? dir.replace(/\/+$/, "") : dir };
}

export interface CgroupEvents {
  /** A process lives in this cgroup or below it. */
  readonly populated: boolean;
  readonly frozen: boolean;
}

/** `cgroup.events`: `populated 0|1` and `frozen 0|1`, one per line. */
export function parseCgroupEvents(text: string): CgroupEvents {
  const values = new Map<string, string>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) values.set(key, value);
  }
  return { populated: values.get("populated") === "1", frozen: values.get("frozen") === "1" };
}

/** `cgroup.procs` (or `cgroup.threads`): one pid per line. */
export function parsePids(text: string): number[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /^[1-9][0-9]*$/.test(line))
    .map(Number);
}

/** Whether a NUL-separated environment (/proc/<pid>/environ) has `name=value` exactly. */
export function environHas(environ: string, name: string, value: string): boolean {
  const entry = `${name}=${value}`;
  return environ.split("\0").includes(entry);
}

/**
 * `sh -c` text that writes the shell's own pid into the cgroup.procs file
 * given as its first argument and execs the rest: nothing the command starts
 * can run before it is in the cgroup. Fails (exit 125, saying why) when it
 * cannot join, unless `optional`: then the command runs where it is (a tmux
 * server started outside the daemon's cgroup cannot move its panes into it).
 */
export function joinCgroupScript(
  options: { optional?: boolean; stdinFile?: boolean } = {},
): string {
  const join = options.optional
    ? 'echo $$ > "$1" 2>/dev/null'
    : 'echo $$ > "$1" || { echo "nuketown: cannot join the task\'s cgroup ($1)" >&2; exit 125; }';
  const exec = options.stdinFile ? 'exec "$@" < "$NUKETOWN_TASK_FILE"' : 'exec "$@"';
  return `${join}; shift; ${exec}`;
}

/**
 * `sh -c` text that waits for one line on stdin (sent once its parent has put
 * it in its cgroup: a process starting as another user cannot move itself out
 * of root's cgroup) and then execs the rest with stdin from /dev/null.
 */
export const GATED_EXEC_SCRIPT = 'read -r _ || exit 1; exec "$@" < /dev/null';
