/**
 * Change control over a git config repo: propose, verify, approve (through
 * approvald), apply (test activation, health check, switch, automatic
 * rollback) and rollback, every step in the change audit log. Git and every
 * declared command run through the Runner seam; no shell ever sees an
 * argument.
 *
 * Store (`change.dir`): proposals/<id>.json, logs/<id>-<step>.log,
 * worktrees/<id> while apply builds, incoming/<id>.bundle while a branch is
 * fetched from an agent's clone, audit.jsonl, lock.
 *
 * Nothing an agent controls runs as root before a human approved it: an
 * agent's clone is read by git running as that agent (a bundle of its
 * branch, which root's git then fetches as data), and verify builds a
 * checkout of the exact commit as the proposing agent, in a directory of
 * its own below `<runtimeDir>/change-builds`, its log and result recorded
 * by root. Only apply, after the approval, builds as root.
 */
import { createHash, randomBytes } from "node:crypto";
import { chown, lstat, mkdir, readdir, readFile, realpath, rm, rmdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { type ApprovalRequest, commandHash, type Decision } from "../approval/protocol.ts";
import { AuditLog, type AuditRecord, tailAudit, verifyAudit } from "../audit/log.ts";
import { FailedError, NuketownError, RefusedError } from "../errors.ts";
import { GUARDED_GIT_CONFIG } from "../host/git-guard.ts";
import { ensureDir, writeFileAtomic } from "../os/files.ts";
import { withHostLock } from "../os/lock.ts";
import { type CommandResult, type Runner, systemRunner } from "../os/process.ts";
import { which } from "../os/which.ts";
import type { ResolvedAgent, ResolvedChangeHost, ResolvedTown } from "../town/types.ts";
import { encodeFrame, LineSplitter } from "../wire/framing.ts";
import { parseDiffBrief } from "./closure.ts";
import { type Argv, fillArgv, type Placeholders } from "./defaults.ts";
import {
  type ApplyRecord,
  canRun,
  ID_PATTERN,
  type Proposal,
  proposalId,
  type Step,
  type VerifyReport,
} from "./proposal.ts";
import { assessChange, type ChangedFile, summarizeRisk } from "./risk.ts";

export interface ChangeControlOptions {
  readonly town: ResolvedTown;
  readonly runner?: Runner;
  readonly clock?: () => Date;
  /** Progress for the human at the terminal. */
  readonly say?: (line: string) => void;
  /** The caller's uid: an agent proposes as itself, never as another. @default process.getuid() */
  readonly uid?: number;
  /** Longest a build may take, in seconds. @default 3600 */
  readonly buildTimeout?: number;
  /** Time between health check attempts, in milliseconds. @default 1000 */
  readonly healthInterval?: number;
}

export interface ProposeOptions {
  readonly host: string;
  readonly explanation: string;
  /** The agent's branch, in the config repo or in `from`. */
  readonly branch?: string;
  /** A repository (the agent's clone) to fetch `branch` from. */
  readonly from?: string;
  /** A patch file (`git diff` or `git format-patch` output) instead of a branch. */
  readonly patch?: string;
  /** The patch itself, as an agent sends it to the change socket (never a path root would read). */
  readonly patchText?: string;
  /** Who proposes; an agent's own uid decides it. */
  readonly agent?: string;
}

const GIT_ENV = { GIT_TERMINAL_PROMPT: "0", LC_ALL: "C" };

/** What of root's environment a build run as an agent may see; the rest is the agent's own. */
const BUILD_ENV_PASSED = ["PATH", "NIX_PATH", "NIX_REMOTE", "TZ", "LANG", "LC_ALL"] as const;

/** The account a step runs as when it must not run as root: an agent's. */
type Account = Pick<ResolvedAgent, "name" | "uid" | "gid" | "home">;

/** Longest a git or file step run as an agent may take: it must not hold the change lock forever. */
const AGENT_STEP_MS = 5 * 60 * 1000;

/** Largest bundle of an agent's branch, and largest archive of a commit to build: they are held in memory. */
const MAX_TRANSFER_BYTES = 256 * 1024 * 1024;

/** Where verify builds, one directory per change owned by the building agent. */
export const changeBuildsDir = (town: ResolvedTown) => path.join(town.runtimeDir, "change-builds");

export class ChangeControl {
  readonly #town: ResolvedTown;
  readonly #runner: Runner;
  readonly #clock: () => Date;
  readonly #say: (line: string) => void;
  readonly #uid: number;
  readonly #buildTimeout: number;
  readonly #healthInterval: number;
  #audit: AuditLog | undefined;

  constructor(options: ChangeControlOptions) {
    this.#town = options.town;
    this.#runner = options.runner ?? systemRunner;
    this.#clock = options.clock ?? (() => new Date());
    this.#say = options.say ?? (() => {});
    this.#uid = options.uid ?? process.getuid?.() ?? 0;
    this.#buildTimeout = options.buildTimeout ?? 3600;
    this.#healthInterval = options.healthInterval ?? 1000;
  }

  get dir(): string {
    return this.#town.change.dir;
  }

  get auditFile(): string {
    return path.join(this.dir, "audit.jsonl");
  }

  async close(): Promise<void> {
    await this.#audit?.close();
  }

  // ---- reading ------------------------------------------------------------

  async list(): Promise<Proposal[]> {
    const names = await readdir(path.join(this.dir, "proposals")).catch(() => [] as string[]);
    const proposals = await Promise.all(
      names
        .filter((n) => n.endsWith(".json"))
        .map((n) => this.get(n.slice(0, -".json".length)).catch(() => undefined)),
    );
    return proposals
      .filter((p): p is Proposal => p !== undefined)
      .sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
  }

  async get(id: string): Promise<Proposal> {
    if (!ID_PATTERN.test(id))
      throw new NuketownError(`"${id}" is not a change id (like 20260101-a1b2c3)`, 2);
    const text = await readFile(this.#proposalFile(id), "utf8").catch(() => undefined);
    if (text === undefined)
      throw new NuketownError(`no change ${id} (nuketown change status lists them)`, 2);
    return JSON.parse(text) as Proposal;
  }

  async log(count = 50): Promise<{ records: AuditRecord[]; verified: string }> {
    const check = await verifyAudit(this.auditFile);
    const verified = check.ok
      ? `audit log intact (${check.records} records)`
      : `AUDIT LOG TAMPERED at line ${check.line}: ${check.problem}`;
    return { records: await tailAudit(this.auditFile, count).catch(() => []), verified };
  }

  // ---- propose ------------------------------------------------------------

  async propose(options: ProposeOptions): Promise<Proposal> {
    const host = this.#host(options.host);
    const repo = this.#repo();
    const agent = this.#proposer(options.agent);
    if (options.explanation.trim() === "")
      throw new NuketownError("a proposal needs a written explanation (--explain)", 2);
    const patched = options.patch !== undefined || options.patchText !== undefined;
    if ((options.branch === undefined) === !patched)
      throw new NuketownError("propose either --branch or --patch", 2);
    await this.#ensureStore();
    return this.#locked("change propose", async () => {
      await this.#requireClean(repo);
      const base = await this.#rev(`refs/heads/${this.#town.change.branch}`);
      const id = proposalId(this.#clock(), randomBytes(3).toString("hex"));
      let commit: string;
      let branch: string;
      if (patched) {
        branch = `refs/nuketown/patches/${id}`;
        const patch =
          options.patchText !== undefined
            ? Buffer.from(options.patchText)
            : await readFile(options.patch as string).catch((error: NodeJS.ErrnoException) => {
                throw new NuketownError(
                  `cannot read the patch ${options.patch} (${error.code})`,
                  2,
                );
              });
        commit = await this.#commitPatch(id, base, patch, agent, options.explanation);
        await this.#git(["update-ref", branch, commit]);
      } else {
        const name = options.branch as string;
        if (!/^[\w./-]+$/.test(name) || name.includes("..") || name.startsWith("-"))
          throw new NuketownError(`"${name}" is not a branch name`, 2);
        if (options.from !== undefined) {
          // The agent's clone: its branch lands under a ref of ours, named after the agent.
          branch = `refs/nuketown/incoming/${agent}/${name}`;
          await this.#fetchFromClone(id, options.from, name, base, branch, this.#account(agent));
        } else {
          branch = `refs/heads/${name}`;
        }
        const found = (await this.#rev(branch, true)) as string | undefined;
        if (found === undefined)
          throw new NuketownError(
            `branch ${name} not found in the config repo ${repo}${options.from === undefined ? " (a branch in your clone: name the clone with from)" : ""}`,
            2,
          );
        commit = found;
      }
      if (commit === base)
        throw new RefusedError(`${branch} has nothing on top of ${this.#town.change.branch}`);
      const ancestor = await this.#git(["merge-base", "--is-ancestor", base, commit], true);
      if (ancestor.code !== 0) {
        const applies = await this.#appliesOn(base, commit);
        throw new RefusedError(
          `${branch} is not based on ${this.#town.change.branch} (${base.slice(0, 12)}): rebase it first${applies ? " (its patch applies cleanly there)" : "; its patch does not apply cleanly there"}`,
        );
      }
      await this.#git(["update-ref", `refs/nuketown/changes/${id}`, commit]);
      const assessment = assessChange(
        await this.#changedFiles(base, commit),
        this.#town.change.rules,
      );
      const proposal: Proposal = {
        v: 1,
        id,
        agent,
        host: host.name,
        explanation: options.explanation.trim(),
        created: this.#clock().toISOString(),
        base,
        commit,
        branch,
        source: options.patch !== undefined ? "patch" : "branch",
        risk: assessment.risk,
        riskReasons: summarizeRisk(assessment),
        options: assessment.options,
        diffstat: assessment.diffstat,
        state: "proposed",
      };
      await this.#save(proposal);
      await this.#record("change.proposed", proposal, {
        base,
        commit,
        branch,
        risk: proposal.risk,
        reasons: proposal.riskReasons,
        options: proposal.options,
        explanation: sha256(proposal.explanation),
      });
      return proposal;
    });
  }

  // ---- verify -------------------------------------------------------------

  /**
   * Builds the proposal's commit without switching, as the proposing agent
   * (see the header); `requester`, when an agent asks through the change
   * socket, must be that agent.
   */
  async verify(id: string, options: { readonly requester?: string } = {}): Promise<Proposal> {
    return this.#locked(`change verify ${id}`, async () => {
      const proposal = await this.#ready(id, "verify");
      if (options.requester !== undefined && options.requester !== proposal.agent)
        throw new RefusedError(
          `change ${id} was proposed by ${proposal.agent}: ${options.requester} verifies only its own changes`,
        );
      const host = this.#host(proposal.host);
      const builder = this.#account(proposal.agent);
      const started = this.#clock();
      const logFile = path.join(this.dir, "logs", `${id}-verify.log`);
      const log: string[] = [`# built as ${builder.name} (uid ${builder.uid})\n`];
      let report: VerifyReport;
      const work = await this.#buildDir(id, builder);
      try {
        await this.#checkout(proposal.commit, work, builder);
        const values = this.#placeholders(host, proposal.commit, work);
        const build = await this.#runSteps(
          "build",
          host.build,
          values,
          work,
          log,
          undefined,
          builder,
        );
        const seconds = (this.#clock().getTime() - started.getTime()) / 1000;
        if (!build.ok) {
          report = {
            ok: false,
            time: started.toISOString(),
            commit: proposal.commit,
            log: logFile,
            error: tail(build.error, 20),
            seconds,
          };
        } else {
          const result = await this.#resolveAs(builder, values.result as string);
          const closure = await this.#closureDiff(host.current, result, builder);
          report = {
            ok: true,
            time: started.toISOString(),
            commit: proposal.commit,
            log: logFile,
            ...(result !== undefined && { result }),
            closure,
            seconds,
          };
        }
      } finally {
        await this.#removeBuildDir(work, builder);
      }
      await writeFileAtomic(logFile, log.join(""), { mode: 0o640 });
      const next: Proposal = {
        ...proposal,
        verify: report,
        state: report.ok ? "verified" : "verify-failed",
      };
      await this.#save(next);
      await this.#record("change.verified", next, {
        ok: report.ok,
        commit: proposal.commit,
        seconds: report.seconds,
        builtAs: builder.name,
        ...(report.error !== undefined && { error: tail(report.error, 5) }),
        ...(report.closure && { closure: report.closure.tool }),
      });
      return next;
    });
  }

  // ---- approve ------------------------------------------------------------

  /** Asks approvald (root only: its request socket is root's) and waits for the answer. */
  async approve(id: string, onPending?: (requestId: string) => void): Promise<Proposal> {
    this.#requireRoot("approve");
    const proposal = await this.#ready(id, "approve");
    await this.#requireUnmoved(proposal);
    const agent = this.#town.agents.find((a) => a.name === proposal.agent);
    if (!agent) throw new RefusedError(`${proposal.agent} is no longer an agent of this town`);
    await this.#record("change.approval-requested", proposal, {
      commit: proposal.commit,
      risk: proposal.risk,
    });
    const closure = proposal.verify?.closure
      ? `${proposal.verify.closure.tool}: ${proposal.verify.closure.summary}`.slice(0, 8000)
      : "";
    const answer = await askApprovald(
      this.#town.paths.requestSocket,
      {
        agent: { name: agent.name, uid: agent.uid },
        argv: ["nuketown", "change", "apply", proposal.id],
        command: "nuketown change apply",
        cwd: this.#repo(),
        runAs: { user: "root" },
        change: {
          id: proposal.id,
          host: proposal.host,
          commit: proposal.commit,
          base: proposal.base,
          risk: proposal.risk,
          reasons: proposal.riskReasons.slice(0, 20),
          explanation: proposal.explanation.slice(0, 16000),
          diffstat: proposal.diffstat.slice(0, 16000),
          closure,
        },
      },
      onPending,
    );
    // The proposal may have moved on while a human thought about it: read it again under the lock.
    return this.#locked(`change approve ${id}`, async () => {
      const current = await this.get(id);
      const approval = {
        id: answer.id,
        decision: answer.decision.decision,
        by: answer.decision.by,
        reason: answer.decision.reason,
        commit: proposal.commit,
        hash: answer.hash,
        time: this.#clock().toISOString(),
      };
      const state =
        answer.decision.decision === "approved"
          ? "approved"
          : answer.decision.decision === "denied"
            ? "denied"
            : current.state;
      const next: Proposal = { ...current, approval, state };
      await this.#save(next);
      await this.#record("change.decided", next, { ...approval });
      return next;
    });
  }

  // ---- apply --------------------------------------------------------------

  async apply(id: string): Promise<Proposal> {
    this.#requireRoot("apply");
    return this.#locked(`change apply ${id}`, async () => {
      const proposal = await this.#ready(id, "apply");
      const host = this.#host(proposal.host);
      const repo = this.#repo();
      try {
        await this.#requireUnmoved(proposal);
        await this.#requireClean(repo);
        const main = await this.#rev(`refs/heads/${this.#town.change.branch}`);
        if (main !== proposal.base) {
          const applies = await this.#appliesOn(main, proposal.commit);
          throw new RefusedError(
            `${this.#town.change.branch} moved since this change was proposed (${proposal.base.slice(0, 12)} → ${main.slice(0, 12)}): ${applies ? "its patch still applies cleanly, but what was verified and approved is not what would run" : "its patch no longer applies"}; propose it again on ${main.slice(0, 12)}`,
          );
        }
      } catch (error) {
        if (error instanceof RefusedError)
          await this.#record("change.refused", proposal, { step: "apply", reason: error.message });
        throw error;
      }

      const log: string[] = [];
      const logFile = path.join(this.dir, "logs", `${id}-apply.log`);
      const steps: { step: string; argv: readonly string[]; code: number }[] = [];
      const started = this.#clock().toISOString();
      const work = await this.#worktree(id, proposal.commit);
      let record: ApplyRecord;
      try {
        const before = this.#placeholders(host, proposal.commit, work);
        const previousGeneration = await this.#generation(host, before, log);
        const values = { ...before, generation: previousGeneration };
        await this.#record("change.apply-started", proposal, {
          commit: proposal.commit,
          previousGeneration,
        });
        const run = async (step: string, commands: readonly Argv[]) => {
          const outcome = await this.#runSteps(step, commands, values, work, log, steps);
          if (!outcome.ok) throw new StepFailed(step, outcome.error);
        };
        let activated = false;
        try {
          await run("build", host.build);
          activated = true;
          await run("test", host.test);
          await this.#health(host, values, work, log, steps);
          await run("switch", host.switch);
        } catch (error) {
          if (!(error instanceof StepFailed)) throw error;
          let rolledBack = false;
          if (activated) {
            this.#say(`${error.step} failed: rolling back to ${previousGeneration}`);
            const back = await this.#runSteps("rollback", host.rollback, values, work, log, steps);
            rolledBack = back.ok;
          }
          record = {
            time: started,
            commit: proposal.commit,
            previousGeneration,
            steps,
            ok: false,
            error: `${error.step} failed: ${tail(error.detail, 10)}`,
            rolledBack,
          };
          await writeFileAtomic(logFile, log.join(""), { mode: 0o640 });
          const next: Proposal = {
            ...proposal,
            apply: record,
            state: rolledBack ? "rolled-back" : "apply-failed",
          };
          await this.#save(next);
          await this.#record("change.apply-failed", next, {
            step: error.step,
            error: tail(error.detail, 5),
            rolledBack,
            previousGeneration,
          });
          if (rolledBack)
            await this.#record("change.rolled-back", next, {
              to: previousGeneration,
              automatic: true,
            });
          return next;
        }
        const generation = await this.#generation(host, values, log).catch(() => undefined);
        record = {
          time: started,
          commit: proposal.commit,
          previousGeneration,
          ...(generation !== undefined && { generation }),
          steps,
          ok: true,
        };
      } finally {
        await this.#removeWorktree(work);
      }
      await this.#landInRepo(proposal);
      await writeFileAtomic(logFile, log.join(""), { mode: 0o640 });
      const next: Proposal = { ...proposal, apply: record, state: "applied" };
      await this.#save(next);
      await this.#record("change.applied", next, {
        commit: proposal.commit,
        previousGeneration: record.previousGeneration,
        ...(record.generation !== undefined && { generation: record.generation }),
        onApply: this.#town.change.onApply,
      });
      return next;
    });
  }

  // ---- rollback -----------------------------------------------------------

  async rollback(id: string): Promise<Proposal> {
    this.#requireRoot("rollback");
    return this.#locked(`change rollback ${id}`, async () => {
      const proposal = await this.#ready(id, "rollback");
      const host = this.#host(proposal.host);
      const to = proposal.apply?.previousGeneration as string;
      const log: string[] = [];
      const values = {
        ...this.#placeholders(host, proposal.commit, this.#repo()),
        generation: to,
      };
      const outcome = await this.#runSteps("rollback", host.rollback, values, this.#repo(), log);
      let reverted: string | undefined;
      if (outcome.ok && this.#town.change.onApply === "merge")
        reverted = await this.#revert(proposal);
      await writeFileAtomic(path.join(this.dir, "logs", `${id}-rollback.log`), log.join(""), {
        mode: 0o640,
      });
      const next: Proposal = {
        ...proposal,
        rollback: {
          time: this.#clock().toISOString(),
          to,
          ok: outcome.ok,
          ...(!outcome.ok && { error: tail(outcome.error, 10) }),
        },
        state: outcome.ok ? "rolled-back" : proposal.state,
      };
      await this.#save(next);
      await this.#record("change.rolled-back", next, {
        to,
        ok: outcome.ok,
        automatic: false,
        ...(reverted !== undefined && { revert: reverted }),
      });
      if (!outcome.ok) throw new FailedError(`rollback failed: ${tail(outcome.error, 5)}`);
      return next;
    });
  }

  // ---- helpers ------------------------------------------------------------

  #host(name: string): ResolvedChangeHost {
    const host = this.#town.change.hosts.find((h) => h.name === name);
    if (!host) {
      const known = this.#town.change.hosts.map((h) => h.name).join(", ") || "none";
      throw new NuketownError(`"${name}" is not in change.hosts (declared: ${known})`, 2);
    }
    return host;
  }

  #repo(): string {
    const repo = this.#town.change.repo;
    if (repo === undefined) throw new NuketownError("change.repo is not declared", 2);
    return repo;
  }

  #proposer(named: string | undefined): string {
    const self = this.#town.agents.find((a) => a.uid === this.#uid);
    if (self) {
      if (named !== undefined && named !== self.name)
        throw new RefusedError(`${self.name} cannot propose as ${named}`);
      return self.name;
    }
    if (named === undefined) throw new NuketownError("say which agent proposes (--agent)", 2);
    if (!this.#town.agents.some((a) => a.name === named))
      throw new NuketownError(`"${named}" is not an agent of this town`, 2);
    return named;
  }

  #requireRoot(step: string): void {
    if (this.#uid !== 0)
      throw new RefusedError(
        `change ${step} runs as root (it ${step === "approve" ? "talks to approvald's root-only socket" : "changes the running system"})`,
      );
  }

  async #ready(id: string, step: Step): Promise<Proposal> {
    const proposal = await this.get(id);
    const can = canRun(proposal, step);
    if (!can.ok) throw new RefusedError(can.reason);
    return proposal;
  }

  /** The branch an approval was given for must still point where it did. */
  async #requireUnmoved(proposal: Proposal): Promise<void> {
    const pinned = await this.#rev(`refs/nuketown/changes/${proposal.id}`, true);
    const now = await this.#rev(proposal.branch, true);
    if (pinned !== proposal.commit || now !== proposal.commit) {
      throw new RefusedError(
        `${proposal.branch} moved since change ${proposal.id} was proposed (${proposal.commit.slice(0, 12)} → ${now?.slice(0, 12) ?? "gone"}): what was verified and approved is no longer what it holds; propose again`,
      );
    }
  }

  async #requireClean(repo: string): Promise<void> {
    const status = await this.#git(["status", "--porcelain", "--untracked-files=normal"]);
    if (status.stdout.trim() !== "")
      throw new RefusedError(
        `${repo} has uncommitted changes; commit or remove them first:\n${tail(status.stdout, 10)}`,
      );
  }

  async #git(args: readonly string[], allowFailure = false): Promise<CommandResult> {
    return this.#runner.run("git", ["-C", this.#repo(), ...args], {
      env: { ...process.env, ...GIT_ENV },
      allowFailure,
    });
  }

  async #rev(ref: string, lenient = false): Promise<string> {
    const result = await this.#git(["rev-parse", "--verify", "--quiet", `${ref}^{commit}`], true);
    const sha = result.stdout.trim();
    if (result.code !== 0 || !/^[0-9a-f]{40}$/.test(sha)) {
      if (lenient) return undefined as unknown as string;
      throw new NuketownError(`${ref} is not a commit in ${this.#repo()}`, 2);
    }
    return sha;
  }

  /** Would `commit`'s change (from its merge base) apply cleanly on `onto`? */
  async #appliesOn(onto: string, commit: string): Promise<boolean> {
    const result = await this.#git(["merge-tree", "--write-tree", onto, commit], true);
    return result.code === 0;
  }

  async #commitPatch(
    id: string,
    base: string,
    patch: Buffer,
    agent: string,
    explanation: string,
  ): Promise<string> {
    const work = await this.#worktree(id, base);
    try {
      const git = (args: readonly string[], input?: Buffer) =>
        this.#runner.run("git", ["-C", work, ...args], {
          env: { ...process.env, ...GIT_ENV },
          allowFailure: true,
          ...(input && { input }),
        });
      const check = await git(["apply", "--check", "--index", "-"], patch);
      if (check.code !== 0)
        throw new RefusedError(
          `the patch does not apply cleanly on ${this.#town.change.branch} (${base.slice(0, 12)}): ${tail(check.stderr, 5)}`,
        );
      await git(["apply", "--index", "-"], patch);
      const email =
        this.#town.agents.find((a) => a.name === agent)?.git.email ?? `${agent}@localhost`;
      const commit = await git([
        "-c",
        `user.name=${agent}`,
        "-c",
        `user.email=${email}`,
        "commit",
        "--no-verify",
        "-q",
        "-m",
        explanation.trim(),
      ]);
      if (commit.code !== 0) throw new FailedError(`git commit failed: ${tail(commit.stderr, 5)}`);
      return (await git(["rev-parse", "HEAD"])).stdout.trim();
    } finally {
      await this.#removeWorktree(work);
    }
  }

  async #changedFiles(base: string, commit: string): Promise<ChangedFile[]> {
    const numstat = await this.#git(["diff", "--numstat", "--no-renames", "-z", base, commit]);
    const files: ChangedFile[] = [];
    for (const entry of numstat.stdout.split("\0").filter((e) => e !== "")) {
      const [added, , file] = entry.split("\t");
      if (file === undefined) continue;
      const show = async (rev: string) => {
        const r = await this.#git(["show", `${rev}:${file}`], true);
        return r.code === 0 ? r.stdout : undefined;
      };
      if (added === "-") {
        files.push({ path: file, binary: true });
        continue;
      }
      const before = await show(base);
      const after = await show(commit);
      files.push({
        path: file,
        ...(before !== undefined && { before }),
        ...(after !== undefined && { after }),
      });
    }
    return files;
  }

  async #worktree(id: string, commit: string): Promise<string> {
    const work = path.join(this.dir, "worktrees", id);
    await this.#removeWorktree(work);
    await ensureDir(path.dirname(work), 0o700);
    await this.#git(["worktree", "add", "--detach", "--quiet", work, commit]);
    return work;
  }

  async #removeWorktree(work: string): Promise<void> {
    await this.#git(["worktree", "remove", "--force", work], true);
    await rm(work, { recursive: true, force: true });
    await this.#git(["worktree", "prune"], true);
  }

  /** The agent's account, which its clone is read and its change built as. */
  #account(name: string): Account {
    const agent = this.#town.agents.find((a) => a.name === name);
    if (!agent) throw new RefusedError(`${name} is no longer an agent of this town`);
    return agent;
  }

  /** Spawn options that drop to `as` (root only; anyone else already is who they are). */
  #runAs(as: Account): { uid?: number; gid?: number } {
    if (this.#uid === 0) return { uid: as.uid, gid: as.gid };
    if (this.#uid !== as.uid)
      throw new RefusedError(
        `this step runs as ${as.name}: run it as root (approvald does) or as ${as.name}`,
      );
    return {};
  }

  /**
   * The agent's branch, read from its clone by git running as the agent (a
   * bundle on stdout), then fetched by root's git from that file: no hook,
   * fsmonitor or other setting of the clone runs as root, and the agent
   * can offer nothing it could not read itself.
   */
  async #fetchFromClone(
    id: string,
    from: string,
    name: string,
    base: string,
    into: string,
    as: Account,
  ): Promise<void> {
    if (!path.isAbsolute(from) || from.includes("\0"))
      throw new NuketownError(`the clone must be given by its absolute path, not "${from}"`, 2);
    const git = (args: readonly string[]) =>
      this.#runner.run(
        "git",
        // Its clone may be owned by another account (a shared one): reading it is the agent's business.
        ["-c", "safe.directory=*", ...GUARDED_GIT_CONFIG, "-C", from, ...args],
        {
          env: accountEnv(as),
          allowFailure: true,
          cwd: "/",
          timeoutMs: AGENT_STEP_MS,
          maxOutputBytes: MAX_TRANSFER_BYTES,
          ...this.#runAs(as),
        },
      );
    const head = await git(["rev-parse", "--verify", "--quiet", `refs/heads/${name}^{commit}`]);
    if (head.code !== 0) {
      const repo = await git(["rev-parse", "--git-dir"]);
      if (repo.code !== 0)
        throw new NuketownError(
          `${from} is not a git repository ${as.name} can read: ${tail(repo.stderr, 2)}`,
          2,
        );
      throw new NuketownError(`branch ${name} not found in ${from}`, 2);
    }
    if (head.stdout.trim() === base)
      throw new RefusedError(`${name} has nothing on top of ${this.#town.change.branch}`);
    const hasBase = (await git(["cat-file", "-e", `${base}^{commit}`])).code === 0;
    const bundle = await git([
      "bundle",
      "create",
      "--quiet",
      "-",
      `refs/heads/${name}`,
      ...(hasBase ? [`^${base}`] : []),
    ]);
    if (bundle.code !== 0)
      throw new FailedError(`git bundle of ${name} in ${from} failed: ${tail(bundle.stderr, 3)}`);
    const file = path.join(this.dir, "incoming", `${id}.bundle`);
    await writeFileAtomic(file, bundle.stdoutBytes, { mode: 0o600, dirMode: 0o700 });
    try {
      const fetched = await this.#runner.run(
        "git",
        [
          ...GUARDED_GIT_CONFIG,
          "-c",
          "fetch.fsckObjects=true",
          "-C",
          this.#repo(),
          "fetch",
          "--quiet",
          "--no-tags",
          "--no-recurse-submodules",
          "--",
          file,
          `+refs/heads/${name}:${into}`,
        ],
        { env: { ...process.env, ...GIT_ENV }, allowFailure: true },
      );
      if (fetched.code !== 0)
        throw new FailedError(`fetching ${name} from ${from} failed: ${tail(fetched.stderr, 3)}`);
    } finally {
      await rm(file, { force: true });
    }
  }

  /** A fresh directory for one build, the builder's own, in a root-owned parent it cannot rename. */
  async #buildDir(id: string, as: Account): Promise<string> {
    const parent = changeBuildsDir(this.#town);
    await mkdir(parent, { recursive: true, mode: 0o711 });
    const dir = path.join(parent, id);
    await this.#removeBuildDir(dir, as);
    await mkdir(dir, { mode: 0o700 });
    if (this.#uid === 0) await chown(dir, as.uid, as.gid);
    return dir;
  }

  /** The exact commit, archived by root's git from root's repo and unpacked by the builder. */
  async #checkout(commit: string, dir: string, as: Account): Promise<void> {
    const archive = await this.#runner.run(
      "git",
      ["-C", this.#repo(), "archive", "--format=tar", commit],
      {
        env: { ...process.env, ...GIT_ENV },
        allowFailure: true,
        maxOutputBytes: MAX_TRANSFER_BYTES,
      },
    );
    if (archive.code !== 0)
      throw new FailedError(
        `git archive of ${commit.slice(0, 12)} failed: ${tail(archive.stderr, 3)}`,
      );
    const unpack = await this.#runner.run(
      "tar",
      ["-x", "-f", "-", "-C", dir, "--no-same-owner", "--no-same-permissions"],
      {
        input: archive.stdoutBytes,
        env: accountEnv(as),
        allowFailure: true,
        timeoutMs: AGENT_STEP_MS,
        ...this.#runAs(as),
      },
    );
    if (unpack.code !== 0)
      throw new FailedError(`unpacking ${commit.slice(0, 12)} failed: ${tail(unpack.stderr, 3)}`);
  }

  /** Where the build's result link points, as the builder sees it. */
  async #resolveAs(as: Account, link: string): Promise<string | undefined> {
    const r = await this.#runner.run("readlink", ["-e", "--", link], {
      env: accountEnv(as),
      allowFailure: true,
      timeoutMs: AGENT_STEP_MS,
      ...this.#runAs(as),
    });
    const target = r.stdout.trim();
    return r.code === 0 && target !== "" ? target : undefined;
  }

  /**
   * Its content goes as the builder (root removing a tree another account
   * can still change could be steered outside it), then the empty directory as root.
   */
  async #removeBuildDir(dir: string, as: Account): Promise<void> {
    const there = await lstat(dir).catch(() => undefined);
    if (!there) return;
    if (!there.isDirectory()) throw new FailedError(`${dir} is not a directory: remove it by hand`);
    await this.#runner.run("find", [dir, "-mindepth", "1", "-delete"], {
      env: accountEnv(as),
      allowFailure: true,
      timeoutMs: AGENT_STEP_MS,
      cwd: "/",
      ...this.#runAs(as),
    });
    await rmdir(dir).catch((error: NodeJS.ErrnoException) =>
      this.#say(`${dir} is left behind (${error.code}): remove it by hand`),
    );
  }

  #placeholders(host: ResolvedChangeHost, commit: string, work: string): Placeholders {
    return {
      host: host.name,
      attr: host.attr,
      repo: this.#repo(),
      commit,
      result: path.join(work, "result"),
    };
  }

  async #runSteps(
    step: string,
    commands: readonly Argv[],
    values: Placeholders,
    cwd: string,
    log: string[],
    steps?: { step: string; argv: readonly string[]; code: number }[],
    as?: Account,
  ): Promise<{ ok: true } | { ok: false; error: string }> {
    for (const template of commands) {
      let argv: string[];
      try {
        argv = fillArgv(template, values);
      } catch (error) {
        return { ok: false, error: (error as Error).message };
      }
      const [program, ...args] = argv as [string, ...string[]];
      this.#say(`${step}: ${argv.join(" ")}`);
      log.push(`$ ${argv.join(" ")}\n`);
      let result: CommandResult;
      try {
        result = await this.#runner.run(program, args, {
          cwd,
          allowFailure: true,
          timeoutMs: this.#buildTimeout * 1000,
          ...(as
            ? { ...this.#runAs(as), env: { ...accountEnv(as), NUKETOWN_CHANGE_STEP: step } }
            : { env: { ...process.env, NUKETOWN_CHANGE_STEP: step } }),
        });
      } catch (error) {
        log.push(`${(error as Error).message}\n`);
        steps?.push({ step, argv, code: 127 });
        return { ok: false, error: (error as Error).message };
      }
      log.push(result.stdout, result.stderr, `[exit ${result.code}]\n`);
      steps?.push({ step, argv, code: result.code });
      if (result.code !== 0)
        return {
          ok: false,
          error: `${argv.join(" ")} exited ${result.code}\n${(result.stderr || result.stdout).trim()}`,
        };
    }
    return { ok: true };
  }

  async #generation(
    host: ResolvedChangeHost,
    values: Placeholders,
    log: string[],
  ): Promise<string> {
    let last = "";
    for (const template of host.generation) {
      const [program, ...args] = fillArgv(template, values) as [string, ...string[]];
      const result = await this.#runner.run(program, args, { allowFailure: true });
      log.push(
        `$ ${[program, ...args].join(" ")}\n${result.stdout}${result.stderr}[exit ${result.code}]\n`,
      );
      if (result.code !== 0)
        throw new FailedError(
          `cannot tell the current generation (${program} exited ${result.code}): nothing was changed`,
        );
      last = result.stdout.trim().split("\n").at(-1) ?? "";
    }
    if (last === "")
      throw new FailedError("the generation step printed nothing: nothing was changed");
    return last;
  }

  async #health(
    host: ResolvedChangeHost,
    values: Placeholders,
    cwd: string,
    log: string[],
    steps: { step: string; argv: readonly string[]; code: number }[],
  ): Promise<void> {
    if (host.health.length === 0) return;
    const deadline = Date.now() + host.healthTimeout * 1000;
    let last = "";
    for (;;) {
      const attempt: typeof steps = [];
      const outcome = await this.#runSteps("health", host.health, values, cwd, log, attempt);
      if (outcome.ok) {
        steps.push(...attempt);
        return;
      }
      last = outcome.error;
      if (Date.now() + this.#healthInterval > deadline) {
        steps.push(...attempt);
        throw new StepFailed("health", `not healthy within ${host.healthTimeout} s: ${last}`);
      }
      await new Promise((resolve) => setTimeout(resolve, this.#healthInterval));
    }
  }

  /**
   * nvd, else nix store diff-closures, else the paths that differ between
   * the two trees (diff -rq, never following links) — all run as the
   * builder: the result is its, and root does not walk a tree it controls.
   */
  async #closureDiff(
    current: string,
    result: string | undefined,
    as: Account,
  ): Promise<{ tool: string; summary: string }> {
    if (result === undefined) return { tool: "none", summary: "the build left no result link" };
    const exists = await lstat(current).then(
      () => true,
      () => false,
    );
    if (!exists)
      return { tool: "none", summary: `${current} does not exist: nothing to compare with` };
    const run = (program: string, args: readonly string[]) =>
      this.#runner.run(program, args, {
        allowFailure: true,
        timeoutMs: this.#buildTimeout * 1000,
        env: accountEnv(as),
        ...this.#runAs(as),
      });
    for (const [tool, program, args] of [
      ["nvd", "nvd", ["diff", current, result]],
      [
        "nix store diff-closures",
        "nix",
        ["--extra-experimental-features", "nix-command", "store", "diff-closures", current, result],
      ],
    ] as const) {
      if (!(await which(program))) continue;
      const r = await run(program, args);
      if (r.code === 0) return { tool, summary: r.stdout.trim() || "no difference" };
    }
    // The running system is usually a link (/run/current-system): compare what it points to.
    const running = await realpath(current).catch(() => current);
    const diff = await run("diff", ["-rq", "--no-dereference", "--", running, result]);
    if (diff.code > 1)
      return { tool: "none", summary: `diff could not compare: ${tail(diff.stderr, 3)}` };
    return { tool: "changed paths", summary: parseDiffBrief(diff.stdout, running, result) };
  }

  async #landInRepo(proposal: Proposal): Promise<void> {
    const { onApply, branch } = this.#town.change;
    if (onApply === "tag") {
      await this.#git(["tag", "-f", `nuketown/change/${proposal.id}`, proposal.commit]);
      return;
    }
    if (onApply !== "merge") return;
    const head = await this.#git(["symbolic-ref", "-q", "HEAD"], true);
    if (head.stdout.trim() === `refs/heads/${branch}`)
      await this.#git(["merge", "--ff-only", "--quiet", proposal.commit]);
    else
      await this.#git([
        "update-ref",
        "-m",
        `nuketown change ${proposal.id}`,
        `refs/heads/${branch}`,
        proposal.commit,
        proposal.base,
      ]);
  }

  /** After a manual rollback, the branch says so too: a revert commit, if the change is on it. */
  async #revert(proposal: Proposal): Promise<string | undefined> {
    const { branch } = this.#town.change;
    const head = await this.#git(["symbolic-ref", "-q", "HEAD"], true);
    if (head.stdout.trim() !== `refs/heads/${branch}`) return undefined;
    const contains = await this.#git(
      ["merge-base", "--is-ancestor", proposal.commit, "HEAD"],
      true,
    );
    if (contains.code !== 0) return undefined;
    const revert = await this.#git(
      [
        "-c",
        "user.name=nuketown",
        "-c",
        "user.email=nuketown@localhost",
        "revert",
        "--no-edit",
        proposal.commit,
      ],
      true,
    );
    if (revert.code !== 0) {
      await this.#git(["revert", "--abort"], true);
      this.#say(`the branch was not reverted: ${tail(revert.stderr, 3)}`);
      return undefined;
    }
    return (await this.#rev("HEAD")) ?? undefined;
  }

  async #ensureStore(): Promise<void> {
    for (const sub of ["proposals", "logs"])
      await mkdir(path.join(this.dir, sub), { recursive: true });
  }

  #proposalFile(id: string): string {
    return path.join(this.dir, "proposals", `${id}.json`);
  }

  async #save(proposal: Proposal): Promise<void> {
    await this.#ensureStore();
    await writeFileAtomic(
      this.#proposalFile(proposal.id),
      `${JSON.stringify(proposal, null, 2)}\n`,
      {
        mode: 0o644,
      },
    );
  }

  async #record(event: string, proposal: Proposal, data: Record<string, unknown>): Promise<void> {
    this.#audit ??= new AuditLog(this.auditFile, { mode: 0o644 });
    await this.#audit.append(event, {
      change: proposal.id,
      agent: proposal.agent,
      host: proposal.host,
      state: proposal.state,
      ...data,
    });
  }

  #locked<T>(what: string, work: () => Promise<T>): Promise<T> {
    return withHostLock(this.dir, what, work);
  }
}

