/**
 * Which directories the portal offers as projects: the town's `projectDirs`
 * (a leading `~/` is the mayor's home), one and two levels down, hidden
 * directories skipped. Pure: the directory listing comes in through `readDir`.
 */
import path from "node:path";

export interface DirEntry {
  readonly name: string;
  /** A directory, or a symlink to one. */
  readonly isDirectory: boolean;
}

/** Lists a directory; returns [] when it is missing or unreadable. */
export type ReadDir = (dir: string) => readonly DirEntry[];

export interface Project {
  /** Absolute path of the project directory. */
  readonly dir: string;
  /** Shown in the picker and used in the window name: relative to its projectDir. */
  readonly name: string;
}

/** Project roots listed this deep below each projectDir: `~/dev/app` and `~/dev/org/app`. */
export const PROJECT_DEPTH = 2;

/** `~` and `~/x` mean the mayor's home; relative paths are taken from `cwd`. */
export function expandProjectDir(dir: string, home: string, cwd: string): string {
  if (dir === "~") return home;
  if (dir.startsWith("~/")) return path.join(home, dir.slice(2));
  return path.resolve(cwd, dir);
}

/**
 * Every directory one or two levels below each root, hidden ones (and
 * everything under them) skipped, sorted by name, each path once.
 */
export function listProjects(roots: readonly string[], readDir: ReadDir): Project[] {
  const seen = new Set<string>();
  const projects: Project[] = [];
  const walk = (root: string, dir: string, depth: number) => {
    const entries = readDir(dir)
      .filter((e) => e.isDirectory && !e.name.startsWith("."))
      .map((e) => e.name)
      .sort();
    for (const name of entries) {
      const full = path.join(dir, name);
      if (!seen.has(full)) {
        seen.add(full);
        projects.push({ dir: full, name: path.relative(root, full) });
      }
      if (depth < PROJECT_DEPTH) walk(root, full, depth + 1);
    }
  };
  for (const root of roots) walk(root, root, 1);
  return projects.sort((a, b) => compare(a.name, b.name) || compare(a.dir, b.dir));
}

/**
 * The project for a directory named on the command line: relative to the
 * first root that contains it, else its base name.
 */
export function projectFor(dir: string, roots: readonly string[]): Project {
  for (const root of roots) {
    const relative = path.relative(root, dir);
    if (relative !== "" && !relative.startsWith("..") && !path.isAbsolute(relative))
      return { dir, name: relative };
  }
  return { dir, name: path.basename(dir) || dir };
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
