import { mkdir, rm, rmdir } from "node:fs/promises";
import path from "node:path";
import { ownCgroup } from "../agent/containment.ts";
import { usesGate } from "../approval/wrappers.ts";
import { EXIT } from "../errors.ts";
import { systemdIsInit } from "../host/observe.ts";
import {
  APPROVALD_UNIT,
  agentTmpDir,
  agentUnitName,
  DASHBOARD_UNIT,
  dashboardRuns,
} from "../host/render/units.ts";
import { agentLockDir, agentLockFile, agentRoundStamp } from "../host/round.ts";
import { buildVersion, installedVersion, installProgram } from "../install/install.ts";
import { readPasswd } from "../os/etc.ts";
import { ensureDir, writeFileAtomic } from "../os/files.ts";
import { systemRunner } from "../os/process.ts";
import type { Streams } from "../output.ts";
import { PROGRAM_ROOT, runningInstall } from "../sources.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { type ApproverReach, approverReach } from "../town/rules.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { type ServiceSpec, Supervisor } from "../up/supervisor.ts";
import { apply } from "./plan.ts";
import { requireRoot, townFrom } from "./town-source.ts";

export interface UpOptions extends Streams {
  readonly config: string;
  readonly cwd: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  /** Return once the daemons are started instead of supervising in the foreground (tests). */
  readonly signal?: AbortSignal;
}

/** Where `up` records the daemons it supervises, for `nuketown status`. */
export const upStatePath = (town: ResolvedTown) => path.join(town.runtimeDir, "up.json");

/**
 * `nuketown up`: validate, install this nuketown (from a checkout: the
 * daemons, the gate and the shim only ever run an installed copy), apply,
 * start the approval daemon and every agent daemon — as systemd units where
 * systemd is PID 1, else as children this process keeps alive (SIGHUP
 * restarts them onto the version installed since) — and say where to look.
 */
