/**
 * The transport-neutral chat core: decisions from reactions and replies,
 * chat commands, who is who, text splitting, the ledger, answers.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import type { TaskOutcome } from "../../src/agent/client.ts";
import { parseCommand, stripMention } from "../../src/chat/commands.ts";
import { normalizeReaction, reactionDecision, replyDecision } from "../../src/chat/decisions.ts";
import { Ledger } from "../../src/chat/ledger.ts";
import { allowedFor, residents } from "../../src/chat/people.ts";
import { answerText, ChatResident, conversationKey } from "../../src/chat/resident.ts";
import {
  backoffDelay,
  type ChatMessage,
  type ChatTransport,
  type SentMessage,
  splitText,
  type TransportHandlers,
} from "../../src/chat/transport.ts";
import { secretTargets } from "../../src/host/secrets.ts";
import { resolveTown } from "../../src/town/resolve.ts";
import { FIXED_CONTEXT, minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

function chatTown(overrides: Record<string, unknown> = {}) {
  const decl = minimalDeclaration();
  decl.humans = {
    mayor: { approver: true, matrix: "@mayor:town.local", xmpp: "Mayor@Town.Local" },
    guest: { matrix: "@guest:town.local" },
  };
  decl.chat = { matrix: { homeserver: "http://127.0.0.1:8008" } };
  decl.secrets = { sopsFile: "secrets.yaml" };
  decl.agents = {
    ada: {
      uid: 1100,
      role: "software",
      chat: {
        enable: true,
        matrix: { userId: "@ada:town.local", tokenSecret: "ada/matrix" },
        xmpp: { jid: "ada@town.local", passwordSecret: "ada/xmpp" },
        project: "site",
        allow: ["mayor", "vox"],
      },
    },
    vox: {
      uid: 1101,
      role: "research",
      chat: {
        enable: true,
        matrix: { userId: "@vox:town.local", tokenSecret: "vox/matrix" },
        project: "notes",
      },
    },
  };
  Object.assign(decl, overrides);
  return decl;
}

describe("approval decisions in chat", () => {
  it("normalises variation selectors and skin tones", () => {
    for (const key of ["👍", "👍🏻", "👍🏽", "👍🏿", "👍\u{FE0F}", "👍🏼\u{FE0F}"]) {
      assert.equal(normalizeReaction(key), "👍", JSON.stringify(key));
      assert.deepEqual(reactionDecision(key), { approve: true });
    }
    assert.deepEqual(reactionDecision("👎🏾"), { approve: false });
    assert.deepEqual(reactionDecision("✔️"), { approve: true });
    assert.deepEqual(reactionDecision("❌"), { approve: false });
    assert.equal(reactionDecision("🎉"), undefined);
    assert.equal(reactionDecision("👍👎"), undefined);
  });

  it("reads replies: approve, deny with a reason, a named request, an address to the bot", () => {
    assert.deepEqual(replyDecision("approve"), { approve: true });
    assert.deepEqual(replyDecision("Yes!"), { approve: true });
    assert.deepEqual(replyDecision("LGTM"), { approve: true });
    assert.deepEqual(replyDecision("deny"), { approve: false });
    assert.deepEqual(replyDecision("deny not during the demo"), {
      approve: false,
      reason: "not during the demo",
    });
    assert.deepEqual(replyDecision("deny: because it wipes the disk"), {
      approve: false,
      reason: "it wipes the disk",
    });
    assert.deepEqual(replyDecision("approve 3f2a9c0d11"), { approve: true, request: "3f2a9c0d11" });
    assert.deepEqual(replyDecision("deny #3f2a9c0d11 too broad"), {
      approve: false,
      reason: "too broad",
      request: "3f2a9c0d11",
    });
    assert.deepEqual(replyDecision("townbot: approve", ["townbot"]), { approve: true });
    assert.equal(replyDecision("bob: ok, lunch at 12?", ["townbot"]), undefined);
    assert.deepEqual(replyDecision("@bot:town.local: no", ["bot:town.local"]), { approve: false });
  });

  it("is not fooled by words that only start like a decision", () => {
    for (const text of [
      "",
      "approvers?",
      "nothing",
      "okay then",
      "denying is hard",
      "why?",
      "yesterday",
    ])
      assert.equal(replyDecision(text), undefined, text);
  });
});

describe("chat commands", () => {
  it("parses the four commands and names unknown ones", () => {
    assert.deepEqual(parseCommand("!status"), { name: "status" });
    assert.deepEqual(parseCommand("  !CANCEL please"), { name: "cancel" });
    assert.deepEqual(parseCommand("!reset"), { name: "reset" });
    assert.deepEqual(parseCommand("!help"), { name: "help" });
    assert.deepEqual(parseCommand("!deploy"), { name: "unknown", word: "deploy" });
    assert.equal(parseCommand("fix the !status page"), undefined);
  });

  it("strips the agent's name in front of a request", () => {
    const names = ["@ada:town.local", "ada"];
    assert.equal(stripMention("ada: fix the tests", names), "fix the tests");
    assert.equal(stripMention("@ada:town.local fix it", names), "fix it");
    assert.equal(stripMention("Ada, !status", names), "!status");
    assert.equal(stripMention("adamant about it", names), "adamant about it");
  });
});

describe("who is who", () => {
  it("maps declared chat ids to humans and agents, XMPP case-insensitively", () => {
    const town = resolveOrThrow(chatTown());
    const matrix = residents(town, "matrix");
    assert.deepEqual(matrix.get("@mayor:town.local"), {
      kind: "human",
      name: "mayor",
      chatId: "@mayor:town.local",
      approver: true,
    });
    assert.equal(matrix.get("@vox:town.local")?.kind, "agent");
    assert.equal(residents(town, "xmpp").get("mayor@town.local")?.name, "mayor");
  });

  it("lets an agent act only for the names it allows, never for itself", () => {
    const town = resolveOrThrow(chatTown());
    const ada = town.agents.find((a) => a.name === "ada");
    const vox = town.agents.find((a) => a.name === "vox");
    assert.ok(ada && vox);
    assert.deepEqual([...allowedFor(town, ada, "matrix").values()].map((r) => r.name).sort(), [
      "mayor",
      "vox",
    ]);
    // vox allows the default: every declared human, no agents.
    assert.deepEqual([...allowedFor(town, vox, "matrix").values()].map((r) => r.name).sort(), [
      "guest",
      "mayor",
    ]);
  });
});

describe("chat in the declaration", () => {
  it("places the credential of the town's transport at .config/nuketown/chat-secret, 0600", () => {
    const town = resolveOrThrow(chatTown());
    const ada = town.agents.find((a) => a.name === "ada");
    assert.ok(ada);
    assert.deepEqual(
      secretTargets(ada, "matrix").find((t) => t.name === "chat"),
      {
        name: "chat",
        secret: { format: "sops", file: "/etc/nuketown/secrets.yaml", key: "ada/matrix" },
        target: ".config/nuketown/chat-secret",
        mode: "0600",
      },
    );
    assert.equal(secretTargets(ada, "xmpp").find((t) => t.name === "chat")?.secret.key, "ada/xmpp");
    assert.equal(
      secretTargets(ada, "local").find((t) => t.name === "chat"),
      undefined,
    );
  });

  it("derives the chat project from the first repo, and asks for one when there is none", () => {
    const decl = chatTown();
    const agents = decl.agents as Record<string, Record<string, unknown>>;
    agents.ada = {
      ...agents.ada,
      chat: { ...(agents.ada?.chat as object), project: undefined },
      repos: ["https://example.org/site.git"],
    };
    const town = resolveOrThrow(decl);
    assert.equal(town.agents.find((a) => a.name === "ada")?.chat.project, "site");

    agents.ada = { ...agents.ada, repos: [] };
    const result = resolveTown(decl, FIXED_CONTEXT);
    assert.ok(
      result.errors.some((e) => e.path === "agents.ada.chat.project" && /project/.test(e.message)),
      JSON.stringify(result.errors),
    );
  });

  it("keeps the approval room", () => {
    const town = resolveOrThrow(
      chatTown({
        chat: {
          matrix: { homeserver: "http://127.0.0.1:8008" },
          approvalRoom: "#approvals:town.local",
        },
      }),
    );
    assert.equal(town.chat.approvalRoom, "#approvals:town.local");
  });
});

describe("splitText", () => {
  it("cuts at line ends, keeps every character and each piece within the limit", () => {
    const text = Array.from({ length: 200 }, (_, i) => `line ${i} ${"x".repeat(i % 37)}`).join(
      "\n",
    );
    const pieces = splitText(text, 500);
    assert.ok(pieces.length > 1);
    for (const piece of pieces) assert.ok(piece.length <= 500, String(piece.length));
    assert.equal(pieces.join("\n").replace(/\n/g, ""), text.replace(/\n/g, ""));
  });

  it("closes and reopens a code fence cut in two", () => {
    const code = ["```", ...Array.from({ length: 100 }, (_, i) => `let v${i} = ${i};`), "```"].join(
      "\n",
    );
    const pieces = splitText(code, 400);
    assert.ok(pieces.length > 1);
    for (const piece of pieces) {
      assert.equal((piece.match(/^```/gm) ?? []).length % 2, 0, piece);
      assert.ok(piece.length <= 400);
    }
  });

  it("cuts a line with no break hard", () => {
    const pieces = splitText("y".repeat(1000), 100);
    assert.ok(pieces.every((p) => p.length <= 100));
    assert.equal(pieces.join(""), "y".repeat(1000));
  });
});

describe("backoffDelay", () => {
  it("doubles from a second to a minute, with jitter", () => {
    assert.equal(
      backoffDelay(0, () => 0.5),
      1000,
    );
    assert.equal(
      backoffDelay(3, () => 0.5),
      8000,
    );
    assert.equal(
      backoffDelay(30, () => 0.5),
      60_000,
    );
    assert.equal(
      backoffDelay(0, () => 0),
      800,
    );
    assert.equal(
      backoffDelay(0, () => 1),
      1200,
    );
  });
});

describe("the chat ledger", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nt-test-ledger-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("remembers handled messages and refusals across a restart, 0600", async () => {
    const file = path.join(dir, "state", "ledger.json");
    const ledger = await Ledger.open(file, 1000);
    assert.equal(ledger.since, 1000);
    await ledger.enter("$a");
    assert.equal(await ledger.firstRefusal("!room", "@x:y"), true);
    assert.equal(await ledger.firstRefusal("!room", "@x:y"), false);
    const again = await Ledger.open(file, 5000);
    assert.equal(again.since, 1000, "since is the first start, not the latest");
    assert.ok(again.has("$a"));
    assert.ok(!again.has("$b"));
    assert.equal(await again.firstRefusal("!room", "@x:y"), false);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.ok(readFileSync(file, "utf8").endsWith("\n"));
  });

  it("refuses a file that is not a ledger instead of starting over", async () => {
    const file = path.join(dir, "bad.json");
    writeFileSync(file, '{"hello": 1}');
    await assert.rejects(Ledger.open(file), /not a chat ledger/);
  });
});

describe("what the resident takes for history", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nt-test-resident-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** The XMPP side of ada, played by the test: it hands messages over and keeps the answers. */
  class StandIn implements ChatTransport {
    readonly kind = "xmpp" as const;
    readonly self = "ada@town.local";
    readonly maxMessageChars = 4000;
    readonly sent: { room: string; text: string; replyTo?: string }[] = [];
    handlers: TransportHandlers | undefined;
    #answered: (() => void) | undefined;
    async start(handlers: TransportHandlers) {
      this.handlers = handlers;
    }
    async stop() {}
    async send(
      room: string,
      text: string,
      options: { replyTo?: string } = {},
    ): Promise<SentMessage> {
      this.sent.push({ room, text, ...(options.replyTo && { replyTo: options.replyTo }) });
      this.#answered?.();
      return { id: `sent-${this.sent.length}`, room };
    }
    async edit() {}
    async react() {}
    async sendLong(room: string, text: string) {
      return this.send(room, text);
    }
    async typing() {}
    async setPresence() {}
    async directRoom(user: string) {
      return user;
    }
    /** Resolves once something has been sent; rejects after 5 s of nothing. */
    answer(): Promise<void> {
      if (this.sent.length > 0) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no answer in 5 s")), 5000);
        this.#answered = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  it("answers a stored message stamped in the very second of its first start, not one stamped before", async () => {
    // GIVEN a chat service first started half a second into a second.
    const stateDir = path.join(dir, "ada");
    const since = 1_700_000_000_500;
    await Ledger.open(path.join(stateDir, "ledger.json"), since);
    const town = resolveOrThrow(chatTown());
    const agent = town.agents.find((a) => a.name === "ada");
    assert.ok(agent);
    const transport = new StandIn();
    const resident = new ChatResident({ town, agent, transport, stateDir, log: () => {} });
    await resident.start();
    try {
      // WHEN the mayor's messages come from the server's storage, stamped in whole seconds
      // as XMPP delay stamps are: one from the second before, one from the second it started in.
      const stored = (id: string, time: number): ChatMessage => ({
        id,
        room: "mayor@town.local",
        direct: true,
        sender: "mayor@town.local",
        body: "!help",
        mentionsMe: false,
        time,
      });
      transport.handlers?.message(stored("said-before", since - 1500));
      transport.handlers?.message(stored("said-after", since - 500));
      await transport.answer();

      // THEN only the one that may have been said after the start is answered.
      assert.deepEqual(
        transport.sent.map((m) => m.replyTo),
        ["said-after"],
      );
    } finally {
      await resident.stop();
    }
  });
});

