/**
 * One process per online agent, on a real Synapse and a real Prosody: the
 * agent's daemon is its chat presence too (one process of its uid, idle),
 * and the chat connection failing under a running task takes nothing with
 * it: the task finishes, and its answer arrives once the agent is back
 * online. The outage is a relay between the town and the server that the
 * test cuts (every connection reset, new ones refused) and mends.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { runTask } from "../../src/agent/client.ts";
import { parseManifest } from "../../src/town/manifest.ts";
import { BIN, type ChatTown, type Heard, startChatTown, until } from "../support/chat-town.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { uidsOf } from "../support/uids.ts";

/**
 * Each outage outlasts what the transport alone waits for before a send
 * fails (Matrix: 5 attempts, ~15 s; XMPP: 30 s for the connection): the
 * answer gets out only because the agent holds it for the next connection.
 */
const TOWNS = [
  { kind: "matrix", label: "opmx", agentUid: 60490, mayorUid: 60491, outageMs: 20_000 },
  { kind: "xmpp", label: "opxm", agentUid: 60492, mayorUid: 60493, outageMs: 33_000 },
] as const;

/** The processes running as `uid`, with their command lines. */
function processesOf(uid: number): { pid: number; args: string }[] {
  const out = run("pgrep", ["-u", String(uid)]).stdout.trim();
  if (out === "") return [];
  return out.split("\n").map((pid) => ({
    pid: Number(pid),
    args: readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim(),
  }));
}

for (const spec of TOWNS) {
  describe(`one process per online agent, over ${spec.kind}`, {
    skip: !isRoot() && "needs root",
  }, () => {
    let town: ChatTown;
    const agentLog = () =>
      readFileSync(path.join(town.root, "state", "logs", `agent-${town.agent}.log`), "utf8");
    const fromAgent = (text: RegExp) => (m: Heard) =>
      m.sender === town.agentId && m.room === town.direct && text.test(m.body);
    const status = () =>
      (
        JSON.parse(mustRun(BIN, ["status", "--manifest", town.manifest, "--json"])) as {
          agents: { agent: string; chat: string; processes: number }[];
        }
      ).agents.find((a) => a.agent === town.agent);

    before(async () => {
      town = await startChatTown({
        kind: spec.kind,
        label: spec.label,
        agentUid: spec.agentUid,
        mayorUid: spec.mayorUid,
        uids: uidsOf(import.meta.filename),
        sudo: false,
        relay: true,
      });
    });
    after(async () => {
      if (process.env.NT_TEST_VERBOSE) process.stderr.write(town?.logs() ?? "");
      await town?.stop();
    });

    it("is one process of the agent, which answers in chat", async () => {
      const asked = await town.mayor.send(town.direct, "hello, one process");
      await town.mayor.waitFor("the answer", fromAgent(/you said: hello, one process/));
      assert.ok(asked.id);
      // Idle again: the runtime is gone, the daemon (online) is all that runs as the agent.
      await until("nothing but the daemon", () => processesOf(spec.agentUid).length === 1, 10_000);
      const [only] = processesOf(spec.agentUid);
      assert.match(only?.args ?? "", new RegExp(` agent ${town.agent} --manifest `));
      assert.ok(!run("pgrep", ["-f", `chat ${town.agent} --manifest`]).stdout.trim());
      const row = status();
      assert.equal(row?.processes, 1);
      assert.match(row?.chat ?? "", new RegExp(`^online \\(pid ${only?.pid}[,)]`));
    });

    it("finishes a task through a cut connection, and answers once the connection is back", async () => {
      const relay = town.relay;
      assert.ok(relay);
      const [daemon] = processesOf(spec.agentUid);
      const finishedBefore = (agentLog().match(/task \S+ finished/g) ?? []).length;
      const mark = town.mayor.inbox.length;
      await town.mayor.send(town.direct, "a slow one, please");
      await until(
        "the runtime at work",
        () => town.runtimeCalls().includes("a slow one, please"),
        30_000,
        town.logs,
      );
      // The outage: every connection of the town to the server reset, new ones refused.
      relay.cut();
      const cutAt = Date.now();
      const logAtCut = agentLog().length;
      await until(
        "the task's end",
        () => (agentLog().match(/task \S+ finished/g) ?? []).length > finishedBefore,
        30_000,
        town.logs,
      );
      await until(
        "the agent to see the connection gone",
        () => /chat: (matrix|xmpp): (offline|connecting)/.test(agentLog().slice(logAtCut)),
        30_000,
        town.logs,
      );
      await new Promise((r) => setTimeout(r, Math.max(1000, cutAt + spec.outageMs - Date.now())));
      assert.ok(
        !town.mayor.inbox.slice(mark).some(fromAgent(/a slow one/)),
        "no answer gets out while the agent is offline",
      );
      relay.mend();
      const answer = await town.mayor.waitFor(
        "the answer after the outage",
        (m) => town.mayor.inbox.indexOf(m) >= mark && fromAgent(/you said: a slow one, please/)(m),
        120_000,
      );
      assert.ok(answer, "sent once the connection came back (none got out before)");
      // The same process all along: no restart took the task with it.
      assert.deepEqual(
        processesOf(spec.agentUid).map((p) => p.pid),
        [daemon?.pid],
      );
      const answers = town.mayor.inbox.slice(mark).filter(fromAgent(/a slow one/));
      assert.equal(answers.length, 1, "answered once");
      await town.mayor.send(town.direct, "and now?");
      await town.mayor.waitFor("an answer as usual", fromAgent(/you said: and now\?/), 30_000);
    });

    // Matrix's revoked token is chat.test.ts's. Last: it takes the agent off the network for good.
    it("says in status why the server refuses its password, and its daemon goes on", {
      skip: spec.kind !== "xmpp" && "XMPP accounts",
    }, async () => {
      const relay = town.relay;
      const xmpp = town.xmpp;
      assert.ok(relay && xmpp);
      const [daemon] = processesOf(spec.agentUid);
      // The account is removed; the session open now ends with its connection, and the next
      // login is refused.
      await xmpp.unregisterAgent();
      relay.cut();
      relay.mend();
      await until(
        "status to say why",
        () => /^failed \(pid \d+.*refused the credentials of /.test(status()?.chat ?? ""),
        60_000,
        town.logs,
      );
      const chat = status()?.chat ?? "";
      assert.match(chat, /put the password where chat\.xmpp\.passwordSecret points/, chat);
      // Read anew a minute later (apply may have placed another), not retried in a loop.
      assert.match(chat, /trying again in 60 s\)$/, chat);
      assert.equal(/pid (\d+)/.exec(chat)?.[1], String(daemon?.pid));
      // Its daemon still takes work on its socket.
      const manifest = parseManifest(readFileSync(town.manifest, "utf8"));
      assert.ok(manifest.ok);
      const socket = manifest.town.agents.find((a) => a.name === town.agent)?.socket;
      const outcome = await runTask(socket ?? "", { project: "demo", prompt: "still there" });
      assert.match(outcome.answer, /you said: still there/);
    });
  });
}
