/**
 * An online agent: what it costs idle, and how fast it is back (issue 12).
 * As root, on a real Synapse and a real Prosody on loopback, each figure
 * beside a baseline measured in the same run:
 *
 * - memory: the RSS of everything running as an online agent, idle 10 s
 *   after an answer (one process: its daemon, online), beside a bare idle
 *   `node` and beside the same agent in the old layout (`nuketown agent
 *   --no-chat` and `nuketown chat` as two processes, same build, same town).
 *   Goal: ≤ 80 MB.
 * - reset: `nuketown reset <agent>` until the agent answers in chat again,
 *   split into the reset itself, the daemon back on its socket, online in
 *   chat, and the answer; beside a message's round trip to the agent online.
 *   Goal: < 2 s on loopback.
 * - up: `nuketown up` of a 10-agent town (applied before: accounts and
 *   homes exist) until every agent's socket answers and says it is online,
 *   beside ten bare `node` started at once. Goal: < 5 s.
 *
 * Accounts nt-test-bon*, uids 60960–60989; one temp dir per town, removed
 * in a finally block.
 *
 *   node bench/online.ts [memory|reset|up]… [matrix|xmpp]…
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, openSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { stringify } from "smol-toml";
import { AgentClient } from "../src/agent/client.ts";
import { parseManifest } from "../src/town/manifest.ts";
import type { ResolvedAgent, ResolvedTown } from "../src/town/types.ts";
import { BIN, type ChatTown, type Heard, startChatTown } from "../test/support/chat-town.ts";
import { cleanupHost, makeTempRoot, mustRun, run, stopChild } from "../test/support/host.ts";
import { installForTest } from "../test/support/install.ts";
import { type ProsodyServer, startProsody } from "../test/support/prosody.ts";
import { type SynapseServer, startSynapse } from "../test/support/synapse.ts";

const IDLE_MS = 10_000;
const GOAL_RSS_MB = 80;
const GOAL_RESET_MS = 2000;
const GOAL_UP_MS = 5000;
const RESET_ROUNDS = 3;
const ROUND_TRIPS = 5;
const TOWN_AGENTS = 10;

type Network = "matrix" | "xmpp";

const UIDS = {
  matrix: { agent: 60960, mayor: 60961, town: 60964 },
  xmpp: { agent: 60962, mayor: 60963, town: 60976 },
} as const;

const ms = (v: number) => `${v.toFixed(0)} ms`;
const mb = (kb: number) => `${(kb / 1024).toFixed(1)} MB`;
const median = (values: readonly number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? Number.NaN;
};
const sleep = (t: number) => new Promise((r) => setTimeout(r, t));

async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  limit = 60_000,
  context: () => string = () => "",
  everyMs = 10,
): Promise<T> {
  const deadline = Date.now() + limit;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} ${context()}`);
    await sleep(everyMs);
  }
}

/** VmRSS in kB of each process running as `uid`. */
function rssOf(uid: number): { pid: number; args: string; kb: number }[] {
  const out = run("pgrep", ["-u", String(uid)]).stdout.trim();
  if (out === "") return [];
  return out.split("\n").flatMap((pid) => {
    try {
      const status = readFileSync(`/proc/${pid}/status`, "utf8");
      // A zombie holds no memory (the paused `up` cannot reap its child).
      if (/^State:\s+Z/m.test(status)) return [];
      const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
      const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? Number.NaN);
      return [{ pid: Number(pid), args, kb }];
    } catch {
      return [];
    }
  });
}

const sum = (rows: readonly { kb: number }[]) => rows.reduce((total, r) => total + r.kb, 0);

function manifestTown(file: string): ResolvedTown {
  const parsed = parseManifest(readFileSync(file, "utf8"));
  if (!parsed.ok) throw new Error(`${file}: ${JSON.stringify(parsed.problems)}`);
  return parsed.town;
}

/** What the agent's daemon says, or undefined while its socket does not answer. */
async function statusOf(agent: ResolvedAgent) {
  let client: AgentClient | undefined;
  try {
    client = await AgentClient.connect(agent.socket);
    return await client.status();
  } catch {
    return undefined;
  } finally {
    client?.close();
  }
}

/** The agent's environment under `nuketown up` (commands/up.ts). */
const agentEnv = (agent: ResolvedAgent) => ({
  HOME: agent.home,
  USER: agent.name,
  LOGNAME: agent.name,
  PATH: "/usr/local/bin:/usr/bin:/bin",
});

