/**
 * What an agent leaves outside its home, which a round clears so the fresh
 * agent starts without memory: its files in the shared temp dirs (POSIX
 * shared memory and message queues among them), its crontab, its `at` jobs,
 * its System V IPC objects, the keys in its kernel keyrings, and its private
 * runtime dir (its TMPDIR with it). All of these outlive every process of
 * the uid. Call only while no process of the agent runs (src/host/stop.ts).
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
import { lstat, readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { AnchoredDir } from "../os/anchored.ts";
import { ensureDir } from "../os/files.ts";
import type { Runner } from "../os/process.ts";
import type { MountEntry } from "../os/tables.ts";
import { agentTmpDir } from "./render/units.ts";

/** The temp dirs every user may write (POSIX message queues: where the mqueue fs is mounted). */
export const SHARED_TEMP_DIRS: readonly string[] = ["/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"];

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

// ---- System V IPC and keyrings ----------------------------------------------------

export type SysvKind = "shm" | "sem" | "msg";

/** The tables the kernel lists System V IPC objects in, one per kind. */
export const SYSV_TABLES: Readonly<Record<SysvKind, string>> = {
  shm: "/proc/sysvipc/shm",
  sem: "/proc/sysvipc/sem",
  msg: "/proc/sysvipc/msg",
};

const SYSV_ID_COLUMN: Readonly<Record<SysvKind, string>> = {
  shm: "shmid",
  sem: "semid",
  msg: "msqid",
};

export interface SysvObject {
  readonly kind: SysvKind;
  readonly id: number;
}

/**
 * The objects in one /proc/sysvipc table that `uid` owns or created (either
 * may be changed apart with IPC_SET). Columns are found by the header's
 * names: their order differs by kind and kernel.
 */
export function sysvObjectsOf(kind: SysvKind, table: string, uid: number): SysvObject[] {
  const [header, ...rows] = table.split("\n").filter((line) => line.trim() !== "");
  const columns = header?.trim().split(/\s+/) ?? [];
  const idAt = columns.indexOf(SYSV_ID_COLUMN[kind]);
  const owners = ["uid", "cuid"].map((name) => columns.indexOf(name));
  if (idAt < 0 || owners.some((at) => at < 0)) return [];
  const found: SysvObject[] = [];
  for (const row of rows) {
    const fields = row.trim().split(/\s+/);
    if (!owners.some((at) => Number(fields[at]) === uid)) continue;
    const id = Number(fields[idAt]);
    if (Number.isInteger(id) && id >= 0) found.push({ kind, id });
  }
  return found;
}

/** `ipcrm` arguments removing each object by id. */
export function ipcrmArgs(objects: readonly SysvObject[]): string[] {
  const flag: Record<SysvKind, string> = { shm: "-m", sem: "-s", msg: "-q" };
  return objects.flatMap((o) => [flag[o.kind], String(o.id)]);
}

/**
 * Remove the System V shared memory, semaphores and message queues the
 * uid owns or created: they stay in the kernel after its last process, and
 * a new round could read last round's. One `ipcrm` when there are any.
 * Returns how many were asked to go.
 */
export async function removeSysvIpc(
  uid: number,
  runner: Runner,
  tables: Readonly<Record<SysvKind, string>> = SYSV_TABLES,
): Promise<number> {
  const objects: SysvObject[] = [];
  for (const kind of Object.keys(tables) as SysvKind[]) {
    const text = await readFile(tables[kind], "utf8").catch(() => "");
    objects.push(...sysvObjectsOf(kind, text, uid));
  }
  if (objects.length === 0) return 0;
  // One gone meanwhile (its owner was the agent: nobody else removes it) fails alone.
  await runner.run("ipcrm", ipcrmArgs(objects), { allowFailure: true });
  return objects.length;
}

/**
 * How many keys `uid` owns by /proc/key-users (its user and user-session
 * keyrings count among them); 0 when it owns none.
 */
export function keysOwnedBy(keyUsers: string, uid: number): number {
  for (const line of keyUsers.split("\n")) {
    const match = /^\s*(\d+):\s+\d+\s+(\d+)\//.exec(line);
    if (match && Number(match[1]) === uid) return Number(match[2]);
  }
  return 0;
}

/** keyctl(2)'s number where Perl cannot look it up (syscall.ph is not in perl-base). */
const KEYCTL_SYSCALL: Readonly<Partial<Record<NodeJS.Architecture, number>>> = {
  x64: 250,
  arm64: 219,
};

/**
 * As the agent: its persistent keyring invalidated (KEYCTL_GET_PERSISTENT
 * links it into the user keyring first), then its user and user-session
 * keyrings cleared (KEYCTL_CLEAR). Only the user itself can reach them.
 */
const CLEAR_KEYRINGS =
  "my $k = shift; my $p = syscall($k, 22, -1, -4); syscall($k, 21, $p) if $p > 0; " +
  "syscall($k, 7, -4) == 0 or die qq(user keyring: $!\\n); syscall($k, 7, -5) == 0 or die qq(user session keyring: $!\\n);";

/**
 * Empty the uid's kernel keyrings: since Linux 5.3 its user keyrings stay
 * registered after its last process ends, and what it put there (a token,
 * a note to its next self) would be found again. Runs a Perl as the agent
 * only when it holds more than its two user keyrings. Returns a warning
 * when it could not.
 */
export async function clearKeyrings(
  user: { readonly uid: number; readonly gid: number },
  runner: Runner,
  keyUsers = "/proc/key-users",
): Promise<string | undefined> {
  const owned = keysOwnedBy(await readFile(keyUsers, "utf8").catch(() => ""), user.uid);
  if (owned <= 2) return undefined;
  const keyctl = KEYCTL_SYSCALL[process.arch];
  if (keyctl === undefined)
    return `its kernel keyrings hold ${owned} keys, which nuketown cannot clear on ${process.arch}`;
  try {
    await runner.run("perl", ["-e", CLEAR_KEYRINGS, String(keyctl)], {
      uid: user.uid,
      gid: user.gid,
      cwd: "/",
      env: { PATH: "/usr/bin:/bin" },
    });
    return undefined;
  } catch (error) {
    return `its kernel keyrings were not cleared: ${(error as Error).message}`;
  }
}
