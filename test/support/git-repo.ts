/**
 * A declared repository for a test town: a bare repository on `main` with
 * one commit, seeded from a working clone beside it, so a test can push more
 * to it later (`commitTo`).
 */
import { writeFileSync } from "node:fs";
import path from "node:path";
import { mustRun } from "./host.ts";

const AUTHOR = ["-c", "user.name=t", "-c", "user.email=t@t"];

export interface SeededRepo {
  /** The bare repository: what a town declares in `repos`. */
  readonly bare: string;
  /** The working clone that seeded it. */
  readonly seed: string;
}

/**
 * `<root>/<name>.git` with README committed on main. `shared`: the bare
 * repository stays writable by every agent that pushes to it (git's
 * `--shared=0777`), for towns whose agents share one remote.
 */
export function seededRepo(
  root: string,
  name: string,
  options: { shared?: boolean } = {},
): SeededRepo {
  const bare = path.join(root, `${name}.git`);
  mustRun("git", [
    "init",
    "--quiet",
    "--bare",
    ...(options.shared ? ["--shared=0777"] : []),
    "--initial-branch=main",
    bare,
  ]);
  const seed = path.join(root, `${name}-seed`);
  mustRun("git", ["init", "--quiet", "--initial-branch=main", seed]);
  const repo = { bare, seed };
  commitTo(repo, "README", `${name}\n`, "init");
  if (options.shared) mustRun("chmod", ["-R", "a+rwX", bare]);
  return repo;
}

/** Commit `file` with `text` in the seed and push it to the bare repository's main. */
export function commitTo(repo: SeededRepo, file: string, text: string, message: string): void {
  writeFileSync(path.join(repo.seed, file), text);
  mustRun("git", ["-C", repo.seed, "add", file]);
  mustRun("git", ["-C", repo.seed, ...AUTHOR, "commit", "--quiet", "-m", message]);
  mustRun("git", ["-C", repo.seed, "push", "--quiet", repo.bare, "main"]);
}
