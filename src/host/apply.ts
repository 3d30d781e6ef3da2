/**
 * Carries out a host plan: the only code that changes the live system.
 * Everything that can be checked is checked before the first change
 * (sudoers with visudo, units with systemd-analyze), and nuketown's state
 * is written before each account it creates, so a run killed midway leaves
 * a host the next apply recognises and repairs.
 */
import { rm } from "node:fs/promises";
import path from "node:path";
import { RefusedError } from "../errors.ts";
import { writeFileAtomic } from "../os/files.ts";
import { signerRecordPath } from "../review/signers.ts";
import type { ResolvedTown } from "../town/types.ts";
import {
  type ApplyDeviceAclsOptions,
  applyDeviceAcls,
  reloadUdev,
  revokeDeviceAcls,
} from "./devices.ts";
import { createHome, createImage, emptyTrash, mountHomes, removeHome } from "./homes.ts";
import { installPackages } from "./packages.ts";
import { purgePersisted, unmountBelow } from "./persist.ts";
import { type Action, deviceGrants, type HostPlan } from "./plan.ts";
import { agentUnitName, chatUnitName, type UnitFile } from "./render/units.ts";
import { clearLeftovers, type RoundContext, resetAgent, stopAgent } from "./round.ts";
import { type DeviceGrant, type HostState, readState, writeState } from "./state.ts";
import { verifySudoers, verifyUnits } from "./verify.ts";

export interface ApplyContext extends RoundContext {
  /** Write files below this directory and change nothing else (`--root DIR`). */
  readonly root?: string;
  /** Where devices are looked for (tests point it at a sysfs-shaped tree). @default /sys and /dev */
  readonly devices?: ApplyDeviceAclsOptions;
}

export interface ApplyReport {
  readonly done: readonly Action[];
  readonly warnings: readonly string[];
}

export async function applyPlan(plan: HostPlan, ctx: ApplyContext): Promise<ApplyReport> {
  const { town } = ctx;
  if (plan.errors.length > 0) throw new RefusedError("the plan has conflicts; nothing was applied");
  await verifyBeforeInstall(town, plan.actions, ctx);

  const stateDir = ctx.root ? path.join(ctx.root, town.stateDir) : town.stateDir;
  let state = await readState(stateDir);
  const save = async (next: HostState) => {
    state = next;
    await writeState(stateDir, state);
  };
  const warnings: string[] = [];
  const done: Action[] = [];
  // One command for every missing package, before anything else: a refusal changes nothing.
  const installs = plan.actions.flatMap((a) => (a.kind === "install-package" ? [a] : []));
  const manager = installs[0]?.manager;
  if (!ctx.root && manager !== undefined) {
    const names = installs.map((a) => a.name);
    ctx.log(`installing ${names.join(", ")} with ${manager}`);
    const missing = await installPackages(manager, names, ctx.runner);
    if (missing.length > 0) {
      warnings.push(
        `${manager} installed without error, but ${missing.join(", ")} still ${missing.length === 1 ? "is" : "are"} not listed as installed (a virtual package? declare the package that provides it)`,
      );
    }
    done.push(...installs);
  }
  for (const action of plan.actions) {
    if (action.kind === "install-package") continue;
    if (ctx.root && action.layer !== "files") continue;
    await execute(action, ctx, () => state, save, warnings);
    done.push(action);
  }
  if (!ctx.root && plan.records) {
    const agents = { ...state.agents };
    for (const [name, secrets] of Object.entries(plan.records)) {
      const record = agents[name];
      if (record && !done.some((a) => a.kind === "reset-agent" && a.agent === name))
        agents[name] = { ...record, secrets };
    }
    await save({ ...state, agents });
  }
  if (
    !ctx.root &&
    town.homes.backend !== "directory" &&
    done.some((a) => a.kind === "reset-agent")
  ) {
    await emptyTrash(town, ctx.runner);
  }
  return { done, warnings };
}