describe("answers", () => {
  const task = {
    id: "t1",
    project: "site",
    prompt: "p",
    mode: "batch",
    state: "finished",
    queuedAt: "",
  } as const;
  it("says the answer, the commit, a failure or a cancellation", () => {
    const finished = {
      id: "t1",
      state: "finished",
      answer: "all green\n",
      end: {
        id: "t1",
        time: "",
        event: "task.finished",
        task,
        answer: "",
        truncated: false,
        commit: "0123456789abcdef",
        report: {
          workspace: "/w",
          branch: "ada/fix",
          created: true,
          cloned: false,
          dirty: [],
          warnings: [],
        },
      },
    } as TaskOutcome;
    assert.equal(answerText(finished), "all green\n\n(committed 0123456789 on ada/fix)");
    const failed = {
      id: "t1",
      state: "failed",
      answer: "",
      end: {
        id: "t1",
        time: "",
        event: "task.failed",
        task,
        reason: "timeout",
        error: "ran 600 s",
      },
    } as TaskOutcome;
    assert.equal(answerText(failed), "I could not finish that (timeout): ran 600 s");
    assert.equal(answerText(undefined), "I could not work on that.");
  });

  it("keys conversations by room, and by thread within a room", () => {
    assert.equal(conversationKey({ room: "!r" }), "!r");
    assert.equal(conversationKey({ room: "!r", thread: "$t" }), "!r $t");
  });
});
