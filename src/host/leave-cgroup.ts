/**
 * A reset the agent asked for itself (`!reset` in chat, through its own
 * sudo and the approval gate) runs inside the agent's own cgroup: the one
 * `nuketown up` delegates to its daemon, or its unit's (Delegate=yes). The
 * round stops the agent, and with it everything in that cgroup — the reset
 * half-way included. Root moves the reset out first, into the nearest cgroup
 * above the agent's that takes processes (cgroup v2 refuses processes in a
 * cgroup with controllers enabled below it; the root takes them always).
 */
import { readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { locateCgroup } from "../agent/cgroup.ts";

export interface LeftCgroup {
  /** The agent's cgroup this process was in. */
  readonly from: string;
  /** Where it is now; undefined when no cgroup above took it. */
  readonly to: string | undefined;
}

/**
 * Move this process out of a cgroup owned by one of `uids` (delegated to an
 * agent); undefined when it is in none. Never throws: a reset that cannot
 * leave still runs, and says so.
 */
export async function leaveAgentCgroups(
  uids: readonly number[],
  proc = "/proc",
): Promise<LeftCgroup | undefined> {
  let located: ReturnType<typeof locateCgroup>;
  try {
    const [mountinfo, cgroup] = await Promise.all([
      readFile(path.join(proc, "self", "mountinfo"), "utf8"),
      readFile(path.join(proc, "self", "cgroup"), "utf8"),
    ]);
    located = locateCgroup(mountinfo, cgroup);
  } catch {
    return undefined;
  }
  if (!located.ok) return undefined;
  const owners = new Set(uids);
  // The topmost cgroup on our path that an agent owns: everything below it is the agent's.
  let agents: string | undefined;
  for (let dir = located.dir; dir.startsWith(located.mount) && dir !== located.mount; ) {
    const owner = await stat(dir).then(
      (s) => s.uid,
      () => undefined,
    );
    if (owner !== undefined && owners.has(owner)) agents = dir;
    dir = path.dirname(dir);
  }
  if (agents === undefined) return undefined;
  for (let dir = path.dirname(agents); ; dir = path.dirname(dir)) {
    try {
      await writeFile(path.join(dir, "cgroup.procs"), `${process.pid}\n`);
      return { from: agents, to: dir };
    } catch {
      // Controllers enabled below it (EBUSY), or not ours to write: one level up.
    }
    if (dir === located.mount || dir === path.dirname(dir)) return { from: agents, to: undefined };
  }
}