/** Start a program as the agent, its output appended to `log`. */
function asAgent(agent: ResolvedAgent, program: string, args: string[], log: string): ChildProcess {
  const fd = openSync(log, "a");
  return spawn(program, args, {
    uid: agent.uid,
    gid: agent.gid,
    cwd: agent.home,
    env: agentEnv(agent),
    stdio: ["ignore", fd, fd],
  });
}

/** Send, then wait for the agent's answer that `answers` recognises; the time between. */
async function roundTrip(
  town: ChatTown,
  room: string,
  text: string,
  limit = 60_000,
): Promise<number> {
  const mark = town.mayor.inbox.length;
  const t0 = performance.now();
  await town.mayor.send(room, text);
  await town.mayor.waitFor(
    `the answer to ${text}`,
    (m: Heard) =>
      town.mayor.inbox.indexOf(m) >= mark &&
      m.sender === town.agentId &&
      m.body.includes(`you said: ${text} `),
    limit,
  );
  return performance.now() - t0;
}

/** The pid of the `nuketown up` a chat town runs. */
function upPid(town: ChatTown): number {
  const state = JSON.parse(readFileSync(path.join(town.root, "run", "up.json"), "utf8")) as {
    pid: number;
  };
  return state.pid;
}

// ---- memory -----------------------------------------------------------------------

async function benchMemory(kind: Network, town: ChatTown): Promise<boolean> {
  const townFile = manifestTown(town.manifest);
  const agent = townFile.agents.find((a) => a.name === town.agent);
  if (!agent) throw new Error("no agent in the manifest");
  const uid = agent.uid;

  // A bare idle Node of the same version, as the agent, for the same time.
  const bareLog = path.join(town.root, "bare-node.log");
  const bare = asAgent(agent, process.execPath, ["-e", "setInterval(() => {}, 1 << 30)"], bareLog);
  await roundTrip(town, town.direct, "warm up");
  await sleep(IDLE_MS);
  const one = rssOf(uid).filter((p) => p.pid !== bare.pid);
  const bareKb = sum(rssOf(uid).filter((p) => p.pid === bare.pid));
  bare.kill("SIGKILL");

  // The old layout, same build and town: `up` paused, the daemon and the chat as two processes.
  const up = upPid(town);
  process.kill(up, "SIGSTOP");
  const two: { pid: number; args: string; kb: number }[] = [];
  try {
    for (const p of one) process.kill(p.pid, "SIGTERM");
    await until(
      "the one process to end",
      () => (rssOf(uid).length === 0 ? true : undefined),
      15_000,
      () => JSON.stringify(rssOf(uid)),
    );
    const log = path.join(town.root, "two-processes.log");
    writeFileSync(log, "");
    const bin = townFile.install.bin;
    // The daemon as the old launcher ran it (no flags: only `chat` got them), the chat as today.
    const copy = path.dirname(path.dirname(realpathSync(bin)));
    const daemon = asAgent(
      agent,
      path.join(copy, "bin", "node"),
      [
        path.join(copy, "dist", "cli.js"),
        "agent",
        agent.name,
        "--no-chat",
        "--manifest",
        town.manifest,
      ],
      log,
    );
    await until(
      "the daemon alone",
      () => statusOf(agent).then((s) => (s ? true : undefined)),
      30_000,
    );
    const chat = asAgent(agent, bin, ["chat", agent.name, "--manifest", town.manifest], log);
    await until("the chat process online", () =>
      /online as /.test(readFileSync(log, "utf8")) ? true : undefined,
    );
    await roundTrip(town, town.direct, "warm up the old layout");
    await sleep(IDLE_MS);
    two.push(...rssOf(uid));
    for (const child of [chat, daemon]) await stopChild(child, 10_000);
  } finally {
    process.kill(up, "SIGCONT");
  }
  // `up` starts the one process again (after its back-off): online before the next bench.
  const online = town.chatOnlineCount();
  await town.chatOnline(online + 1, 90_000);

  const oneKb = sum(one);
  console.log(
    `${kind}: RSS of everything running as an online agent, idle ${IDLE_MS / 1000} s after an answer`,
  );
  console.log(
    `  one process (daemon, online)      ${mb(oneKb).padStart(9)}  (${one.length} process${one.length === 1 ? "" : "es"})`,
  );
  console.log(
    `  two processes (old layout)        ${mb(sum(two)).padStart(9)}  (${two
      .map((p) => `${/ chat /.test(p.args) ? "chat" : "daemon"} ${mb(p.kb)}`)
      .join(" + ")})`,
  );
  console.log(`  bare idle node (baseline)         ${mb(bareKb).padStart(9)}`);
  console.log(
    `  one / two: ${(oneKb / sum(two)).toFixed(2)}x; one / bare node: ${(oneKb / bareKb).toFixed(2)}x`,
  );
  const met = oneKb / 1024 <= GOAL_RSS_MB && one.length === 1;
  console.log(
    `  goal: ≤ ${GOAL_RSS_MB} MB in one process: ${mb(oneKb)}, ${met ? "met" : "NOT met"}`,
  );
  return met;
}

