/**
 * What a chat transport delivered in a test, and waiting for it: shared by
 * the Matrix and XMPP transport tests.
 */
import type {
  ChatMessage,
  ChatReaction,
  ConnectionState,
  TransportHandlers,
} from "../../src/chat/transport.ts";

/** Poll `probe` until it gives a value (not undefined or false), or fail naming `what`. */
export async function until<T>(
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export class Inbox {
  readonly messages: ChatMessage[] = [];
  readonly reactions: ChatReaction[] = [];
  readonly states: { state: ConnectionState; detail?: string }[] = [];

  readonly handlers: TransportHandlers = {
    message: (message) => this.messages.push(message),
    reaction: (reaction) => this.reactions.push(reaction),
    connection: (state, detail) => this.states.push({ state, ...(detail ? { detail } : {}) }),
  };

  message(body: string): Promise<ChatMessage> {
    return until(() => this.messages.find((m) => m.body === body), `message "${body}"`);
  }

  reaction(key: string): Promise<ChatReaction> {
    return until(() => this.reactions.find((r) => r.key === key), `reaction ${key}`);
  }
}
