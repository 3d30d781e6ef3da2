/**
 * Finding programs on PATH: the one search every command uses (the portal's
 * tools, doctor's prerequisites, the validators before installing a file).
 * The sbin directories are searched too: a non-root PATH often lacks them,
 * and visudo, useradd or runuser live there.
 */
import { accessSync, constants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";

const SBIN = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

/** The directories searched for a program: PATH, then the sbin dirs it lacks. */
export function searchPath(pathEnv: string | undefined = process.env.PATH): string[] {
  const dirs = (pathEnv ?? "").split(path.delimiter).filter((d) => d !== "");
  return [...new Set([...dirs, ...SBIN])];
}

/** Where `program` is, if anywhere on `dirs`. */
export async function which(
  program: string,
  dirs: readonly string[] = searchPath(),
): Promise<string | undefined> {
  for (const dir of dirs) {
    const candidate = path.join(dir, program);
    if (await isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** `which` without waiting: for the few callers that decide before anything async. */
export function whichSync(
  program: string,
  dirs: readonly string[] = searchPath(),
): string | undefined {
  for (const dir of dirs) {
    const candidate = path.join(dir, program);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

export function isExecutable(file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}
