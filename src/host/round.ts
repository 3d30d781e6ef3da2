/**
 * A round: the agent's home is leveled and rebuilt. Stop everything that
 * runs as the agent (and verify it), clear what it left outside its home,
 * unmount its binds, roll the home back to blank, remount what persists,
 * place its identity and secrets, clone its repos, start it again. The
 * whole round holds the agent's lock, so `nuketown up` does not start its
 * daemon in the middle of it (and starts it right after).
 */

import { createHash } from "node:crypto";
import { readFile, rm, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { FailedError } from "../errors.ts";
import { ensureDir, writeFileAtomic } from "../os/files.ts";
import { withLockFile } from "../os/lock.ts";
import type { Runner } from "../os/process.ts";
import { signerRecordPath } from "../review/signers.ts";
import type { ResolvedAgent, ResolvedSecret, ResolvedTown } from "../town/types.ts";
import { type HomeFile, writeFilesAsAgent } from "./agent-files.ts";
import { GUARDED_GIT_CONFIG, guardedFetchArgs } from "./git-guard.ts";
import { createHome, exists, rollbackHome } from "./homes.ts";
import {
  clearKeyrings,
  removeSpooledJobs,
  removeSysvIpc,
  resetRuntimeDir,
  sweepTempDirs,
} from "./leftovers.ts";
import { observePackages } from "./packages.ts";
import { ensurePersistSources, mountPersisted, readMounts } from "./persist.ts";
import { presentPackages } from "./plan.ts";
import { renderHomeArtifacts } from "./render/index.ts";
import { renderRuntimeLinks } from "./render/runtime-config.ts";
import { agentUnitName, chatUnitName } from "./render/units.ts";
import {
  derivePublicKey,
  importGpgKey,
  type SecretDecryptor,
  SSH_KEY_TARGET,
  secretTargets,
} from "./secrets.ts";
import type { SecretRecord } from "./state.ts";
import { ensureStopped, stopUser } from "./stop.ts";

export interface RoundContext {
  readonly town: ResolvedTown;
  readonly runner: Runner;
  readonly decryptor: SecretDecryptor;
  /** systemd is PID 1: agent services can be stopped and started. */
  readonly systemd: boolean;
  /** Progress and non-fatal problems (a repo that could not be cloned). */
  readonly log: (line: string) => void;
  /** Where the agent leaves things outside its home (tests point them elsewhere). */
  readonly leftovers?: {
    readonly tempDirs?: readonly string[];
    readonly crontabs?: readonly string[];
    readonly at?: readonly string[];
  };
  /** Place the home's files through the as-agent writer (benchmarks compare). */
  readonly writeAsAgent?: boolean;
}

/** The agent's lock: held by its round, and by `nuketown up` while it starts the agent's daemons. */
export const agentLockFile = (town: Pick<ResolvedTown, "stateDir">, name: string) =>
  path.join(town.stateDir, "locks", `${name}.lock`);

/** Touched as each round of the agent ends: `up` knows its daemon was stopped by a round. */
export const agentRoundStamp = (town: Pick<ResolvedTown, "stateDir">, name: string) =>
  path.join(town.stateDir, "locks", `${name}.round`);

/** Where the agents' locks live: root's. */
export const agentLockDir = (town: Pick<ResolvedTown, "stateDir">) =>
  path.join(town.stateDir, "locks");

export interface RoundResult {
  readonly agent: string;
  readonly digest: string;
  readonly at: string;
  readonly warnings: readonly string[];
  /** The secrets placed, as recorded in the agent's state. */
  readonly secrets: Readonly<Record<string, SecretRecord>>;
}

/** Every secret a round gives the agent, by where it lands (`gpg`: the key imported into its keyring). */
export function secretSources(
  town: ResolvedTown,
  agent: ResolvedAgent,
): { readonly id: string; readonly secret: ResolvedSecret }[] {
  return [
    ...secretTargets(agent, town.chat.transport).map((t) => ({ id: t.target, secret: t.secret })),
    ...(agent.secrets.gpgKey ? [{ id: GPG_SECRET_ID, secret: agent.secrets.gpgKey }] : []),
  ];
}

const GPG_SECRET_ID = "gpg";

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

/** sha256 of a secret file's bytes; "missing" when it cannot be read. */
const fileHash = (file: string) => readFile(file).then(sha256, () => "missing");

function secretRecord(secret: ResolvedSecret, hash: string, value: string): SecretRecord {
  return {
    file: secret.file,
    ...(secret.key !== undefined && { key: secret.key }),
    fileHash: hash,
    valueHash: value,
  };
}

/**
 * The agent's secrets as they are now: a record is reused while its file is
 * byte for byte what it was, else only this agent's keys are decrypted and
 * hashed (a shared sops file changes whenever anyone's key in it does). A
 * secret that cannot be decrypted gets a value that matches no round, so
 * the agent is reset and the round says why.
 */
export async function observeSecrets(
  town: ResolvedTown,
  agent: ResolvedAgent,
  decryptor: SecretDecryptor,
  recorded: Readonly<Record<string, SecretRecord>> = {},
): Promise<Record<string, SecretRecord>> {
  const records: Record<string, SecretRecord> = {};
  for (const { id, secret } of secretSources(town, agent)) {
    const hash = await fileHash(secret.file);
    const was = recorded[id];
    if (was && was.file === secret.file && was.key === secret.key && was.fileHash === hash) {
      records[id] = was;
      continue;
    }
    const value = await decryptor.decrypt(secret).then(sha256, () => `undecryptable ${hash}`);
    records[id] = secretRecord(secret, hash, value);
  }
  return records;
}

/**
 * Everything a round places in the home, as a digest: when it changes,
 * apply resets the agent. Secrets count by the value the agent receives
 * (`secrets`, from observeSecrets or the round), never by the file they
 * come from, so editing another agent's key in a shared file changes
 * nothing here; the agent's packages that are installed count too (its
 * instructions list them).
 */
export function roundDigest(
  town: ResolvedTown,
  agent: ResolvedAgent,
  presentPackages: readonly string[] | undefined,
  secrets: Readonly<Record<string, SecretRecord>>,
): string {
  const hash = createHash("sha256");
  hash.update(
    JSON.stringify({ backend: town.homes.backend, persist: agent.persist, repos: agent.repos }),
  );
  for (const artifact of renderHomeArtifacts(town, agent, undefined, presentPackages)) {
    hash.update(`\0${artifact.path}\0${artifact.mode}\0${artifact.content}`);
  }
  for (const target of secretTargets(agent, town.chat.transport)) {
    const value = secrets[target.target]?.valueHash ?? "missing";
    hash.update(`\0${target.target}\0${target.mode}\0${value}`);
  }
  if (agent.secrets.gpgKey)
    hash.update(`\0${GPG_SECRET_ID}\0${secrets[GPG_SECRET_ID]?.valueHash ?? "missing"}`);
  return hash.digest("hex");
}

/**
 * Stop everything running as the agent — its units, its user manager, and
 * every process of its uid wherever it runs — and verify that nothing is
 * left; throws, naming the survivors, when something outlives SIGKILL.
 */
export async function stopAgent(
  ctx: Pick<RoundContext, "runner" | "systemd">,
  agent: Pick<ResolvedAgent, "name" | "uid"> & { readonly gid?: number },
): Promise<void> {
  if (ctx.systemd) {
    // The user manager too: lingering user services run as the agent and would start again.
    await ctx.runner.run(
      "systemctl",
      ["stop", agentUnitName(agent.name), chatUnitName(agent.name), `user@${agent.uid}.service`],
      { allowFailure: true },
    );
  }
  await stopUser({ name: agent.name, uid: agent.uid, gid: agent.gid ?? agent.uid }, ctx);
}

/**
 * Clear what the agent left outside its home: its files in the shared temp
 * dirs, its crontab and `at` jobs, its System V IPC objects and kernel
 * keyrings, its runtime dir (and TMPDIR). Warnings for what stays (its
 * directories that hold other users' files, keyrings it could not clear).
 */
export async function clearLeftovers(
  ctx: Pick<RoundContext, "town" | "leftovers" | "runner">,
  agent: Pick<ResolvedAgent, "name" | "uid" | "gid" | "runtimeDir">,
  options: { readonly removed?: boolean } = {},
): Promise<string[]> {
  const { town } = ctx;
  removeSpooledJobs(agent, {
    ...(ctx.leftovers?.crontabs && { crontabs: ctx.leftovers.crontabs }),
    ...(ctx.leftovers?.at && { at: ctx.leftovers.at }),
  });
  const swept = sweepTempDirs({
    uid: agent.uid,
    ...(ctx.leftovers?.tempDirs && { roots: ctx.leftovers.tempDirs }),
    // The town's own trees (under /tmp in tests, or by a declaration) are not temp files.
    skip: [town.agentsDir, town.persistDir, town.stateDir, town.runtimeDir],
    mounts: await readMounts(),
  });
  // ipcrm missing (util-linux) must not fail a round half-way: said, and tried next round.
  const ipc = await removeSysvIpc(agent.uid, ctx.runner).then(
    () => undefined,
    (error: Error) => `its System V IPC objects were not removed: ${error.message}`,
  );
  const keyrings = await clearKeyrings(agent, ctx.runner);
  // A removed agent's runtime dir goes; a new round's is made afresh.
  if (options.removed) await rm(agent.runtimeDir, { recursive: true, force: true });
  else await resetRuntimeDir(agent);
  return [
    ...swept.kept.map(
      (dir) =>
        `${dir} stays: it is ${agent.name}'s but holds other users' files (or lies too deep)`,
    ),
    ...[ipc, keyrings].filter((warning) => warning !== undefined),
  ];
}

export async function resetAgent(ctx: RoundContext, agent: ResolvedAgent): Promise<RoundResult> {
  await ensureDir(agentLockDir(ctx.town), 0o700);
  // The supervisor holds it only while it starts a daemon: wait that out.
  return withLockFile(
    agentLockFile(ctx.town, agent.name),
    `reset of ${agent.name}`,
    async () => {
      try {
        return await round(ctx, agent);
      } finally {
        // Tells `up` that its daemon stopped for a round, even one this fast.
        const stamp = agentRoundStamp(ctx.town, agent.name);
        const now = new Date();
        await utimes(stamp, now, now).catch(() => writeFile(stamp, "", { mode: 0o600 }));
      }
    },
    { waitMs: 30_000 },
  );
}

async function round(ctx: RoundContext, agent: ResolvedAgent): Promise<RoundResult> {
  const { town, runner } = ctx;
  const warnings: string[] = [];
  // Nothing below runs until no process of the agent is left: a failure here rolls back nothing.
  try {
    await stopAgent(ctx, agent);
  } catch (error) {
    throw new FailedError(`${(error as Error).message}; its home was not rolled back`);
  }
  // The snapshot runs (a btrfs process) while the leftovers are cleared: neither touches the other.
  const rolled = (await exists(agent.home))
    ? rollbackHome(town, agent, runner)
    : createHome(town, agent, runner);
  rolled.catch(() => {});
  warnings.push(...(await clearLeftovers(ctx, agent)));
  await rolled;

  await ensurePersistSources(town, agent);
  // Its fstab is written beside the locks: a directory only root writes.
  await mountPersisted(agent, runner, agentLockDir(town));
  // Looked at now: apply installs packages before the rounds it plans.
  const present = presentPackages(
    await observePackages(agent.packages, runner, {
      cacheFile: path.join(town.stateDir, "packages.json"),
    }),
    agent.packages,
  );
  const secrets = await placeIdentity(ctx, agent, present);
  warnings.push(...(await cloneRepos(ctx, agent)));
  // Whatever ran as the agent during the round (git, gpg: it should have left nothing) ends
  // here, before the fresh home is handed back.
  await ensureStopped(agent, ctx);

  if (ctx.systemd) {
    // --no-block: at boot this runs inside the reset unit, which the agent unit is ordered
    // after; waiting for the start job would wait for ourselves.
    await runner.run(
      "systemctl",
      ["start", "--no-block", agentUnitName(agent.name), `user@${agent.uid}.service`],
      { allowFailure: true },
    );
  }
  return {
    agent: agent.name,
    digest: roundDigest(town, agent, present, secrets),
    at: new Date().toISOString(),
    warnings,
    secrets,
  };
}

/**
 * Identity, instructions, git and SSH config, and secrets, owned by the
 * agent. Returns what was placed of the secrets, for the agent's record.
 */
async function placeIdentity(
  ctx: RoundContext,
  agent: ResolvedAgent,
  presentPackages: readonly string[] | undefined,
): Promise<Record<string, SecretRecord>> {
  const files: HomeFile[] = [];
  const records: Record<string, SecretRecord> = {};
  let publicKey: string | undefined;
  for (const target of secretTargets(agent, ctx.town.chat.transport)) {
    const hash = await fileHash(target.secret.file);
    const plaintext = await ctx.decryptor.decrypt(target.secret);
    records[target.target] = secretRecord(target.secret, hash, sha256(plaintext));
    files.push({
      path: path.join(agent.home, target.target),
      content: plaintext,
      mode: target.mode,
    });
    if (target.target === SSH_KEY_TARGET) {
      publicKey = await derivePublicKey(plaintext, ctx.runner);
      // Review's key for the agent, where the agent cannot change it (never its home).
      await writeFileAtomic(signerRecordPath(ctx.town.stateDir, agent.name), `${publicKey}\n`, {
        mode: 0o644,
        dirMode: 0o755,
      });
      files.push({
        path: path.join(agent.home, `${target.target}.pub`),
        content: `${publicKey}\n`,
        mode: "0644",
      });
    }
  }
  for (const artifact of renderHomeArtifacts(ctx.town, agent, publicKey, presentPackages)) {
    files.push({ path: artifact.path, content: artifact.content, mode: artifact.mode });
  }
  await writeFilesAsAgent(ctx.town, agent, files, ctx.runner, renderRuntimeLinks(agent), {
    asAgent: ctx.writeAsAgent === true,
  });
  if (agent.secrets.gpgKey) {
    const hash = await fileHash(agent.secrets.gpgKey.file);
    const armored = await ctx.decryptor.decrypt(agent.secrets.gpgKey);
    records[GPG_SECRET_ID] = secretRecord(agent.secrets.gpgKey, hash, sha256(armored));
    await importGpgKey(agent, armored, ctx.runner);
  }
  return records;
}

async function cloneRepos(ctx: RoundContext, agent: ResolvedAgent): Promise<string[]> {
  const warnings: string[] = [];
  const asAgent = {
    uid: agent.uid,
    gid: agent.gid,
    cwd: agent.home,
    env: { HOME: agent.home, PATH: process.env.PATH ?? "/usr/bin:/bin", GIT_TERMINAL_PROMPT: "0" },
    allowFailure: true,
    timeoutMs: 10 * 60_000,
    // Whatever git starts here must not hold the reset: its group dies at the timeout, and
    // output is not waited for past git's exit.
    untrustedChildren: { exitGraceMs: 2000 },
  };
  for (const repo of agent.repos) {
    const target = path.join(agent.home, repo.path);
    const result = (await exists(path.join(target, ".git")))
      ? await ctx.runner.run("git", guardedFetchArgs(target, repo.url), asAgent)
      : await ctx.runner.run(
          "git",
          [
            ...GUARDED_GIT_CONFIG,
            "clone",
            ...(repo.branch ? ["--branch", repo.branch] : []),
            "--",
            repo.url,
            target,
          ],
          asAgent,
        );
    if (result.code !== 0)
      warnings.push(`${repo.url}: ${result.stderr.trim().split("\n").pop() ?? "git failed"}`);
  }
  return warnings;
}
