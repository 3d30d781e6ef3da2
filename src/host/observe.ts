/**
 * Reads what the planner needs from the host: accounts, mounts, nuketown's
 * own state, the installed system files, which homes exist, which declared
 * packages are installed. With a root
 * directory (`--root DIR`), everything is read below it instead.
 */

import { lstat, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { readGroup, readMountinfo, readPasswd } from "../os/etc.ts";
import { type Runner, systemRunner } from "../os/process.ts";
import type { ResolvedTown } from "../town/types.ts";
import { blankOf, exists, isSubvolume } from "./homes.ts";
import { observePackages } from "./packages.ts";
import { type ObservedHost, presentPackages } from "./plan.ts";
import { renderArtifacts } from "./render/index.ts";
import { observeSecrets, roundDigest } from "./round.ts";
import { createDecryptor, inspectKeyFile, type SecretDecryptor } from "./secrets.ts";
import type { SecretRecord } from "./state.ts";
import { readState } from "./state.ts";

export interface ObserveOptions {
  /** Observe a rendered tree instead of the live host. */
  readonly root?: string;
  /** The gate, shim and login profile are managed files too. */
  readonly programs?: boolean;
  /** Runs the package manager's queries. @default systemRunner */
  readonly runner?: Runner;
  /** Decrypts the agents' secrets whose files changed since their last round. @default the town's age key */
  readonly decryptor?: SecretDecryptor;
}

const readText = (file: string) => readFile(file, "utf8").catch(() => "");

export async function observeHost(
  town: ResolvedTown,
  options: ObserveOptions = {},
): Promise<ObservedHost> {
  const root = options.root;
  const under = (p: string) => (root ? path.join(root, p) : p);
  const state = await readState(under(town.stateDir));

  const managed = new Set([
    ...renderArtifacts(town, options.programs)
      .filter((a) => a.layer !== "identity")
      .map((a) => a.path),
    ...state.files,
  ]);
  const files: Record<string, { content: string; mode: string } | null> = {};
  await Promise.all(
    [...managed].map(async (file) => {
      const info = await lstat(under(file)).catch(() => undefined);
      files[file] = info?.isFile()
        ? {
            content: await readFile(under(file), "utf8"),
            mode: (info.mode & 0o7777).toString(8).padStart(4, "0"),
          }
        : null;
    }),
  );

  if (root) {
    return {
      users: [],
      groups: [],
      mounts: [],
      state,
      files,
      homes: [],
      imageExists: false,
      roundDigests: {},
      secrets: {},
      systemd: false,
      packages: { kind: "unobserved" },
    };
  }

  const packages = await observePackages(
    town.agents.flatMap((a) => a.packages),
    options.runner ?? systemRunner,
  );

  const decryptor =
    options.decryptor ??
    createDecryptor({
      ageKeyFile: town.secrets.ageKeyFile,
      runner: options.runner ?? systemRunner,
    });
  const homes: string[] = [];
  const roundDigests: Record<string, string> = {};
  const secrets: Record<string, Record<string, SecretRecord>> = {};
  await Promise.all(
    town.agents.map(async (agent) => {
      const present =
        town.homes.backend === "directory"
          ? await exists(agent.home)
          : (await isSubvolume(agent.home)) && (await isSubvolume(blankOf(town, agent)));
      if (present) homes.push(agent.name);
      const record = state.agents[agent.name];
      // Before a first round nothing is compared: the round comes anyway.
      if (!record?.lastReset) return;
      const now = await observeSecrets(town, agent, decryptor, record.secrets);
      secrets[agent.name] = now;
      roundDigests[agent.name] = roundDigest(
        town,
        agent,
        presentPackages(packages, agent.packages),
        now,
      );
    }),
  );

  const systemd = await systemdIsInit();
  const runner = options.runner ?? systemRunner;
  const unitDir = `${town.paths.unitDir}/`;
  const unitNames = [
    ...new Set([
      ...[...managed].filter((p) => p.startsWith(unitDir)).map((p) => p.slice(unitDir.length)),
      ...(state.units ?? []),
    ]),
  ].sort();
  return {
    users: await readPasswd(),
    groups: await readGroup(),
    mounts: await readMountinfo(),
    state,
    files,
    homes: homes.sort(),
    imageExists: await exists(town.homes.image.path),
    roundDigests,
    secrets,
    systemd,
    ...(systemd && {
      units: await unitFileStates(unitNames, runner),
      linger: await readdir(LINGER_DIR).catch(() => [] as string[]),
    }),
    packages,
    ageKey: await inspectKeyFile(town.secrets.ageKeyFile),
  };
}

/** Where logind keeps one file per account that lingers (`loginctl enable-linger`). */
const LINGER_DIR = "/var/lib/systemd/linger";

/** `UnitFileState` of each unit, as systemd says ("" when it has no unit file). */
async function unitFileStates(
  units: readonly string[],
  runner: Runner,
): Promise<Record<string, string>> {
  if (units.length === 0) return {};
  const result = await runner.run(
    "systemctl",
    ["show", "--property=Id,UnitFileState", "--", ...units],
    { allowFailure: true },
  );
  const states: Record<string, string> = {};
  // One block per unit, in the order asked, separated by a blank line.
  const blocks = result.stdout.split(/\n\n/);
  units.forEach((unit, i) => {
    const value = /^UnitFileState=(.*)$/m.exec(blocks[i] ?? "")?.[1];
    states[unit] = value ?? "";
  });
  return states;
}

export async function systemdIsInit(): Promise<boolean> {
  return (await readText("/proc/1/comm")).trim() === "systemd";
}
