/**
 * The approval channel's rules, against an in-memory stand-in for the
 * transport (the real networks are exercised end to end in
 * test/integration/chat.test.ts): who counts, on which message, which
 * decision wins, what the posts say before and after.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { DecideResult, HumanAnswer } from "../../src/approval/channel.ts";
import type { PendingRequest } from "../../src/approval/protocol.ts";
import { ChatApprovalChannel, requestText } from "../../src/chat/approval-channel.ts";
import type {
  ChatMessage,
  ChatTransport,
  SentMessage,
  TransportHandlers,
} from "../../src/chat/transport.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

/** A named stand-in: records what the bot sends and edits, and lets the test play the humans. */
class RecordingTransport implements ChatTransport {
  readonly kind = "matrix" as const;
  readonly self = "@bot:town.local";
  readonly maxMessageChars = 4000;
  readonly sent: { room: string; text: string; id: string; replyTo?: string }[] = [];
  readonly edits: { id: string; text: string }[] = [];
  handlers: TransportHandlers | undefined;
  #next = 0;
  async start(handlers: TransportHandlers) {
    this.handlers = handlers;
  }
  async stop() {}
  /** While set, sends are out (the humans see them) but have not returned their id yet. */
  hold: Promise<void> | undefined;
  async send(room: string, text: string, options: { replyTo?: string } = {}): Promise<SentMessage> {
    const id = `$bot${this.#next++}`;
    this.sent.push({ room, text, id, ...(options.replyTo && { replyTo: options.replyTo }) });
    await this.hold;
    return { id, room };
  }
  async edit(message: SentMessage, text: string) {
    this.edits.push({ id: message.id, text });
  }
  async react() {}
  async sendLong(room: string, text: string) {
    return this.send(room, text);
  }
  async typing() {}
  async setPresence() {}
  async directRoom(user: string) {
    return `!dm-${user}`;
  }
}

const TOWN = (() => {
  const decl = minimalDeclaration();
  decl.humans = {
    mayor: { approver: true, matrix: "@mayor:town.local" },
    guest: { approver: false, matrix: "@guest:town.local" },
  };
  decl.chat = { matrix: { homeserver: "http://127.0.0.1:8008" }, approvalRoom: "!approvals" };
  decl.agents = {
    ada: {
      uid: 1100,
      sudo: { enable: true },
      chat: {
        enable: true,
        project: "site",
        matrix: { userId: "@ada:town.local", tokenSecret: { file: "ada.age" } },
      },
    },
  };
  return resolveOrThrow(decl);
})();

function request(id: string, argv = ["systemctl", "restart", "nginx"]): PendingRequest {
  return {
    id,
    agent: { name: "ada", uid: 1100 },
    argv,
    command: "/usr/bin/systemctl",
    cwd: "/agents/ada",
    runAs: { user: "root" },
    time: "2026-11-22T10:00:00.000Z",
    hash: "ab".repeat(32),
    expires: "2026-11-22T10:05:00.000Z",
  };
}

async function setUp() {
  const transport = new RecordingTransport();
  const logs: string[] = [];
  let now = Date.parse("2026-11-22T10:00:00.000Z");
  const channel = new ChatApprovalChannel({
    town: TOWN,
    transport,
    log: (line) => logs.push(line),
    clock: () => new Date(now),
  });
  await channel.start();
  const answers: HumanAnswer[] = [];
  const decided = new Set<string>();
  const ask = async (pending: PendingRequest) => {
    // As the daemon does: the first answer wins, and every channel hears the outcome before it returns.
    channel.requested(pending, async (answer): Promise<DecideResult> => {
      if (decided.has(pending.id)) return { ok: false, error: "already decided" };
      decided.add(pending.id);
      answers.push(answer);
      channel.resolved(pending, {
        decision: answer.approve ? "approved" : "denied",
        by: { kind: "human", id: answer.human },
        reason: answer.reason ?? "",
      });
      return { ok: true };
    });
    // Let the post go out.
    await new Promise((r) => setImmediate(r));
    const post = transport.sent.at(-1);
    assert.ok(post);
    return post;
  };
  const later = (ms: number) => {
    now += ms;
    return now;
  };
  const say = (message: Partial<ChatMessage> & { body: string; sender: string }) =>
    transport.handlers?.message({
      id: `$m${Math.random()}`,
      room: "!approvals",
      direct: false,
      mentionsMe: false,
      time: later(10),
      ...message,
    });
  const react = (target: string, sender: string, key: string, time = later(10)) =>
    transport.handlers?.reaction?.({ room: "!approvals", sender, target, key, time });
  const settle = () => new Promise((r) => setTimeout(r, 5));
  return { channel, transport, logs, answers, ask, say, react, settle, later };
}

