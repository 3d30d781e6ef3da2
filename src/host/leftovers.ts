/**
 * What an agent leaves outside its home, which a round clears so the fresh
 * agent starts without memory: its files in the shared temp dirs, its
 * crontab, its `at` jobs, and its private runtime dir (its TMPDIR with it).
 * Call only while no process of the agent runs (src/host/stop.ts).
 *
 * The temp dirs are shared with everyone, who may change them while they
 * are walked: every directory is opened without following symlinks and its
 * entries reached through the open descriptor (src/os/anchored.ts), the walk
 * never leaves the file system it started on nor enters a mount point, and
 * only entries owned by the agent's uid are removed. Only the agent's own
 * directories and those writable by group or others (the temp dirs
 * themselves, /tmp/.X11-unix, a shared scratch dir) are walked into: what
 * lies below a directory only its owner may write was put there by that
 * owner, and is theirs. So a /tmp full of other users' trees costs a look at
 * their top directories, not a walk through them.
 */
import { lstat, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { AnchoredDir } from "../os/anchored.ts";
import { ensureDir } from "../os/files.ts";
import type { MountEntry } from "../os/tables.ts";
import { agentTmpDir } from "./render/units.ts";

/** The temp dirs every user may write. */
export const SHARED_TEMP_DIRS: readonly string[] = ["/tmp", "/var/tmp", "/dev/shm"];

/** Where cron keeps each user's crontab, by user name (Debian, then Red Hat). */
export const CRONTAB_DIRS: readonly string[] = ["/var/spool/cron/crontabs", "/var/spool/cron"];

/** Where `at` keeps jobs and their output, one file per job owned by its user. */
export const AT_DIRS: readonly string[] = [
  "/var/spool/cron/atjobs",
  "/var/spool/cron/atspool",
  "/var/spool/at",
  "/var/spool/at/spool",
];

/** Deeper than this, a directory is left (and said so): no walk runs out of descriptors. */
const MAX_DEPTH = 200;

export interface SweepReport {
  /** How many entries were removed. */
  removed: number;
  /** The agent's directories that stay: they hold others' files, or lie too deep. */
  readonly kept: string[];
}

export interface TempSweep {
  readonly uid: number;
  /** The temp dirs to walk. @default SHARED_TEMP_DIRS */
  readonly roots?: readonly string[];
  /** Directories never entered (the town's own: its homes, persisted data, state). */
  readonly skip?: readonly string[];
  /** The mount table: no mount point below a root is entered. */
  readonly mounts?: readonly MountEntry[];
}

/** Remove every file and directory owned by `uid` below the shared temp dirs. */
export function sweepTempDirs(options: TempSweep): SweepReport {
  const report: SweepReport = { removed: 0, kept: [] };
  const skip = new Set<string>();
  for (const dir of options.skip ?? []) {
    try {
      const info = AnchoredDir.open(dir);
      skip.add(`${info.stats.dev}:${info.stats.ino}`);
      info.close();
    } catch {
      // Not there (or not a directory): nothing to keep out of.
    }
  }
  const mountPoints = new Set((options.mounts ?? []).map((m) => m.mountPoint));
  for (const root of options.roots ?? SHARED_TEMP_DIRS) {
    let dir: AnchoredDir;
    try {
      dir = AnchoredDir.open(root);
    } catch {
      continue; // missing, or a symlink: not walked
    }
    try {
      walk(dir, 0, { uid: options.uid, skip, mountPoints, report });
    } finally {
      dir.close();
    }
  }
  return report;
}

interface Walk {
  readonly uid: number;
  readonly skip: ReadonlySet<string>;
  readonly mountPoints: ReadonlySet<string>;
  readonly report: SweepReport;
}

function walk(dir: AnchoredDir, depth: number, w: Walk): void {
  let names: string[];
  try {
    names = dir.names();
  } catch {
    return;
  }
  for (const name of names) {
    let info: ReturnType<AnchoredDir["lstat"]>;
    try {
      info = dir.lstat(name);
    } catch {
      continue;
    }
    if (info === undefined) continue;
    const mine = info.uid === w.uid;
    if (!info.isDirectory()) {
      if (mine) remove(() => dir.unlink(name), w.report);
      continue;
    }
    const where = path.join(dir.path, name);
    if (
      info.dev !== dir.stats.dev ||
      w.mountPoints.has(where) ||
      w.skip.has(`${info.dev}:${info.ino}`)
    )
      continue;
    if (mine || (info.mode & 0o022) !== 0) {
      if (depth >= MAX_DEPTH) {
        if (mine) w.report.kept.push(where);
        continue;
      }
      let sub: AnchoredDir | undefined;
      try {
        sub = dir.openDir(name);
      } catch {
        // Replaced by a symlink or a file since the lstat: not ours to follow.
      }
      if (sub !== undefined) {
        try {
          // Swapped for another directory since the lstat: leave it.
          if (sub.stats.ino === info.ino && sub.stats.dev === info.dev) walk(sub, depth + 1, w);
        } finally {
          sub.close();
        }
      }
    }
    if (mine) {
      try {
        dir.rmdir(name);
        w.report.removed++;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOTEMPTY" || code === "EEXIST") w.report.kept.push(where);
      }
    }
  }
}

function remove(fn: () => void, report: SweepReport): void {
  try {
    fn();
    report.removed++;
  } catch {
    // Gone meanwhile, or replaced by a directory: the next round looks again.
  }
}

/**
 * The agent's crontab (by name) and its `at` jobs and their spooled output
 * (by owner): a job it queued last round must not run in this one.
 */
export function removeSpooledJobs(
  user: { readonly name: string; readonly uid: number },
  dirs: { readonly crontabs?: readonly string[]; readonly at?: readonly string[] } = {},
): number {
  let removed = 0;
  const each = (roots: readonly string[], pick: (name: string, uid: number) => boolean) => {
    for (const root of roots) {
      let dir: AnchoredDir;
      try {
        dir = AnchoredDir.open(root);
      } catch {
        continue;
      }
      try {
        for (const name of dir.names()) {
          const info = dir.lstat(name);
          if (info === undefined || info.isDirectory() || !pick(name, info.uid)) continue;
          try {
            dir.unlink(name);
            removed++;
          } catch {}
        }
      } catch {
        // Unreadable spool: nothing we can clear.
      } finally {
        dir.close();
      }
    }
  };
  each(dirs.crontabs ?? CRONTAB_DIRS, (name) => name === user.name);
  each(dirs.at ?? AT_DIRS, (_, uid) => uid === user.uid);
  return removed;
}

/**
 * Empty the agent's runtime dir (its daemon's socket, its tmux socket,
 * task scratch, its TMPDIR: all last round's) and make it and a private
 * TMPDIR again. The agent owns the runtime dir, but runs nothing now: what
 * it left there, symlinks included, is removed, never followed.
 */
export async function resetRuntimeDir(agent: {
  readonly runtimeDir: string;
  readonly uid: number;
  readonly gid: number;
}): Promise<void> {
  const info = await lstat(agent.runtimeDir).catch(() => undefined);
  if (info?.isDirectory()) {
    for (const name of await readdir(agent.runtimeDir))
      await rm(path.join(agent.runtimeDir, name), { recursive: true, force: true });
  } else if (info !== undefined) {
    await rm(agent.runtimeDir, { force: true });
  }
  // 0711: the mayor reaches the daemon's socket inside by name.
  await ensureDir(agent.runtimeDir, 0o711, agent.uid, agent.gid);
  await ensureDir(agentTmpDir(agent), 0o700, agent.uid, agent.gid);
}
