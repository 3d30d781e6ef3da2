/**
 * Writes rendered artifacts as a whole tree under a directory (`--root`,
 * `render --out`): staged beside the target, then swapped in, so a reader
 * sees the old tree or the new one, never half of each.
 */
import { createHash } from "node:crypto";
import { chmod, mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { RefusedError } from "../errors.ts";
import type { Artifact } from "./render/artifact.ts";

/** Marks a directory as ours, so replacing it never destroys someone else's files. */
export const RENDER_MARKER = ".nuketown-render";

export interface WrittenFile {
  readonly path: string;
  readonly mode: string;
  readonly owner: string;
  readonly group: string;
  readonly layer: Artifact["layer"];
  readonly bytes: number;
  readonly sha256: string;
}

export async function writeTree(
  target: string,
  artifacts: readonly Artifact[],
  townName: string,
): Promise<WrittenFile[]> {
  await refuseForeignDirectory(target);
  const stamp = `${process.pid}-${Date.now()}`;
  const staging = `${target}.nuketown-new-${stamp}`;
  const retired = `${target}.nuketown-old-${stamp}`;
  await mkdir(path.dirname(target), { recursive: true });
  try {
    await mkdir(staging, { mode: 0o755 });
    for (const artifact of artifacts) {
      const file = path.join(staging, artifact.path);
      await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
      await writeFile(file, artifact.content, { mode: Number.parseInt(artifact.mode, 8) });
      // writeFile's mode is filtered by the umask; the artifact's mode is the contract.
      await chmod(file, Number.parseInt(artifact.mode, 8));
    }
    const written = artifacts.map(describe);
    await writeFile(
      path.join(staging, RENDER_MARKER),
      `${JSON.stringify({ town: townName, files: written.map((w) => w.path) }, null, 2)}\n`,
    );
    const existed = await exists(target);
    if (existed) await rename(target, retired);
    await rename(staging, target);
    if (existed) await rm(retired, { recursive: true, force: true });
    return written;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function refuseForeignDirectory(target: string): Promise<void> {
  let entries: string[];
  try {
    const info = await stat(target);
    if (!info.isDirectory()) throw new RefusedError(`${target} exists and is not a directory`);
    entries = await readdir(target);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  if (entries.length > 0 && !entries.includes(RENDER_MARKER)) {
    throw new RefusedError(
      `${target} is not empty and was not rendered by nuketown; choose a new or empty directory`,
    );
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}

function describe(artifact: Artifact): WrittenFile {
  return {
    path: artifact.path,
    mode: artifact.mode,
    owner: artifact.owner ?? "root",
    group: artifact.group ?? "root",
    layer: artifact.layer,
    bytes: Buffer.byteLength(artifact.content),
    sha256: createHash("sha256").update(artifact.content).digest("hex"),
  };
}
