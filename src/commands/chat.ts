/**
 * `nuketown chat <name>`: the agent's presence on the town's chat network
 * alone, run as the agent. The town runs it inside the agent's daemon
 * (`nuketown agent`); this command is for a daemon started with --no-chat,
 * and does nothing where the daemon is online already (two clients of one
 * account would answer twice). Messages become tasks on the agent daemon's
 * socket; answers go back where they were asked. Like the daemon it stops
 * and exits 75 when its town changes.
 */
import path from "node:path";
import { AgentClient } from "../agent/client.ts";
import { openTransport, readCredential } from "../chat/connect.ts";
import { agentChatId, allowedFor } from "../chat/people.ts";
import { ChatResident } from "../chat/resident.ts";
import { TransportFatalError } from "../chat/transport.ts";
import { loadWatchedTown, serveUntilDone } from "../daemon/lifecycle.ts";
import { ConfigError, EXIT, FailedError, RefusedError } from "../errors.ts";
import type { Streams } from "../output.ts";
import { CHAT_SECRET_FILE } from "../town/rules.ts";
import { agentOf, requireAgentUid } from "./town-source.ts";

export interface ChatOptions extends Streams {
  readonly name: string;
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  /** Read the credential from this file instead of the one apply placed in the home. */
  readonly secretFile?: string;
  readonly until?: Promise<unknown>;
  readonly onReady?: (resident: ChatResident) => void;
  readonly watchIntervalMs?: number;
}

export async function chat(opts: ChatOptions): Promise<number> {
  const watched = await loadWatchedTown(opts);
  const { town } = watched;
  const agent = agentOf(town, opts.name, opts);
  const problem = (where: string, message: string) =>
    new ConfigError(opts.config ?? opts.manifest ?? "the manifest", [{ path: where, message }]);
  if (!agent.chat.enable)
    throw problem(`agents.${agent.name}.chat.enable`, "chat is not enabled for this agent");
  const kind = town.chat.transport;
  if (kind === "local")
    throw problem("chat.transport", "no chat network is declared (chat.matrix or chat.xmpp)");
  const id = agentChatId(agent, kind);
  if (!id) throw problem(`agents.${agent.name}.chat.${kind}`, `the agent has no ${kind} account`);
  requireAgentUid(agent, "chat", "it speaks for the agent");

  const log = (line: string) => opts.err.write(`nuketown chat ${agent.name}: ${line}\n`);
  const daemon = await daemonOnline(agent.socket);
  if (daemon !== undefined) {
    log(`the agent daemon (pid ${daemon}) is ${agent.name} online already: nothing to do`);
    return EXIT.ok;
  }
  const secretFile = opts.secretFile ?? path.join(agent.home, CHAT_SECRET_FILE);
  const secret = await readCredential(secretFile).catch((error: Error) => {
    throw new RefusedError(
      `cannot read the agent's ${kind} credential: ${error.message} (apply places it from chat.${kind} of the agent)`,
    );
  });
  const stateDir = path.join(agent.stateDir, "chat");
  const transport = await openTransport(
    town,
    { id, secret },
    {
      rooms: agent.chat.rooms,
      inviters: new Set([...allowedFor(town, agent, kind).values()].map((r) => r.chatId)),
      stateDir,
      displayName: agent.name,
      log,
    },
  );
  let fail: (error: Error) => void = () => {};
  const failed = new Promise<Error>((resolve) => {
    fail = resolve;
  });
  const resident = new ChatResident({
    town,
    agent,
    transport,
    stateDir,
    log,
    onFatal: (error) => fail(asFailure(error)),
  });
  await resident.start().catch((error: Error) => {
    throw asFailure(error);
  });
  opts.onReady?.(resident);
  return serveUntilDone(resident, watched, {
    name: `nuketown chat ${agent.name}`,
    log,
    failed,
    ...(opts.until !== undefined && { until: opts.until }),
    ...(opts.watchIntervalMs !== undefined && { watchIntervalMs: opts.watchIntervalMs }),
  });
}

/** A transport's give-up as the CLI reports it: its message, exit 5 (systemd and up restart it). */
function asFailure(error: Error): Error {
  return error instanceof TransportFatalError ? new FailedError(error.message) : error;
}

/** The pid of the agent daemon when it runs the agent's chat itself. */
async function daemonOnline(socket: string): Promise<number | undefined> {
  let client: AgentClient | undefined;
  try {
    client = await AgentClient.connect(socket);
    const status = await client.status();
    return status.chat ? status.pid : undefined;
  } catch {
    return undefined;
  } finally {
    client?.close();
  }
}
