import { ConfigError, EXIT, FailedError, RefusedError } from "../errors.ts";
import { emptyTrash, mountHomes } from "../host/homes.ts";
import { leaveAgentCgroups } from "../host/leave-cgroup.ts";
import { systemdIsInit } from "../host/observe.ts";
import { readMounts } from "../host/persist.ts";
import { resetAgent } from "../host/round.ts";
import { createDecryptor } from "../host/secrets.ts";
import { readState, writeState } from "../host/state.ts";
import { withHostLock } from "../os/lock.ts";
import { systemRunner } from "../os/process.ts";
import type { Streams } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { requireRoot, townFrom } from "./town-source.ts";

export interface ResetOptions extends Streams {
  readonly agents: readonly string[];
  readonly all?: boolean;
  readonly config?: string;
  readonly manifest?: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly cwd: string;
  readonly json?: boolean;
}

/**
 * `nuketown reset`: a new round for some agents or all. Reads the installed
 * manifest unless given a declaration, so the boot unit needs no config.
 */
export async function reset(opts: ResetOptions): Promise<number> {
  requireRoot("reset");
  const town = await townFrom(opts);
  if (Boolean(opts.all) === opts.agents.length > 0) {
    throw new ConfigError("reset", [
      { path: "", message: "name the agents to reset, or pass --all (not both)" },
    ]);
  }
  const unknown = opts.agents.filter((name) => !town.agents.some((a) => a.name === name));
  if (unknown.length > 0) {
    throw new ConfigError(
      "reset",
      unknown.map((name) => ({ path: name, message: "no such agent in this town" })),
    );
  }
  const chosen = opts.all ? town.agents : town.agents.filter((a) => opts.agents.includes(a.name));
  // Asked by the agent itself (chat's !reset): out of its cgroup before the round stops it.
  const left = await leaveAgentCgroups(chosen.map((a) => a.uid));
  if (left) {
    // Whoever asked is stopped with the agent: what this reset still says may go nowhere.
    for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
    opts.err.write(
      left.to === undefined
        ? `warning: this reset runs in ${left.from}, which stopping the agent stops, and no cgroup above it takes it\n`
        : `this reset left ${left.from} for ${left.to}: stopping the agent does not stop it\n`,
    );
  }

  return withHostLock(town.stateDir, "reset", async () => {
    const applied = (await readState(town.stateDir)).agents;
    const notApplied = chosen.filter((a) => applied[a.name] === undefined);
    if (notApplied.length > 0) {
      throw new RefusedError(
        `not created by nuketown on this host yet: ${notApplied.map((a) => a.name).join(", ")} (run apply first)`,
      );
    }
    // At boot the image is not mounted yet: the reset unit runs before anything else.
    if (
      town.homes.backend !== "directory" &&
      !(await readMounts()).some((m) => m.mountPoint === town.agentsDir)
    ) {
      await mountHomes(town, systemRunner);
    }
    const ctx = {
      town,
      runner: systemRunner,
      decryptor: createDecryptor({ ageKeyFile: town.secrets.ageKeyFile, runner: systemRunner }),
      systemd: await systemdIsInit(),
      log: (line: string) => opts.err.write(`${line}\n`),
    };
    const results = [];
    const failed: string[] = [];
    for (const agent of chosen) {
      const started = performance.now();
      // One agent's failed round (a bad secret, a busy mount) must not keep the others on last round's home.
      let result: Awaited<ReturnType<typeof resetAgent>>;
      try {
        result = await resetAgent(ctx, agent);
      } catch (error) {
        failed.push(agent.name);
        opts.err.write(`error: ${agent.name}: the round failed: ${(error as Error).message}\n`);
        results.push({
          agent: agent.name,
          ms: Math.round(performance.now() - started),
          error: (error as Error).message,
        });
        continue;
      }
      const state = await readState(town.stateDir);
      await writeState(town.stateDir, {
        ...state,
        agents: {
          ...state.agents,
          [agent.name]: {
            uid: agent.uid,
            roundDigest: result.digest,
            lastReset: result.at,
            secrets: result.secrets,
          },
        },
      });
      const ms = performance.now() - started;
      results.push({ agent: agent.name, ms: Math.round(ms), warnings: result.warnings });
      for (const warning of result.warnings) opts.err.write(`warning: ${agent.name}: ${warning}\n`);
      if (!opts.json) opts.out.write(`reset ${agent.name} (${(ms / 1000).toFixed(2)} s)\n`);
    }
    // The old homes were moved aside; deleting them does not hold up the agents.
    if (town.homes.backend !== "directory") await emptyTrash(town, systemRunner);
    if (opts.json) opts.out.write(`${JSON.stringify({ reset: results }, null, 2)}\n`);
    if (failed.length > 0)
      throw new FailedError(`the round failed for ${failed.join(", ")}; the others were reset`);
    return EXIT.ok;
  });
}
