/**
 * The restarting transport under an online agent's resident: stand-in
 * transports that the test connects, drops, refuses and breaks.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RestartingTransport } from "../../src/chat/presence.ts";
import {
  type ChatMessage,
  type ChatTransport,
  type PresenceState,
  type SentMessage,
  TransportFatalError,
  type TransportHandlers,
} from "../../src/chat/transport.ts";

class FakeTransport implements ChatTransport {
  readonly kind = "matrix" as const;
  readonly self = "@ada:test.local";
  readonly maxMessageChars = 100;
  handlers: TransportHandlers | undefined;
  readonly sent: string[] = [];
  readonly presence: PresenceState[] = [];
  stopped = false;
  /** The next send fails (as a dropped connection would make it). */
  failNextSend: Error | undefined;
  readonly #start: Promise<void>;
  #settle: { resolve: () => void; reject: (error: Error) => void } | undefined;

  readonly n: number;

  constructor(n: number) {
    this.n = n;
    this.#start = new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
  }

  start(handlers: TransportHandlers): Promise<void> {
    this.handlers = handlers;
    handlers.connection?.("connecting");
    return this.#start;
  }
  online(): void {
    this.handlers?.connection?.("online");
    this.#settle?.resolve();
  }
  refuse(): void {
    this.#settle?.reject(new TransportFatalError("the homeserver refused the access token"));
  }
  async stop(): Promise<void> {
    this.stopped = true;
  }
  async send(room: string, text: string): Promise<SentMessage> {
    const failure = this.failNextSend;
    this.failNextSend = undefined;
    if (failure) throw failure;
    this.sent.push(`${room}: ${text}`);
    return { id: `$${this.n}.${this.sent.length}`, room };
  }
  async edit(): Promise<void> {}
  async react(): Promise<void> {}
  async sendLong(room: string, text: string): Promise<SentMessage> {
    return this.send(room, text);
  }
  async typing(): Promise<void> {}
  async setPresence(state: PresenceState): Promise<void> {
    this.presence.push(state);
  }
  async directRoom(user: string): Promise<string> {
    return `!dm-${user}`;
  }
}

/** A restarting transport over fake ones, opened on demand; delays of a few ms. */
function harness(opts: { refuseOpen?: number } = {}) {
  const opened: FakeTransport[] = [];
  const lines: string[] = [];
  let refusals = opts.refuseOpen ?? 0;
  const transport = new RestartingTransport({
    kind: "matrix",
    self: "@ada:test.local",
    log: (line) => lines.push(line),
    open: async () => {
      if (refusals-- > 0)
        throw new TransportFatalError("cannot read the agent's matrix credential");
      const fake = new FakeTransport(opened.length + 1);
      opened.push(fake);
      return fake;
    },
    refusedDelayMs: 20,
    delay: () => 10,
    sendPatienceMs: 2000,
  });
  const messages: ChatMessage[] = [];
  const started = transport.start({ message: (m) => messages.push(m) });
  return { transport, opened, lines, messages, started };
}

async function until(what: string, probe: () => boolean, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const message = (body: string): ChatMessage => ({
  id: `$${body}`,
  room: "!room",
  direct: true,
  sender: "@mayor:test.local",
  body,
  mentionsMe: false,
  time: Date.now(),
});

describe("an online agent's restarting chat transport", () => {
  it("is online once its first transport is, and passes its messages on", async () => {
    const h = harness();
    await until("a transport", () => h.opened.length === 1);
    assert.equal(h.transport.status().state, "connecting");
    h.opened[0]?.online();
    await h.started;
    assert.equal(h.transport.status().state, "online");
    h.opened[0]?.handlers?.message(message("hello"));
    assert.deepEqual(
      h.messages.map((m) => m.body),
      ["hello"],
    );
    await h.transport.stop();
  });

  it("holds a send made while offline until the connection is back", async () => {
    const h = harness();
    await until("a transport", () => h.opened.length === 1);
    const first = h.opened[0];
    assert.ok(first);
    first.online();
    await h.started;
    first.handlers?.connection?.("offline", "the connection closed");
    const sending = h.transport.send("!room", "the answer");
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(first.sent, [], "nothing is sent while offline");
    assert.equal(h.transport.status().detail, "the connection closed");
    first.handlers?.connection?.("online");
    await sending;
    assert.deepEqual(first.sent, ["!room: the answer"]);
    await h.transport.stop();
  });

  it("on a refused credential, says failed, drops the transport and opens a new one", async () => {
    const h = harness();
    await until("a transport", () => h.opened.length === 1);
    const first = h.opened[0];
    assert.ok(first);
    first.online();
    await h.started;
    await h.transport.setPresence("busy", "working");
    first.handlers?.fatal?.(new TransportFatalError("the homeserver refused the access token"));
    assert.ok(first.stopped, "the deaf transport is stopped");
    assert.equal(h.transport.status().state, "failed");
    assert.match(
      h.transport.status().detail ?? "",
      /refused the access token; trying again in 0 s/,
    );
    assert.match(h.lines.join("\n"), /chat: failed: the homeserver refused/);
    // An answer ready meanwhile waits for the next transport.
    const sending = h.transport.send("!room", "late answer");
    await until("a second transport", () => h.opened.length === 2);
    const second = h.opened[1];
    assert.ok(second);
    // What the old one still delivers is not the resident's any more.
    first.handlers?.message(message("stale"));
    second.online();
    await sending;
    assert.deepEqual(second.sent, ["!room: late answer"]);
    assert.deepEqual(second.presence, ["busy"], "its presence is set again");
    assert.equal(h.messages.length, 0);
    assert.equal(h.transport.status().state, "online");
    assert.equal(h.transport.status().restarts, 1);
    await h.transport.stop();
  });

  it("tries again when the first transport cannot even be made", async () => {
    const h = harness({ refuseOpen: 2 });
    await until("a transport", () => h.opened.length === 1);
    h.opened[0]?.online();
    await h.started;
    assert.equal(h.transport.status().restarts, 2);
    assert.equal(
      (h.lines.join("\n").match(/cannot read the agent's matrix credential/g) ?? []).length,
      2,
    );
    await h.transport.stop();
  });

  it("sends again on the next transport what failed as the connection went", async () => {
    const h = harness();
    await until("a transport", () => h.opened.length === 1);
    const first = h.opened[0];
    assert.ok(first);
    first.online();
    await h.started;
    first.failNextSend = new Error("socket hang up");
    const sending = h.transport.send("!room", "answer");
    // The error comes out of the transport's code: it is replaced.
    h.transport.restart("an uncaught error: socket hang up");
    await until("a second transport", () => h.opened.length === 2);
    h.opened[1]?.online();
    await sending;
    assert.deepEqual(h.opened[1]?.sent, ["!room: answer"]);
    await h.transport.stop();
  });

  it("passes on an error of a send while the connection is up", async () => {
    const h = harness();
    await until("a transport", () => h.opened.length === 1);
    h.opened[0]?.online();
    await h.started;
    assert.ok(h.opened[0]);
    h.opened[0].failNextSend = new Error("M_FORBIDDEN: not in the room");
    await assert.rejects(h.transport.send("!room", "x"), /M_FORBIDDEN/);
    await h.transport.stop();
  });

  it("on stop, fails what waits for a connection and a start that never came online", async () => {
    const h = harness({ refuseOpen: 100 });
    const sending = h.transport.send("!room", "never");
    await h.transport.stop();
    await assert.rejects(sending, /stopped/);
    await assert.rejects(h.started, /stopped before it was online/);
    assert.equal(h.transport.status().state, "offline");
  });
});
