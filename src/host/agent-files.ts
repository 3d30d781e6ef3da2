/**
 * Places files in an agent's home, owned by the agent, without ever
 * following a symlink the agent planted (in its home or a persisted dir) to
 * someone else's file.
 *
 * Root writes them, in this process, through directory descriptors: the home
 * is opened without following symlinks, each directory below it is opened
 * from its parent's descriptor with O_NOFOLLOW and must be owned by the agent,
 * each file is created with O_EXCL|O_NOFOLLOW in that directory, owned by
 * the agent and given its mode before a byte is written, and renamed over the
 * old name within the same directory (src/os/anchored.ts). Nothing is
 * resolved by path below the home, so neither a planted symlink nor one
 * swapped in meanwhile can lead outside the agent's own directories. Starting
 * a Node process as the agent for this (the old way) cost ~75 ms a round.
 *
 * What this way refuses — a symlink or a directory not owned by the agent on
 * the way — is handed to a writer running AS the agent, which follows
 * symlinks only with the agent's own rights.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { PROGRAM_FILES } from "../install/layout.ts";
import { AnchoredDir } from "../os/anchored.ts";
import type { Runner } from "../os/process.ts";
import { programModule } from "../sources.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import type { HomeLink } from "./render/runtime-config.ts";

export interface HomeFile {
  /** Absolute path inside the agent's home. */
  readonly path: string;
  readonly content: string | Buffer;
  /** Octal mode, e.g. "0600". */
  readonly mode: string;
}

type Entry =
  | { readonly path: string; readonly mode: number; readonly content: Buffer }
  | { readonly path: string; readonly link: string };

type Owner = Pick<ResolvedAgent, "name" | "home" | "uid" | "gid">;

/**
 * The writer runs as the agent, so it must be a program the agent can read:
 * the installed copy (a checkout may sit in a private directory, such as
 * root's home), or the running program where nothing is installed yet.
 */
function writerProgram(town: ResolvedTown): { node: string; script: string } {
  const node = path.join(town.install.programDir, PROGRAM_FILES.node);
  const script = path.join(town.install.programDir, PROGRAM_FILES.writer);
  if (existsSync(node) && existsSync(script)) return { node, script };
  return { node: process.execPath, script: programModule("host/agent-files-writer") };
}

export interface WriteFilesOptions {
  /** Write everything through the as-agent writer (the old way; benchmarks compare). */
  readonly asAgent?: boolean;
}

/**
 * Place `files` and `links` in the agent's home. Call only while no process
 * of the agent runs (a round): a file is replaced, not written in place.
 * True when the as-agent writer ran (a process of the agent was started).
 */
export async function writeFilesAsAgent(
  town: ResolvedTown,
  agent: ResolvedAgent,
  files: readonly HomeFile[],
  runner: Runner,
  links: readonly HomeLink[] = [],
  options: WriteFilesOptions = {},
): Promise<boolean> {
  for (const entry of [...files, ...links.flatMap((l) => [l, { path: l.target }])]) {
    if (!entry.path.startsWith(`${agent.home}/`))
      throw new Error(`${entry.path} is outside ${agent.home}`);
  }
  const entries: Entry[] = [
    ...files.map((f) => ({
      path: f.path,
      mode: Number.parseInt(f.mode, 8),
      content: Buffer.from(f.content),
    })),
    ...links.map((l) => ({ path: l.path, link: l.target })),
  ];
  if (entries.length === 0) return false;
  const rest = options.asAgent ? entries : placeAsRoot(agent, entries);
  if (rest.length === 0) return false;
  const writer = writerProgram(town);
  await runner.run(writer.node, [writer.script], {
    uid: agent.uid,
    gid: agent.gid,
    cwd: "/",
    env: { HOME: agent.home, PATH: "/usr/bin:/bin" },
    input: JSON.stringify(
      rest.map((e) =>
        "link" in e
          ? e
          : { path: e.path, mode: e.mode, content: Buffer.from(e.content).toString("base64") },
      ),
    ),
  });
  return true;
}

