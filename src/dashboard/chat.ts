/**
 * The web chat: the chat transport of a town with no chat server. Each human
 * has their own room with each agent (the room is the human's name), and
 * each conversation is a thread of it, with its own runtime session. The
 * agent's side is the same `ChatResident` the Matrix and XMPP services run,
 * so the same rules hold: who may give work (`chat.allow`), a message is
 * answered at most once (its ledger), one conversation's work in order.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import type {
  ChatMessage,
  ChatTransport,
  PresenceState,
  SendOptions,
  SentMessage,
  TransportHandlers,
} from "../chat/transport.ts";
import { writeFileAtomic } from "../os/files.ts";
import type { ChatLine, ChatThread } from "./pages.ts";

/** Lines kept per thread; older ones drop off the page (the runtime's session keeps its own memory). */
const KEEP_LINES = 300;
const TITLE_CHARS = 48;

interface ThreadState {
  readonly id: string;
  title: string;
  lines: ChatLine[];
  updated: number;
}

interface Saved {
  readonly v: 1;
  /** room (human) → threads */
  readonly rooms: Record<string, ThreadState[]>;
}

/** What changed, for the live pages: the agent, and the human whose room it is. */
export type ChatChange = (agent: string, human: string) => void;

/** One agent's rooms on the web chat: history on disk, the resident's handlers in memory. */
export class WebChat {
  readonly agent: string;
  readonly #file: string;
  readonly #onChange: ChatChange;
  readonly #rooms = new Map<string, Map<string, ThreadState>>();
  readonly #typing = new Set<string>();
  #presence: { state: PresenceState; status: string } = { state: "available", status: "" };
  #handlers: TransportHandlers | undefined;
  #saving: Promise<void> = Promise.resolve();

  private constructor(agent: string, file: string, onChange: ChatChange) {
    this.agent = agent;
    this.#file = file;
    this.#onChange = onChange;
  }

  /** `file`: where this agent's conversations are kept (root's, 0600). */
  static async open(agent: string, file: string, onChange: ChatChange): Promise<WebChat> {
    const chat = new WebChat(agent, file, onChange);
    const text = await readFile(file, "utf8").catch(() => undefined);
    if (text !== undefined) {
      const saved = JSON.parse(text) as Saved;
      for (const [room, threads] of Object.entries(saved.rooms ?? {}))
        chat.#rooms.set(room, new Map(threads.map((t) => [t.id, t])));
    }
    return chat;
  }

  get presence(): { state: PresenceState; status: string } {
    return this.#presence;
  }

  /** A human's threads with this agent, latest first. */
  threads(human: string): { id: string; title: string }[] {
    return [...(this.#rooms.get(human)?.values() ?? [])]
      .sort((a, b) => b.updated - a.updated)
      .map((t) => ({ id: t.id, title: t.title }));
  }

  thread(human: string, id: string): ChatThread | undefined {
    const t = this.#rooms.get(human)?.get(id);
    if (!t) return undefined;
    return { id: t.id, title: t.title, lines: t.lines, typing: this.#typing.has(human) };
  }

  /** A new thread id (the thread exists once something is said in it). */
  static newThread(): string {
    return `t${randomBytes(6).toString("hex")}`;
  }

  /**
   * A human says something: shown at once, then handed to the resident,
   * which decides whether this human may give the agent work.
   */
  say(human: string, threadId: string, text: string, now = Date.now()): string {
    if (!this.#handlers) throw new Error(`${this.agent} is not listening on the web chat yet`);
    const id = `web-${randomBytes(12).toString("hex")}`;
    this.#append(human, threadId, { id, from: "human", who: human, text, time: now });
    const message: ChatMessage = {
      id,
      room: human,
      direct: true,
      sender: human,
      body: text,
      thread: threadId,
      mentionsMe: true,
      time: now,
    };
    this.#handlers.message(message);
    return id;
  }

  #append(room: string, threadId: string, line: ChatLine): void {
    let threads = this.#rooms.get(room);
    if (!threads) {
      threads = new Map();
      this.#rooms.set(room, threads);
    }
    let thread = threads.get(threadId);
    if (!thread) {
      const title =
        line.text.length > TITLE_CHARS ? `${line.text.slice(0, TITLE_CHARS - 1)}…` : line.text;
      thread = { id: threadId, title: title.replace(/\s+/g, " "), lines: [], updated: line.time };
      threads.set(threadId, thread);
    }
    thread.lines.push(line);
    if (thread.lines.length > KEEP_LINES) thread.lines.splice(0, thread.lines.length - KEEP_LINES);
    thread.updated = line.time;
    this.#changed(room);
  }

  #changed(room: string): void {
    this.#save();
    this.#onChange(this.agent, room);
  }

  #save(): void {
    const data: Saved = {
      v: 1,
      rooms: Object.fromEntries([...this.#rooms].map(([room, t]) => [room, [...t.values()]])),
    };
    this.#saving = this.#saving
      .catch(() => {})
      .then(() => writeFileAtomic(this.#file, `${JSON.stringify(data)}\n`, { mode: 0o600 }));
  }

  async flush(): Promise<void> {
    await this.#saving.catch(() => {});
  }

  /** The agent's side of the chat, for its `ChatResident`. */
  transport(): ChatTransport {
    const chat = this;
    const send = async (
      room: string,
      text: string,
      options?: SendOptions,
    ): Promise<SentMessage> => {
      const id = `web-${randomBytes(12).toString("hex")}`;
      const progress = text.startsWith("⏳ ");
      chat.#append(room, options?.thread ?? "main", {
        id,
        from: "agent",
        who: chat.agent,
        text,
        time: Date.now(),
        ...(progress && { progress }),
      });
      return { id, room };
    };
    return {
      kind: "web",
      self: chat.agent,
      maxMessageChars: 64_000,
      async start(handlers) {
        chat.#handlers = handlers;
        handlers.connection?.("online");
      },
      async stop() {
        chat.#handlers = undefined;
        await chat.flush();
      },
      send,
      async edit(message, text) {
        for (const thread of chat.#rooms.get(message.room)?.values() ?? []) {
          const at = thread.lines.findIndex((l) => l.id === message.id);
          const old = thread.lines[at];
          if (at < 0 || !old) continue;
          thread.lines[at] = { ...old, text, progress: text.startsWith("⏳ ") };
          chat.#changed(message.room);
          return;
        }
      },
      async react() {},
      sendLong: (room, text, _name, options) => send(room, text, options),
      async typing(room, on) {
        if (on === chat.#typing.has(room)) return;
        if (on) chat.#typing.add(room);
        else chat.#typing.delete(room);
        chat.#onChange(chat.agent, room);
      },
      async setPresence(state, status) {
        chat.#presence = { state, status: status ?? "" };
        chat.#onChange(chat.agent, "");
      },
      async directRoom(user) {
        return user;
      },
    };
  }
}