export async function up(opts: UpOptions): Promise<number> {
  requireRoot("up");
  const declared = await townFrom(opts);
  const approvers = await reachableApprovers(declared);
  // Installed already (this very build): nothing to copy.
  if (
    runningInstall()?.prefix !== declared.install.prefix &&
    (await installedVersion(declared.install.prefix)) !== (await buildVersion(PROGRAM_ROOT))
  ) {
    const installed = await installProgram({
      source: PROGRAM_ROOT,
      prefix: declared.install.prefix,
    });
    opts.err.write(
      installed.changed
        ? `nuketown up: installed nuketown ${installed.version} in ${installed.dir}\n`
        : `nuketown up: nuketown ${installed.version} is installed in ${declared.install.prefix}\n`,
    );
  }
  const applied = await apply({ ...opts });
  if (applied !== EXIT.ok) return applied;
  const town = await townFrom({ ...opts, err: nullStream });

  opts.out.write(`${describeApprovers(approvers.reach)}\n`);
  // approvald with nobody to reach it would only look like a town that can say yes.
  if (approvers.nobody) opts.err.write(`nuketown up: refused: ${approvers.nobody}\n`);

  if (await systemdIsInit()) {
    const units = [
      ...(approvers.nobody ? [] : [APPROVALD_UNIT]),
      ...(dashboardRuns(town) ? [DASHBOARD_UNIT] : []),
      ...town.agents.map((a) => agentUnitName(a.name)),
    ];
    await systemRunner.run("systemctl", ["start", ...units]);
    opts.out.write(`\n${guide(town, `systemd runs ${units.join(", ")}`)}`);
    await printSignIn(town, opts.out);
    return EXIT.ok;
  }

  const logs = path.join(town.stateDir, "logs");
  await ensureDir(logs, 0o755);
  await ensureDir(agentLockDir(town), 0o700);
  // Each agent daemon in a cgroup of its own, delegated to the agent, in which it gives each
  // task a cgroup (what systemd's Delegate=yes gives the agent's unit).
  const cgroups = await makeTownCgroup(town);
  opts.err.write(
    cgroups.ok
      ? `nuketown up: agent daemons run in cgroups under ${cgroups.dir}: each task's processes are killed with it\n`
      : `nuketown up: no cgroup for the agent daemons (${cgroups.reason}): a task's processes are found by process group and NUKETOWN_TASK_ID\n`,
  );
  /** `nuketown agent <name>`, run as the agent in its home (online too, when its chat runs). */
  const asAgent = (agent: ResolvedAgent): ServiceSpec => ({
    name: `agent ${agent.name}`,
    command: town.install.bin,
    args: ["agent", agent.name, "--manifest", town.paths.manifest],
    uid: agent.uid,
    gid: agent.gid,
    cwd: agent.home,
    env: agentServiceEnv(town, agent),
    log: path.join(logs, `agent-${agent.name}.log`),
    // Not started while a reset of the agent runs; started again as soon as it ends.
    round: { lock: agentLockFile(town, agent.name), stamp: agentRoundStamp(town, agent.name) },
  });
  const specs: ServiceSpec[] = [
    ...(approvers.nobody
      ? []
      : [
          {
            name: "approvald",
            command: town.install.bin,
            args: ["approvald", "--manifest", town.paths.manifest],
            log: path.join(logs, "approvald.log"),
          },
        ]),
    ...(dashboardRuns(town)
      ? [
          {
            name: "dashboard",
            command: town.install.bin,
            args: ["dashboard", "serve", "--manifest", town.paths.manifest],
            log: path.join(logs, "dashboard.log"),
          },
        ]
      : []),
    ...town.agents.map((agent) => ({
      ...asAgent(agent),
      ...(cgroups.ok && { cgroup: path.join(cgroups.dir, agent.name) }),
    })),
  ];
  // One write at a time, each of the state as it is when it runs: concurrent
  // renames could otherwise leave an older state on disk last.
  let writing = Promise.resolve();
  const record = () => {
    writing = writing
      .then(() =>
        writeFileAtomic(
          upStatePath(town),
          `${JSON.stringify({ pid: process.pid, services: supervisor.state() }, null, 2)}\n`,
          { mode: 0o644 },
        ),
      )
      .catch((error: Error) => {
        opts.err.write(`nuketown up: cannot record the daemons' state: ${error.message}\n`);
      });
    return writing;
  };
  const supervisor = new Supervisor(specs, {
    onEvent: (line) => {
      opts.err.write(`nuketown up: ${line}\n`);
      void record();
    },
  });
  supervisor.start();
  await record();
  opts.out.write(
    `\n${guide(town, `this process supervises the daemons (systemd is not PID 1); logs in ${logs}`)}`,
  );
  await printSignIn(town, opts.out);

  // `nuketown install` asks for this: the daemons start again through install.bin, the new version.
  const restart = () => {
    opts.err.write("nuketown up: SIGHUP: restarting the daemons onto the installed version\n");
    void supervisor.restartAll();
  };
  process.on("SIGHUP", restart);
  await new Promise<void>((resolve) => {
    if (opts.signal) opts.signal.addEventListener("abort", () => resolve(), { once: true });
    else {
      process.once("SIGINT", () => resolve());
      process.once("SIGTERM", () => resolve());
    }
  });
  process.off("SIGHUP", restart);
  await supervisor.stop();
  if (cgroups.ok) {
    // Only once empty: another town's `up` may share the parent.
    for (const dir of [cgroups.dir, path.dirname(cgroups.dir)]) await rmdir(dir).catch(() => {});
  }
  await rm(upStatePath(town), { force: true });
  return EXIT.ok;
}

/**
 * Who can answer the town's approvals on this host, and, when agents need
 * approvals and no approver can reach any channel, why not: each approver,
 * what is missing, and the fix.
 */
