/**
 * The XMPP transport against a real Prosody on 127.0.0.1: the agent is an
 * XmppTransport, the human (and a stranger) are raw @xmpp/client sessions
 * that check what the agent's stanzas look like on the wire.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { type Client, client, type XmlElement, xml } from "@xmpp/client";
import { saidBefore, TIME_PRECISION_MS } from "../../src/chat/transport.ts";
import { NS, stanzaIdBy } from "../../src/chat/xmpp/stanza.ts";
import { XMPP_STATE_FILE } from "../../src/chat/xmpp/state.ts";
import { XmppTransport } from "../../src/chat/xmpp/transport.ts";
import { Inbox, until } from "../support/chat-inbox.ts";
import { type ProsodyServer, startProsody } from "../support/prosody.ts";
import { freePort } from "../support/server-process.ts";

const AGENT_NICK = "Ada";

/** A person's raw XMPP session and every stanza it received. */
class Person {
  readonly stanzas: XmlElement[] = [];
  readonly jid: string;
  readonly client: Client;

  constructor(jid: string, session: Client) {
    this.jid = jid;
    this.client = session;
    session.on("stanza", (stanza) => this.stanzas.push(stanza));
  }

  waitFor(what: string, match: (stanza: XmlElement) => boolean, ms = 10_000) {
    return until(() => this.stanzas.find(match), what, ms);
  }

  /** Sends a message; returns its id attribute. */
  async say(
    to: string,
    type: "chat" | "groupchat",
    body: string | undefined,
    ...extra: XmlElement[]
  ) {
    const id = randomUUID();
    await this.client.send(
      xml(
        "message",
        { to, type, id },
        body === undefined ? undefined : xml("body", {}, body),
        ...extra,
      ),
    );
    return id;
  }

  /** Resolves once the server has handled everything sent before (it answers in order). */
  async sync(domain: string) {
    await this.client.iqCaller.request(
      xml("iq", { type: "get", to: domain }, xml("ping", { xmlns: NS.ping })),
    );
  }

  /** Says something in a MUC; returns the stanza id the room gave it (from the reflection). */
  async sayInRoom(room: string, nick: string, body: string, ...extra: XmlElement[]) {
    const id = await this.say(room, "groupchat", body, ...extra);
    const reflected = await this.waitFor(
      `the reflection of "${body}"`,
      (s) => s.is("message") && s.attrs.from === `${room}/${nick}` && s.attrs.id === id,
    );
    return { id, stanzaId: stanzaIdBy(reflected, room) ?? assert.fail("no stanza id") };
  }

  /** Joins (and if new, creates as a non-anonymous room) `room` with `nick`. */
  async join(room: string, nick: string) {
    await this.client.send(
      xml(
        "presence",
        { to: `${room}/${nick}` },
        xml("x", { xmlns: NS.muc }, xml("history", { maxstanzas: "0" })),
      ),
    );
    const self = await this.waitFor(`own presence in ${room}`, (s) =>
      isSelfPresence(s, room, nick),
    );
    if (statusCodes(self).includes("201")) {
      const field = (name: string, value: string) =>
        xml("field", { var: name }, xml("value", {}, value));
      await this.client.iqCaller.request(
        xml(
          "iq",
          { type: "set", to: room },
          xml(
            "query",
            { xmlns: NS.mucOwner },
            xml(
              "x",
              { xmlns: NS.dataForms, type: "submit" },
              field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
              field("muc#roomconfig_whois", "anyone"),
            ),
          ),
        ),
      );
    }
  }

  /** The agent's occupant presence in `room`, once it is there. */
  agentIn(room: string, agentJid: string, after = 0) {
    return this.waitFor(`the agent in ${room}`, (s) => {
      if (this.stanzas.indexOf(s) < after || !s.is("presence") || s.attrs.type) return false;
      if (!s.attrs.from?.startsWith(`${room}/`)) return false;
      const item = s.getChild("x", NS.mucUser)?.getChild("item");
      return item?.attrs.jid?.split("/")[0] === agentJid;
    });
  }

  async stop() {
    await this.client.stop().catch(() => {});
  }
}

function isSelfPresence(stanza: XmlElement, room: string, nick: string) {
  return (
    stanza.is("presence") &&
    stanza.attrs.from === `${room}/${nick}` &&
    statusCodes(stanza).includes("110")
  );
}

