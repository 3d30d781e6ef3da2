/**
 * `nuketown install [--rollback]` and `nuketown uninstall [--purge]`: the
 * program on this host (install/install.ts), and the town's daemons moved
 * onto the version that is current.
 */
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { SUDO_WRAPPER_MARK } from "../approval/wrappers.ts";
import { EXIT } from "../errors.ts";
import { applyPlan } from "../host/apply.ts";
import { observeHost, systemdIsInit } from "../host/observe.ts";
import { planHost } from "../host/plan.ts";
import { chatUnitName, renderUnits } from "../host/render/units.ts";
import { createDecryptor } from "../host/secrets.ts";
import {
  installedVersion,
  installProgram,
  removeProgram,
  rollbackProgram,
} from "../install/install.ts";
import { DEFAULT_PREFIX } from "../install/layout.ts";
import { withHostLock } from "../os/lock.ts";
import { systemRunner } from "../os/process.ts";
import { parseMountinfo } from "../os/tables.ts";
import type { Streams } from "../output.ts";
import { PROGRAM_ROOT, runningInstall } from "../sources.ts";
import type { ResolvedTown } from "../town/types.ts";
import { DEFAULT_MANIFEST, requireRoot, townFrom } from "./town-source.ts";

export interface InstallCommandOptions extends Streams {
  /** @default the town's install.prefix, else the running installation's, else /usr/local */
  readonly prefix?: string;
  readonly rollback?: boolean;
  /** The town whose daemons move onto the new version. @default /etc/nuketown/town.json */
  readonly manifest?: string;
  /** What to install. @default the running program (a checkout or an installed copy) */
  readonly source?: string;
  /** The version directory's name (tests, packaging). */
  readonly version?: string;
  /** Install the build as it is, even if sources changed since (tests). */
  readonly anyBuild?: boolean;
  /** Do not restart daemons (packaging stages; `up` starts them itself). */
  readonly noRestart?: boolean;
}

/** `nuketown install`: install (or roll back), then restart the town's running daemons onto it. */
export async function install(opts: InstallCommandOptions): Promise<number> {
  requireRoot("install");
  const town = await manifestTown(opts.manifest);
  const prefix = opts.prefix ?? town?.install.prefix ?? runningInstall()?.prefix ?? DEFAULT_PREFIX;
  let changed: boolean;
  if (opts.rollback) {
    const { from, to } = await rollbackProgram(prefix);
    opts.out.write(`nuketown ${to} is current again in ${prefix} (was ${from})\n`);
    changed = true;
  } else {
    const result = await installProgram({
      source: opts.source ?? PROGRAM_ROOT,
      prefix,
      ...(opts.version !== undefined && { version: opts.version }),
      anyBuild: opts.anyBuild === true,
    });
    opts.out.write(
      result.changed
        ? `nuketown ${result.version} installed in ${result.dir} and current${result.previous ? ` (previous: ${result.previous}, for --rollback)` : ""}\n`
        : `nuketown ${result.version} is already installed and current in ${prefix}\n`,
    );
    changed = result.changed;
  }
  if (changed && town && !opts.noRestart && town.install.prefix === prefix) {
    for (const line of await restartDaemons(town)) opts.out.write(`${line}\n`);
  }
  return EXIT.ok;
}

async function manifestTown(manifest?: string): Promise<ResolvedTown | undefined> {
  const file = manifest ?? DEFAULT_MANIFEST;
  if (!existsSync(file)) return undefined;
  return townFrom({ manifest: file, cwd: "/", err: process.stderr });
}

/** The units of a town's daemons (not the boot-time reset). */
const daemonUnits = (town: ResolvedTown) =>
  renderUnits(town)
    .map((u) => u.name)
    .filter((name) => name !== "nuketown-reset.service");

/** The chat units an older nuketown installed, before each agent's daemon ran its chat. */
const legacyChatUnits = (town: ResolvedTown) =>
  town.agents
    .map((a) => chatUnitName(a.name))
    .filter((unit) => existsSync(path.join(town.paths.unitDir, unit)));

/**
 * Restart the town's running daemons so they run the version that is now
 * current: systemd restarts the units that are running; a `nuketown up`
 * that supervises them is asked with SIGHUP. approvald fails its pending
 * requests closed as it stops, and records them in the audit log.
 */
export async function restartDaemons(town: ResolvedTown): Promise<string[]> {
  if (await systemdIsInit()) {
    const lines: string[] = [];
    // An agent's daemon now runs its chat too: the chat units an older nuketown installed
    // must not stay online beside it (two clients of one account answer twice). apply
    // removes their files.
    const legacy = legacyChatUnits(town);
    if (legacy.length > 0) {
      await systemRunner.run("systemctl", ["disable", "--now", ...legacy], { allowFailure: true });
      lines.push(`stopped ${legacy.join(", ")}: each agent's daemon runs its chat now`);
    }
    const units = daemonUnits(town);
    await systemRunner.run("systemctl", ["try-restart", ...units]);
    return [...lines, `restarted the running units of town ${town.name}: ${units.join(", ")}`];
  }
  const up = await supervisingUp(town);
  if (up === undefined) return [`no daemons of town ${town.name} are running`];
  process.kill(up, "SIGHUP");
  return [`asked nuketown up (pid ${up}) to restart the daemons of town ${town.name}`];
}

