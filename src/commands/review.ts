/**
 * `nuketown review [agent]`: in the mayor's repository, fetch what agents
 * pushed (`<agent>/<topic>` branches) and list each branch with its last
 * commit, signature status and diffstat against the default branch.
 * Signatures are checked only against the agents' own keys, each under the
 * agent's email, through a temporary allowed-signers file. The keys come
 * from the town (the declaration, or what apply derived from the agent's
 * secret and recorded as root), never from a home the agent controls.
 */
import { lstat, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError, EXIT } from "../errors.ts";
import { type CommandResult, type Runner, systemRunner } from "../os/process.ts";
import { plural, printable, type Streams, table } from "../output.ts";
import {
  agentRefPrefix,
  agentRefspec,
  baseCandidates,
  COMMIT_FORMAT,
  type CommitInfo,
  countSignatures,
  type DiffStat,
  formatDiffStat,
  judgeSignature,
  openpgpFingerprint,
  parseCommits,
  parseLeftRight,
  parseNumstat,
  parseSignatureKinds,
  type ReviewSigner,
  remoteFor,
  type SignatureKind,
  type Verdict,
} from "../review/git.ts";
import {
  type AgentSigners,
  parsePublicKeys,
  renderAllowedSigners,
  signerRecordPath,
} from "../review/signers.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { townFrom } from "./town-source.ts";

export interface ReviewOptions extends Streams {
  readonly agent?: string;
  /** @default cwd */
  readonly repo?: string;
  /** @default a remote named after the agent, else origin */
  readonly remote?: string;
  /** @default origin's HEAD, else the agent's default branch */
  readonly base?: string;
  /** @default true */
  readonly fetch?: boolean;
  readonly config?: string;
  readonly manifest?: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly cwd: string;
  readonly json?: boolean;
  /** @default systemRunner */
  readonly runner?: Runner;
}

export interface ReviewedBranch {
  readonly agent: string;
  readonly remote: string;
  /** As pushed: `<agent>/<topic>`. */
  readonly branch: string;
  readonly ref: string;
  readonly base: string;
  readonly commit: string;
  readonly subject: string;
  readonly author: { readonly name: string; readonly email: string };
  readonly date: string;
  readonly signature: {
    /** `%G?` of the last commit. */
    readonly status: string;
    readonly meaning: string;
    readonly signer: string;
    readonly key: string;
    /** A good signature, but by another agent's key. */
    readonly otherAgent: boolean;
    /** What kind of signature git found: ssh, openpgp, x509 or none. */
    readonly kind: SignatureKind;
  };
  readonly ahead: number;
  readonly behind: number;
  /** `%G?` letters of every commit in base..branch. */
  readonly commitSignatures: Record<string, number>;
  /** Commits in base..branch without a good signature by this agent's own key. */
  readonly notSignedByAgent: number;
  readonly diffstat: DiffStat & { readonly text: string };
}