async function verifyBeforeInstall(
  town: ResolvedTown,
  actions: readonly Action[],
  ctx: ApplyContext,
): Promise<void> {
  const writes = actions.flatMap((a) => (a.kind === "write-file" ? [a.artifact] : []));
  const sudoers = writes.find((a) => a.path === town.paths.sudoers);
  if (sudoers) {
    const verdict = await verifySudoers(sudoers.content);
    if ("skipped" in verdict)
      throw new RefusedError(
        `cannot check the sudoers file before installing it: ${verdict.skipped}`,
      );
    if (!verdict.ok)
      throw new RefusedError(
        `visudo rejects the rendered sudoers file; nothing was applied:\n${verdict.output}`,
      );
  }
  const units: UnitFile[] = writes
    .filter((a) => a.path.startsWith(`${town.paths.unitDir}/`))
    .map((a) => ({ name: path.basename(a.path), content: a.content }));
  if (units.length > 0) {
    const verdict = await verifyUnits(units);
    if ("skipped" in verdict) ctx.log(`note: units not verified: ${verdict.skipped}`);
    else if (!verdict.ok)
      throw new RefusedError(
        `systemd-analyze rejects the rendered units; nothing was applied:\n${verdict.output}`,
      );
  }
}

async function execute(
  action: Action,
  ctx: ApplyContext,
  state: () => HostState,
  save: (next: HostState) => Promise<void>,
  warnings: string[],
): Promise<void> {
  const { town, runner } = ctx;
  const agentNamed = (name: string) => {
    const agent = town.agents.find((a) => a.name === name);
    if (!agent) throw new Error(`plan names an undeclared agent ${name}`);
    return agent;
  };
  switch (action.kind) {
    case "install-package":
      throw new Error("packages are installed together, before the other actions");
    case "create-group": {
      if (action.gid === undefined) {
        // Recorded first: a crash after groupadd must not leave a group we then call foreign.
        await save({ ...state(), approversGroup: action.name });
        await runner.run("groupadd", ["--system", action.name]);
      } else {
        const agent = agentNamed(action.name);
        await save({
          ...state(),
          agents: {
            ...state().agents,
            [agent.name]: { ...state().agents[agent.name], uid: agent.uid },
          },
        });
        await runner.run("groupadd", ["--gid", String(action.gid), action.name]);
      }
      return;
    }
    case "create-user": {
      await save({
        ...state(),
        agents: {
          ...state().agents,
          [action.name]: { ...state().agents[action.name], uid: action.uid },
        },
      });
      await runner.run("useradd", [
        "--uid",
        String(action.uid),
        "--gid",
        action.group,
        "--home-dir",
        action.home,
        "--no-create-home",
        "--shell",
        "/bin/bash",
        "--comment",
        `nuketown agent ${action.name}`,
        action.name,
      ]);
      return;
    }
    case "add-member":
      await runner.run("gpasswd", ["--add", action.user, action.group]);
      return;
    case "remove-member":
      await runner.run("gpasswd", ["--delete", action.user, action.group]);
      return;
    case "enable-linger":
      await runner.run("loginctl", ["enable-linger", action.name]);
      return;
    case "adopt-account":
      await save({
        ...state(),
        agents: {
          ...state().agents,
          [action.name]: { ...state().agents[action.name], uid: action.uid },
        },
      });
      return;
    case "create-image":
      await createImage(town, runner);
      return;
    case "mount-homes":
      await mountHomes(town, runner);
      return;
    case "create-home":
      await createHome(town, agentNamed(action.agent), runner);
      return;
    case "write-file": {
      const target = ctx.root ? path.join(ctx.root, action.artifact.path) : action.artifact.path;
      await writeFileAtomic(target, action.artifact.content, {
        mode: Number.parseInt(action.artifact.mode, 8),
      });
      const files = new Set([...state().files, action.artifact.path]);
      await save({ ...state(), files: [...files].sort() });
      return;
    }
    case "remove-file": {
      // A unit no longer rendered (an agent's chat unit, now part of its daemon's) is stopped
      // while systemd still knows its file: disabled after its removal, it would run on.
      if (!ctx.root && ctx.systemd && isUnitFile(town, action.path))
        await runner.run("systemctl", ["disable", "--now", path.basename(action.path)], {
          allowFailure: true,
        });
      await rm(ctx.root ? path.join(ctx.root, action.path) : action.path, { force: true });
      await save({ ...state(), files: state().files.filter((f) => f !== action.path) });
      return;
    }
    case "revoke-acls": {
      for (const revoked of await revokeDeviceAcls(town, action.grants, runner, ctx.devices))
        ctx.log(`revoked ${revoked.devnode} from ${revoked.agent}`);
      // What is left recorded: what the agents still have of what they had.
      const wanted = deviceGrants(town);
      const kept: Record<string, DeviceGrant> = {};
      for (const [agent, grant] of Object.entries(state().deviceGrants ?? {})) {
        const now = wanted[agent];
        if (now?.uid !== grant.uid) continue;
        const devices = grant.devices.filter((d) =>
          now.devices.some((n) => JSON.stringify(n) === JSON.stringify(d)),
        );
        if (devices.length > 0) kept[agent] = { uid: grant.uid, devices };
      }
      await save({ ...state(), deviceGrants: kept });
      return;
    }
    case "reload-udev": {
      const result = await reloadUdev(runner);
      // Without udevd the rules are read when it starts: nothing is left to do for them either.
      if ("skipped" in result) warnings.push(`udev rules not reloaded: ${result.skipped}`);
      const { udevReloaded: _was, ...rest } = state();
      await save(action.rules === undefined ? rest : { ...rest, udevReloaded: action.rules });
      return;
    }
    case "apply-acls": {
      for (const grant of await applyDeviceAcls(town, runner, ctx.devices))
        ctx.log(`granted ${grant.devnode} to ${grant.agent}`);
      await save({ ...state(), deviceGrants: deviceGrants(town) });
      return;
    }
    case "reload-systemd": {
      if (action.reload) await runner.run("systemctl", ["daemon-reload"]);
      if (action.disable.length > 0) {
        await runner.run("systemctl", ["disable", "--now", ...action.disable], {
          allowFailure: true,
        });
        const gone = new Set(action.disable);
        await save({ ...state(), units: (state().units ?? []).filter((u) => !gone.has(u)) });
      }
      if (action.enable.length > 0) {
        await runner.run("systemctl", ["enable", ...action.enable]);
        const units = new Set([...(state().units ?? []), ...action.enable]);
        await save({ ...state(), units: [...units].sort() });
      }
      return;
    }
    case "reset-agent": {
      const result = await resetAgent(ctx, agentNamed(action.agent));
      warnings.push(...result.warnings.map((w) => `${action.agent}: ${w}`));
      const record = state().agents[action.agent];
      await save({
        ...state(),
        agents: {
          ...state().agents,
          [action.agent]: {
            uid: record?.uid ?? 0,
            roundDigest: result.digest,
            lastReset: result.at,
            secrets: result.secrets,
          },
        },
      });
      return;
    }
    case "remove-agent": {
      const gone = { name: action.agent, uid: action.uid, home: action.home };
      if (ctx.systemd && !action.keepAccount) {
        for (const unit of [chatUnitName(gone.name), agentUnitName(gone.name)])
          await runner.run("systemctl", ["disable", "--now", unit], { allowFailure: true });
        // userdel leaves the linger file: a later account of that name would linger unasked.
        await runner.run("loginctl", ["disable-linger", gone.name], { allowFailure: true });
      }
      await stopAgent({ runner, systemd: false }, gone);
      // Its uid may be given to a new agent later: nothing of it stays in the shared temp dirs.
      for (const warning of await clearLeftovers(
        ctx,
        { ...gone, gid: gone.uid, runtimeDir: path.join(town.runtimeDir, "agents", gone.name) },
        { removed: true },
      ))
        warnings.push(warning);
      await unmountBelow(action.home, runner);
      await removeHome(town, { name: gone.name, home: action.home }, runner);
      // Exit 6 means "no such user/group" (a run interrupted after it): fine. Anything
      // else keeps the state record, so the next apply tries again instead of
      // mistaking the account for a foreign one.
      const accountTools = action.keepAccount
        ? []
        : ([
            ["userdel", gone.name],
            ["groupdel", gone.name],
          ] as const);
      for (const [tool, name] of accountTools) {
        const result = await runner.run(tool, [name], { allowFailure: true });
        if (result.code !== 0 && result.code !== 6) {
          throw new RefusedError(
            `${tool} ${name} failed (exit ${result.code}): ${result.stderr.trim()}`,
          );
        }
      }
      if (action.purge) await purgePersisted(town, gone.name);
      await rm(signerRecordPath(town.stateDir, gone.name), { force: true });
      const { [gone.name]: _removed, ...agents } = state().agents;
      await save({ ...state(), agents });
      return;
    }
  }
}

function isUnitFile(town: ResolvedTown, file: string): boolean {
  return path.dirname(file) === town.paths.unitDir && file.endsWith(".service");
}
