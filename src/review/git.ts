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

/** `%G?` letters, as git-log(1) documents them, and P: a signature review cannot vouch for. */
export const SIGNATURE_MEANING: Readonly<Record<string, string>> = {
  G: "good signature by the agent's key",
  B: "bad signature",
  U: "signed, but not by a key of this town's agents",
  X: "good signature that has expired",
  Y: "good signature by an expired key",
  R: "good signature by a revoked key",
  E: "signature cannot be checked (missing key?)",
  N: "no signature",
  P: "unverifiable: OpenPGP (no key the town declares made it)",
};

const FIELD = "%x1f";
/** One commit per record: hash, subject, author, email, date, %G?, signer, key, fingerprints. */
export const COMMIT_FORMAT = [
  "%H",
  "%s",
  "%an",
  "%ae",
  "%cI",
  "%G?",
  "%GS",
  "%GK",
  "%GF",
  "%GP",
].join(FIELD);

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
  /** OpenPGP: the fingerprint of the signing key and of its primary key (`%GF`, `%GP`). */
  readonly fingerprint: string;
  readonly primaryFingerprint: string;
}

/** Parse `git log --format=COMMIT_FORMAT` output, one commit per line. */
export function parseCommits(output: string): CommitInfo[] {
  return output.split("\n").flatMap((line) => {
    const [
      commit,
      subject = "",
      author = "",
      authorEmail = "",
      date = "",
      sig,
      signer,
      key,
      fingerprint,
      primary,
    ] = line.split("\x1f");
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
        fingerprint: fingerprint ?? "",
        primaryFingerprint: primary ?? "",
      },
    ];
  });
}

export type SignatureKind = "ssh" | "openpgp" | "x509" | "none";

/**
 * Each commit's kind of signature, from `git log --pretty=raw`: git picks
 * the verifier by the armor of the `gpgsig` header, and so must review (a
 * `%G?` of G means something else for each).
 */
export function parseSignatureKinds(raw: string): Map<string, SignatureKind> {
  const kinds = new Map<string, SignatureKind>();
  let current: string | undefined;
  for (const line of raw.split("\n")) {
    const commit = /^commit ([0-9a-f]{40,64})\b/.exec(line);
    if (commit) {
      current = commit[1];
      if (current) kinds.set(current, "none");
      continue;
    }
    if (current === undefined || kinds.get(current) !== "none") continue;
    const armor = /^gpgsig(?:-sha256)? -----BEGIN ([A-Z ]+)-----/.exec(line)?.[1];
    if (armor === undefined) continue;
    kinds.set(
      current,
      armor === "SSH SIGNATURE" ? "ssh" : armor.startsWith("PGP ") ? "openpgp" : "x509",
    );
  }
  return kinds;
}

/** An agent as review knows it: its email (the principal) and the OpenPGP key the town declares. */
export interface ReviewSigner {
  readonly email: string;
  /** Full fingerprint, upper case, when the agent signs with OpenPGP and declares one. */
  readonly openpgp?: string;
}

/** `git.signing.key` as a full OpenPGP fingerprint (v4: 40 hex digits, v5/v6: 64), else undefined. */
export function openpgpFingerprint(key: string | undefined): string | undefined {
  const hex = (key ?? "").replace(/^0x/i, "").replace(/\s+/g, "").toUpperCase();
  return /^([0-9A-F]{40}|[0-9A-F]{64})$/.test(hex) ? hex : undefined;
}

export interface Verdict {
  /** `%G?` letter, or P (an OpenPGP or X.509 signature no declared key made). */
  readonly status: string;
  /** The agent's email whose key made a good signature; else what git said. */
  readonly signer: string;
  readonly meaning: string;
}

/**
 * What a commit's signature says about who made it. SSH signatures were
 * checked against the town's keys only (each under its agent's email).
 * An OpenPGP signature is checked by the reviewer's own keyring, whose user
 * ids prove nothing: it counts as an agent's only when the key's fingerprint
 * is the one the town declares for that agent; anything else is P, never
 * another agent's and never good.
 */
export function judgeSignature(
  commit: CommitInfo,
  kind: SignatureKind,
  signers: readonly ReviewSigner[],
): Verdict {
  const meaning = (status: string) => SIGNATURE_MEANING[status] ?? "unknown status";
  if (kind === "none") return { status: "N", signer: "", meaning: meaning("N") };
  if (kind === "ssh")
    return { status: commit.signature, signer: commit.signer, meaning: meaning(commit.signature) };
  if (commit.signature === "B") return { status: "B", signer: "", meaning: meaning("B") };
  const label = kind === "openpgp" ? "OpenPGP" : "X.509";
  const fingerprints = [commit.fingerprint, commit.primaryFingerprint]
    .map((f) => f.toUpperCase())
    .filter((f) => f !== "");
  const good = ["G", "U", "X", "Y", "R"].includes(commit.signature);
  const owner =
    kind === "openpgp" && good
      ? signers.find((s) => s.openpgp !== undefined && fingerprints.includes(s.openpgp))
      : undefined;
  if (owner) {
    // The keyring's trust in the key is moot: the town vouches for its fingerprint.
    const status = commit.signature === "U" ? "G" : commit.signature;
    return {
      status,
      signer: owner.email,
      meaning: status === "G" ? "good OpenPGP signature by the declared key" : meaning(status),
    };
  }
  const made = fingerprints[0] ? ` by key ${fingerprints[0]}` : "";
  return {
    status: "P",
    signer: "",
    meaning: `unverifiable: ${label} signature${made}, which no agent of the town declares`,
  };
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
export function countSignatures(
  commits: readonly { readonly signature: string }[],
): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const c of commits) counts[c.signature] = (counts[c.signature] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)));
}
