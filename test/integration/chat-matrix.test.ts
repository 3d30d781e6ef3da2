/**
 * The Matrix transport against a real Synapse on 127.0.0.1: the agent is a
 * MatrixTransport, the human (and a stranger) drive the client-server API
 * with plain fetch and check what the agent's events look like on the wire.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { MatrixTransport, SYNC_STATE_FILE } from "../../src/chat/matrix/transport.ts";
import { TransportFatalError } from "../../src/chat/transport.ts";
import { Inbox, until } from "../support/chat-inbox.ts";
import { freePort } from "../support/server-process.ts";
import { type SynapseServer, startSynapse } from "../support/synapse.ts";

interface Account {
  readonly userId: string;
  readonly accessToken: string;
}

describe("Matrix transport", () => {
  let synapse: SynapseServer | undefined;
  const server = () => synapse ?? assert.fail("Synapse did not start");
  let agent: Account;
  let human: Account;
  let stranger: Account;
  /** An agent whose device a test logs out. */
  let revoked: Account & { password: string };
  /** A room of three (so not direct): the human made it public under #lobby, the stranger joined. */
  let lobby: string;
  const temps: string[] = [];
  const running: MatrixTransport[] = [];

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), "nt-test-matrix-"));
    temps.push(dir);
    return dir;
  }

  async function api(who: Account, method: string, route: string, body?: unknown) {
    const response = await fetch(`${server().url}/_matrix/client${route}`, {
      method,
      headers: { authorization: `Bearer ${who.accessToken}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await response.json()) as Record<string, any>;
    assert.ok(response.ok, `${method} ${route}: ${response.status} ${JSON.stringify(json)}`);
    return json;
  }

  async function say(
    who: Account,
    room: string,
    content: Record<string, unknown>,
    type = "m.room.message",
  ) {
    const txn = randomBytes(8).toString("hex");
    const route = `/v3/rooms/${encodeURIComponent(room)}/send/${type}/${txn}`;
    return (await api(who, "PUT", route, content)).event_id as string;
  }

  function event(who: Account, room: string, id: string) {
    return api(who, "GET", `/v3/rooms/${encodeURIComponent(room)}/event/${encodeURIComponent(id)}`);
  }

  function membership(who: Account, room: string, user: string) {
    const route = `/v3/rooms/${encodeURIComponent(room)}/state/m.room.member/${encodeURIComponent(user)}`;
    return api(who, "GET", route).then((content) => content.membership as string);
  }

  function makeTransport(options: {
    stateDir: string;
    homeserver?: string;
    accessToken?: string;
    userId?: string;
  }) {
    const log: string[] = [];
    const instance = new MatrixTransport({
      homeserver: options.homeserver ?? server().url,
      userId: options.userId ?? agent.userId,
      accessToken: options.accessToken ?? agent.accessToken,
      rooms: [`#lobby:${server().serverName}`],
      inviters: new Set([human.userId]),
      stateDir: options.stateDir,
      displayName: "Ada Agent",
      log: (line) => log.push(line),
    });
    running.push(instance);
    return { transport: instance, log };
  }

  /** A started agent with its inbox, in a state dir of its own unless one is given. */
  async function startAgent(stateDir?: string) {
    const made = makeTransport({ stateDir: stateDir ?? (await tempDir()) });
    const inbox = new Inbox();
    await made.transport.start(inbox.handlers);
    return { ...made, inbox };
  }

  before(async () => {
    synapse = await startSynapse();
    agent = await server().register("agent");
    human = await server().register("human");
    stranger = await server().register("stranger");
    revoked = await server().register("revoked");
    const created = await api(human, "POST", "/v3/createRoom", {
      preset: "public_chat",
      room_alias_name: "lobby",
    });
    lobby = created.room_id;
    await api(stranger, "POST", `/v3/join/${encodeURIComponent(lobby)}`, {});
  });

  after(async () => {
    for (const instance of running) await instance.stop();
    await synapse?.stop();
    for (const dir of temps) await rm(dir, { recursive: true, force: true });
  });

  it("joins the declared room by alias and delivers nothing said before its first start", async () => {
    await say(human, lobby, { msgtype: "m.text", body: "history before the agent existed" });
    const early = await api(human, "POST", "/v3/createRoom", {
      preset: "private_chat",
      invite: [agent.userId],
    });
    await say(human, early.room_id, { msgtype: "m.text", body: "history in an invitation" });
    const { transport, inbox } = await startAgent();
    assert.equal(await membership(human, lobby, agent.userId), "join");
    await until(
      async () => (await membership(human, early.room_id, agent.userId)) === "join",
      "the agent to accept the invitation that waited for it",
    );
    assert.equal(inbox.states.at(-1)?.state, "online");
    await say(human, lobby, { msgtype: "m.text", body: "first after start" });
    await inbox.message("first after start");
    assert.deepEqual(
      inbox.messages.map((m) => m.body),
      ["first after start"],
    );
    await transport.stop();
  });

  it("delivers messages with the verified sender, thread, reply (fallback stripped) and mentions", async () => {
    const { transport, inbox, log } = await startAgent();
    const rootId = await say(human, lobby, { msgtype: "m.text", body: "a thread root" });
    const root = await inbox.message("a thread root");
    assert.equal(root.id, rootId);
    assert.equal(root.room, lobby);
    assert.equal(root.sender, human.userId);
    assert.equal(root.direct, false);
    assert.equal(root.mentionsMe, false);
    assert.equal(root.thread, undefined);
    assert.equal(root.inReplyTo, undefined);
    assert.ok(Math.abs(root.time - Date.now()) < 60_000);

    await say(human, lobby, {
      msgtype: "m.text",
      body: "in the thread",
      "m.relates_to": {
        rel_type: "m.thread",
        event_id: rootId,
        is_falling_back: true,
        "m.in_reply_to": { event_id: rootId },
      },
    });
    const threaded = await inbox.message("in the thread");
    assert.equal(threaded.thread, rootId);
    assert.equal(threaded.inReplyTo, undefined, "a falling-back reply is not a reply");

    await say(human, lobby, {
      msgtype: "m.text",
      body: `> <${stranger.userId}> a thread root\n> second quoted line\n\nthe answer, agent`,
      "m.relates_to": { "m.in_reply_to": { event_id: rootId } },
    });
    const reply = await inbox.message("the answer, agent");
    assert.equal(reply.inReplyTo, rootId);
    assert.equal(reply.mentionsMe, true, "the localpart as a word is a mention");

    await say(human, lobby, {
      msgtype: "m.text",
      body: "Ada Agent: look",
      "m.mentions": { user_ids: [] },
    });
    assert.equal((await inbox.message("Ada Agent: look")).mentionsMe, true);
    await say(human, lobby, {
      msgtype: "m.text",
      body: "a pill",
      "m.mentions": { user_ids: [agent.userId] },
    });
    assert.equal((await inbox.message("a pill")).mentionsMe, true);
    await say(human, lobby, { msgtype: "m.text", body: "agentive is not a mention" });
    assert.equal((await inbox.message("agentive is not a mention")).mentionsMe, false);

    // Notices (bots), edits, encrypted messages, own messages and the stranger's emote.
    await say(human, lobby, { msgtype: "m.notice", body: "a bot notice" });
    const sealed = {
      algorithm: "m.megolm.v1.aes-sha2",
      ciphertext: "AwgAEnACgAkLmt6qF84IK++J7UDH2Za1YVchHyprqTqsg",
      device_id: "HUMANDEVICE",
      sender_key: "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA",
      session_id: "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ",
    };
    await say(human, lobby, sealed, "m.room.encrypted");
    await say(human, lobby, sealed, "m.room.encrypted");
    await say(human, lobby, {
      msgtype: "m.text",
      body: "* edited root",
      "m.new_content": { msgtype: "m.text", body: "edited root" },
      "m.relates_to": { rel_type: "m.replace", event_id: rootId },
    });
    await transport.send(lobby, "the agent's own words");
    await say(stranger, lobby, { msgtype: "m.emote", body: "waves" });
    const emote = await inbox.message("waves");
    assert.equal(emote.sender, stranger.userId);
    const bodies = inbox.messages.map((m) => m.body);
    for (const unwanted of [
      "a bot notice",
      "* edited root",
      "edited root",
      "the agent's own words",
    ])
      assert.ok(!bodies.includes(unwanted), `${unwanted} must not be delivered`);
    assert.equal(log.filter((line) => line.includes("encrypted messages are ignored")).length, 1);
    await transport.stop();
  });

  it("sends into a thread, as a reply, edits and reacts; the human sees the relations", async () => {
    const { transport, inbox } = await startAgent();
    const rootId = await say(human, lobby, { msgtype: "m.text", body: "question" });
    const askId = await say(human, lobby, {
      msgtype: "m.text",
      body: "follow-up",
      "m.relates_to": {
        rel_type: "m.thread",
        event_id: rootId,
        is_falling_back: true,
        "m.in_reply_to": { event_id: rootId },
      },
    });

    const inThread = await transport.send(lobby, "answer in thread", {
      thread: rootId,
      replyTo: askId,
    });
    assert.equal(inThread.room, lobby);
    const threadEvent = await event(human, lobby, inThread.id);
    assert.equal(threadEvent.sender, agent.userId);
    assert.deepEqual(threadEvent.content, {
      msgtype: "m.text",
      body: "answer in thread",
      "m.relates_to": {
        rel_type: "m.thread",
        event_id: rootId,
        is_falling_back: true,
        "m.in_reply_to": { event_id: askId },
      },
    });

    const plainThread = await transport.send(lobby, "thread only", { thread: rootId });
    assert.deepEqual((await event(human, lobby, plainThread.id)).content["m.relates_to"], {
      rel_type: "m.thread",
      event_id: rootId,
      is_falling_back: true,
      "m.in_reply_to": { event_id: rootId },
    });

    const reply = await transport.send(lobby, "a reply", { replyTo: rootId });
    assert.deepEqual((await event(human, lobby, reply.id)).content["m.relates_to"], {
      "m.in_reply_to": { event_id: rootId },
    });

    await transport.edit(reply, "a better reply");
    const edits = await api(
      human,
      "GET",
      `/v1/rooms/${encodeURIComponent(lobby)}/relations/${encodeURIComponent(reply.id)}/m.replace`,
    );
    assert.equal(edits.chunk.length, 1);
    assert.equal(edits.chunk[0].sender, agent.userId);
    assert.deepEqual(edits.chunk[0].content, {
      msgtype: "m.text",
      body: "* a better reply",
      "m.new_content": { msgtype: "m.text", body: "a better reply" },
      "m.relates_to": { rel_type: "m.replace", event_id: reply.id },
    });

    await transport.react(lobby, rootId, "👍🏽");
    const reactions = await api(
      human,
      "GET",
      `/v1/rooms/${encodeURIComponent(lobby)}/relations/${encodeURIComponent(rootId)}/m.annotation/m.reaction`,
    );
    assert.deepEqual(
      reactions.chunk.map((e: any) => [e.sender, e.content["m.relates_to"]]),
      [[agent.userId, { rel_type: "m.annotation", event_id: rootId, key: "👍🏽" }]],
    );

    await say(
      human,
      lobby,
      { "m.relates_to": { rel_type: "m.annotation", event_id: inThread.id, key: "🎉" } },
      "m.reaction",
    );
    const seen = await until(() => inbox.reactions[0], "the human's reaction");
    assert.deepEqual(
      { ...seen, time: typeof seen.time },
      { room: lobby, sender: human.userId, target: inThread.id, key: "🎉", time: "number" },
    );
    assert.equal(inbox.reactions.length, 1, "the agent's own reaction is not delivered");
    await transport.stop();
  });

  it("sends long text as a text file the human can download, in the thread", async () => {
    const { transport } = await startAgent();
    const rootId = await say(human, lobby, { msgtype: "m.text", body: "long one please" });
    const text = `first line\n\nsecond line ✓\n${"x".repeat(20_000)}\nlast line\n`;
    const sent = await transport.sendLong(lobby, text, "answer.md", { thread: rootId });
    const { content } = await event(human, lobby, sent.id);
    assert.equal(content.msgtype, "m.file");
    assert.equal(content.filename, "answer.md");
    assert.equal(content.info.mimetype, "text/plain");
    assert.equal(content.info.size, Buffer.byteLength(text));
    assert.match(content.body, /^first line\nsecond line ✓\n/);
    assert.ok(content.body.length < 1000, "the body is a preview");
    assert.equal(content["m.relates_to"].rel_type, "m.thread");
    assert.equal(content["m.relates_to"].event_id, rootId);
    const [serverName, mediaId] = String(content.url).replace("mxc://", "").split("/");
    const download = await fetch(
      `${server().url}/_matrix/client/v1/media/download/${serverName}/${mediaId}`,
      { headers: { authorization: `Bearer ${human.accessToken}` } },
    );
    assert.equal(download.status, 200);
    assert.equal(await download.text(), text);
    await transport.stop();
  });

  it("sends long text as several messages in the thread when the upload fails", async () => {
    // An HTTP relay to Synapse that refuses uploads, as a server with a small upload limit would.
    const target = new URL(server().url);
    const relay = http.createServer((request, response) => {
      if (request.url?.includes("/media/") && request.url.includes("/upload")) {
        request.resume();
        response.writeHead(413, { "content-type": "application/json" });
        response.end(JSON.stringify({ errcode: "M_TOO_LARGE", error: "too large" }));
        return;
      }
      const upstream = http.request(
        {
          host: target.hostname,
          port: target.port,
          path: request.url,
          method: request.method,
          headers: request.headers,
        },
        (answer) => {
          response.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(response);
        },
      );
      upstream.on("error", () => response.destroy());
      request.pipe(upstream);
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    const address = relay.address() as net.AddressInfo;
    const { transport, log } = makeTransport({
      stateDir: await tempDir(),
      homeserver: `http://127.0.0.1:${address.port}`,
    });
    try {
      await transport.start(new Inbox().handlers);
      const rootId = await say(human, lobby, { msgtype: "m.text", body: "long one, no files" });
      const lines = Array.from({ length: 400 }, (_, i) => `line ${i} ${"y".repeat(40)}`);
      const sent = await transport.sendLong(lobby, lines.join("\n"), "answer.md", {
        thread: rootId,
      });
      assert.ok(
        log.some((line) => line.includes("uploading answer.md") && line.includes("M_TOO_LARGE")),
      );
      const thread = await api(
        human,
        "GET",
        `/v1/rooms/${encodeURIComponent(lobby)}/relations/${encodeURIComponent(rootId)}/m.thread?dir=f`,
      );
      const pieces = thread.chunk.map((e: any) => e.content);
      assert.ok(pieces.length >= 3, `${pieces.length} pieces`);
      assert.equal(thread.chunk[0].event_id, sent.id);
      for (const piece of pieces) {
        assert.equal(piece.msgtype, "m.text");
        assert.ok(piece.body.length <= transport.maxMessageChars);
      }
      assert.deepEqual(
        pieces.flatMap((p: any) => p.body.split("\n")),
        lines,
      );
    } finally {
      await transport.stop();
      relay.closeAllConnections();
      await new Promise((resolve) => relay.close(resolve));
    }
  });

  it("shows typing and presence to the human", async () => {
    const { transport } = await startAgent();
    await transport.typing(lobby, true);
    const typingUsers = async () => {
      // Synapse answers an identical /sync from a cache for a while: each filter is new.
      const filter = JSON.stringify({
        presence: { not_types: ["*"] },
        room: {
          rooms: [lobby],
          timeline: { limit: 0 },
          state: { not_types: ["*"] },
          account_data: { not_types: [randomBytes(4).toString("hex")] },
        },
      });
      const sync = await api(human, "GET", `/v3/sync?filter=${encodeURIComponent(filter)}`);
      const ephemeral = sync.rooms?.join?.[lobby]?.ephemeral?.events ?? [];
      return ephemeral.find((e: any) => e.type === "m.typing")?.content.user_ids as string[];
    };
    assert.deepEqual(await typingUsers(), [agent.userId]);
    await transport.typing(lobby, false);
    assert.deepEqual(await typingUsers(), []);

    const presence = () =>
      api(human, "GET", `/v3/presence/${encodeURIComponent(agent.userId)}/status`);
    await transport.setPresence("away", "waiting for approval");
    assert.deepEqual(
      { ...(await presence()), last_active_ago: 0 },
      {
        presence: "unavailable",
        status_msg: "waiting for approval",
        last_active_ago: 0,
      },
    );
    await transport.setPresence("busy", "working on: tests");
    const busy = await presence();
    assert.equal(busy.presence, "online");
    assert.equal(busy.status_msg, "working on: tests");
    await transport.setPresence("available");
    assert.equal((await presence()).presence, "online");
    await transport.stop();
  });

  it("accepts invitations from an inviter and declines a stranger's", async () => {
    const { transport, inbox, log } = await startAgent();
    const fromHuman = (await api(human, "POST", "/v3/createRoom", { preset: "private_chat" }))
      .room_id as string;
    await say(human, fromHuman, { msgtype: "m.text", body: "said before the agent was invited" });
    await api(human, "POST", `/v3/rooms/${encodeURIComponent(fromHuman)}/invite`, {
      user_id: agent.userId,
    });
    const fromStranger = (
      await api(stranger, "POST", "/v3/createRoom", {
        preset: "private_chat",
        invite: [agent.userId],
      })
    ).room_id as string;
    await until(
      async () => (await membership(human, fromHuman, agent.userId)) === "join",
      "the agent to join the human's room",
    );
    await say(human, fromHuman, { msgtype: "m.text", body: "welcome" });
    const welcome = await inbox.message("welcome");
    assert.equal(welcome.room, fromHuman);
    assert.equal(welcome.direct, true, "a room of two is a direct chat");
    await api(human, "POST", `/v3/rooms/${encodeURIComponent(fromHuman)}/invite`, {
      user_id: stranger.userId,
    });
    await say(human, fromHuman, { msgtype: "m.text", body: "a third is invited" });
    assert.equal((await inbox.message("a third is invited")).direct, false);
    assert.equal(
      inbox.messages.find((m) => m.body.includes("before the agent was invited")),
      undefined,
      "what was said before the join is history",
    );
    await until(
      async () => (await membership(stranger, fromStranger, agent.userId)) === "leave",
      "the agent to decline the stranger's room",
    );
    assert.ok(
      log.some((line) =>
        line.includes(`declined the invitation to ${fromStranger} from ${stranger.userId}`),
      ),
      log.join("\n"),
    );
    await transport.stop();
  });

  it("opens a direct room once and delivers its messages as direct", async () => {
    // Someone the agent shares no room with yet.
    const human = await server().register("newcomer");
    const { transport, inbox } = await startAgent();
    const room = await transport.directRoom(human.userId);
    assert.equal(
      await transport.directRoom(human.userId),
      room,
      "the second call finds the same room",
    );
    const invited = await api(
      human,
      "GET",
      `/v3/sync?filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 0 } } }))}`,
    );
    const inviteState = invited.rooms?.invite?.[room]?.invite_state?.events ?? [];
    const invite = inviteState.find(
      (e: any) => e.type === "m.room.member" && e.state_key === human.userId,
    );
    assert.equal(invite?.sender, agent.userId);
    assert.equal(invite?.content.is_direct, true);
    const direct = await api(
      agent,
      "GET",
      `/v3/user/${encodeURIComponent(agent.userId)}/account_data/m.direct`,
    );
    assert.deepEqual(direct[human.userId], [room]);
    await api(human, "POST", `/v3/join/${encodeURIComponent(room)}`, {});
    await say(human, room, { msgtype: "m.text", body: "just between us" });
    const message = await inbox.message("just between us");
    assert.equal(message.direct, true);
    assert.equal(message.room, room);
    assert.equal(await transport.directRoom(human.userId), room);
    await transport.stop();
  });

  it("after a restart delivers what was said while it was down, and nothing it had delivered", async () => {
    const stateDir = await tempDir();
    const first = await startAgent(stateDir);
    await say(human, lobby, { msgtype: "m.text", body: "before the restart" });
    await first.inbox.message("before the restart");
    await first.transport.stop();
    const saved = await stat(path.join(stateDir, SYNC_STATE_FILE));
    assert.equal(saved.mode & 0o777, 0o600);
    const state = JSON.parse(await readFile(path.join(stateDir, SYNC_STATE_FILE), "utf8"));
    assert.equal(state.userId, agent.userId);

    await say(human, lobby, { msgtype: "m.text", body: "while it was down" });
    const second = makeTransport({ stateDir });
    const inbox = new Inbox();
    await second.transport.start(inbox.handlers);
    // The first response after a resume is read before start resolves.
    await inbox.message("while it was down");
    await say(human, lobby, { msgtype: "m.text", body: "after the restart" });
    await inbox.message("after the restart");
    assert.deepEqual(
      inbox.messages.map((m) => m.body),
      ["while it was down", "after the restart"],
    );
    await second.transport.stop();
  });

  it("waits for a homeserver that is down at start, and reports losing and regaining it", async () => {
    // A TCP relay in front of Synapse stands in for the server: closed, then open.
    const port = await freePort();
    const target = new URL(server().url);
    const sockets = new Set<net.Socket>();
    const relay = net.createServer((socket) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      for (const s of [socket, upstream]) {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => s.destroy());
      }
      socket.pipe(upstream).pipe(socket);
    });
    const open = () => new Promise<void>((resolve) => relay.listen(port, "127.0.0.1", resolve));
    const close = () =>
      new Promise<void>((resolve) => {
        relay.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
    const { transport } = makeTransport({
      stateDir: await tempDir(),
      homeserver: `http://127.0.0.1:${port}`,
    });
    const inbox = new Inbox();
    try {
      const started = transport.start(inbox.handlers);
      await until(() => inbox.states.find((s) => s.detail?.includes("retrying")), "a retry");
      await open();
      await started;
      assert.equal(inbox.states.at(-1)?.state, "online");

      await close();
      await until(() => inbox.states.at(-1)?.state !== "online", "the loss to be reported");
      await open();
      await until(
        () => inbox.states.at(-1)?.state === "online",
        "the connection to come back",
        20_000,
      );
    } finally {
      await transport.stop();
      await close();
    }
  });

  it("works under --lite-mode, without WebAssembly (so without Node's fetch)", async () => {
    // --lite-mode cannot strip types (that takes WebAssembly too): the child
    // runs the transport stripped to JavaScript, as dist/ holds it.
    const dir = await tempDir();
    const source = path.join(import.meta.dirname, "..", "..", "src", "chat");
    const strip = `
      const { stripTypeScriptTypes } = require("node:module");
      const fs = require("node:fs");
      const [source, target] = process.argv.slice(1);
      fs.mkdirSync(target + "/matrix");
      for (const name of ["transport", "matrix/transport", "matrix/http-fetch"]) {
        const js = stripTypeScriptTypes(fs.readFileSync(source + "/" + name + ".ts", "utf8"));
        fs.writeFileSync(target + "/" + name + ".mjs", js.replaceAll('.ts"', '.mjs"'));
      }`;
    execFileSync(process.execPath, ["--no-warnings", "-e", strip, source, dir]);
    await symlink(path.join(source, "..", "..", "node_modules"), path.join(dir, "node_modules"));
    await writeFile(
      path.join(dir, "agent.mjs"),
      `import { MatrixTransport } from "./matrix/transport.mjs";
      const env = JSON.parse(process.env.AGENT);
      const transport = new MatrixTransport({ ...env, inviters: new Set(), log: (line) => console.error(line) });
      await transport.start({
        message: async (message) => {
          if (message.body !== "ping") return;
          await transport.send(message.room, "pong", { replyTo: message.id });
          await transport.stop();
        },
      });
      console.log("online");`,
    );
    const child = spawn(process.execPath, ["--lite-mode", "--max-semi-space-size=1", "agent.mjs"], {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        AGENT: JSON.stringify({
          homeserver: server().url,
          userId: agent.userId,
          accessToken: agent.accessToken,
          rooms: [lobby],
          stateDir: path.join(dir, "state"),
          displayName: "Ada Agent",
        }),
      },
    });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    try {
      await until(
        () => output.includes("online"),
        `the agent online; its output:\n${output}`,
        20_000,
      );
      const ping = await say(human, lobby, { msgtype: "m.text", body: "ping" });
      assert.equal(await exited, 0, output);
      const recent = await api(
        human,
        "GET",
        `/v3/rooms/${encodeURIComponent(lobby)}/messages?dir=b&limit=5`,
      );
      const pong = recent.chunk.find(
        (e: any) => e.sender === agent.userId && e.content.body === "pong",
      );
      assert.deepEqual(
        pong?.content["m.relates_to"],
        { "m.in_reply_to": { event_id: ping } },
        output,
      );
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("gives up for good, through the fatal handler, when its device is logged out while it runs", async () => {
    // A device of its own, so the agent's token of the other tests stays valid.
    const login = await fetch(`${server().url}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: revoked.userId },
        password: revoked.password,
      }),
    });
    const device = (await login.json()) as { access_token: string };
    assert.ok(login.ok, JSON.stringify(device));
    const { transport } = makeTransport({
      stateDir: await tempDir(),
      accessToken: device.access_token,
      userId: revoked.userId,
    });
    const inbox = new Inbox();
    let fatal: Error | undefined;
    await transport.start({ ...inbox.handlers, fatal: (error) => (fatal = error) });
    // The human side's admin action: the device is logged out (its token revoked).
    const started = Date.now();
    await api(
      { userId: revoked.userId, accessToken: device.access_token },
      "POST",
      "/v3/logout",
      {},
    );
    const error = await until(() => fatal, "the fatal handler", 45_000);
    const seconds = (Date.now() - started) / 1000;
    assert.ok(error instanceof TransportFatalError, String(error));
    assert.match(error.message, /refused the access token of @revoked/);
    assert.match(error.message, /M_UNKNOWN_TOKEN/);
    assert.ok(
      inbox.states.some((s) => s.state === "offline" && s.detail === "access token refused"),
    );
    process.stderr.write(`# logged out -> fatal in ${seconds.toFixed(1)} s\n`);
  });

  it("rejects a start with a token the homeserver refuses, naming the account", async () => {
    const { transport } = makeTransport({
      stateDir: await tempDir(),
      accessToken: "syt_not_a_token",
    });
    await assert.rejects(transport.start(new Inbox().handlers), (error: Error) => {
      assert.match(error.message, new RegExp(agent.userId.replace(/[.]/g, "\\.")));
      assert.match(error.message, /refused the access token/);
      return true;
    });
  });
});