async function reachableApprovers(
  town: ResolvedTown,
): Promise<{ reach: ApproverReach[]; nobody?: string }> {
  const names = new Set((await readPasswd()).map((u) => u.name));
  const reach = approverReach(town, (name) => names.has(name));
  if (!usesGate(town) || reach.some((r) => r.via.length > 0)) return { reach };
  const why = town.humans
    .filter((h) => h.approver)
    .map((h) => {
      const chat =
        town.chat.transport === "local" || !town.approval.channels.includes("chat")
          ? ""
          : ` nor a ${town.chat.transport === "matrix" ? "Matrix" : "XMPP"} id the town bot can reach`;
      return `humans.${h.name} has no Unix account "${h.unixUser}" here${chat}`;
    });
  return {
    reach,
    nobody: `nobody can approve the agents' sudo requests on this host (${
      why.join("; ") || "no human is an approver"
    }), so approvald is not started and their sudo fails closed. Create the account (useradd --create-home NAME) or set humans.NAME.unixUser to an account that exists, then run up again`,
  };
}

function describeApprovers(reach: readonly ApproverReach[]): string {
  const able = reach.filter((r) => r.via.length > 0);
  const lines = able.map((r) => `  ${r.human.name}: ${r.via.join("; ")}`);
  const unable = reach.filter((r) => r.via.length === 0).map((r) => r.human.name);
  if (unable.length > 0)
    lines.push(`  (${unable.join(", ")}: no Unix account or chat id here, so not reachable)`);
  return able.length === 0
    ? "nobody can approve here (no agent asks for approval)"
    : `who can approve:\n${lines.join("\n")}`;
}

/** Where `up` puts the town's agent daemons' cgroups: below its own, `nuketown/<town>/<agent>`. */
export function townCgroup(upCgroup: string, town: Pick<ResolvedTown, "name">): string {
  return path.join(upCgroup, "nuketown", town.name);
}

async function makeTownCgroup(
  town: ResolvedTown,
): Promise<{ ok: true; dir: string } | { ok: false; reason: string }> {
  const own = await ownCgroup();
  if (!own.ok) return own;
  const dir = townCgroup(own.dir, town);
  try {
    await mkdir(dir, { recursive: true });
    return { ok: true, dir };
  } catch (error) {
    return { ok: false, reason: `cannot make ${dir}: ${(error as Error).message}` };
  }
}

/**
 * An agent daemon's environment under `up`: the runtime's declared variables,
 * then PATH with the sudo shim first, so a declared PATH cannot drop the shim,
 * and its private TMPDIR (emptied by every round) unless one is declared.
 */
export function agentServiceEnv(town: ResolvedTown, agent: ResolvedAgent): NodeJS.ProcessEnv {
  const declared = agent.runtime.env.PATH;
  const rest =
    declared === undefined || declared === "" ? ["/usr/local/bin", "/usr/bin", "/bin"] : [declared];
  return {
    HOME: agent.home,
    USER: agent.name,
    LOGNAME: agent.name,
    TMPDIR: agentTmpDir(agent),
    ...agent.runtime.env,
    PATH: [...(agent.sudo.enable ? [town.install.shimDir] : []), ...rest].join(":"),
  };
}

function guide(town: ResolvedTown, how: string): string {
  const agents = town.agents.map((a) => a.name);
  return [
    `town ${town.name} is up: ${how}.`,
    "",
    "  nuketown status                   each agent: home, last reset, processes, daemon",
    "  nuketown approvals --watch        sudo requests waiting for a human (approve ID / deny ID)",
    ...(agents.length > 0 ? [`${`  nuketown talk ${agents[0]}`.padEnd(36)}talk to an agent`] : []),
    `  nuketown audit tail               what was asked and decided`,
    ...(dashboardRuns(town)
      ? ["  nuketown dashboard url            (as yourself) a sign-in link to the dashboard"]
      : []),
    "",
  ].join("\n");
}

/** The mayor's one-time link to the dashboard, once it listens (it makes the secrets at start). */
async function printSignIn(town: ResolvedTown, out: NodeJS.WritableStream): Promise<void> {
  const mayor = town.mayor;
  if (!dashboardRuns(town) || !mayor) return;
  const { signInLink } = await import("./dashboard.ts");
  for (let i = 0; i < 100; i++) {
    const link = await signInLink(town, mayor.name).catch(() => undefined);
    if (link) {
      out.write(`dashboard for ${mayor.name} (works once, for 5 minutes):\n  ${link}\n`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const nullStream = { write: () => true } as unknown as NodeJS.WritableStream;
