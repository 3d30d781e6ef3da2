import { EXIT } from "../errors.ts";
import { systemdIsInit } from "../host/observe.ts";
import { readMounts } from "../host/persist.ts";
import { agentUnitName } from "../host/render/units.ts";
import { readState } from "../host/state.ts";
import { systemRunner } from "../host/system.ts";
import { type Streams, table } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { townFrom } from "./town-source.ts";

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
        ? (
            await systemRunner.run("systemctl", ["is-active", agentUnitName(agent.name)], {
              allowFailure: true,
            })
          ).stdout.trim()
        : "no systemd";
      return {
        agent: agent.name,
        uid: agent.uid,
        created: record !== undefined,
        backend: town.homes.backend,
        lastReset: record?.lastReset ?? null,
        persistedBytes: du.code === 0 ? Number(du.stdout.split("\t")[0]) : null,
        processes: pids.code === 0 ? pids.stdout.trim().split("\n").length : 0,
        service,
        binds: agent.persist.filter((p) => mounts.some((m) => m.mountPoint === p.target)).length,
        persisted: agent.persist.length,
      };
    }),
  );

  if (opts.json) {
    opts.out.write(
      `${JSON.stringify({ town: town.name, systemd, homesMounted, agents: rows }, null, 2)}\n`,
    );
    return EXIT.ok;
  }
  opts.out.write(
    `town ${town.name}: homes on ${town.homes.backend} at ${town.agentsDir} (${homesMounted ? "mounted" : "NOT mounted"})\n`,
  );
  if (!systemd)
    opts.out.write("systemd is not PID 1 here: agent services are not managed by systemd\n");
  opts.out.write("\n");
  opts.out.write(
    `${table(
      ["agent", "uid", "home", "last reset", "persisted", "binds", "processes", "service"],
      rows.map((r) => [
        r.agent,
        String(r.uid),
        r.created ? r.backend : "not applied",
        r.lastReset ?? "never",
        r.persistedBytes === null ? "-" : humanBytes(r.persistedBytes),
        `${r.binds}/${r.persisted}`,
        String(r.processes),
        r.service,
      ]),
    )}\n`,
  );
  return EXIT.ok;
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
