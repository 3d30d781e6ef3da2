/**
 * Persisted paths: the data lives under `<persistDir>/agents/<name>/` and is
 * bind-mounted onto the home each round. Nothing here ever deletes persisted
 * data; only `purgePersisted` does, for `apply --purge` of a removed agent.
 */
import { lchown, lstat, mkdir, open, realpath, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { RefusedError } from "../errors.ts";
import { readMountinfo } from "../os/etc.ts";
import { ensureDir } from "../os/files.ts";
import type { Runner } from "../os/process.ts";
import { mountsBelow } from "../os/tables.ts";
import type { PersistedPath, ResolvedAgent, ResolvedTown } from "../town/types.ts";

/** The host's mounts now. */
export const readMounts = () => readMountinfo();

/**
 * Create each missing directory from `base` down to `dir`, owned by the
 * agent. An existing symlink on the way is refused: following it as root
 * would hand the agent someone else's files.
 */
async function ensureOwnedPath(base: string, dir: string, agent: ResolvedAgent): Promise<void> {
  const parts = path
    .relative(base, dir)
    .split(path.sep)
    .filter((p) => p !== "");
  let current = base;
  for (const part of parts) {
    current = path.join(current, part);
    const info = await lstat(current).catch(() => undefined);
    if (info === undefined) {
      await mkdir(current, { mode: 0o700 });
      // lchown: if the path was swapped for a symlink meanwhile, never hand its target over.
      await lchown(current, agent.uid, agent.gid);
    } else if (!info.isDirectory()) {
      throw new RefusedError(
        `${current} should be a directory but is ${info.isSymbolicLink() ? "a symlink" : "a file"}`,
      );
    }
  }
}

async function ensureOwnedFile(file: string, agent: ResolvedAgent): Promise<void> {
  const info = await lstat(file).catch(() => undefined);
  if (info === undefined) {
    const handle = await open(file, "wx", 0o600);
    await handle.chown(agent.uid, agent.gid);
    await handle.close();
  } else if (!info.isFile()) {
    throw new RefusedError(
      `${file} should be a file but is ${info.isSymbolicLink() ? "a symlink" : "a directory"}`,
    );
  }
}

/** The agent's persist root, and the source of every persisted path, created if missing. */
export async function ensurePersistSources(
  town: ResolvedTown,
  agent: ResolvedAgent,
): Promise<void> {
  // Root only: agents reach their data through the binds, never through each other's persist roots.
  await ensureDir(path.join(town.persistDir, "agents"), 0o700);
  const rootInfo = await lstat(agent.persistRoot).catch(() => undefined);
  if (rootInfo === undefined) await ensureDir(agent.persistRoot, 0o700, agent.uid, agent.gid);
  else if (!rootInfo.isDirectory())
    throw new RefusedError(`${agent.persistRoot} should be a directory`);
  for (const p of agent.persist) {
    if (p.type === "directory") {
      await ensureOwnedPath(agent.persistRoot, p.source, agent);
    } else {
      await ensureOwnedPath(agent.persistRoot, path.dirname(p.source), agent);
      await ensureOwnedFile(p.source, agent);
    }
  }
}

/**
 * Bind every persisted path onto the home. Call only while the agent has
 * no processes (right after a rollback): the targets are created in a home
 * the agent cannot touch meanwhile. The binds are made by one `mount --all`
 * of an fstab written for them in `scratch` (a directory only root writes):
 * a round pays for starting one program, not one per persisted path.
 */
export async function mountPersisted(
  agent: ResolvedAgent,
  runner: Runner,
  scratch: string,
): Promise<void> {
  const mounted = new Set((await readMounts()).map((m) => m.mountPoint));
  const wanted = agent.persist.filter((p) => !mounted.has(p.target));
  const nested = (p: PersistedPath) =>
    wanted.some((q) => q !== p && p.target.startsWith(`${q.target}/`));
  // A bind inside another: its target is made in what the outer bind shows, once it is there.
  const outer = wanted.filter((p) => !nested(p));
  const inner = wanted.filter(nested).sort((a, b) => a.target.length - b.target.length);
  await bindAll(agent, outer, runner, scratch);
  for (const p of inner) await bindAll(agent, [p], runner, scratch);
  const now = new Set((await readMounts()).map((m) => m.mountPoint));
  for (const p of wanted) {
    if (!now.has(p.target))
      throw new RefusedError(
        `the bind mount for ${p.target} did not land there; check the mount table`,
      );
  }
}

/** fstab's escapes for a path: space, tab, newline and backslash as \ooo (fstab(5)). */
export function fstabPath(file: string): string {
  return file.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, "0")}`);
}

async function bindAll(
  agent: ResolvedAgent,
  binds: readonly PersistedPath[],
  runner: Runner,
  scratch: string,
): Promise<void> {
  if (binds.length === 0) return;
  for (const p of binds) {
    await ensureTarget(agent, p);
    // mount follows symlinks: refuse a target that is not where it should be, and check where
    // the mount landed, so a path swapped under us can never put an agent's data over a system dir.
    if ((await realpath(p.target)) !== p.target) {
      throw new RefusedError(`${p.target} resolves elsewhere (a symlink on the way); not mounting`);
    }
  }
  // Read once by mount and removed: no fsync, nothing to keep across a crash.
  const fstab = path.join(scratch, `${agent.name}.fstab`);
  await writeFile(
    fstab,
    binds.map((p) => `${fstabPath(p.source)} ${fstabPath(p.target)} none bind 0 0\n`).join(""),
    { mode: 0o600 },
  );
  try {
    await runner.run("mount", ["--all", "--fstab", fstab]);
  } finally {
    await rm(fstab, { force: true });
  }
}

async function ensureTarget(agent: ResolvedAgent, p: PersistedPath): Promise<void> {
  if (p.type === "directory") {
    await ensureOwnedPath(agent.home, p.target, agent);
  } else {
    await ensureOwnedPath(agent.home, path.dirname(p.target), agent);
    await ensureOwnedFile(p.target, agent);
  }
}

/** Unmount everything mounted below `dir`, deepest first (in one `umount` when none is busy). */
export async function unmountBelow(dir: string, runner: Runner): Promise<void> {
  const below = mountsBelow(await readMounts(), dir).filter((m) => m.mountPoint !== dir);
  if (below.length === 0) return;
  const all = await runner.run(
    "umount",
    below.map((m) => m.mountPoint),
    { allowFailure: true },
  );
  if (all.code === 0) return;
  for (const mount of mountsBelow(await readMounts(), dir)) {
    if (mount.mountPoint === dir) continue;
    const result = await runner.run("umount", [mount.mountPoint], { allowFailure: true });
    // Busy despite the stopped agent (a human's shell in it): detach lazily so the round can go on.
    if (result.code !== 0) await runner.run("umount", ["--lazy", mount.mountPoint]);
  }
}

/** Delete an agent's persisted data: only for `--purge` of a removed agent. */
export async function purgePersisted(town: ResolvedTown, name: string): Promise<void> {
  await rm(path.join(town.persistDir, "agents", name), { recursive: true, force: true });
}
