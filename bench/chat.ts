/**
 * Chat: message-to-reply latency through each real server (Synapse,
 * Prosody) with a trivial `command` runtime, against an echo between two
 * plain chat clients on the same server in the same process (the server's
 * own cost: the humans' clients are the raw Matrix API and @xmpp/client).
 * Goal: p99 under 250 ms on loopback. The memory of an idle online agent is
 * measured by bench/online.ts. Needs root (the town's accounts) and both
 * servers installed
 * (scripts/install-chat-servers.sh).
 */
import { spawnSync } from "node:child_process";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { TransportKind } from "../src/chat/transport.ts";
import { type ChatTown, type Heard, startChatTown } from "../test/support/chat-town.ts";

const ROUNDS = 100;
const WARMUP = 5;
const GOAL_P99_MS = 250;

const pick = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;
const ms = (value: number) => value.toFixed(1).padStart(9);

/** Send, then wait for the first message that `answers` accepts; the time between. */
async function roundTrip(
  town: ChatTown,
  send: () => Promise<unknown>,
  answers: (message: Heard) => boolean,
): Promise<number> {
  const t0 = performance.now();
  const got = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no answer within 30 s")), 30_000);
    const listener = (message: Heard) => {
      if (!answers(message)) return;
      town.mayor.listeners.delete(listener);
      clearTimeout(timer);
      resolve();
    };
    town.mayor.listeners.add(listener);
  });
  await send();
  await got;
  return performance.now() - t0;
}

async function benchTransport(kind: TransportKind, uid: number): Promise<boolean> {
  const town = await startChatTown({
    kind,
    label: `bench${kind.slice(0, 2)}`,
    agentUid: uid,
    mayorUid: uid + 1,
    sudo: false,
  });
  try {
    // The stranger echoes the mayor in room one: the same server, no agent.
    town.stranger.listeners.add((message) => {
      if (message.sender === town.mayor.id && message.body.startsWith("echo "))
        town.stranger.send(message.room, `echoed ${message.body}`).catch(() => {});
    });
    const mention = kind === "matrix" ? town.agentId : town.agentId.split("@")[0];
    const agent: number[] = [];
    const echo: number[] = [];
    for (let i = 0; i < WARMUP + ROUNDS; i++) {
      const a = await roundTrip(
        town,
        // In the same room as the echo, so both paths cross the server the same way.
        () => town.mayor.send(town.rooms.one, `${mention}: ping ${i}`),
        (m) => m.sender === town.agentId && m.body.includes(`you said: ping ${i} `),
      );
      const e = await roundTrip(
        town,
        () => town.mayor.send(town.rooms.one, `echo ${i}`),
        (m) => m.sender === town.stranger.id && m.body === `echoed echo ${i}`,
      );
      if (i >= WARMUP) {
        agent.push(a);
        echo.push(e);
      }
    }
    agent.sort((a, b) => a - b);
    echo.sort((a, b) => a - b);

    console.log(`${kind}: ${ROUNDS} round trips (after ${WARMUP} warm-up)`);
    console.log(`${"".padEnd(34)}${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}`);
    console.log(
      `${"message → agent's reply".padEnd(34)}${ms(pick(agent, 0.5))}${ms(pick(agent, 0.99))}`,
    );
    console.log(
      `${"message → echo (baseline)".padEnd(34)}${ms(pick(echo, 0.5))}${ms(pick(echo, 0.99))}`,
    );
    console.log(`reply / echo (p50): ${(pick(agent, 0.5) / pick(echo, 0.5)).toFixed(1)}x`);
    const p99 = pick(agent, 0.99);
    console.log(
      `goal: p99 under ${GOAL_P99_MS} ms: ${p99.toFixed(1)} ms, ${p99 < GOAL_P99_MS ? "met" : "NOT met"}`,
    );
    return true;
  } finally {
    await town.stop();
  }
}

export async function benchChat(
  kinds: readonly TransportKind[] = ["matrix", "xmpp"],
): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.log("chat: skipped (needs root for the town's accounts)");
    return 0;
  }
  // The daemons run the build when it is fresh (bin/nuketown): measure what a host runs.
  const build = spawnSync(
    process.execPath,
    [path.join(import.meta.dirname, "..", "scripts", "build.ts")],
    {
      stdio: "inherit",
    },
  );
  if (build.status !== 0) throw new Error("npm run build failed");
  for (const [i, kind] of kinds.entries()) {
    if (i > 0) console.log("");
    await benchTransport(kind, kind === "matrix" ? 60940 : 60942);
  }
  return 0;
}

// `node bench/chat.ts [matrix|xmpp]…`: one network, or both.
if (import.meta.main) {
  const asked = process.argv
    .slice(2)
    .filter((a): a is TransportKind => a === "matrix" || a === "xmpp");
  process.exitCode = await benchChat(asked.length > 0 ? asked : undefined);
}
