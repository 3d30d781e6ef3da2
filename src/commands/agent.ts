/**
 * `nuketown agent <name>`: run the agent's daemon, as the agent (its systemd
 * unit has User=<name>; `nuketown up` supervises it where systemd is not
 * PID 1). Runs until SIGTERM or SIGINT.
 */
import { AgentDaemon } from "../agent/daemon.ts";
import { ConfigError, EXIT, RefusedError } from "../errors.ts";
import type { Streams } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { townFrom } from "./town-source.ts";

export interface AgentOptions extends Streams {
  readonly name: string;
  readonly config?: string;
  readonly manifest?: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly cwd: string;
  /** Resolves when the daemon should stop; default: SIGTERM or SIGINT. */
  readonly until?: Promise<unknown>;
  /** Called once the socket listens (tests). */
  readonly onReady?: (daemon: AgentDaemon) => void;
}

export async function agent(opts: AgentOptions): Promise<number> {
  const town = await townFrom(opts);
  const agent = town.agents.find((a) => a.name === opts.name);
  if (!agent) {
    throw new ConfigError(opts.config ?? opts.manifest ?? "the manifest", [
      {
        path: `agents.${opts.name}`,
        message: `no enabled agent "${opts.name}" in town ${town.name} (agents: ${town.agents.map((a) => a.name).join(", ") || "none"})`,
      },
    ]);
  }
  const uid = process.getuid?.();
  if (uid !== agent.uid) {
    throw new RefusedError(
      `nuketown agent ${agent.name} must run as ${agent.name} (uid ${agent.uid}), not as uid ${uid}: ` +
        `its clones, commits and runtime are the agent's (runuser -u ${agent.name} -- nuketown agent ${agent.name})`,
    );
  }

  const log = (line: string) => opts.err.write(`nuketown agent ${agent.name}: ${line}\n`);
  const daemon = new AgentDaemon({ town, agent, log });
  await daemon.start();
  opts.onReady?.(daemon);
  opts.out.write(`nuketown agent ${agent.name}: listening on ${agent.socket}\n`);
  await (opts.until ?? stopSignal());
  await daemon.stop();
  return EXIT.ok;
}

function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve(signal);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
}
