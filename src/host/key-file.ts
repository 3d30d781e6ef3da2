/**
 * The town's age key decrypts every agent's secrets, so only root may read
 * it or swap it: a key file (or its directory) that others can read or
 * write hands every agent every other agent's keys. Pure: the caller stats.
 */

export interface FileAccess {
  readonly uid: number;
  readonly mode: number;
}

/** Why the key file may not be used, with the commands that fix it; undefined when it may. */
export function keyFileProblem(
  file: string,
  key: FileAccess,
  dir: { readonly path: string } & FileAccess,
): string | undefined {
  const problems: string[] = [];
  const fixes: string[] = [];
  if (key.uid !== 0) {
    problems.push(`is owned by uid ${key.uid}, not root`);
    fixes.push(`chown root: ${file}`);
  }
  if ((key.mode & 0o077) !== 0) {
    problems.push(`is readable or writable by others (mode ${octal(key.mode)})`);
    fixes.push(`chmod 600 ${file}`);
  }
  if (dir.uid !== 0 || (dir.mode & 0o022) !== 0) {
    problems.push(
      `sits in ${dir.path}, which ${dir.uid !== 0 ? `uid ${dir.uid} owns` : `others may write (mode ${octal(dir.mode)})`}, so the key can be swapped`,
    );
    fixes.push(`move it to a root-owned directory (e.g. /var/lib/nuketown/age/keys.txt)`);
  }
  if (problems.length === 0) return undefined;
  return `the age key ${file} ${problems.join(" and ")}: any agent could decrypt every agent's secrets; fix: ${fixes.join("; ")}`;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;
