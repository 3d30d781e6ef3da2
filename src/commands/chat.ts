/**
 * `nuketown chat <name>`: the agent's presence on the town's chat network,
 * run as the agent (one service per agent, beside its daemon). Messages
 * become tasks on the agent daemon's socket; answers go back where they were
 * asked. Like the daemon it stops and exits 75 when its town changes.
 */
import path from "node:path";
import { openTransport, readCredential } from "../chat/connect.ts";
import { agentChatId, allowedFor } from "../chat/people.ts";
import { ChatResident } from "../chat/resident.ts";
import { TransportFatalError } from "../chat/transport.ts";
import { loadWatchedTown, serveUntilDone } from "../daemon/lifecycle.ts";
import { ConfigError, FailedError, RefusedError } from "../errors.ts";
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
