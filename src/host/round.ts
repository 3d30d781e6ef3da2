/**
 * A round: the agent's home is leveled and rebuilt. Stop the agent, unmount
 * its binds, roll the home back to blank, remount what persists, place its
 * identity and secrets, clone its repos, start it again.
 */

import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { ensureDir, writeFileAtomic } from "../os/files.ts";
import type { Runner } from "../os/process.ts";
import { signerRecordPath } from "../review/signers.ts";
import type { ResolvedAgent, ResolvedSecret, ResolvedTown } from "../town/types.ts";
import { type HomeFile, writeFilesAsAgent } from "./agent-files.ts";
import { GUARDED_GIT_CONFIG, guardedFetchArgs } from "./git-guard.ts";
import { createHome, exists, rollbackHome } from "./homes.ts";
import { observePackages } from "./packages.ts";
import { ensurePersistSources, mountPersisted, unmountBelow } from "./persist.ts";
import { presentPackages } from "./plan.ts";
import { renderHomeArtifacts } from "./render/index.ts";
import { renderRuntimeLinks } from "./render/runtime-config.ts";
import { agentUnitName } from "./render/units.ts";
import {
  derivePublicKey,
  importGpgKey,
  type SecretDecryptor,
  SSH_KEY_TARGET,
  secretTargets,
} from "./secrets.ts";
import type { SecretRecord } from "./state.ts";

export interface RoundContext {
  readonly town: ResolvedTown;
  readonly runner: Runner;
  readonly decryptor: SecretDecryptor;
  /** systemd is PID 1: agent services can be stopped and started. */
  readonly systemd: boolean;
  /** Progress and non-fatal problems (a repo that could not be cloned). */
  readonly log: (line: string) => void;
}

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

/** Stop everything running as the agent and wait until nothing is left. */
export async function stopAgent(
  ctx: Pick<RoundContext, "runner" | "systemd">,
  agent: Pick<ResolvedAgent, "name" | "uid">,
): Promise<void> {
  if (ctx.systemd) {
    await ctx.runner.run("systemctl", ["stop", agentUnitName(agent.name)], { allowFailure: true });
  }
  await killAgentProcesses(ctx, agent);
}

/** SIGKILL everything running as the agent, until nothing is left. */
async function killAgentProcesses(
  ctx: Pick<RoundContext, "runner">,
  agent: Pick<ResolvedAgent, "name" | "uid">,
): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const left = await ctx.runner.run("pgrep", ["-u", String(agent.uid)], { allowFailure: true });
    if (left.code !== 0) return;
    await ctx.runner.run("pkill", ["-KILL", "-u", String(agent.uid)], { allowFailure: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`processes of ${agent.name} (uid ${agent.uid}) survive SIGKILL`);
}

export async function resetAgent(ctx: RoundContext, agent: ResolvedAgent): Promise<RoundResult> {
  const { town, runner } = ctx;
  const warnings: string[] = [];
  await stopAgent(ctx, agent);
  await unmountBelow(agent.home, runner);
  if (await exists(agent.home)) await rollbackHome(town, agent, runner);
  else await createHome(town, agent, runner);

  await ensurePersistSources(town, agent);
  await mountPersisted(agent, runner);
  // Looked at now: apply installs packages before the rounds it plans.
  const present = presentPackages(await observePackages(agent.packages, runner), agent.packages);
  const secrets = await placeIdentity(ctx, agent, present);
  warnings.push(...(await cloneRepos(ctx, agent)));

  // Where the agent's daemon puts its socket: /run is empty after boot, and the round runs first.
  await ensureDir(agent.runtimeDir, 0o711, agent.uid, agent.gid);
  if (ctx.systemd) {
    // --no-block: at boot this runs inside the reset unit, which the agent unit is ordered
    // after; waiting for the start job would wait for ourselves.
    await runner.run("systemctl", ["start", "--no-block", agentUnitName(agent.name)], {
      allowFailure: true,
    });
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
 * Identity, instructions, git and SSH config, and secrets, written as the
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
  await writeFilesAsAgent(ctx.town, agent, files, ctx.runner, renderRuntimeLinks(agent));
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
  // Whatever git started as the agent (it should be nothing) ends with this step of the
  // round, before the fresh home is handed back.
  await killAgentProcesses(ctx, agent);
  return warnings;
}