function statusCodes(stanza: XmlElement) {
  return (stanza.getChild("x", NS.mucUser)?.getChildren("status") ?? []).map((s) => s.attrs.code);
}

/** XEP-0461 reply with an XEP-0428 fallback quoting `quoted`. */
function replyWithFallback(to: string, id: string, quoted: string, text: string) {
  const fallback = `> ${quoted}\n`;
  return {
    body: `${fallback}${text}`,
    extra: [
      xml("reply", { xmlns: NS.reply, to, id }),
      xml(
        "fallback",
        { xmlns: NS.fallback, for: NS.reply },
        xml("body", { start: "0", end: String(Array.from(fallback).length) }),
      ),
    ],
  };
}

function reactions(target: string, ...keys: string[]) {
  return xml(
    "reactions",
    { xmlns: NS.reactions, id: target },
    keys.map((key) => xml("reaction", {}, key)),
  );
}

/**
 * A TCP relay in front of Prosody: the network between a transport and the
 * server, which a test can take away (closed, or dead without either end
 * being told) or make deliver the server's output in batches.
 */
class Relay {
  /** Everything clients wrote towards the server. */
  sent = "";
  readonly service: string;
  readonly #port: number;
  readonly #target: URL;
  readonly #batchMs: number | undefined;
  readonly #links = new Set<{ client: net.Socket; upstream: net.Socket; silent: boolean }>();
  readonly #server: net.Server;

  private constructor(port: number, service: string, batchMs: number | undefined) {
    this.#port = port;
    this.service = `xmpp://127.0.0.1:${port}`;
    this.#target = new URL(service.replace("xmpp:", "http:"));
    this.#batchMs = batchMs;
    this.#server = net.createServer((client) => this.#link(client));
  }

  /** A relay to `service` (not listening yet); `batchMs`: the server's output is passed on every so often, all at once. */
  static async to(service: string, batchMs?: number): Promise<Relay> {
    return new Relay(await freePort(), service, batchMs);
  }

