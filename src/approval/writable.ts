/**
 * Which files the requesting agent could change: "agent-writable". A file
 * is, when the agent can write it (it owns it, or a subordinate uid of its
 * owns it, or the mode's group/other bits or an ACL let it write), or when
 * it can replace it: it can write a directory the path goes through (a
 * sticky directory only lets it replace what it owns), symlinks followed
 * as the kernel follows them. A path that cannot be followed (a /proc magic
 * link, a loop) counts as agent-writable: what cannot be told is not trusted.
 *
 * The gate flags such a program or file argument, hashes its contents into
 * the request the human approves, and checks them again before it runs.
 * Pure: the file system comes through a `WritableProbe`.
 */
import path from "node:path";

export interface Inode {
  readonly uid: number;
  readonly gid: number;
  /** st_mode's permission bits, with the sticky bit (0o1000). */
  readonly mode: number;
  readonly kind: "file" | "directory" | "symlink" | "other";
}

/** Who may write: the agent's uid, every group it has, and its subordinate ids (/etc/subuid, /etc/subgid). */
export interface AgentIdentity {
  readonly uid: number;
  readonly gids: ReadonlySet<number>;
  /** [first, count] ranges a user namespace of the agent's may map: files they own are the agent's too. */
  readonly subuids: readonly (readonly [number, number])[];
  readonly subgids: readonly (readonly [number, number])[];
}

export interface WritableProbe {
  /** lstat; undefined when the path does not exist (or cannot be read). */
  lstat(file: string): Promise<Inode | undefined>;
  readlink(file: string): Promise<string | undefined>;
  /**
   * Whether a named ACL entry lets the agent write `file`. Asked only when
   * the group-write bit (the ACL mask, if there is an ACL) is set and the
   * owning group is not the agent's.
   */
  aclWrite(file: string, who: AgentIdentity): Promise<boolean>;
}

/** A program or file argument the agent can change, as the request carries it. */
export interface WritableFile {
  /** Its place in argv: 0 is the program (the resolved command). */
  readonly index: number;
  /** The absolute path the gate hashed (argv[index], or its `--opt=` value, resolved against cwd). */
  readonly path: string;
  /** sha256 of its contents when the request was made. */
  readonly sha256: string;
  /** Why the agent can change it, for the human. */
  readonly why: string;
}

/** How many agent-writable files one request may name: more cannot be shown to a human. */
export const MAX_WRITABLE_FILES = 16;

/** How many symlinks a path may go through, as Linux allows. */
const MAX_LINKS = 40;

const inRanges = (id: number, ranges: readonly (readonly [number, number])[]) =>
  ranges.some(([first, count]) => id >= first && id < first + count);

/** Why `who` can write this inode itself, or undefined. */
async function writesInode(
  file: string,
  node: Inode,
  who: AgentIdentity,
  probe: WritableProbe,
): Promise<string | undefined> {
  // The owner may chmod: a read-only mode does not protect it from the owner.
  if (node.uid === who.uid) return "owned by the agent";
  if (inRanges(node.uid, who.subuids))
    return `owned by uid ${node.uid}, a subordinate uid of the agent's`;
  if ((node.mode & 0o002) !== 0) return "writable by everyone";
  if ((node.mode & 0o020) !== 0) {
    if (who.gids.has(node.gid))
      return `writable by its group (gid ${node.gid}), which the agent is in`;
    if (inRanges(node.gid, who.subgids))
      return `writable by its group (gid ${node.gid}), a subordinate gid of the agent's`;
    if (await probe.aclWrite(file, who)) return "writable by the agent through an ACL";
  }
  return undefined;
}

/**
 * Why the agent can change `file` (an absolute path to a file that exists),
 * or undefined when it cannot.
 */
export async function whyAgentWritable(
  file: string,
  who: AgentIdentity,
  probe: WritableProbe,
): Promise<string | undefined> {
  if (!path.posix.isAbsolute(file)) throw new TypeError(`not an absolute path: ${file}`);
  const untraceable = (why: string) => `${why}: who can change it cannot be told`;
  let dir = "/";
  let dirNode = await probe.lstat("/");
  if (!dirNode) return untraceable("/ cannot be read");
  let rest = file.split("/");
  let links = 0;
  while (rest.length > 0) {
    const name = rest.shift() as string;
    if (name === "" || name === ".") continue;
    if (name === "..") {
      // `dir` is always a real directory here (symlinks are followed as they come), so ".." is its parent.
      dir = path.posix.dirname(dir);
      dirNode = await probe.lstat(dir);
      if (!dirNode) return untraceable(`${dir} cannot be read`);
      continue;
    }
    const entry = path.posix.join(dir, name);
    const node = await probe.lstat(entry);
    // The caller asks about files that exist: a part that is gone now (a race, a dangling link) is not trusted.
    if (!node) return untraceable(`${entry} is missing`);
    const dirWritable = await writesInode(dir, dirNode, who, probe);
    // In a sticky directory (/tmp) only the owners of the directory or of the entry may replace it.
    const sticky = (dirNode.mode & 0o1000) !== 0;
    const ownsEntry = node.uid === who.uid || inRanges(node.uid, who.subuids);
    const ownsDir = dirNode.uid === who.uid || inRanges(dirNode.uid, who.subuids);
    if (dirWritable && (!sticky || ownsDir || ownsEntry))
      return `in ${dir}, which is ${dirWritable}: the agent can replace ${entry}`;
    if (node.kind === "symlink") {
      if (++links > MAX_LINKS) return untraceable(`too many symlinks in ${file}`);
      const target = await probe.readlink(entry);
      // A /proc magic link (an fd, a memfd) names no path that can be followed.
      if (target === undefined || /^[a-z_]+:/.test(target))
        return untraceable(`${entry} links to no path`);
      if (target.startsWith("/")) {
        dir = "/";
        dirNode = await probe.lstat("/");
        if (!dirNode) return untraceable("/ cannot be read");
      }
      rest = [...target.split("/"), ...rest];
      continue;
    }
    if (rest.some((r) => r !== "")) {
      if (node.kind !== "directory") return undefined;
      dir = entry;
      dirNode = node;
      continue;
    }
    return writesInode(entry, node, who, probe);
  }
  return undefined;
}

/**
 * The file arguments of argv worth asking about: every argument after the
 * program, and the value of a `--name=value` or `-x=value` option, resolved
 * against `cwd`; each with its argv index. Whether a path names a regular
 * file is the caller's question.
 */
export function fileArguments(
  argv: readonly string[],
  cwd: string,
): { index: number; path: string }[] {
  const found: { index: number; path: string }[] = [];
  for (const [index, arg] of argv.entries()) {
    if (index === 0) continue;
    const value = arg.startsWith("-") && arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : arg;
    if (value === "" || value.includes("\0") || (value.startsWith("-") && value === arg)) continue;
    found.push({ index, path: path.posix.resolve(cwd, value) });
  }
  return found;
}

/** What is compared before the command runs: index, path and contents, not the reason. */
export function sameFiles(a: readonly WritableFile[], b: readonly WritableFile[]): boolean {
  const key = (files: readonly WritableFile[]) =>
    JSON.stringify(files.map((f) => [f.index, f.path, f.sha256]));
  return key(a) === key(b);
}
