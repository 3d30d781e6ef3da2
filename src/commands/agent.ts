/**
 * `nuketown agent <name>`: run the agent's daemon, as the agent (its systemd
 * unit has User=<name>; `nuketown up` supervises it where systemd is not
 * PID 1). Runs until SIGTERM or SIGINT, or until its town changes: then it
 * stops the same way and exits 75 (EX_TEMPFAIL), and systemd
 * (Restart=on-failure) or `nuketown up` starts it again with the new town.
 */
import path from "node:path";
import { AgentDaemon } from "../agent/daemon.ts";
import { EXIT } from "../errors.ts";
import type { Streams } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import {
  agentOf,
  CHANGED,
  DEFAULT_MANIFEST,
  EXIT_TOWN_CHANGED,
  readText,
  requireAgentUid,
  stopSignal,
  townChange,
  townFrom,
} from "./town-source.ts";

export { EXIT_TOWN_CHANGED };

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
  /** How often the manifest (or declaration) is checked for changes; default 2 s. */
  readonly watchIntervalMs?: number;
}

export async function agent(opts: AgentOptions): Promise<number> {
  const source = path.resolve(opts.cwd, opts.config ?? opts.manifest ?? DEFAULT_MANIFEST);
  // Read before the town is loaded: a change that lands in between is still seen.
  const original = await readText(source);
  const town = await townFrom(opts);
  const agent = agentOf(town, opts.name, opts);
  requireAgentUid(agent, "agent", "its clones, commits and runtime are the agent's");

  const log = (line: string) => opts.err.write(`nuketown agent ${agent.name}: ${line}\n`);
  const daemon = new AgentDaemon({ town, agent, log });
  await daemon.start();
  opts.onReady?.(daemon);
  opts.out.write(`nuketown agent ${agent.name}: listening on ${agent.socket}\n`);
  const changed = townChange(source, original, opts.watchIntervalMs ?? 2000);
  try {
    const why = await Promise.race([opts.until ?? stopSignal(), changed.promise]);
    if (why === CHANGED) {
      log(
        `${source} changed: stopping to start again with the new town (exit ${EXIT_TOWN_CHANGED})`,
      );
      await daemon.stop();
      return EXIT_TOWN_CHANGED;
    }
  } finally {
    changed.stop();
  }
  await daemon.stop();
  return EXIT.ok;
}
