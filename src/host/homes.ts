/**
 * Ephemeral homes. With btrfs (a device, or an image file nuketown formats
 * and loop-mounts) each home is a subvolume snapshotted from a blank one,
 * so rolling back costs the same whatever the home holds. The directory
 * backend wipes file by file: the slow path, for hosts without btrfs.
 */
import { lstatSync, mkdirSync, renameSync } from "node:fs";
import { chmod, lstat, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import { ensureDir, makeDirs } from "../os/files.ts";
import type { Runner } from "../os/process.ts";
import type { MountEntry } from "../os/tables.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { unmountBelow } from "./persist.ts";
import { isDeviceSpec } from "./plan.ts";

/** Blank snapshots live beside the homes, out of agents' reach (root, 0700). */
export const blankDir = (town: ResolvedTown) => path.join(town.agentsDir, ".nuketown-blank");
export const blankOf = (town: ResolvedTown, agent: ResolvedAgent) =>
  path.join(blankDir(town), agent.name);

/** A btrfs subvolume's root directory always has inode 256. */
const SUBVOLUME_INODE = 256;

export async function isSubvolume(dir: string): Promise<boolean> {
  const info = await lstat(dir).catch(() => undefined);
  return info?.isDirectory() === true && info.ino === SUBVOLUME_INODE;
}

export async function exists(file: string): Promise<boolean> {
  return lstat(file).then(
    () => true,
    () => false,
  );
}

/** The mount that holds the agents dir, when something is mounted exactly there. */
export function agentsMount(
  town: ResolvedTown,
  mounts: readonly MountEntry[],
): MountEntry | undefined {
  return mounts.findLast((m) => m.mountPoint === town.agentsDir);
}

const usesBtrfs = (town: ResolvedTown) => town.homes.backend !== "directory";

/** Create the image file (sparse) and format it, when it does not exist yet. */
export async function createImage(town: ResolvedTown, runner: Runner): Promise<void> {
  const image = town.homes.image.path;
  // Existing directories are left alone (the image may sit in one that is not ours); missing
  // ones are made 0755, since the image's directory is often the state dir beside the homes
  // (a private /srv/town would lock the agents out of /srv/town/agents).
  await makeDirs(path.dirname(image), 0o755);
  await runner.run("truncate", ["--size", town.homes.image.size, image]);
  // The image holds every home: nobody but root reads it raw.
  await chmod(image, 0o600);
  await runner.run("mkfs.btrfs", [
    "--quiet",
    "--label",
    `nuketown-${town.name}`.slice(0, 255),
    image,
  ]);
}

/** Mount the filesystem that holds homes at the agents dir (image, or device). */
export async function mountHomes(town: ResolvedTown, runner: Runner): Promise<void> {
  await ensureDir(town.agentsDir, 0o755);
  if (town.homes.backend === "image") {
    await runner.run("mount", ["-o", "loop,noatime", town.homes.image.path, town.agentsDir]);
  } else if (
    town.homes.backend === "btrfs" &&
    town.homes.device !== undefined &&
    isDeviceSpec(town.homes.device)
  ) {
    await runner.run("mount", ["-t", "btrfs", "-o", "noatime", town.homes.device, town.agentsDir]);
  }
  await ensureDir(town.agentsDir, 0o755);
}

/** Make the blank home and the home itself, owned by the agent, private. */
export async function createHome(
  town: ResolvedTown,
  agent: ResolvedAgent,
  runner: Runner,
): Promise<void> {
  // Agents walk through the agents dir to their homes.
  await ensureDir(town.agentsDir, 0o755);
  if (!usesBtrfs(town)) {
    await ensureDir(agent.home, 0o700, agent.uid, agent.gid);
    return;
  }
  await ensureDir(blankDir(town), 0o700);
  const blank = blankOf(town, agent);
  if (!(await isSubvolume(blank))) {
    await runner.run("btrfs", ["subvolume", "create", blank]);
  }
  await ensureDir(blank, 0o700, agent.uid, agent.gid);
  if (!(await exists(agent.home))) {
    await runner.run("btrfs", ["subvolume", "snapshot", blank, agent.home]);
  }
}

/**
 * Roll the home back to blank. The agent's processes must be stopped first.
 * Its persist binds are unmounted before anything is wiped; a btrfs home is
 * renamed aside with its binds still in it (emptyTrash unmounts them). A
 * btrfs home's rollback is synchronous up to the start of `btrfs subvolume
 * snapshot`: the caller may do other work while it runs.
 */
export function rollbackHome(
  town: ResolvedTown,
  agent: ResolvedAgent,
  runner: Runner,
): Promise<void> {
  const home = lstatSync(agent.home, { throwIfNoEntry: false });
  if (!usesBtrfs(town) || !home?.isDirectory() || home.ino !== SUBVOLUME_INODE)
    return rollbackSlowly(town, agent, runner);
  // Deleting a subvolume costs time in proportion to its files the kernel
  // still caches; renaming it into the trash is instant, so the agent is
  // back at once and emptyTrash pays the rest afterwards. Mounts below the
  // home move with it (out of the agent's reach: the trash is root's 0700),
  // so unmounting them waits for emptyTrash too.
  mkdirSync(trashDir(town), { recursive: true, mode: 0o700 });
  renameSync(agent.home, path.join(trashDir(town), `${agent.name}.${Date.now()}`));
  return runner
    .run("btrfs", ["subvolume", "snapshot", blankOf(town, agent), agent.home])
    .then(() => {});
}

/** The directory backend, or a btrfs home that is not a subvolume (a half-done earlier run). */
async function rollbackSlowly(
  town: ResolvedTown,
  agent: ResolvedAgent,
  runner: Runner,
): Promise<void> {
  if (!usesBtrfs(town)) {
    await unmountBelow(agent.home, runner);
    await wipeDirectory(agent.home);
    await ensureDir(agent.home, 0o700, agent.uid, agent.gid);
    return;
  }
  await unmountBelow(agent.home, runner);
  await deleteSubvolume(agent.home, runner);
  await runner.run("btrfs", ["subvolume", "snapshot", blankOf(town, agent), agent.home]);
}

export const trashDir = (town: ResolvedTown) => path.join(town.agentsDir, ".nuketown-trash");

/** Delete the homes that rollbacks moved aside, and unmount the binds they took along. */
export async function emptyTrash(town: ResolvedTown, runner: Runner): Promise<void> {
  const entries = await readdir(trashDir(town)).catch(() => [] as string[]);
  for (const entry of entries) {
    await unmountBelow(path.join(trashDir(town), entry), runner);
    await deleteSubvolume(path.join(trashDir(town), entry), runner);
  }
}

/** Remove the home and its blank (persisted data is elsewhere and stays). */
export async function removeHome(
  town: ResolvedTown,
  agent: Pick<ResolvedAgent, "name" | "home">,
  runner: Runner,
): Promise<void> {
  if (!usesBtrfs(town)) {
    await rm(agent.home, { recursive: true, force: true });
    return;
  }
  await deleteSubvolume(agent.home, runner);
  await deleteSubvolume(path.join(blankDir(town), agent.name), runner);
}

/** Delete a subvolume, and first any the agent created inside it. */
async function deleteSubvolume(dir: string, runner: Runner): Promise<void> {
  if (!(await exists(dir))) return;
  if (!(await isSubvolume(dir))) {
    // A plain directory where a home should be (e.g. a half-done earlier run).
    await rm(dir, { recursive: true, force: true });
    return;
  }
  const first = await runner.run("btrfs", ["subvolume", "delete", dir], { allowFailure: true });
  if (first.code === 0) return;
  // Only when the agent nested its own subvolumes: find them (this walks the
  // tree, so it stays off the constant-time path) and delete them first.
  for (const nested of await nestedSubvolumes(dir)) {
    await runner.run("btrfs", ["subvolume", "delete", nested]);
  }
  await runner.run("btrfs", ["subvolume", "delete", dir]);
}

/** Subvolumes below `dir`, deepest first (their root inode is 256, their st_dev their own). */
async function nestedSubvolumes(dir: string): Promise<string[]> {
  const found: string[] = [];
  async function walk(current: string, device: number): Promise<void> {
    for (const entry of await readdir(current, { withFileTypes: true })) {
      if (!entry.isDirectory()) continue;
      const child = path.join(current, entry.name);
      const info = await lstat(child);
      if (info.ino === SUBVOLUME_INODE && info.dev !== device) {
        await walk(child, info.dev);
        found.push(child);
      } else if (info.dev === device) {
        await walk(child, device);
      }
    }
  }
  await walk(dir, (await stat(dir)).dev);
  return found;
}

async function wipeDirectory(dir: string): Promise<void> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  await Promise.all(
    entries.map((name) => rm(path.join(dir, name), { recursive: true, force: true })),
  );
}
