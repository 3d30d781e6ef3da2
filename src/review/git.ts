/**
 * What review asks git and how it reads the answers. Agents push
 * `<agent>/<topic>` branches; review fetches them from a remote named after
 * the agent when the mayor's repo has one (the agent's own clone), else from
 * `origin` (the shared remote), into `refs/remotes/<remote>/<agent>/*`. Pure.
 */

/** The remote an agent's branches come from. */
export function remoteFor(
  agent: string,
  remotes: readonly string[],
  override?: string,
): string | undefined {
  if (override !== undefined) return remotes.includes(override) ? override : undefined;
  if (remotes.includes(agent)) return agent;
  return remotes.includes("origin") ? "origin" : undefined;
}

/** Fetches exactly the agent's branches, forced (agents rebase), into their own namespace. */
export const agentRefspec = (agent: string, remote: string) =>
  `+refs/heads/${agent}/*:refs/remotes/${remote}/${agent}/*`;

/** Where the fetched branches of `agent` are, for `git for-each-ref`. */
export const agentRefPrefix = (agent: string, remote: string) => `refs/remotes/${remote}/${agent}/`;

/** Refs tried in order as the base of the diffstat when none is given. */
export function baseCandidates(remote: string, defaultBranch: string): string[] {
  return [
    "refs/remotes/origin/HEAD",
    `refs/remotes/origin/${defaultBranch}`,
    ...(remote === "origin" ? [] : [`refs/remotes/${remote}/${defaultBranch}`]),
    `refs/heads/${defaultBranch}`,
    "HEAD",
  ];
}

/** `%G?` letters, as git-log(1) documents them. */
export const SIGNATURE_MEANING: Readonly<Record<string, string>> = {
  G: "good signature by the agent's key",
  B: "bad signature",
  U: "signed, but not by a key of this town's agents",
  X: "good signature that has expired",
  Y: "good signature by an expired key",
  R: "good signature by a revoked key",
  E: "signature cannot be checked (missing key?)",
  N: "no signature",
};

const FIELD = "%x1f";
/** One commit per record: hash, subject, author, email, date, %G?, signer, key. */
export const COMMIT_FORMAT = ["%H", "%s", "%an", "%ae", "%cI", "%G?", "%GS", "%GK"].join(FIELD);

export interface CommitInfo {
  readonly commit: string;
  readonly subject: string;
  readonly author: string;
  readonly authorEmail: string;
  readonly date: string;
  /** `%G?`: G, B, U, X, Y, R, E or N. */
  readonly signature: string;
  /** The principal that signed (the agent's email for a good SSH signature). */
  readonly signer: string;
  readonly key: string;
}

/** Parse `git log --format=COMMIT_FORMAT` output, one commit per line. */
export function parseCommits(output: string): CommitInfo[] {
  return output.split("\n").flatMap((line) => {
    const [commit, subject = "", author = "", authorEmail = "", date = "", sig, signer, key] =
      line.split("\x1f");
    if (!commit || !/^[0-9a-f]{40,64}$/.test(commit)) return [];
    return [
      {
        commit,
        subject,
        author,
        authorEmail,
        date,
        signature: sig || "N",
        signer: signer ?? "",
        key: key ?? "",
      },
    ];
  });
}

export interface DiffStat {
  readonly files: number;
  readonly insertions: number;
  readonly deletions: number;
}

/** Totals of `git diff --numstat` (binary files count as files, without lines). */
export function parseNumstat(output: string): DiffStat {
  let files = 0;
  let insertions = 0;
  let deletions = 0;
  for (const line of output.split("\n")) {
    const [added, removed] = line.split("\t");
    if (added === undefined || removed === undefined || line === "") continue;
    files++;
    if (/^[0-9]+$/.test(added)) insertions += Number(added);
    if (/^[0-9]+$/.test(removed)) deletions += Number(removed);
  }
  return { files, insertions, deletions };
}

/** `3 files +10 -2`. */
export const formatDiffStat = (d: DiffStat) =>
  `${d.files} file${d.files === 1 ? "" : "s"} +${d.insertions} -${d.deletions}`;

/** `git rev-list --left-right --count base...branch` → behind, ahead. */
export function parseLeftRight(output: string): { behind: number; ahead: number } {
  const [behind = "0", ahead = "0"] = output.trim().split(/\s+/);
  return { behind: Number(behind) || 0, ahead: Number(ahead) || 0 };
}

/** How many commits carry each `%G?` letter, letters sorted. */
export function countSignatures(commits: readonly CommitInfo[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const c of commits) counts[c.signature] = (counts[c.signature] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)));
}
