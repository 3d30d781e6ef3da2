import { readFile } from "node:fs/promises";
import { AgentClient } from "../agent/client.ts";
import { ControlClient } from "../approval/client.ts";
import type { PendingRequest } from "../approval/protocol.ts";
import { EXIT } from "../errors.ts";
import { systemdIsInit } from "../host/observe.ts";
import { readMounts } from "../host/persist.ts";
import { agentUnitName, chatRuns } from "../host/render/units.ts";
import { readState } from "../host/state.ts";
import { systemRunner } from "../os/process.ts";
import { printable, type Streams, table } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import type { ServiceState } from "../up/supervisor.ts";
import { townFrom } from "./town-source.ts";
import { upStatePath } from "./up.ts";

export interface StatusOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly cwd: string;
  readonly json?: boolean;
}

/** `nuketown status`: one row per agent, as it is on this host now. */
export async function status(opts: StatusOptions): Promise<number> {
  const town = await townFrom(opts);
  const state = await readState(town.stateDir);
  const systemd = await systemdIsInit();
  const mounts = await readMounts();
  const supervised = await readSupervised(town);
  const pending = await pendingApprovals(town);
  const homesMounted =
    town.homes.backend === "directory" || mounts.some((m) => m.mountPoint === town.agentsDir);

  const rows = await Promise.all(
    town.agents.map(async (agent) => {
      const record = state.agents[agent.name];
      const du = await systemRunner.run("du", ["-sb", agent.persistRoot], { allowFailure: true });
      const pids = await systemRunner.run("pgrep", ["-u", String(agent.uid)], {
        allowFailure: true,
      });
      const service = systemd
        ? await unitState(agentUnitName(agent.name))
        : describeSupervised(supervised, `agent ${agent.name}`);
      // The agent's daemon runs its chat: it says how it stands (root and the mayor may ask).
      const chat = !chatRuns(town, agent) ? "-" : await chatOf(agent, service);
      return {
        agent: agent.name,
        uid: agent.uid,
        created: record !== undefined,
        backend: town.homes.backend,
        lastReset: record?.lastReset ?? null,
        persistedBytes: du.code === 0 ? Number(du.stdout.split("\t")[0]) : null,
        processes: pids.code === 0 ? pids.stdout.trim().split("\n").length : 0,
        service,
        chat,
        binds: agent.persist.filter((p) => mounts.some((m) => m.mountPoint === p.target)).length,
        persisted: agent.persist.length,
        pendingApprovals:
          pending === undefined ? null : pending.filter((r) => r.agent.name === agent.name).length,
      };
    }),
  );

  if (opts.json) {
    opts.out.write(
      `${JSON.stringify({ town: town.name, systemd, homesMounted, supervisor: supervised ?? null, agents: rows }, null, 2)}\n`,
    );
    return EXIT.ok;
  }
  opts.out.write(
    `town ${town.name}: homes on ${town.homes.backend} at ${town.agentsDir} (${homesMounted ? "mounted" : "NOT mounted"})\n`,
  );
  if (!systemd) {
    opts.out.write(
      supervised
        ? `daemons supervised by nuketown up (pid ${supervised.pid}); approvald: ${describeSupervised(supervised, "approvald")}\n`
        : "systemd is not PID 1 here and nuketown up is not running: no daemons are managed\n",
    );
  }
  opts.out.write("\n");
  opts.out.write(
    `${table(
      [
        "agent",
        "uid",
        "home",
        "last reset",
        "persisted",
        "binds",
        "processes",
        "approvals",
        "service",
        "chat",
      ],
      rows.map((r) => [
        r.agent,
        String(r.uid),
        r.created ? r.backend : "not applied",
        r.lastReset ?? "never",
        r.persistedBytes === null ? "-" : humanBytes(r.persistedBytes),
        `${r.binds}/${r.persisted}`,
        String(r.processes),
        r.pendingApprovals === null ? "-" : String(r.pendingApprovals),
        r.service,
        r.chat,
      ]),
    )}\n`,
  );
  return EXIT.ok;
}

/** Requests waiting for a human, when the daemon runs and we may ask it (root or an approver). */
async function pendingApprovals(town: ResolvedTown): Promise<PendingRequest[] | undefined> {
  try {
    const client = await ControlClient.connect(town.paths.controlSocket);
    try {
      return await client.list();
    } finally {
      client.close();
    }
  } catch {
    return undefined;
  }
}

interface Supervised {
  readonly pid: number;
  readonly services: readonly ServiceState[];
}

/** What `nuketown up` supervises, if it is still running. */
async function readSupervised(town: ResolvedTown): Promise<Supervised | undefined> {
  try {
    const state = JSON.parse(await readFile(upStatePath(town), "utf8")) as Supervised;
    process.kill(state.pid, 0);
    return state;
  } catch {
    return undefined;
  }
}

/**
 * An online agent's chat, as its daemon tells it: "online (pid 1234)", or
 * what keeps it offline ("failed (pid 1234: … refused the access token …;
 * trying again in 60 s)"). A daemon that cannot be asked: its service's state.
 */
async function chatOf(agent: ResolvedAgent, service: string): Promise<string> {
  let client: AgentClient | undefined;
  try {
    client = await AgentClient.connect(agent.socket);
    const status = await client.status();
    const chat = status.chat;
    if (!chat) return `not online (pid ${status.pid} runs without chat)`;
    const detail = chat.detail ? `: ${chat.detail}` : "";
    const restarts = chat.restarts > 0 ? `, ${chat.restarts} restarts` : "";
    return `${chat.state} (pid ${status.pid}${restarts}, since ${chat.since}${detail})`;
  } catch {
    return `daemon ${service}`;
  } finally {
    client?.close();
  }
}

function describeSupervised(supervised: Supervised | undefined, name: string): string {
  if (!supervised) return "not running (no systemd here: start the town with nuketown up)";
  const service = supervised.services.find((s) => s.name === name);
  if (!service) return "not supervised";
  const restarts = service.restarts > 0 ? `, ${service.restarts} restarts` : "";
  // What the daemon said last as it exited (the log line comes from the agent's own process).
  const lastExit = service.lastExit === undefined ? undefined : printable(service.lastExit);
  return service.pid
    ? `up (pid ${service.pid}${restarts}${lastExit && restarts ? `; last exit: ${lastExit}` : ""})`
    : `down (${lastExit ?? "starting"}${restarts})`;
}

/** `systemctl is-active`, and when it is not active, the last line its journal has. */
async function unitState(unit: string): Promise<string> {
  const state = (
    await systemRunner.run("systemctl", ["is-active", unit], { allowFailure: true })
  ).stdout.trim();
  if (state === "active") return state;
  const journal = await systemRunner
    .run("journalctl", ["--unit", unit, "--lines", "1", "--output", "cat", "--no-pager"], {
      allowFailure: true,
    })
    .catch(() => undefined);
  const last = journal?.code === 0 ? journal.stdout.trim().split("\n").pop() : undefined;
  return last ? `${state} (${printable(last.slice(0, 300))})` : state;
}

function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
