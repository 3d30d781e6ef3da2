/**
 * Residents online, end to end, on both chat networks: a real Synapse and a
 * real Prosody on loopback, the town brought up with `nuketown up`, the
 * mayor and a stranger on chat clients that are not nuketown's (the raw
 * Matrix client-server API, @xmpp/client). The agent answers through
 * its daemon and `command` runtime; its sudo is approved in chat.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { runTask } from "../../src/agent/client.ts";
import { parseManifest } from "../../src/town/manifest.ts";
import {
  BIN,
  type ChatTown,
  crashChat,
  type Heard,
  startChatTown,
  until,
} from "../support/chat-town.ts";
import { isRoot, mustRun } from "../support/host.ts";
import { uidsOf } from "../support/uids.ts";

interface MatrixEvent {
  sender?: string;
  content?: {
    "m.relates_to"?: { rel_type?: string; event_id?: string };
    "m.new_content"?: { body?: string };
  };
}

const TOWNS = [
  { kind: "matrix", label: "chatmx", agentUid: 60711, mayorUid: 60712 },
  { kind: "xmpp", label: "chatxm", agentUid: 60721, mayorUid: 60722 },
] as const;

for (const spec of TOWNS) {
  describe(`residents online over ${spec.kind}`, { skip: !isRoot() && "needs root" }, () => {
    let town: ChatTown;
    const fromAgent = (room: string, text: RegExp) => (m: Heard) =>
      m.sender === town.agentId && m.room === room && text.test(m.body);
    const fromBot = (text: RegExp) => (m: Heard) =>
      m.sender === town.botId && m.room === town.rooms.approvals && text.test(m.body);
    const mention = () => (spec.kind === "matrix" ? town.agentId : town.agentId.split("@")[0]);

    before(async () => {
      town = await startChatTown({ ...spec, uids: uidsOf(import.meta.filename) });
    });
    after(async () => {
      if (process.env.NT_TEST_VERBOSE) process.stderr.write(town?.logs() ?? "");
      await town?.stop();
    });

    it("answers the mayor in a direct chat, as a reply, through the agent's runtime", async () => {
      const asked = await town.mayor.send(town.direct, "hello there");
      const answer = await town.mayor.waitFor(
        "the answer",
        fromAgent(town.direct, /you said: hello there \(uid \d+\)/),
      );
      assert.match(answer.body, new RegExp(`uid ${spec.agentUid}`));
      assert.equal(answer.inReplyTo, asked.id, "the answer replies to the question");
      assert.ok(town.runtimeCalls().includes("hello there"));
    });

    it("goes on in the same branch for the rest of a conversation", async () => {
      await town.mayor.send(town.direct, "second thing");
      await town.mayor.waitFor("the answer", fromAgent(town.direct, /you said: second thing/));
      const branches = [...town.logs().matchAll(/started in \S+ on (\S+)/g)].map((m) => m[1]);
      assert.equal(branches.length, 2, town.logs());
      assert.equal(branches[1], branches[0]);
    });

    it("works in two rooms at once, each answer in its own room", async () => {
      await Promise.all([
        town.mayor.send(town.rooms.one, `${mention()}: ping one`),
        town.mayor.send(town.rooms.two, `${mention()}: ping two`),
      ]);
      const [one, two] = await Promise.all([
        town.mayor.waitFor("room one's answer", fromAgent(town.rooms.one, /you said: ping one/)),
        town.mayor.waitFor("room two's answer", fromAgent(town.rooms.two, /you said: ping two/)),
      ]);
      assert.ok(one && two);
      assert.ok(!town.mayor.inbox.some(fromAgent(town.rooms.one, /ping two/)));
      assert.ok(!town.mayor.inbox.some(fromAgent(town.rooms.two, /ping one/)));
    });

    it("answers in the thread it was asked in, and goes on there without a mention", async () => {
      const root = await town.mayor.send(town.rooms.two, "a thread starts here");
      const thread = spec.kind === "matrix" ? root.id : `nt-thread-${process.pid}`;
      await town.mayor.send(town.rooms.two, `${mention()}: threaded question`, {
        thread,
      });
      const first = await town.mayor.waitFor(
        "the threaded answer",
        fromAgent(town.rooms.two, /threaded question/),
      );
      assert.equal(first.thread, thread);
      await town.mayor.send(town.rooms.two, "and a follow-up", { thread });
      const second = await town.mayor.waitFor(
        "the follow-up's answer",
        fromAgent(town.rooms.two, /and a follow-up/),
      );
      assert.equal(second.thread, thread);
      assert.ok(!town.runtimeCalls().includes("a thread starts here"));
    });

    it("keeps quiet in a room when nobody mentions it", async () => {
      await town.mayor.send(town.rooms.two, "just talking among humans");
      await town.mayor.send(town.rooms.two, `${mention()}: after the chatter`);
      await town.mayor.waitFor("the answer", fromAgent(town.rooms.two, /after the chatter/));
      assert.ok(!town.runtimeCalls().some((c) => c.includes("among humans")));
    });

    it("refuses a stranger once, politely, and never calls the runtime for them", async () => {
      await town.stranger.send(town.rooms.one, `${mention()}: delete everything`);
      const refusal = await town.stranger.waitFor(
        "the refusal",
        fromAgent(town.rooms.one, /only take requests from/),
      );
      assert.ok(refusal);
      await town.stranger.send(town.rooms.one, `${mention()}: pretty please`);
      // The mayor's next request is answered; by then the stranger's second message was seen.
      await town.mayor.send(town.rooms.one, `${mention()}: still there?`);
      await town.mayor.waitFor("the mayor's answer", fromAgent(town.rooms.one, /still there/));
      const refusals = town.stranger.inbox.filter(fromAgent(town.rooms.one, /only take requests/));
      assert.equal(refusals.length, 1, "one refusal, not one per message");
      assert.ok(!town.runtimeCalls().some((c) => /delete everything|pretty please/.test(c)));
    });

    it("shows the agent online in nuketown status, as its daemon tells it", () => {
      const status = JSON.parse(
        mustRun(BIN, ["status", "--manifest", town.manifest, "--json"]),
      ) as { agents: { agent: string; chat: string; service: string }[] };
      const row = status.agents.find((a) => a.agent === town.agent);
      assert.match(row?.chat ?? "", /^online \(pid \d+, since \S+\)$/);
      // One process: the chat's pid is the daemon's.
      assert.equal(
        /pid (\d+)/.exec(row?.chat ?? "")?.[1],
        /pid (\d+)/.exec(row?.service ?? "")?.[1],
      );
    });

    it("answers !help and !status without the runtime", async () => {
      await town.mayor.send(town.direct, "!help");
      await town.mayor.waitFor("the help", fromAgent(town.direct, /!status/));
      await town.mayor.send(town.direct, "!status");
      await town.mayor.waitFor(
        "the status",
        fromAgent(town.direct, /not working on anything|working on/),
      );
      assert.ok(!town.runtimeCalls().some((c) => c.startsWith("!")));
    });

    it("never answers a message twice across a crash, and answers what came while it was down", async () => {
      const before = town.mayor.inbox.filter((m) => m.sender === town.agentId).length;
      const callsBefore = town.runtimeCalls().length;
      crashChat(town);
      await town.mayor.send(town.direct, "said while you were down");
      await town.chatOnline(2);
      await town.mayor.waitFor(
        "the late answer",
        fromAgent(town.direct, /said while you were down/),
      );
      await town.mayor.send(town.direct, "and after");
      await town.mayor.waitFor("the next answer", fromAgent(town.direct, /you said: and after/));
      const answers = town.mayor.inbox.filter((m) => m.sender === town.agentId);
      assert.equal(answers.length, before + 2, answers.map((m) => m.body).join("\n"));
      assert.deepEqual(town.runtimeCalls().slice(callsBefore), [
        "said while you were down",
        "and after",
      ]);
    });

    it("sudo by chat: the bot posts the request, a stranger's 👍 changes nothing, the mayor's decides", async () => {
      await town.mayor.send(town.direct, "please run sudo id");
      const request = await town.mayor.waitFor(
        "the request",
        fromBot(/asks to run, as root:\n.*id -u/),
      );
      assert.match(request.body, new RegExp(`${town.agent} asks to run`));
      assert.match(request.body, /hash [0-9a-f]{16}/);
      await town.stranger.react(town.rooms.approvals, request.id, "👍");
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(
        !town.mayor.inbox.some(fromAgent(town.direct, /sudo said/)),
        "a stranger's reaction approves nothing",
      );
      if (spec.kind === "matrix") {
        await town.mayor.react(town.rooms.approvals, request.id, "👍🏽");
      } else {
        await town.mayor.send(town.rooms.approvals, "approve", { replyTo: request.id });
      }
      const answer = await town.mayor.waitFor(
        "the approved run",
        fromAgent(town.direct, /sudo said/),
      );
      assert.match(answer.body, /sudo said: 0 \(exit 0\)/);
      if (town.matrix) {
        // The post now shows the outcome: an m.replace of the bot's own message.
        const { url, mayorToken } = town.matrix;
        const room = encodeURIComponent(town.rooms.approvals);
        let edited: MatrixEvent | undefined;
        for (let i = 0; i < 50 && !edited; i++) {
          const response = await fetch(
            `${url}/_matrix/client/v3/rooms/${room}/messages?dir=b&limit=50`,
            {
              headers: { authorization: `Bearer ${mayorToken}` },
            },
          );
          const { chunk } = (await response.json()) as { chunk: MatrixEvent[] };
          edited = chunk.find(
            (e) =>
              e.sender === town.botId &&
              e.content?.["m.relates_to"]?.rel_type === "m.replace" &&
              e.content["m.relates_to"].event_id === request.id,
          );
          if (!edited) await new Promise((r) => setTimeout(r, 200));
        }
        assert.match(
          edited?.content?.["m.new_content"]?.body ?? "",
          /^✅ approved \(approved by \S+ in chat/,
        );
      }
    });

    it("sudo by chat: 👎 (or a deny reply) denies, with the reason the agent sees", async () => {
      const seen = town.mayor.inbox.filter(fromAgent(town.direct, /sudo said/)).length;
      const mark = town.mayor.inbox.length;
      await town.mayor.send(town.direct, "sudo once more");
      const request = await town.mayor.waitFor(
        "the second request",
        (m) => town.mayor.inbox.indexOf(m) >= mark && fromBot(/asks to run/)(m),
      );
      if (spec.kind === "matrix") await town.mayor.react(town.rooms.approvals, request.id, "👎");
      else
        await town.mayor.send(town.rooms.approvals, "deny not today", {
          replyTo: request.id,
        });
      await until(
        "the denied run",
        () => town.mayor.inbox.filter(fromAgent(town.direct, /sudo said/)).length > seen,
        30_000,
        town.logs,
      );
      const answer = town.mayor.inbox.filter(fromAgent(town.direct, /sudo said/)).at(-1);
      assert.match(answer?.body ?? "", /sudo said: {2}\(exit 10\)/);
    });

    it("!reset asks a human, and the approved reset gives the agent a new round", async () => {
      const marker = path.join(town.root, "agents", town.agent, "left-from-last-round");
      writeFileSync(marker, "old\n");
      const online = town.chatOnlineCount();
      const mark = town.mayor.inbox.length;
      await town.mayor.send(town.direct, "!reset");
      await town.mayor.waitFor(
        "the notice",
        fromAgent(town.direct, /Asking a human to approve a reset/),
      );
      const request = await town.mayor.waitFor(
        "the reset request",
        (m) =>
          town.mayor.inbox.indexOf(m) >= mark && fromBot(/asks to run, as root:\n\S+ reset /)(m),
      );
      if (spec.kind === "matrix") await town.mayor.react(town.rooms.approvals, request.id, "👍");
      else await town.mayor.send(town.rooms.approvals, "yes", { replyTo: request.id });
      // The reset stops every process of the agent (its daemon, and with it its chat); up starts it again.
      await town.chatOnline(online + 1);
      assert.ok(!existsSync(marker), "the home is blank again");
      await town.mayor.send(town.direct, "after the reset");
      await town.mayor.waitFor("an answer", fromAgent(town.direct, /you said: after the reset/));
    });

    // Last: it takes the agent off the chat network until it has a new token.
    it("says in status why when its token is revoked, and its daemon goes on", {
      skip: spec.kind !== "matrix" && "Matrix tokens",
    }, async () => {
      const matrix = town.matrix ?? assert.fail("a Matrix town");
      const chatStatus = () =>
        (
          JSON.parse(mustRun(BIN, ["status", "--manifest", town.manifest, "--json"])) as {
            agents: { agent: string; chat: string }[];
          }
        ).agents.find((a) => a.agent === town.agent)?.chat ?? "";
      const pid = /pid (\d+)/.exec(chatStatus())?.[1];
      // An admin logs the agent's device out: its token no longer works.
      const loggedOut = await fetch(`${matrix.url}/_matrix/client/v3/logout`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${matrix.agentToken}`,
          "content-type": "application/json",
        },
        body: "{}",
      });
      assert.equal(loggedOut.status, 200);
      const started = Date.now();
      await until(
        "status to say why",
        () => /^failed \(pid \d+.*refused the access token of @/.test(chatStatus()),
        20_000,
        town.logs,
      );
      const seconds = (Date.now() - started) / 1000;
      const chat = chatStatus();
      assert.match(chat, /put a new token where chat\.matrix\.tokenSecret points/, chat);
      // Read again, in case apply placed a new one: not at once, not in a loop.
      assert.match(chat, /trying again in 60 s\)$/, chat);
      // The same process: its daemon is not taken down with its chat, and still takes work.
      assert.equal(/pid (\d+)/.exec(chat)?.[1], pid);
      const manifest = parseManifest(readFileSync(town.manifest, "utf8"));
      assert.ok(manifest.ok);
      const socket = manifest.town.agents.find((a) => a.name === town.agent)?.socket;
      const outcome = await runTask(socket ?? "", { project: "demo", prompt: "still there" });
      assert.match(outcome.answer, /you said: still there/);
      process.stderr.write(`# token revoked -> status failed within ${seconds.toFixed(1)} s\n`);
    });
  });
}