// ---- reset ------------------------------------------------------------------------

/** Every "restarting in N ms" that `up` said, in order. */
function restartDelaysIn(logs: string): number[] {
  return [...logs.matchAll(/restarting in (\d+) ms/g)].map((m) => Number(m[1]));
}

/** The kernel's CPU pressure, 10 s average: how much of the time something waited for a CPU. */
function cpuPressure(): string {
  const some = /some avg10=([\d.]+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"))?.[1];
  return some === undefined ? "CPU pressure unknown" : `CPU pressure ${some}%`;
}

/** CPU time (user + system) a process has used, in ms. */
function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  // utime and stime are fields 14 and 15, in clock ticks (100 a second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function benchReset(kind: Network, town: ChatTown): Promise<boolean> {
  const townFile = manifestTown(town.manifest);
  const agent = townFile.agents.find((a) => a.name === town.agent);
  if (!agent) throw new Error("no agent in the manifest");
  const baseline: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++)
    baseline.push(await roundTrip(town, town.direct, `online ${i}`));

  const phases = {
    reset: [] as number[],
    socket: [] as number[],
    online: [] as number[],
    answer: [] as number[],
  };
  const restartDelays: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < RESET_ROUNDS; i++) {
    const online = town.chatOnlineCount();
    const delaysBefore = restartDelaysIn(town.logs()).length;
    const t0 = performance.now();
    const reset = spawnSync(BIN, ["reset", agent.name, "--manifest", town.manifest], {
      encoding: "utf8",
    });
    if (reset.status !== 0) throw new Error(`reset failed: ${reset.stderr}`);
    const tReset = performance.now();
    // Asked right away: the agent reads it when it is back (its sync state, offline storage).
    const mark = town.mayor.inbox.length;
    const text = `after reset ${i}`;
    await town.mayor.send(town.direct, text);
    const tSocket = await until("the daemon's socket", () =>
      statusOf(agent).then((s) => (s ? performance.now() : undefined)),
    );
    const tOnline = await until("online again", () =>
      town.chatOnlineCount() > online ? performance.now() : undefined,
    );
    await town.mayor.waitFor(
      `the answer to ${text}`,
      (m) =>
        town.mayor.inbox.indexOf(m) >= mark && m.sender === town.agentId && m.body.includes(text),
      60_000,
    );
    const tAnswer = performance.now();
    cpu.push(cpuMs(rssOf(agent.uid)[0]?.pid));
    phases.reset.push(tReset - t0);
    phases.socket.push(tSocket - tReset);
    phases.online.push(tOnline - tSocket);
    phases.answer.push(tAnswer - tOnline);
    // Any back-off `up` waited before it started the daemon again (none after a round: it waits
    // on the round's lock and starts the daemon as the round ends).
    restartDelays.push(
      restartDelaysIn(town.logs())
        .slice(delaysBefore)
        .reduce((a, b) => a + b, 0),
    );
  }
  const total = phases.reset.map(
    (r, i) => r + (phases.socket[i] ?? 0) + (phases.online[i] ?? 0) + (phases.answer[i] ?? 0),
  );
  console.log(
    `${kind}: nuketown reset until the agent answers in chat again (${RESET_ROUNDS} rounds, medians)`,
  );
  console.log(`  reset → answer                    ${ms(median(total)).padStart(9)}`);
  console.log(`    nuketown reset (the CLI)        ${ms(median(phases.reset)).padStart(9)}`);
  console.log(
    `    → the daemon's socket answers   ${ms(median(phases.socket)).padStart(9)}  (of which up's restart delay: ${ms(median(restartDelays))})`,
  );
  console.log(`    → online in chat                ${ms(median(phases.online)).padStart(9)}`);
  console.log(`    → the answer                    ${ms(median(phases.answer)).padStart(9)}`);
  console.log(
    `    CPU the new process used until it answered: ${ms(median(cpu))} (${cpuPressure()}, ${availableParallelism()} CPUs)`,
  );
  console.log(`  message → answer, online (baseline) ${ms(median(baseline)).padStart(7)}`);
  console.log(`  reset → answer / baseline: ${(median(total) / median(baseline)).toFixed(1)}x`);
  const met = median(total) < GOAL_RESET_MS;
  console.log(`  goal: < ${GOAL_RESET_MS} ms: ${ms(median(total))}, ${met ? "met" : "NOT met"}`);
  return met;
}

