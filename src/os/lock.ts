/**
 * Lock files holding the owner's pid, created exclusively: one apply or
 * reset at a time on a host, and one actor at a time on an agent (its round,
 * or the supervisor starting its daemon). A lock left by a process that died
 * (or before a reboot) is taken over.
 */
import { open, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { RefusedError } from "../errors.ts";
import { ensureDir } from "./files.ts";

export async function withHostLock<T>(
  stateDir: string,
  what: string,
  work: () => Promise<T>,
): Promise<T> {
  await ensureDir(stateDir, 0o755);
  return withLockFile(path.join(stateDir, "lock"), what, work);
}

export interface LockOptions {
  /** Wait this long for a live holder to let go before refusing. @default 0 */
  readonly waitMs?: number;
  /** How often to look again while waiting. @default 25 */
  readonly pollMs?: number;
  /** Stop waiting (rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

/** Hold `file` while `work` runs (its directory must exist). */
export async function withLockFile<T>(
  file: string,
  what: string,
  work: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  await acquireLock(file, what, options);
  try {
    return await work();
  } finally {
    await releaseLock(file);
  }
}

export interface LockHolder {
  readonly pid: number;
  readonly what: string;
}

/** Take `file`, waiting up to `waitMs` while a live process holds it; RefusedError after. */
export async function acquireLock(
  file: string,
  what: string,
  options: LockOptions = {},
): Promise<void> {
  const deadline = Date.now() + (options.waitMs ?? 0);
  for (;;) {
    options.signal?.throwIfAborted();
    const holder = await tryLock(file, what);
    if (holder === undefined) return;
    if (Date.now() >= deadline) {
      throw new RefusedError(
        `another nuketown ${holder.what || "run"} (pid ${holder.pid}) holds ${file}; wait for it`,
      );
    }
    await sleep(options.pollMs ?? 25, undefined, { signal: options.signal });
  }
}

/** Let go of a lock this process holds (never one another process took over). */
export async function releaseLock(file: string): Promise<void> {
  const [pid] = (await readFile(file, "utf8").catch(() => "")).trim().split(" ");
  if (pid === String(process.pid)) await rm(file, { force: true });
}

/** The live process holding `file`, if any. */
export async function lockHolder(file: string): Promise<LockHolder | undefined> {
  const [pid, boot, ...rest] = (await readFile(file, "utf8").catch(() => "")).trim().split(" ");
  // A lock from before a reboot is stale even if its pid is in use again now.
  if (!pid || boot !== (await bootId()) || !(await isAlive(Number(pid)))) return undefined;
  return { pid: Number(pid), what: rest.join(" ") };
}

/** Take the lock, or say who holds it. */
async function tryLock(file: string, what: string): Promise<LockHolder | undefined> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, "wx", 0o644);
      await handle.writeFile(`${process.pid} ${await bootId()} ${what}\n`);
      await handle.close();
      return undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const holder = await lockHolder(file);
    if (holder !== undefined) return holder;
    await rm(file, { force: true });
  }
  throw new RefusedError(`could not take the lock ${file}`);
}

const bootId = () =>
  readFile("/proc/sys/kernel/random/boot_id", "utf8").then(
    (t) => t.trim(),
    () => "unknown",
  );

async function isAlive(pid: number): Promise<boolean> {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie (dead, not yet reaped) still answers signal 0.
  const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
}