/** The pid of the `nuketown up` supervising the town, if it still runs. */
async function supervisingUp(town: ResolvedTown): Promise<number | undefined> {
  const { upStatePath } = await import("./up.ts");
  try {
    const state = JSON.parse(await readFile(upStatePath(town), "utf8")) as { pid?: number };
    if (typeof state.pid !== "number") return undefined;
    const cmdline = (await readFile(`/proc/${state.pid}/cmdline`, "utf8")).split("\0");
    // A recycled pid is not ours to signal.
    return cmdline.includes("up") ? state.pid : undefined;
  } catch {
    return undefined;
  }
}

export interface UninstallOptions extends Streams {
  readonly prefix?: string;
  readonly purge?: boolean;
  readonly manifest?: string;
}

/**
 * `nuketown uninstall`: stop the town's daemons, remove what apply installed
 * for them (units, sudoers fragment, udev rules, the gate, shim, login
 * profile and sudo wrapper) and the program. The towns' data (the manifest, state and audit
 * log, accounts, homes, persisted data) stays, unless `--purge`: then the
 * agents are removed as apply removes them with --purge, and the state
 * directory and the manifest go too.
 */
export async function uninstall(opts: UninstallOptions): Promise<number> {
  requireRoot("uninstall");
  const town = await manifestTown(opts.manifest);
  const prefix = opts.prefix ?? town?.install.prefix ?? runningInstall()?.prefix ?? DEFAULT_PREFIX;
  const say = (line: string) => opts.out.write(`${line}\n`);
  if (town) {
    await stopDaemons(town, say);
    if (opts.purge) {
      await withHostLock(town.stateDir, "uninstall", async () => {
        const empty: ResolvedTown = { ...town, agents: [] };
        const observed = await observeHost(empty, { programs: true });
        const plan = planHost(empty, observed, { purge: true, programs: true });
        await applyPlan(plan, {
          town: empty,
          runner: systemRunner,
          decryptor: createDecryptor({
            ageKeyFile: town.secrets.ageKeyFile,
            runner: systemRunner,
          }),
          systemd: await systemdIsInit(),
          log: say,
        });
      });
      say(`removed the agents of town ${town.name} with their persisted data`);
    }
    const files = [
      ...renderUnits(town).map((u) => path.join(town.paths.unitDir, u.name)),
      ...town.agents.map((a) => path.join(town.paths.unitDir, chatUnitName(a.name))),
      town.paths.sudoers,
      town.paths.udevRules,
      town.paths.profile,
      town.install.gate,
      path.join(town.install.shimDir, "sudo"),
    ];
    for (const file of files) await rm(file, { force: true });
    // /usr/local/bin/sudo only when it is the wrapper apply wrote: anything else there is not ours.
    const wrapper = await readFile(town.install.sudoWrapper, "utf8").catch(() => "");
    if (wrapper.startsWith(`#!/bin/sh\n${SUDO_WRAPPER_MARK}`))
      await rm(town.install.sudoWrapper, { force: true });
    await rm(town.install.shimDir, { recursive: true, force: true });
    if (await systemdIsInit())
      await systemRunner.run("systemctl", ["daemon-reload"]).catch(() => {});
    say(
      `removed the units, sudoers fragment, udev rules, gate, shim, login profile and sudo wrapper of town ${town.name}`,
    );
    if (opts.purge) {
      await unmountBelow(town.agentsDir);
      await rm(town.stateDir, { recursive: true, force: true });
      await rm(town.paths.manifest, { force: true });
      say(`removed ${town.stateDir} and ${town.paths.manifest}`);
    } else {
      say(
        `kept the town's data: ${town.paths.manifest}, ${town.stateDir}, ${town.persistDir}, the accounts and homes (uninstall --purge removes them)`,
      );
    }
  }
  const version = await installedVersion(prefix);
  const removed = await removeProgram(prefix);
  say(
    removed
      ? `removed nuketown${version ? ` ${version}` : ""} from ${prefix}`
      : `nuketown was not installed in ${prefix}`,
  );
  return EXIT.ok;
}

async function stopDaemons(town: ResolvedTown, say: (line: string) => void): Promise<void> {
  if (await systemdIsInit()) {
    const units = [...daemonUnits(town), ...legacyChatUnits(town), "nuketown-reset.service"];
    await systemRunner.run("systemctl", ["disable", "--now", ...units]).catch(() => {});
    say(`stopped and disabled ${units.join(", ")}`);
    return;
  }
  const up = await supervisingUp(town);
  if (up === undefined) return;
  process.kill(up, "SIGTERM");
  for (let i = 0; i < 200 && existsSync(`/proc/${up}`); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  say(`stopped nuketown up (pid ${up}) and the daemons it supervised`);
}

async function unmountBelow(dir: string): Promise<void> {
  const mounts = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"))
    .filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  for (const mount of mounts) await systemRunner.run("umount", [mount.mountPoint]);
}
