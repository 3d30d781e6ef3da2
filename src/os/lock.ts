/**
 * One apply or reset at a time: a lock file holding the owner's pid,
 * created exclusively. A lock left by a process that died is taken over.
 */
import { open, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { RefusedError } from "../errors.ts";
import { ensureDir } from "./files.ts";

export async function withHostLock<T>(
  stateDir: string,
  what: string,
  work: () => Promise<T>,
): Promise<T> {
  await ensureDir(stateDir, 0o755);
  const file = path.join(stateDir, "lock");
  await acquire(file, what);
  try {
    return await work();
  } finally {
    await rm(file, { force: true });
  }
}

async function acquire(file: string, what: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(file, "wx", 0o644);
      await handle.writeFile(`${process.pid} ${await bootId()} ${what}\n`);
      await handle.close();
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const [pid, boot, ...rest] = (await readFile(file, "utf8").catch(() => "")).trim().split(" ");
    // A lock from before a reboot is stale even if its pid is in use again now.
    if (pid && boot === (await bootId()) && (await isAlive(Number(pid)))) {
      throw new RefusedError(
        `another nuketown ${rest.join(" ") || "run"} (pid ${pid}) holds ${file}; wait for it`,
      );
    }
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