class StepFailed extends Error {
  readonly step: string;
  readonly detail: string;
  constructor(step: string, detail: string) {
    super(`${step} failed`);
    this.step = step;
    this.detail = detail;
  }
}

function tail(text: string, lines: number): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** An environment of the account's own, with the few settings of root's a build needs. */
function accountEnv(as: Account): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    HOME: as.home,
    USER: as.name,
    LOGNAME: as.name,
    GIT_TERMINAL_PROMPT: "0",
  };
  for (const key of BUILD_ENV_PASSED)
    if (process.env[key] !== undefined) env[key] = process.env[key];
  env.PATH ??= "/usr/bin:/bin";
  return env;
}

/** One change request to approvald; resolves with its decision (the connection stays open until then). */
export function askApprovald(
  socketPath: string,
  request: ApprovalRequest,
  onPending?: (id: string) => void,
): Promise<{ id: string; hash: string; decision: Decision }> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let pending: { id: string; hash: string } | undefined;
    socket.setEncoding("utf8");
    const splitter = new LineSplitter(
      (line) => {
        const frame = JSON.parse(line) as {
          type: string;
          id?: string;
          hash?: string;
          error?: string;
        } & Partial<Decision>;
        if (frame.type === "pending" && frame.id) {
          pending = { id: frame.id, hash: frame.hash ?? "" };
          onPending?.(frame.id);
        } else if (frame.type === "decision" && frame.decision && frame.by) {
          resolve({
            id: frame.id ?? pending?.id ?? "",
            hash: pending?.hash ?? commandHash(request),
            decision: { decision: frame.decision, by: frame.by, reason: frame.reason ?? "" },
          });
          socket.end();
        } else if (frame.type === "error") {
          reject(new FailedError(`approvald refused the request: ${frame.error}`));
          socket.destroy();
        }
      },
      () => socket.destroy(new Error("approvald sent an oversized frame")),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
    socket.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        new NuketownError(
          `cannot reach the approval daemon at ${socketPath} (${error.code}): is nuketown approvald running?`,
          4,
        ),
      ),
    );
    socket.on("connect", () => socket.write(encodeFrame({ type: "request", request })));
  });
}