/** Something on the way the root writer does not walk through; the as-agent writer will. */
class NotOurs extends Error {}

/** Place what can be placed through descriptors; return the entries left for the as-agent writer. */
export function placeAsRoot(agent: Owner, entries: readonly Entry[]): Entry[] {
  let home: AnchoredDir;
  try {
    home = AnchoredDir.open(agent.home);
  } catch {
    return [...entries];
  }
  const rest: Entry[] = [];
  try {
    if (home.stats.uid !== agent.uid) return [...entries];
    for (const entry of entries) {
      try {
        if ("link" in entry) {
          closeAll(openPath(home, agent, relative(agent, entry.link)));
          placeLink(home, agent, entry);
        } else placeFile(home, agent, entry);
      } catch (error) {
        if (!(error instanceof NotOurs)) throw error;
        rest.push(entry);
      }
    }
  } finally {
    home.close();
  }
  return rest;
}

const relative = (agent: Owner, file: string) =>
  path
    .relative(agent.home, file)
    .split("/")
    .filter((p) => p !== "");

/**
 * Open (making what is missing, 0700, the agent's) each directory of `parts`
 * below the home; the descriptors opened, the deepest last. Throws NotOurs
 * at a symlink, a non-directory or a directory someone else owns.
 */
function openPath(home: AnchoredDir, agent: Owner, parts: readonly string[]): AnchoredDir[] {
  const opened: AnchoredDir[] = [];
  let dir = home;
  try {
    for (const part of parts) {
      let made = false;
      let info = dir.lstat(part);
      if (info === undefined) {
        try {
          dir.mkdir(part, 0o700);
          made = true;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        }
        info = dir.lstat(part);
      }
      if (info === undefined || !info.isDirectory()) throw new NotOurs();
      let next: AnchoredDir;
      try {
        next = dir.openDir(part);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ELOOP" || code === "ENOTDIR") throw new NotOurs();
        throw error;
      }
      opened.push(next);
      if (made) next.own(agent.uid, agent.gid, 0o700);
      else if (next.stats.uid !== agent.uid) throw new NotOurs();
      dir = next;
    }
    return opened;
  } catch (error) {
    closeAll(opened);
    throw error;
  }
}

function closeAll(dirs: readonly AnchoredDir[]): void {
  for (const d of dirs) d.close();
}

function placeFile(
  home: AnchoredDir,
  agent: Owner,
  entry: { path: string; mode: number; content: Buffer },
): void {
  placeEntry(home, agent, entry.path, (dir, name) => {
    const temp = `.${name}.${randomBytes(6).toString("hex")}.tmp`;
    // No fsync: the home is rebuilt every round (and at every boot), so a crash costs nothing.
    dir.createFile(temp, entry.content, entry.mode, agent.uid, agent.gid);
    return temp;
  });
}

/** A new link renamed over whatever is there (a directory there makes it fail). */
function placeLink(home: AnchoredDir, agent: Owner, entry: { path: string; link: string }): void {
  placeEntry(home, agent, entry.path, (dir, name) => {
    const temp = `.${name}.link.tmp`;
    try {
      dir.unlink(temp);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    dir.symlink(entry.link, temp, agent.uid, agent.gid);
    return temp;
  });
}

/**
 * Make an entry under a temporary name in the directory of `file` (reached
 * through descriptors), then rename it over `file`; the temporary one goes
 * when the rename fails.
 */
function placeEntry(
  home: AnchoredDir,
  agent: Owner,
  file: string,
  make: (dir: AnchoredDir, name: string) => string,
): void {
  const parts = relative(agent, file);
  const name = parts.pop();
  if (name === undefined) throw new Error(`${file} names the home itself`);
  const opened = openPath(home, agent, parts);
  const dir = opened.at(-1) ?? home;
  try {
    const temp = make(dir, name);
    try {
      dir.rename(temp, name);
    } catch (error) {
      try {
        dir.unlink(temp);
      } catch {}
      throw error;
    }
  } finally {
    closeAll(opened);
  }
}