export async function review(opts: ReviewOptions): Promise<number> {
  const runner = opts.runner ?? systemRunner;
  const town = await townFrom(opts);
  const repo = path.resolve(opts.cwd, opts.repo ?? ".");
  const agents =
    opts.agent === undefined ? town.agents : town.agents.filter((a) => a.name === opts.agent);
  if (opts.agent !== undefined && agents.length === 0)
    throw new ConfigError("review", [
      { path: "agent", message: `no agent ${opts.agent} in town ${town.name}` },
    ]);

  const git = (args: readonly string[], allowFailure = false): Promise<CommandResult> =>
    runner.run("git", ["-C", repo, ...args], { allowFailure });
  const inRepo = await git(["rev-parse", "--git-dir"], true);
  if (inRepo.code !== 0)
    throw new ConfigError("review", [{ path: "repo", message: `${repo} is not a git repository` }]);

  const warnings: string[] = [];
  const remotes = (await git(["remote"])).stdout.split("\n").filter((r) => r !== "");
  const sources = agents.flatMap((agent) => {
    const remote = remoteFor(agent.name, remotes, opts.remote);
    if (remote === undefined) {
      warnings.push(
        `${agent.name}: no remote ${opts.remote ?? `named ${agent.name} or origin`} in ${repo}`,
      );
      return [];
    }
    return [{ agent, remote }];
  });

  const fetched: { remote: string; agents: string[]; ok: boolean; error?: string }[] = [];
  if (opts.fetch !== false) {
    for (const remote of [...new Set(sources.map((s) => s.remote))].sort()) {
      const names = sources.filter((s) => s.remote === remote).map((s) => s.agent.name);
      const result = await git(
        ["fetch", "--prune", "--quiet", remote, ...names.map((n) => agentRefspec(n, remote))],
        true,
      );
      const error = result.stderr.trim().split("\n").slice(-3).join(" ");
      fetched.push({
        remote,
        agents: names,
        ok: result.code === 0,
        ...(result.code !== 0 && { error }),
      });
      if (result.code !== 0) warnings.push(`fetch from ${remote} failed: ${error}`);
    }
  }

  const signers = await Promise.all(agents.map((agent) => agentSigners(town, agent, warnings)));
  // Every agent of the town, so a signature by another agent's declared OpenPGP key is named.
  const reviewSigners: ReviewSigner[] = town.agents.map((a) => {
    const fingerprint =
      a.git.signing.format === "openpgp" ? openpgpFingerprint(a.git.signing.key) : undefined;
    return { email: a.git.email, ...(fingerprint !== undefined && { openpgp: fingerprint }) };
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), "nuketown-review-"));
  const branches: ReviewedBranch[] = [];
  try {
    const allowedSigners = path.join(dir, "allowed_signers");
    await writeFile(allowedSigners, renderAllowedSigners(signers), { mode: 0o600 });
    // Our signers only: neither the user's config nor the repo's may widen them.
    const verifying = ["-c", `gpg.ssh.allowedSignersFile=${allowedSigners}`];
    const log = (args: readonly string[]) =>
      git([...verifying, "log", "--no-show-signature", `--format=${COMMIT_FORMAT}`, ...args]);
    const kinds = async (args: readonly string[]) =>
      parseSignatureKinds(
        (await git(["log", "--no-show-signature", "--pretty=raw", ...args])).stdout,
      );

    for (const { agent, remote } of sources) {
      const base = opts.base ?? (await findBase(git, remote, agent.git.defaultBranch));
      if (base === undefined) {
        warnings.push(`${agent.name}: no base to compare with (pass --base)`);
        continue;
      }
      const prefix = agentRefPrefix(agent.name, remote);
      const refs = (await git(["for-each-ref", "--format=%(refname)", prefix])).stdout
        .split("\n")
        .filter((r) => r !== "")
        .sort();
      for (const ref of refs) {
        const [tip] = parseCommits((await log(["-1", ref])).stdout);
        if (tip === undefined) continue;
        const range = `${base}...${ref}`;
        const counts = parseLeftRight(
          (await git(["rev-list", "--left-right", "--count", range])).stdout,
        );
        const commits = parseCommits((await log([`${base}..${ref}`])).stdout);
        const kind = new Map([
          ...(await kinds(["-1", ref])),
          ...(await kinds([`${base}..${ref}`])),
        ]);
        const judge = (c: CommitInfo) => {
          const k = kind.get(c.commit) ?? "none";
          return { ...judgeSignature(c, k, reviewSigners), kind: k };
        };
        const numstat = parseNumstat((await git(["diff", "--numstat", range])).stdout);
        const stat = (await git(["diff", "--stat", range])).stdout.replace(/\s+$/, "");
        branches.push(
          describe(agent, remote, ref, base, tip, counts, commits, judge, {
            ...numstat,
            text: stat,
          }),
        );
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  for (const warning of warnings) opts.err.write(`nuketown review: ${warning}\n`);
  if (opts.json) {
    opts.out.write(`${JSON.stringify({ repo, fetched, branches, warnings }, null, 2)}\n`);
    return EXIT.ok;
  }
  if (branches.length === 0) {
    opts.out.write(`no agent branches in ${repo}\n`);
    return EXIT.ok;
  }
  opts.out.write(
    `${table(
      ["branch", "sig", "author", "ahead", "changes", "subject"],
      branches.map((b) => [
        printable(b.branch),
        signatureCell(b),
        printable(b.author.name),
        String(b.ahead),
        formatDiffStat(b.diffstat),
        printable(b.subject),
      ]),
    )}\n`,
  );
  opts.out.write(
    "\nsig: G good, G! another agent's key, U no agent's key, B bad, N unsigned, E cannot check, P unverifiable (OpenPGP or X.509 by no declared key)\n",
  );
  for (const b of branches) {
    const letters = Object.entries(b.commitSignatures).map(([letter, n]) => `${n} ${letter}`);
    const unsigned =
      b.notSignedByAgent === 0
        ? ""
        : `; ${plural(b.notSignedByAgent, "commit")} not signed by ${b.agent}'s key (${letters.join(", ")})`;
    opts.out.write(
      `\n${b.branch} (${b.remote}, ${b.commit.slice(0, 12)}) vs ${b.base}: ${b.ahead} ahead, ${b.behind} behind${unsigned}\n`,
    );
    opts.out.write(
      `  ${b.signature.status}: ${b.signature.meaning}${b.signature.signer ? ` (${printable(b.signature.signer)})` : ""}\n`,
    );
    if (b.diffstat.text !== "") opts.out.write(`${printable(b.diffstat.text)}\n`);
  }
  return EXIT.ok;
}

function describe(
  agent: ResolvedAgent,
  remote: string,
  ref: string,
  base: string,
  tip: CommitInfo,
  counts: { ahead: number; behind: number },
  commits: readonly CommitInfo[],
  judge: (commit: CommitInfo) => Verdict & { kind: SignatureKind },
  diffstat: DiffStat & { text: string },
): ReviewedBranch {
  const verdict = judge(tip);
  const byAgent = (v: Verdict) => v.status === "G" && v.signer === agent.git.email;
  const otherAgent = verdict.status === "G" && verdict.signer !== agent.git.email;
  const verdicts = commits.map((c) => judge(c));
  return {
    agent: agent.name,
    remote,
    branch: ref.slice(`refs/remotes/${remote}/`.length),
    ref,
    base,
    commit: tip.commit,
    subject: tip.subject,
    author: { name: tip.author, email: tip.authorEmail },
    date: tip.date,
    signature: {
      status: verdict.status,
      meaning: otherAgent ? "good signature, but by another agent's key" : verdict.meaning,
      signer: verdict.signer || tip.signer,
      key: tip.key,
      otherAgent,
      kind: verdict.kind,
    },
    ahead: counts.ahead,
    behind: counts.behind,
    commitSignatures: countSignatures(verdicts.map((v) => ({ signature: v.status }))),
    notSignedByAgent: verdicts.filter((v) => !byAgent(v)).length,
    diffstat,
  };
}

const signatureCell = (b: ReviewedBranch) => (b.signature.otherAgent ? "G!" : b.signature.status);

async function findBase(
  git: (args: readonly string[], allowFailure?: boolean) => Promise<CommandResult>,
  remote: string,
  defaultBranch: string,
): Promise<string | undefined> {
  for (const candidate of baseCandidates(remote, defaultBranch)) {
    const found = await git(["rev-parse", "--verify", "--quiet", `${candidate}^{commit}`], true);
    if (found.code === 0) {
      const short = await git(["rev-parse", "--abbrev-ref", candidate], true);
      return short.code === 0 && short.stdout.trim() !== "" ? short.stdout.trim() : candidate;
    }
  }
  return undefined;
}

/**
 * The agent's SSH public keys, from the town only: the declared
 * `git.signing.publicKey`, else the key apply derived from the agent's
 * `secrets.sshKey` at its last round and recorded as root. Never a file in
 * the agent's home: the agent could put any key there.
 */
async function agentSigners(
  town: ResolvedTown,
  agent: ResolvedAgent,
  warnings: string[],
): Promise<AgentSigners> {
  const declared = parsePublicKeys(agent.git.signing.publicKey ?? "");
  if (declared.length > 0) return { email: agent.git.email, keys: declared };
  const recorded = await readRootRecord(signerRecordPath(town.stateDir, agent.name));
  const keys = parsePublicKeys(recorded ?? "");
  if (keys.length === 0 && agent.git.signing.format === "ssh")
    warnings.push(
      `${agent.name}: no public key from the town (declare git.signing.publicKey, or apply the town so its round records the key of secrets.sshKey): its signatures show as U`,
    );
  return { email: agent.git.email, keys };
}

/** A file only root can have written (it and its directory root-owned, not writable by others). */
async function readRootRecord(file: string): Promise<string | undefined> {
  for (const p of [path.dirname(file), file]) {
    const info = await lstat(p).catch(() => undefined);
    if (info?.uid !== 0 || (info.mode & 0o022) !== 0 || info.isSymbolicLink()) return undefined;
  }
  return readFile(file, "utf8").catch(() => undefined);
}
