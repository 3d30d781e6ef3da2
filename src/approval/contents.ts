/**
 * The gate's file system side of agent-writable files (writable.ts): the
 * probe that answers from the real file system, content hashes, and the
 * root-owned copy an agent-writable program runs from.
 */
import { createHash } from "node:crypto";
import { constants, lstatSync, readlinkSync, type Stats } from "node:fs";
import { chmod, lstat, mkdir, mkdtemp, open, rm } from "node:fs/promises";
import path from "node:path";
import { systemRunner } from "../os/process.ts";
import type { AgentIdentity, Inode, WritableProbe } from "./writable.ts";

const kindOf = (info: Stats): Inode["kind"] =>
  info.isSymbolicLink()
    ? "symlink"
    : info.isDirectory()
      ? "directory"
      : info.isFile()
        ? "file"
        : "other";

/**
 * The real file system, seen by root. ACLs come from `getfacl` (it sits
 * beside `setfacl`), asked only where the mode leaves it open; when it
 * cannot answer, the file counts as writable.
 */
export function fileSystemProbe(getfacl: string): WritableProbe {
  const acls = new Map<string, Promise<boolean>>();
  return {
    // Synchronous: a few lstat calls cost microseconds, the thread pool's round trips a lot more.
    async lstat(file) {
      const info = lstatSync(file, { throwIfNoEntry: false });
      return info && { uid: info.uid, gid: info.gid, mode: info.mode & 0o7777, kind: kindOf(info) };
    },
    async readlink(file) {
      try {
        return readlinkSync(file);
      } catch {
        return undefined;
      }
    },
    aclWrite(file, who) {
      const cached = acls.get(file);
      if (cached) return cached;
      const answer = aclGrantsWrite(getfacl, file, who);
      acls.set(file, answer);
      return answer;
    },
  };
}

async function aclGrantsWrite(getfacl: string, file: string, who: AgentIdentity): Promise<boolean> {
  try {
    const result = await systemRunner.run(
      getfacl,
      ["--omit-header", "--numeric", "--absolute-names", "--", file],
      { allowFailure: true, timeoutMs: 5000 },
    );
    if (result.code !== 0) return true;
    let mask = "rwx";
    const entries: { tag: string; id: string; perms: string }[] = [];
    for (const line of result.stdout.split("\n")) {
      const [tag = "", id = "", perms = ""] = line.replace(/\s*#.*$/, "").split(":");
      if (tag === "mask") mask = perms;
      else if (tag === "user" || tag === "group") entries.push({ tag, id, perms });
    }
    if (!mask.includes("w")) return false;
    return entries.some(
      (e) =>
        e.id !== "" &&
        e.perms.includes("w") &&
        (e.tag === "user"
          ? Number(e.id) === who.uid ||
            who.subuids.some(
              ([first, count]) => Number(e.id) >= first && Number(e.id) < first + count,
            )
          : who.gids.has(Number(e.id)) ||
            who.subgids.some(
              ([first, count]) => Number(e.id) >= first && Number(e.id) < first + count,
            )),
    );
  } catch {
    // No getfacl: nobody can say that no ACL lets the agent write.
    return true;
  }
}

/** Opened for reading without blocking on a FIFO or taking a terminal; only a regular file is read. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;
const CHUNK = 1 << 20;

/** sha256 of a regular file's contents; throws on anything else. */
export async function hashFile(file: string): Promise<string> {
  const handle = await open(file, READ_FLAGS);
  try {
    if (!(await handle.stat()).isFile()) throw new Error(`${file} is not a regular file`);
    const hash = createHash("sha256");
    const buffer = Buffer.alloc(CHUNK);
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, CHUNK, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
    }
    return hash.digest("hex");
  } finally {
    await handle.close();
  }
}

/**
 * Copy `file` into a new directory under `dir` (root-owned, 0711) as a
 * root-owned 0555 file of the same name, hashing the bytes as they are
 * written: what was hashed is what runs. `dir` must be root's and writable
 * by nobody else. Returns the copy and its hash; `remove` deletes it.
 */
export async function rootCopy(
  file: string,
  dir: string,
): Promise<{ copy: string; sha256: string; remove: () => Promise<void> }> {
  await mkdir(dir, { recursive: true, mode: 0o711 });
  const info = await lstat(dir);
  if (!info.isDirectory() || info.uid !== 0 || (info.mode & 0o022) !== 0)
    throw new Error(`${dir} must be a directory of root's that nobody else can write`);
  const holder = await mkdtemp(path.join(dir, "run-"));
  const remove = () => rm(holder, { recursive: true, force: true });
  try {
    // Others (a target user who is not root) may enter, not list.
    await chmod(holder, 0o711);
    const copy = path.join(holder, path.basename(file));
    const source = await open(file, READ_FLAGS);
    try {
      if (!(await source.stat()).isFile()) throw new Error(`${file} is not a regular file`);
      const target = await open(
        copy,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o555,
      );
      const hash = createHash("sha256");
      try {
        const buffer = Buffer.alloc(CHUNK);
        for (;;) {
          const { bytesRead } = await source.read(buffer, 0, CHUNK, null);
          if (bytesRead === 0) break;
          const bytes = buffer.subarray(0, bytesRead);
          hash.update(bytes);
          for (let done = 0; done < bytes.length; )
            done += (await target.write(bytes, done, bytes.length - done)).bytesWritten;
        }
        // The umask must not take r/x away from a target user who is not root.
        await target.chmod(0o555);
      } finally {
        await target.close();
      }
      return { copy, sha256: hash.digest("hex"), remove };
    } finally {
      await source.close();
    }
  } catch (error) {
    await remove();
    throw error;
  }
}