  open(): Promise<void> {
    return new Promise((resolve) => this.#server.listen(this.#port, "127.0.0.1", resolve));
  }

  /** Stops listening and drops every connection, both ends. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#server.close(() => resolve());
      this.cut("both");
    });
  }

  /**
   * Drops the connections on the client's side. "both": the server sees its
   * end closed too (a crashed client); "client": the server's end stays open
   * and hears nothing more (a dead network), so it believes the session alive.
   */
  cut(which: "both" | "client"): void {
    for (const link of this.#links) {
      if (which === "both") link.upstream.destroy();
      else link.silent = true;
      link.client.destroy();
    }
  }

  #link(client: net.Socket): void {
    const upstream = net.connect(Number(this.#target.port), this.#target.hostname);
    const link = { client, upstream, silent: false };
    this.#links.add(link);
    for (const socket of [client, upstream]) socket.on("error", () => socket.destroy());
    client.on("data", (chunk: Buffer) => {
      this.sent += chunk.toString();
      upstream.write(chunk);
    });
    client.on("close", () => {
      if (!link.silent) upstream.destroy();
    });
    let held: Buffer[] = [];
    const pass = () => {
      if (held.length === 0 || link.silent || client.destroyed) return;
      client.write(Buffer.concat(held));
      held = [];
    };
    upstream.on("data", (chunk: Buffer) => {
      if (link.silent) return;
      held.push(chunk);
      if (this.#batchMs === undefined) pass();
    });
    const timer = this.#batchMs === undefined ? undefined : setInterval(pass, this.#batchMs);
    upstream.on("close", () => {
      clearInterval(timer);
      // What the server said last (its closing tag) still reaches the client.
      pass();
      client.end();
      this.#links.delete(link);
    });
  }
}

// No skip when Prosody is missing: the test fails (scripts/install-chat-servers.sh installs it).
describe("XMPP transport", () => {
  let prosody: ProsodyServer | undefined;
  const server = () => prosody ?? assert.fail("Prosody did not start");
  let agentJid = "";
  let human: Person;
  let stranger: Person;
  let lobby = "";
  const temps: string[] = [];
  const running: XmppTransport[] = [];
  const people: Person[] = [];

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nt-test-xmpp-"));
    temps.push(dir);
    return dir;
  }

  async function person(localpart: string): Promise<Person> {
    const password = `pw-${localpart}`;
    const jid = await server().register(localpart, password);
    const session = client({
      service: server().service,
      domain: server().domain,
      username: localpart,
      password,
      resource: "test",
    });
    session.reconnect.stop();
    session.on("error", () => {});
    const someone = new Person(jid, session);
    people.push(someone);
    await session.start();
    await session.send(xml("presence"));
    return someone;
  }

  function makeTransport(options: { stateDir: string; service?: string; password?: string }) {
    const log: string[] = [];
    const instance = new XmppTransport({
      service: options.service ?? server().service,
      domain: server().domain,
      jid: agentJid,
      password: options.password ?? "pw-agent",
      rooms: [lobby],
      inviters: new Set([human.jid]),
      stateDir: options.stateDir,
      displayName: AGENT_NICK,
      log: (line) => log.push(line),
    });
    running.push(instance);
    return { transport: instance, log };
  }

  async function startAgent(stateDir?: string) {
    const dir = stateDir ?? (await tempDir());
    const made = makeTransport({ stateDir: dir });
    const inbox = new Inbox();
    await made.transport.start(inbox.handlers);
    return { ...made, inbox, stateDir: dir };
  }

  /** The agent of most tests: started once, in the lobby. */
  let agent: Awaited<ReturnType<typeof startAgent>>;

  before(async () => {
    prosody = await startProsody();
    agentJid = await server().register("agent", "pw-agent");
    human = await person("human");
    stranger = await person("stranger");
    lobby = `lobby@${server().mucDomain}`;
    await human.join(lobby, "human");
    await human.sayInRoom(lobby, "human", "history before the agent existed");
    await human.say(agentJid, "chat", "a direct message before the agent existed");
    // Stored offline, not handed to an agent that logs in meanwhile.
    await human.sync(server().domain);
  });

  after(async () => {
    for (const instance of running) await instance.stop();
    for (const someone of people) await someone.stop();
    await prosody?.stop();
    for (const dir of temps) await rm(dir, { recursive: true, force: true });
  });

  it("joins the declared room and delivers nothing said before its first start", async () => {
    const mark = human.stanzas.length;
    agent = await startAgent();
    assert.equal(agent.transport.self, agentJid);
    await human.agentIn(lobby, agentJid, mark);
    const said = await human.sayInRoom(lobby, "human", "first after start");
    const message = await agent.inbox.message("first after start");
    assert.equal(message.room, lobby);
    assert.equal(message.direct, false);
    assert.equal(message.sender, human.jid);
    assert.equal(message.id, said.stanzaId);
    assert.equal(message.mentionsMe, false);
    assert.ok(Math.abs(message.time - Date.now()) < 10_000);
    assert.deepEqual(
      agent.inbox.messages.map((m) => m.body),
      ["first after start"],
    );
  });

  it("delivers direct messages from the verified sender, and answers them in thread and as a reply", async () => {
    const { transport, inbox } = agent;
    const originalId = await human.say(
      agentJid,
      "chat",
      "ada, are you there?",
      xml("thread", {}, "t-direct"),
    );
    const message = await inbox.message("ada, are you there?");
    assert.equal(message.direct, true);
    assert.equal(message.room, human.jid);
    assert.equal(message.sender, human.jid);
    assert.equal(message.thread, "t-direct");
    assert.equal(message.mentionsMe, true);
    assert.ok(message.id.length > 0);
    assert.equal(await transport.directRoom(`${human.jid}/laptop`), human.jid);

    const sent = await transport.send(message.room, "here I am", {
      thread: "t-direct",
      replyTo: message.id,
    });
    assert.equal(sent.room, human.jid);
    const seen = await human.waitFor(
      "the agent's direct answer",
      (s) => s.is("message") && s.getChildText("body") === "here I am",
    );
    assert.equal(seen.attrs.type, "chat");
    assert.equal(seen.attrs.from?.split("/")[0], agentJid);
    assert.equal(seen.getChildText("thread"), "t-direct");
    const reply = seen.getChild("reply", NS.reply);
    assert.equal(reply?.attrs.id, originalId);
    assert.equal(reply?.attrs.to, human.jid);
    assert.equal(seen.attrs.id, sent.id);
    assert.equal(seen.getChild("origin-id", NS.stanzaId)?.attrs.id, sent.id);

    // The human's reply and reaction name the agent's message by its id attribute.
    const { body, extra } = replyWithFallback(agentJid, sent.id, "here I am", "good, thanks");
    await human.say(agentJid, "chat", body, ...extra);
    const answer = await inbox.message("good, thanks");
    assert.equal(answer.inReplyTo, sent.id);
    await human.say(agentJid, "chat", undefined, reactions(sent.id, "👍"));
    const reaction = await inbox.reaction("👍");
    assert.deepEqual(
      { room: reaction.room, sender: reaction.sender, target: reaction.target },
      { room: human.jid, sender: human.jid, target: sent.id },
    );

    // The agent's reaction names the human's message by its id attribute too.
    await transport.react(message.room, message.id, "👀");
    const reacted = await human.waitFor(
      "the agent's direct reaction",
      (s) => s.is("message") && s.getChild("reactions", NS.reactions) !== undefined,
    );
    const set = reacted.getChild("reactions", NS.reactions);
    assert.equal(set?.attrs.id, originalId);
    assert.deepEqual(
      set?.getChildren("reaction").map((r) => r.getText()),
      ["👀"],
    );
  });

  it("delivers MUC messages with the occupant's real JID, thread, reply without its fallback, and mentions", async () => {
    const { transport, inbox } = agent;
    const asked = await human.sayInRoom(
      lobby,
      "human",
      "Ada: can you look at this?",
      xml("thread", {}, "t1"),
    );
    const message = await inbox.message("Ada: can you look at this?");
    assert.equal(message.sender, human.jid);
    assert.equal(message.id, asked.stanzaId);
    assert.equal(message.thread, "t1");
    assert.equal(message.mentionsMe, true);

    const sent = await transport.send(lobby, "looking", { thread: "t1", replyTo: message.id });
    const seen = await human.waitFor(
      "the agent's answer in the room",
      (s) => s.is("message") && s.getChildText("body") === "looking",
    );
    assert.equal(seen.attrs.type, "groupchat");
    assert.equal(seen.attrs.from, `${lobby}/${AGENT_NICK}`);
    assert.equal(seen.getChildText("thread"), "t1");
    const reply = seen.getChild("reply", NS.reply);
    assert.equal(reply?.attrs.id, asked.stanzaId);
    assert.equal(reply?.attrs.to, `${lobby}/human`);
    // What the agent returned is what the human refers to it by: the room's stanza id.
    assert.equal(sent.id, stanzaIdBy(seen, lobby));
    assert.equal(sent.room, lobby);

    const { body, extra } = replyWithFallback(
      `${lobby}/${AGENT_NICK}`,
      sent.id,
      "looking",
      "thanks",
    );
    await human.sayInRoom(lobby, "human", body, ...extra);
    const answer = await inbox.message("thanks");
    assert.equal(answer.inReplyTo, sent.id);
    assert.equal(answer.mentionsMe, false);

    // A fallback without ranges: the leading quote lines go.
    await human.sayInRoom(
      lobby,
      "human",
      "> looking\n\nok then",
      xml("reply", { xmlns: NS.reply, id: sent.id }),
      xml("fallback", { xmlns: NS.fallback, for: NS.reply }),
    );
    assert.equal((await inbox.message("ok then")).inReplyTo, sent.id);
  });

  it("edits as a correction naming the original's id attribute", async () => {
    const { transport } = agent;
    const progress = await transport.send(lobby, "working… 1");
    const first = await human.waitFor(
      "the progress message",
      (s) => s.is("message") && s.getChildText("body") === "working… 1",
    );
    await transport.edit(progress, "working… 2");
    await transport.edit(progress, "done");
    for (const text of ["working… 2", "done"]) {
      const corrected = await human.waitFor(
        `the correction "${text}"`,
        (s) => s.is("message") && s.getChildText("body") === text,
      );
      assert.equal(corrected.getChild("replace", NS.correct)?.attrs.id, first.attrs.id);
    }

    const direct = await transport.send(human.jid, "draft");
    await transport.edit(direct, "final");
    const corrected = await human.waitFor(
      "the direct correction",
      (s) => s.is("message") && s.getChildText("body") === "final",
    );
    assert.equal(corrected.getChild("replace", NS.correct)?.attrs.id, direct.id);
  });

  it("delivers only newly added reactions, and reacts with the room's stanza ids", async () => {
    const { transport, inbox } = agent;
    const sent = await transport.send(lobby, "approve?");
    await human.say(lobby, "groupchat", undefined, reactions(sent.id, "✅"));
    const approved = await inbox.reaction("✅");
    assert.deepEqual(
      { room: approved.room, sender: approved.sender, target: approved.target },
      { room: lobby, sender: human.jid, target: sent.id },
    );
    await human.say(lobby, "groupchat", undefined, reactions(sent.id, "✅", "🎉"));
    await inbox.reaction("🎉");
    assert.equal(inbox.reactions.filter((r) => r.key === "✅").length, 1);

    const asked = await human.sayInRoom(lobby, "human", "react to me");
    const message = await inbox.message("react to me");
    await transport.react(lobby, message.id, "👀");
    await transport.react(lobby, message.id, "✅");
    const both = await human.waitFor("the agent's second reaction", (s) => {
      const set = s.getChild("reactions", NS.reactions);
      return set?.attrs.id === asked.stanzaId && set.getChildren("reaction").length === 2;
    });
    assert.equal(both.attrs.from, `${lobby}/${AGENT_NICK}`);
    assert.deepEqual(
      both
        .getChild("reactions", NS.reactions)
        ?.getChildren("reaction")
        .map((r) => r.getText()),
      ["👀", "✅"],
    );
  });

  it("sends long text as several messages within maxMessageChars", async () => {
    const { transport } = agent;
    const lines = Array.from({ length: 300 }, (_, i) => `line ${i} ${"x".repeat(20)}`);
    const text = lines.join("\n");
    assert.ok(text.length > 2 * transport.maxMessageChars);
    const mark = human.stanzas.length;
    const first = await transport.sendLong(lobby, text, "answer.md");
    const pieces = await until(() => {
      const received = human.stanzas
        .slice(mark)
        .filter((s) => s.is("message") && s.attrs.from === `${lobby}/${AGENT_NICK}`)
        .filter((s) => s.getChildText("body")?.includes("line "));
      return received.length >= 3 &&
        received.some((s) => s.getChildText("body")?.includes("line 299"))
        ? received
        : undefined;
    }, "all pieces");
    for (const piece of pieces)
      assert.ok((piece.getChildText("body") ?? "").length <= transport.maxMessageChars);
    assert.equal(stanzaIdBy(pieces[0] as XmlElement, lobby), first.id);
    const joined = pieces.map((p) => p.getChildText("body")).join("\n");
    for (const line of lines) assert.ok(joined.includes(line), line);
  });

  it("shows typing and presence to the human", async () => {
    const { transport } = agent;
    await transport.typing(lobby, true);
    await human.waitFor(
      "composing in the room",
      (s) =>
        s.is("message") &&
        s.attrs.from === `${lobby}/${AGENT_NICK}` &&
        s.getChild("composing", NS.chatStates) !== undefined,
    );
    await transport.typing(human.jid, false);
    await human.waitFor(
      "active in the direct chat",
      (s) =>
        s.is("message") &&
        s.attrs.type === "chat" &&
        s.getChild("active", NS.chatStates) !== undefined &&
        s.getChildText("body") === null,
    );

    const presence = (show: string | null, status: string | null) =>
      human.waitFor(`presence ${show}/${status}`, (s) => {
        if (!s.is("presence") || s.attrs.from !== `${lobby}/${AGENT_NICK}` || s.attrs.type)
          return false;
        return s.getChildText("show") === show && s.getChildText("status") === status;
      });
    await transport.setPresence("busy", "working on: tests");
    await presence("dnd", "working on: tests");
    await transport.setPresence("away", "waiting for approval");
    await presence("away", "waiting for approval");
    await transport.setPresence("available", "ready");
    await presence(null, "ready");
  });

  it("ignores a stranger's invitations and accepts an allowed inviter's", async () => {
    const { log, inbox } = agent;
    const strangers = `strangers@${server().mucDomain}`;
    await stranger.join(strangers, "stranger");
    await stranger.client.send(
      xml(
        "message",
        { to: strangers },
        xml("x", { xmlns: NS.mucUser }, xml("invite", { to: agentJid })),
      ),
    );
    await stranger.say(
      agentJid,
      "chat",
      undefined,
      xml("x", { xmlns: NS.conference, jid: strangers }),
    );
    await until(
      () =>
        log.filter((line) => line.includes(`ignored the invitation to ${strangers}`)).length === 2,
      "both invitations ignored",
    );
    assert.ok(log.some((line) => line.includes(stranger.jid)));

    const mediated = `mediated@${server().mucDomain}`;
    const mark = human.stanzas.length;
    await human.join(mediated, "human");
    await human.client.send(
      xml(
        "message",
        { to: mediated },
        xml("x", { xmlns: NS.mucUser }, xml("invite", { to: agentJid })),
      ),
    );
    await human.agentIn(mediated, agentJid, mark);
    const direct = `direct@${server().mucDomain}`;
    await human.join(direct, "human");
    await human.say(agentJid, "chat", undefined, xml("x", { xmlns: NS.conference, jid: direct }));
    await human.agentIn(direct, agentJid, mark);
    await until(
      () => log.some((line) => line.includes(`accepted the invitation to ${direct}`)),
      "log",
    );
    await human.sayInRoom(direct, "human", "welcome in");
    const message = await inbox.message("welcome in");
    assert.equal(message.room, direct);
    assert.equal(message.sender, human.jid);

    // The stranger never saw the agent in its room.
    assert.ok(
      !stranger.stanzas.some(
        (s) => s.is("presence") && s.attrs.from === `${strangers}/${AGENT_NICK}`,
      ),
    );

    // The rooms joined on an invitation are joined again after a restart.
    await agent.transport.stop();
    const state = JSON.parse(await readFile(path.join(agent.stateDir, XMPP_STATE_FILE), "utf8"));
    assert.deepEqual(Object.keys(state.invited).sort(), [direct, mediated]);
    const rejoin = human.stanzas.length;
    agent = await startAgent(agent.stateDir);
    await human.agentIn(mediated, agentJid, rejoin);
    await human.agentIn(direct, agentJid, rejoin);
  });

  it("after a restart delivers what was said while it was down, and nothing delivered before", async () => {
    const stateDir = await tempDir();
    const first = await startAgent(stateDir);
    await human.sayInRoom(lobby, "human", "before the restart");
    await human.say(agentJid, "chat", "direct before the restart");
    await first.inbox.message("before the restart");
    await first.inbox.message("direct before the restart");
    await first.transport.stop();
    const saved = await stat(path.join(stateDir, XMPP_STATE_FILE));
    assert.equal(saved.mode & 0o777, 0o600);
    const state = JSON.parse(await readFile(path.join(stateDir, XMPP_STATE_FILE), "utf8"));
    assert.equal(state.jid, agentJid);

    // The shared agent (another session of the same account) goes too, so the server stores.
    await agent.transport.stop();
    await human.sayInRoom(lobby, "human", "while it was down");
    await human.say(agentJid, "chat", "direct while it was down");
    await human.sync(server().domain);
    const second = await startAgent(stateDir);
    // Both came from storage (room history, offline storage): their time is the server's stamp.
    assert.equal((await second.inbox.message("while it was down")).time % 1000, 0);
    assert.equal((await second.inbox.message("direct while it was down")).time % 1000, 0);
    await human.sayInRoom(lobby, "human", "after the restart");
    await second.inbox.message("after the restart");
    assert.deepEqual(second.inbox.messages.map((m) => m.body).sort(), [
      "after the restart",
      "direct while it was down",
      "while it was down",
    ]);
    await second.transport.stop();
  });

  for (const cut of ["both", "client"] as const) {
    const how =
      cut === "both"
        ? "the server saw the connection end (offline storage)"
        : "the server kept the dead session (the archive, the room's history)";
    it(`after a crash delivers exactly once what was said meanwhile: ${how}`, async () => {
      // GIVEN an agent that has handled a message in the room and a direct one, alone online.
      await agent?.transport.stop();
      const stateDir = await tempDir();
      const relay = await Relay.to(server().service);
      await relay.open();
      const first = makeTransport({ stateDir, service: relay.service });
      const firstInbox = new Inbox();
      const second = makeTransport({ stateDir });
      const secondInbox = new Inbox();
      try {
        await first.transport.start(firstInbox.handlers);
        await human.sayInRoom(lobby, "human", `in the room before the crash (${cut})`);
        await human.say(agentJid, "chat", `directly before the crash (${cut})`);
        await firstInbox.message(`in the room before the crash (${cut})`);
        await firstInbox.message(`directly before the crash (${cut})`);

        // WHEN its process dies without a word to the server, and both are said again.
        relay.cut(cut);
        await until(() => firstInbox.states.at(-1)?.state !== "online", "the loss");
        await first.transport.stop();
        const room = `in the room while it was down (${cut})`;
        const direct = `directly while it was down (${cut})`;
        await human.sayInRoom(lobby, "human", room);
        await human.say(agentJid, "chat", direct);
        await human.sync(server().domain);

        // THEN a new process on the same state gets each once, and nothing from before.
        await second.transport.start(secondInbox.handlers);
        await secondInbox.message(room);
        const late = await secondInbox.message(direct);
        assert.equal(late.sender, human.jid);
        assert.equal(late.time % 1000, 0, "the server's time, not the arrival's");
        await human.sayInRoom(lobby, "human", `in the room after the restart (${cut})`);
        await human.say(agentJid, "chat", `directly after the restart (${cut})`);
        await secondInbox.message(`in the room after the restart (${cut})`);
        await secondInbox.message(`directly after the restart (${cut})`);
        // Whatever came twice (offline storage and the archive, a history) has come by now.
        await new Promise((resolve) => setTimeout(resolve, 500));
        assert.deepEqual(secondInbox.messages.map((m) => m.body).sort(), [
          `directly after the restart (${cut})`,
          direct,
          `in the room after the restart (${cut})`,
          room,
        ]);
        assert.ok(!firstInbox.messages.some((m) => m.body === room || m.body === direct));
      } finally {
        await second.transport.stop();
        await relay.close();
      }
    });
  }

  it("after a SIGKILL right at its first start, delivers once what was said at once, not as history", async () => {
    // GIVEN a process on a new state, online as the only session of the account.
    await agent?.transport.stop();
    const dir = await tempDir();
    const stateDir = path.join(dir, "state");
    const module = pathToFileURL(
      path.join(import.meta.dirname, "../../src/chat/xmpp/transport.ts"),
    ).href;
    await writeFile(
      path.join(dir, "agent.mjs"),
      `import { XmppTransport } from ${JSON.stringify(module)};
      const options = JSON.parse(process.env.AGENT);
      const transport = new XmppTransport({ ...options, inviters: new Set(), log: (line) => console.error(line) });
      await transport.start({ message: (message) => console.log("delivered " + message.body) });
      console.log("online");`,
    );
    const child = spawn(process.execPath, ["--no-warnings", "agent.mjs"], {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        AGENT: JSON.stringify({
          service: server().service,
          domain: server().domain,
          jid: agentJid,
          password: "pw-agent",
          rooms: [],
          stateDir,
          displayName: AGENT_NICK,
        }),
      },
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const exited = new Promise((resolve) => child.on("exit", resolve));
    const next = makeTransport({ stateDir });
    const inbox = new Inbox();
    try {
      await until(() => output.includes("online"), `the first process online:\n${output}`, 20_000);

      // WHEN it is killed, and the human writes at once (before the server may have noticed).
      child.kill("SIGKILL");
      const saying = Date.now();
      await human.say(agentJid, "chat", "said as it died");
      await human.sync(server().domain);
      const said = Date.now();
      await exited;

      // THEN the next process delivers it once, stamped with the second it was said in,
      // which a chat service first started the instant before does not take for history.
      await next.transport.start(inbox.handlers);
      const late = await inbox.message("said as it died");
      assert.equal(late.sender, human.jid);
      assert.equal(late.time % 1000, 0, "a stored message: the server's stamp, in whole seconds");
      assert.ok(late.time <= said, `stamped ${late.time}, said between ${saying} and ${said}`);
      assert.ok(saying - late.time < TIME_PRECISION_MS, `stamped ${late.time}, said at ${saying}`);
      assert.ok(!saidBefore(late.time, saying), "not history for a service started just before");
      await human.say(agentJid, "chat", "said after the restart");
      await inbox.message("said after the restart");
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(
        inbox.messages.map((m) => m.body),
        ["said as it died", "said after the restart"],
        "once each, and nothing from before the first start",
      );
      assert.ok(!output.includes("delivered"), output);
    } finally {
      child.kill("SIGKILL");
      await next.transport.stop();
    }
  });

  for (const mark of ["none", "expired"] as const) {
    it(`with ${mark === "none" ? "no archive mark (a state from before marks)" : "a mark the archive no longer has"} reads all the archive keeps, by the rules for stored messages`, async () => {
      await agent?.transport.stop();
      // Someone new: no message of theirs was handled under another state within the clock margin.
      const peer = await person(`peer-${mark}`);
      const stateDir = await tempDir();
      const first = await startAgent(stateDir);
      await peer.say(agentJid, "chat", `handled before (${mark})`);
      await first.inbox.message(`handled before (${mark})`);
      await first.transport.stop();
      const file = path.join(stateDir, XMPP_STATE_FILE);
      const state = JSON.parse(await readFile(file, "utf8"));
      assert.equal(typeof state.archive, "string");
      if (mark === "none") delete state.archive;
      else state.archive = "no-such-archive-id";
      await writeFile(file, JSON.stringify(state));
      await peer.say(agentJid, "chat", `said while down (${mark})`);
      await peer.sync(server().domain);

      const second = await startAgent(stateDir);
      await second.inbox.message(`said while down (${mark})`);
      await peer.say(agentJid, "chat", `said after (${mark})`);
      await second.inbox.message(`said after (${mark})`);
      assert.deepEqual(
        second.inbox.messages.map((m) => m.body),
        [`said while down (${mark})`, `said after (${mark})`],
      );
      assert.equal(
        second.log.some((line) => line.includes("no longer has its mark")),
        mark === "expired",
      );
      const saved = JSON.parse(await readFile(file, "utf8"));
      assert.equal(typeof saved.archive, "string", "marked again");
      await second.transport.stop();
    });
  }

  it("never enables stream management (XEP-0198), so batched answers cannot make its count go back", async () => {
    // The server's output comes in batches: <enabled/> in the same read as answers to stanzas sent after <enable/>.
    const relay = await Relay.to(server().service, 100);
    await relay.open();
    const { transport, log } = makeTransport({ stateDir: await tempDir(), service: relay.service });
    const inbox = new Inbox();
    try {
      await transport.start(inbox.handlers);
      await transport.setPresence("available", "asks humans");
      await transport.setPresence("busy", "working");
      await human.sayInRoom(lobby, "human", "batched one");
      await inbox.message("batched one");
      await human.say(agentJid, "chat", "batched two");
      await inbox.message("batched two");
      await transport.send(lobby, "batched answer");
      assert.ok(!relay.sent.includes("urn:xmpp:sm:"), "no <enable/> nor <r/> nor <a/>");
      assert.deepEqual(
        inbox.states.map((s) => s.state),
        ["connecting", "online"],
      );
      assert.deepEqual(log, []);
    } finally {
      await transport.stop();
      await relay.close();
    }
  });

  it("waits for a server that is down at start, and reports losing and regaining it", async () => {
    // A relay in front of Prosody stands in for the server: closed, then open.
    const relay = await Relay.to(server().service);
    const { transport } = makeTransport({ stateDir: await tempDir(), service: relay.service });
    const inbox = new Inbox();
    try {
      const started = transport.start(inbox.handlers);
      await until(() => inbox.states.find((s) => s.detail?.includes("retrying")), "a retry");
      await relay.open();
      await started;
      assert.equal(inbox.states.at(-1)?.state, "online");

      await relay.close();
      await until(() => inbox.states.at(-1)?.state !== "online", "the loss to be reported");
      await relay.open();
      await until(
        () => inbox.states.at(-1)?.state === "online",
        "the connection to come back",
        20_000,
      );
      await human.sayInRoom(lobby, "human", "still there?");
      await inbox.message("still there?");
    } finally {
      await transport.stop();
      await relay.close();
    }
  });

  it("rejects a start with a password the server refuses, naming the account", async () => {
    const { transport } = makeTransport({ stateDir: await tempDir(), password: "wrong" });
    const started = Date.now();
    await assert.rejects(transport.start(new Inbox().handlers), (error: Error) => {
      assert.match(error.message, new RegExp(agentJid.replace(/[.]/g, "\\.")));
      assert.match(error.message, /refused the credentials/);
      assert.match(error.message, /not-authorized/);
      return true;
    });
    assert.ok(Date.now() - started < 5000);
  });
});