describe("the chat approval channel", () => {
  it("posts the exact request to the approval room and takes the mayor's 👍 (skin tone and all)", async () => {
    const t = await setUp();
    const post = await t.ask(request("aa11"));
    assert.equal(post.room, "!approvals");
    assert.match(post.text, /ada asks to run, as root:\nsystemctl restart nginx\n/);
    assert.match(post.text, /request aa11 · hash abababababababab/);
    t.react(post.id, "@mayor:town.local", "👍🏾");
    await t.settle();
    assert.equal(t.answers.length, 1);
    assert.equal(t.answers[0]?.approve, true);
    assert.equal(t.answers[0]?.human, "mayor");
    assert.match(t.answers[0]?.reason ?? "", /approved by mayor in chat \(@mayor:town\.local\)/);
  });

  it("lets no stranger, non-approver or agent decide, and ignores reactions to other messages", async () => {
    const t = await setUp();
    const post = await t.ask(request("bb22"));
    t.react(post.id, "@stranger:elsewhere", "👍");
    t.react(post.id, "@guest:town.local", "👍");
    t.react(post.id, "@ada:town.local", "👍");
    t.react("$someone-elses-message", "@mayor:town.local", "👍");
    t.react(post.id, "@mayor:town.local", "🎉");
    await t.settle();
    assert.deepEqual(t.answers, []);
    assert.ok(t.logs.some((l) => /not an approver/.test(l)));
  });

  it("ignores what was said before it started: no replay of old decisions", async () => {
    const t = await setUp();
    const post = await t.ask(request("cc33"));
    t.react(post.id, "@mayor:town.local", "👍", Date.parse("2026-11-22T09:00:00.000Z"));
    await t.settle();
    assert.deepEqual(t.answers, []);
  });

  it("takes a reply: to the post, naming the request, or the only one waiting in the room", async () => {
    const t = await setUp();
    const first = await t.ask(request("dd44aa"));
    t.say({ sender: "@mayor:town.local", body: "deny not during the demo", inReplyTo: first.id });
    await t.settle();
    assert.deepEqual(t.answers.at(-1), {
      approve: false,
      human: "mayor",
      reason: "not during the demo",
      // Bound to the request the post showed.
      hash: "ab".repeat(32),
    });

    await t.ask(request("ee55aa"));
    for (const chatter of ["approve", "ok, lunch at 12?", "bob: yes", "lgtm"])
      t.say({ sender: "@mayor:town.local", body: chatter });
    await t.settle();
    assert.equal(
      t.answers.length,
      1,
      "a word that is no reply and names no request never approves",
    );
    await t.ask(request("ff66aa"));
    t.say({ sender: "@mayor:town.local", body: "deny" });
    await t.settle();
    assert.equal(t.answers.length, 1, "two wait: a bare deny is ambiguous");
    assert.match(t.transport.sent.at(-1)?.text ?? "", /2 requests wait here/);
    t.say({ sender: "@mayor:town.local", body: "approve ff66aa" });
    await t.settle();
    assert.equal(t.answers.at(-1)?.approve, true);
    t.say({ sender: "@mayor:town.local", body: "deny not now" });
    await t.settle();
    assert.deepEqual(t.answers.at(-1), {
      approve: false,
      human: "mayor",
      reason: "not now",
      hash: "ab".repeat(32),
    });
    assert.equal(t.answers.length, 3);
  });

  it("ignores a decision said before the request existed", async () => {
    const t = await setUp();
    const post = await t.ask({ ...request("0ld0ld"), time: "2026-11-22T10:02:00.000Z" });
    t.say({
      sender: "@mayor:town.local",
      body: "approve",
      inReplyTo: post.id,
      time: Date.parse("2026-11-22T10:01:00.000Z"),
    });
    await t.settle();
    assert.equal(t.answers.length, 0);
  });

  it("takes the first decision only, and shows the outcome on the post", async () => {
    const t = await setUp();
    const post = await t.ask(request("a1b2c3"));
    t.react(post.id, "@mayor:town.local", "👎");
    await t.settle();
    t.react(post.id, "@mayor:town.local", "👍");
    t.say({ sender: "@mayor:town.local", body: "approve", inReplyTo: post.id });
    await t.settle();
    assert.equal(t.answers.length, 1);
    assert.equal(t.answers[0]?.approve, false);
    assert.equal(t.transport.edits.length, 1);
    assert.equal(t.transport.edits[0]?.id, post.id);
    assert.match(
      t.transport.edits[0]?.text ?? "",
      /^⛔ denied \(denied by mayor in chat \(@mayor:town\.local\)\)\n\n🔐 ada asks/,
    );
    assert.doesNotMatch(t.transport.edits[0]?.text ?? "", /React 👍/);
  });

  it("takes a decision that comes before the post's send has returned", async () => {
    const t = await setUp();
    let release = () => {};
    t.transport.hold = new Promise((resolve) => {
      release = resolve;
    });
    t.channel.requested(request("5e5e5e"), async (answer) => {
      t.answers.push(answer);
      return { ok: true };
    });
    await t.settle();
    const post = t.transport.sent.at(-1);
    assert.ok(post);
    t.react(post.id, "@mayor:town.local", "👍");
    await t.settle();
    assert.equal(t.answers.length, 0, "still posting");
    release();
    await t.settle();
    assert.equal(t.answers.length, 1);
    assert.equal(t.answers[0]?.approve, true);
  });

  it("marks an expired request as denied on the post", async () => {
    const t = await setUp();
    const pending = request("0badc0de");
    const post = await t.ask(pending);
    t.channel.resolved(pending, {
      decision: "timeout",
      by: { kind: "daemon" },
      reason: "no answer in 300 s",
    });
    await t.settle();
    assert.equal(t.transport.edits[0]?.id, post.id);
    assert.match(t.transport.edits[0]?.text ?? "", /^⌛ expired, so denied/);
  });

  it("can only deny what it cannot show whole", async () => {
    const t = await setUp();
    const long = request("10ng10ng", ["printf", "x".repeat(3000)]);
    const post = await t.ask(long);
    assert.match(post.text, /more characters/);
    t.react(post.id, "@mayor:town.local", "👍");
    await t.settle();
    assert.equal(t.answers.length, 0);
    assert.match(t.transport.sent.at(-1)?.text ?? "", /can only be denied in chat/);
    t.react(post.id, "@mayor:town.local", "👎");
    await t.settle();
    assert.equal(t.answers.at(0)?.approve, false);
  });

  it("escapes what would hide in an argument", () => {
    const text = requestText(
      request("e5c4", ["echo", "a\u202eb", "two words", "line\nbreak"]),
      new Date("2026-11-22T10:00:00.000Z"),
      true,
      true,
    );
    assert.match(text, /echo "a\\u\{202e\}b" "two words" "line\\nbreak"/);
    assert.match(text, /\(in 300 s\)/);
  });
});
