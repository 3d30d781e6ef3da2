/**
 * `nuketown agent <name>`: run the agent's daemon, as the agent (its systemd
 * unit has User=<name>; `nuketown up` supervises it where systemd is not
 * PID 1), and — for an online agent (chat enabled, with an account on the
 * town's network) — its chat presence in the same process: an idle online
 * agent costs one Node runtime. The chat transport is started again inside
 * when it fails; the daemon's tasks go on meanwhile. Runs until SIGTERM or
 * SIGINT, or until its town changes: then it stops the same way and exits
 * 75 (EX_TEMPFAIL), and systemd (Restart=on-failure) or `nuketown up`
 * starts it again with the new town.
 */
import { AgentDaemon } from "../agent/daemon.ts";
import type { OnlineAgent } from "../chat/online.ts";
import { loadWatchedTown, serveUntilDone } from "../daemon/lifecycle.ts";
import { chatRuns } from "../host/render/units.ts";
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
  /** Go online when the agent's chat runs. @default true */
  readonly chat?: boolean;
  /** The chat credential from this file instead of the one apply placed in the home. */
  readonly secretFile?: string;
}

/** Uncaught errors tolerated this close together before the process gives up (and is restarted). */
const UNCAUGHT_LIMIT = 3;
const UNCAUGHT_WINDOW_MS = 10 * 60_000;

export async function agent(opts: AgentOptions): Promise<number> {
  const watched = await loadWatchedTown(opts);
  const { town } = watched;
  const agent = agentOf(town, opts.name, opts);
  requireAgentUid(agent, "agent", "its clones, commits and runtime are the agent's");

  const log = (line: string) => opts.err.write(`nuketown agent ${agent.name}: ${line}\n`);
  let online: OnlineAgent | undefined;
  const daemon = new AgentDaemon({
    town,
    agent,
    log,
    extraStatus: () => (online ? { chat: online.status() } : {}),
  });
  await daemon.start();
  opts.onReady?.(daemon);
  opts.out.write(`nuketown agent ${agent.name}: listening on ${agent.socket}\n`);

  let guard: (() => void) | undefined;
  if (opts.chat !== false && chatRuns(town, agent)) {
    // Loaded only for an online agent: the resident and, through it, one network's SDK.
    const { goOnline } = await import("../chat/online.ts");
    online = goOnline({
      town,
      agent,
      log: (line) => log(line.startsWith("chat: ") ? line : `chat: ${line}`),
      ...(opts.secretFile !== undefined && { secretFile: opts.secretFile }),
    });
    guard = isolateChat(online, log);
  }
  try {
    return await serveUntilDone(
      {
        stop: async () => {
          await online?.stop();
          await daemon.stop();
        },
      },
      watched,
      {
        name: `nuketown agent ${agent.name}`,
        log,
        ...(opts.until !== undefined && { until: opts.until }),
        ...(opts.watchIntervalMs !== undefined && { watchIntervalMs: opts.watchIntervalMs }),
      },
    );
  } finally {
    guard?.();
  }
}

/**
 * An error thrown out of the chat network's code, outside any request (an
 * SDK's timer, a socket's event), would end the process and the tasks it
 * runs: it replaces the transport instead. Beyond a few in a short while
 * something else is wrong, and the process ends as it would have.
 */
function isolateChat(online: OnlineAgent, log: (line: string) => void): () => void {
  const seen: number[] = [];
  const onError = (error: unknown) => {
    const now = Date.now();
    seen.push(now);
    while (seen.length > 0 && (seen[0] ?? now) < now - UNCAUGHT_WINDOW_MS) seen.shift();
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    if (seen.length > UNCAUGHT_LIMIT) {
      log(
        `internal: ${seen.length} uncaught errors in ${UNCAUGHT_WINDOW_MS / 60_000} min; exiting: ${text}`,
      );
      process.exit(1);
    }
    log(`internal: an uncaught error; starting the chat transport again, tasks go on: ${text}`);
    online.restart(`an uncaught error: ${error instanceof Error ? error.message : String(error)}`);
  };
  process.on("uncaughtException", onError);
  process.on("unhandledRejection", onError);
  return () => {
    process.off("uncaughtException", onError);
    process.off("unhandledRejection", onError);
  };
}
