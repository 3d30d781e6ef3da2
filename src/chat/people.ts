/**
 * Who is who on the chat network: the declared humans' and agents' chat ids,
 * and who a given agent may take orders from. Pure: a function of the town.
 */
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import type { TransportKind } from "./transport.ts";

export interface Resident {
  readonly kind: "human" | "agent";
  /** The declared name (humans.<name>, agents.<name>). */
  readonly name: string;
  readonly chatId: string;
  readonly approver: boolean;
}

/**
 * Chat ids compare exactly for Matrix (user ids are case-sensitive) and
 * case-insensitively for XMPP bare JIDs (nodeprep and nameprep fold case).
 */
export function chatIdKey(kind: TransportKind, id: string): string {
  return kind === "xmpp" ? id.toLowerCase() : id;
}

/** Everyone declared with an account on the town's transport, by chat id. */
export function residents(town: ResolvedTown, kind: TransportKind): Map<string, Resident> {
  const byId = new Map<string, Resident>();
  for (const human of town.humans) {
    // On the dashboard's chat a human is who signed in: their declared name.
    const chatId = kind === "matrix" ? human.matrix : kind === "xmpp" ? human.xmpp : human.name;
    if (chatId)
      byId.set(chatIdKey(kind, chatId), {
        kind: "human",
        name: human.name,
        chatId,
        approver: human.approver,
      });
  }
  for (const agent of town.agents) {
    const chatId = agentChatId(agent, kind);
    if (chatId)
      byId.set(chatIdKey(kind, chatId), {
        kind: "agent",
        name: agent.name,
        chatId,
        approver: false,
      });
  }
  return byId;
}

export function agentChatId(agent: ResolvedAgent, kind: TransportKind): string | undefined {
  if (kind === "web") return agent.name;
  return kind === "matrix" ? agent.chat.matrix?.userId : agent.chat.xmpp?.jid;
}

/** The residents an agent acts for: the names in its `chat.allow`, never itself. */
export function allowedFor(
  town: ResolvedTown,
  agent: ResolvedAgent,
  kind: TransportKind,
): Map<string, Resident> {
  const allow = new Set(agent.chat.allow);
  const allowed = new Map<string, Resident>();
  for (const [key, resident] of residents(town, kind)) {
    if (allow.has(resident.name) && !(resident.kind === "agent" && resident.name === agent.name))
      allowed.set(key, resident);
  }
  return allowed;
}
