/**
 * `nuketown agent <name>`: run the agent's daemon, as the agent (its systemd
 * unit has User=<name>; `nuketown up` supervises it where systemd is not
 * PID 1). Runs until SIGTERM or SIGINT, or until its town changes: then it
 * stops the same way and exits 75 (EX_TEMPFAIL), and systemd
 * (Restart=on-failure) or `nuketown up` starts it again with the new town.
 */
import { AgentDaemon } from "../agent/daemon.ts";
import { loadWatchedTown, serveUntilDone } from "../daemon/lifecycle.ts";
import type { Streams } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { agentOf, requireAgentUid } from "./town-source.ts";

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
  const watched = await loadWatchedTown(opts);
  const agent = agentOf(watched.town, opts.name, opts);
  requireAgentUid(agent, "agent", "its clones, commits and runtime are the agent's");

  const log = (line: string) => opts.err.write(`nuketown agent ${agent.name}: ${line}\n`);
  const daemon = new AgentDaemon({ town: watched.town, agent, log });
  await daemon.start();
  opts.onReady?.(daemon);
  opts.out.write(`nuketown agent ${agent.name}: listening on ${agent.socket}\n`);
  return serveUntilDone(daemon, watched, {
    name: `nuketown agent ${agent.name}`,
    log,
    ...(opts.until !== undefined && { until: opts.until }),
    ...(opts.watchIntervalMs !== undefined && { watchIntervalMs: opts.watchIntervalMs }),
  });
}
