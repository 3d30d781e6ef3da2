/**
 * An agent online on its town's chat network, inside its agent daemon's
 * process: the resident over a transport that is started again when it
 * fails (presence.ts). `nuketown agent` runs this for every agent whose chat
 * runs; the resident reaches the daemon through the agent's socket, as every
 * other client does.
 */
import path from "node:path";
import { CHAT_SECRET_FILE } from "../town/rules.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { openTransport, readCredential } from "./connect.ts";
import { agentChatId, allowedFor } from "./people.ts";
import { type PresenceStatus, RestartingTransport } from "./presence.ts";
import { ChatResident } from "./resident.ts";
import { TransportFatalError } from "./transport.ts";

/** How long a stopping resident may still wait to send. */
const STOP_GRACE_MS = 5000;

export interface OnlineOptions {
  readonly town: ResolvedTown;
  readonly agent: ResolvedAgent;
  readonly log: (line: string) => void;
  /** Read the credential from this file instead of the one apply placed in the home. */
  readonly secretFile?: string;
}

export interface OnlineAgent {
  status(): PresenceStatus;
  /** Replace the transport (an error came out of it); the resident and its work go on. */
  restart(why: string): void;
  stop(): Promise<void>;
}

/**
 * Start the agent's presence; returns at once (the first connection is
 * made in the background, and retried): the daemon does not wait for chat.
 */
export function goOnline(options: OnlineOptions): OnlineAgent {
  const { town, agent, log } = options;
  const kind = town.chat.transport;
  const id = kind === "local" ? undefined : agentChatId(agent, kind);
  if (kind === "local" || !id)
    throw new Error(`${agent.name} has no account on the town's chat network`);
  const secretFile = options.secretFile ?? path.join(agent.home, CHAT_SECRET_FILE);
  const stateDir = path.join(agent.stateDir, "chat");
  const inviters = new Set([...allowedFor(town, agent, kind).values()].map((r) => r.chatId));
  const transport = new RestartingTransport({
    kind,
    self: id,
    log,
    // The credential is read for every transport: after a refusal, apply may have placed a new one.
    open: async () => {
      const secret = await readCredential(secretFile).catch((error: Error) => {
        throw new TransportFatalError(
          `cannot read the agent's ${kind} credential: ${error.message} (apply places it from chat.${kind} of the agent)`,
        );
      });
      return openTransport(
        town,
        { id, secret },
        { rooms: agent.chat.rooms, inviters, stateDir, displayName: agent.name, log },
      );
    },
  });
  const resident = new ChatResident({ town, agent, transport, stateDir, log });
  const started = resident.start().catch((error: Error) => {
    log(`chat: not started: ${error.message}`);
  });
  return {
    status: () => transport.status(),
    restart: (why) => transport.restart(why),
    stop: async () => {
      // The resident says its goodbyes (a cancelled task's answer) while it can; a send still
      // waiting for a connection after that gives up, so a stop never waits out an outage.
      const giveUp = setTimeout(() => void transport.stop(), STOP_GRACE_MS);
      try {
        await resident.stop();
        await started;
      } finally {
        clearTimeout(giveUp);
      }
    },
  };
}