// ---- up of a 10-agent town ------------------------------------------------------------

async function benchUp(kind: Network): Promise<boolean> {
  const label = kind === "matrix" ? "bonum" : "bonux";
  const root = makeTempRoot(label);
  let upProcess: ChildProcess | undefined;
  const stops: (() => Promise<void>)[] = [];
  try {
    const server = kind === "matrix" ? await startSynapse() : await startProsody();
    stops.push(() => server.stop());
    const names = Array.from({ length: TOWN_AGENTS }, (_, i) => `nt-test-${label}${i}`);
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(runtime, '#!/bin/sh\necho \'{"type":"answer","text":"hello"}\'\n', {
      mode: 0o755,
    });
    mkdirSync(path.join(root, "secrets"));
    // Credentials age-encrypted, like any secret of a town.
    mkdirSync(path.join(root, "age"));
    const keyFile = path.join(root, "age", "keys.txt");
    mustRun("age-keygen", ["-o", keyFile]);
    const recipient = mustRun("age-keygen", ["-y", keyFile]).trim();
    const agents: Record<string, unknown> = {};
    for (const [i, name] of names.entries()) {
      const localpart = `${label}${i}`;
      let account: Record<string, unknown>;
      let secret: string;
      if (kind === "matrix") {
        const user = await (server as SynapseServer).register(localpart);
        secret = user.accessToken;
        account = {
          matrix: { userId: user.userId, tokenSecret: { file: `secrets/${name}.age` } },
        };
      } else {
        secret = `pw-${localpart}-${process.pid}`;
        const jid = await (server as ProsodyServer).register(localpart, secret);
        account = { xmpp: { jid, passwordSecret: { file: `secrets/${name}.age` } } };
      }
      mustRun(
        "age",
        ["--encrypt", "-r", recipient, "-o", path.join(root, "secrets", `${name}.age`)],
        `${secret}\n`,
      );
      agents[name] = {
        uid: UIDS[kind].town + i,
        runtime: { kind: "command", command: runtime },
        chat: { enable: true, project: "demo", ...account },
      };
    }
    const config = path.join(root, "town.toml");
    writeFileSync(
      config,
      stringify({
        name: `nt-test-${label}`,
        agentsDir: path.join(root, "agents"),
        persistDir: path.join(root, "persist"),
        stateDir: path.join(root, "state"),
        runtimeDir: path.join(root, "run"),
        etcDir: path.join(root, "etc"),
        install: { prefix: installForTest(root) },
        uidRange: { min: 60100, max: 60999 },
        homes: { backend: "directory" },
        secrets: { ageKeyFile: "age/keys.txt" },
        approval: { group: `nt-test-${label}-ap`, channels: ["terminal"] },
        chat:
          kind === "matrix"
            ? { matrix: { homeserver: (server as SynapseServer).url } }
            : {
                xmpp: {
                  service: (server as ProsodyServer).service,
                  domain: (server as ProsodyServer).domain,
                },
              },
        agents,
      }),
    );
    // Applied before: the accounts, homes and files exist, as on a host that boots.
    mustRun(BIN, ["apply", config]);
    const town = manifestTown(path.join(root, "etc", "nuketown", "town.json"));

    // Baseline: ten bare Node processes started at once, until each has said it runs.
    const tBare = performance.now();
    await Promise.all(
      Array.from(
        { length: TOWN_AGENTS },
        () =>
          new Promise<void>((resolve, reject) => {
            const child = spawn(process.execPath, ["-e", "process.stdout.write('up')"], {
              stdio: ["ignore", "pipe", "ignore"],
            });
            child.stdout.once("data", () => resolve());
            child.once("error", reject);
          }),
      ),
    );
    const bareMs = performance.now() - tBare;

    let output = "";
    const t0 = performance.now();
    upProcess = spawn(BIN, ["up", config], { stdio: ["ignore", "pipe", "pipe"] });
    upProcess.stdout?.on("data", (d) => (output += d));
    upProcess.stderr?.on("data", (d) => (output += d));
    const tGuide = await until("up's guide", () =>
      output.includes("is up:") ? performance.now() : undefined,
    );
    const sockets = new Map<string, number>();
    const onlineAt = new Map<string, number>();
    await until(
      "every agent online",
      async () => {
        await Promise.all(
          town.agents.map(async (agent) => {
            if (onlineAt.has(agent.name)) return;
            const status = await statusOf(agent);
            if (!status) return;
            if (!sockets.has(agent.name)) sockets.set(agent.name, performance.now());
            if (status.chat?.state === "online") onlineAt.set(agent.name, performance.now());
          }),
        );
        return onlineAt.size === town.agents.length ? true : undefined;
      },
      120_000,
      () => `(${onlineAt.size} online)`,
      // Every 50 ms: the probe must not take the CPU the daemons start with.
      50,
    );
    // Where the time went: the CPU each daemon used to come online, on this many CPUs.
    const cpu = town.agents.map((agent) => cpuMs(rssOf(agent.uid)[0]?.pid));
    const load = cpuPressure();
    const allSockets = Math.max(...sockets.values()) - t0;
    const allOnline = Math.max(...onlineAt.values()) - t0;
    const firstOnline = Math.min(...onlineAt.values()) - t0;
    console.log(
      `${kind}: nuketown up of a ${TOWN_AGENTS}-agent town (applied before) until all are online`,
    );
    console.log(
      `  up → every agent online in chat   ${ms(allOnline).padStart(9)}  (first ${ms(firstOnline)})`,
    );
    console.log(`    up's own work (install check, apply, start)  ${ms(tGuide - t0)}`);
    console.log(`    → every daemon's socket answers  ${ms(allSockets).padStart(8)}`);
    console.log(
      `    CPU per daemon until online: median ${ms(median(cpu))} (all ${TOWN_AGENTS}: ${ms(cpu.reduce((a, b) => a + b, 0))} on ${availableParallelism()} CPUs; ${load})`,
    );
    console.log(`  ${TOWN_AGENTS} bare node started at once (baseline) ${ms(bareMs)}`);
    console.log(`  up → online / baseline: ${(allOnline / bareMs).toFixed(1)}x`);
    const met = allOnline < GOAL_UP_MS;
    console.log(`  goal: < ${GOAL_UP_MS} ms: ${ms(allOnline)}, ${met ? "met" : "NOT met"}`);
    return met;
  } finally {
    await stopChild(upProcess, 15_000).catch(() => {});
    for (const stop of stops.reverse()) await stop().catch(() => {});
    cleanupHost(root, [`nt-test-${label}-ap`]);
  }
}

