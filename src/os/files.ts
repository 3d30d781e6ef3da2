/**
 * Atomic file writes for system files: a temp file beside the target,
 * fsynced, then renamed over it, so a crash leaves the old file or the new
 * one, never half of either.
 */
import { randomBytes } from "node:crypto";
import { chmod, chown, lstat, mkdir, open, rename, rm } from "node:fs/promises";
import path from "node:path";

export interface WriteOptions {
  readonly mode: number;
  readonly uid?: number;
  readonly gid?: number;
  /** Mode of parent directories created on the way. */
  readonly dirMode?: number;
}

export async function writeFileAtomic(
  file: string,
  content: string | Buffer,
  options: WriteOptions,
): Promise<void> {
  await makeDirs(path.dirname(file), options.dirMode ?? 0o755);
  const temp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`,
  );
  // Created with its final mode from the start: never briefly readable by others.
  const handle = await open(temp, "wx", options.mode);
  try {
    await handle.writeFile(content);
    await handle.chmod(options.mode);
    if (options.uid !== undefined) await handle.chown(options.uid, options.gid ?? options.uid);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temp, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/**
 * mkdir -p, then set owner and mode of the final directory only. Missing
 * parents are made 0755: a private mode on them would lock everyone out of
 * what lies below.
 */
export async function ensureDir(dir: string, mode: number, uid = 0, gid = 0): Promise<void> {
  await makeDirs(path.dirname(dir), 0o755);
  await mkdir(dir, { recursive: true, mode });
  await chmod(dir, mode);
  await chown(dir, uid, gid);
}

/**
 * mkdir -p where each directory it creates gets exactly `mode`, whatever
 * the umask (root's may be 077, which would make `/srv/town` of a fresh
 * `/srv/town/agents` unreachable to the agents below it). Directories that
 * already exist are left as they are.
 */
export async function makeDirs(dir: string, mode = 0o755): Promise<void> {
  const missing: string[] = [];
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    const info = await lstat(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return undefined;
      throw error;
    });
    if (info !== undefined) break;
    missing.push(current);
    if (path.dirname(current) === current) break;
  }
  for (const created of missing.reverse()) {
    await mkdir(created, { mode }).catch((error: NodeJS.ErrnoException) => {
      // Made meanwhile by someone else: theirs, and not ours to chmod.
      if (error.code !== "EEXIST") throw error;
    });
    await chmod(created, mode);
  }
}