// ---- the bench --------------------------------------------------------------------

export async function benchOnline(
  parts: readonly ("memory" | "reset" | "up")[] = ["memory", "reset", "up"],
  kinds: readonly Network[] = ["matrix", "xmpp"],
): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.log("online: skipped (needs root for the town's accounts)");
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
    if (parts.includes("memory") || parts.includes("reset")) {
      const uids = UIDS[kind];
      const town = await startChatTown({
        kind,
        label: kind === "matrix" ? "bonmx" : "bonxm",
        agentUid: uids.agent,
        mayorUid: uids.mayor,
        sudo: false,
      });
      try {
        if (parts.includes("memory")) await benchMemory(kind, town);
        if (parts.includes("reset")) await benchReset(kind, town);
      } finally {
        await town.stop();
      }
    }
    if (parts.includes("up")) await benchUp(kind);
  }
  return 0;
}

// `node bench/online.ts [memory|reset|up]… [matrix|xmpp]…`
if (import.meta.main) {
  const args = process.argv.slice(2);
  const parts = args.filter((a): a is "memory" | "reset" | "up" =>
    ["memory", "reset", "up"].includes(a),
  );
  const kinds = args.filter((a): a is Network => a === "matrix" || a === "xmpp");
  process.exitCode = await benchOnline(
    parts.length > 0 ? parts : undefined,
    kinds.length > 0 ? kinds : undefined,
  );
}
