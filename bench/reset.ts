/**
 * One reset (issue 12 (c)): `resetAgent` of one agent on a loop-mounted
 * btrfs image, as `nuketown reset` runs it, timed in this process with the
 * real runner. Goal: under 50 ms. Baselines in the same run: the same reset
 * with its files placed by the as-agent Node writer (how every round placed
 * them before: ~75 ms of starting Node), and the floor a btrfs home costs
 * anyway (rename the home aside + `btrfs subvolume snapshot`).
 *
 * The agent is a bench account (nt-test-rcb, uid 60944), everything lives
 * under one temp dir, removed in a finally block and on Ctrl-C.
 *
 *   node bench/reset.ts        (also run by `npm run bench`)
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { rename } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { applyPlan } from "../src/host/apply.ts";
import { blankOf, emptyTrash, trashDir } from "../src/host/homes.ts";
import { observeHost, systemdIsInit } from "../src/host/observe.ts";
import { unmountBelow } from "../src/host/persist.ts";
import { planHost } from "../src/host/plan.ts";
import { type RoundContext, resetAgent } from "../src/host/round.ts";
import { createDecryptor } from "../src/host/secrets.ts";
import { ensureDir } from "../src/os/files.ts";
import { type Runner, systemRunner } from "../src/os/process.ts";
import { parsePasswd } from "../src/os/tables.ts";
import { loadTown } from "../src/town/load.ts";
import { formatProblem } from "../src/town/problems.ts";
import type { ResolvedAgent, ResolvedTown } from "../src/town/types.ts";
import { cleanupHost, isRoot, makeTempRoot, run } from "../test/support/host.ts";
import { type Spent, timingRunner } from "./timing-runner.ts";

const AGENT = { name: "nt-test-rcb", uid: 60944 };
const RUNS = 30;
const WARMUP = 3;
const GOAL_MS = 50;

export async function benchReset(): Promise<number> {
  console.log("one reset");
  if (!isRoot()) {
    console.log("  skipped: it needs root (a real account, a loop-mounted btrfs image)");
    return 0;
  }
  for (const tool of ["mkfs.btrfs", "btrfs", "losetup"]) {
    if (run("sh", ["-c", `command -v ${tool}`]).code !== 0) {
      console.log(`  skipped: ${tool} is not installed`);
      return 0;
    }
  }
  const taken = parsePasswd(readFileSync("/etc/passwd", "utf8")).find(
    (u) => u.name === AGENT.name || u.uid === AGENT.uid,
  );
  if (taken) {
    const tempRoot = taken.home.split("/").slice(0, 3).join("/");
    if (taken.name !== AGENT.name || existsSync(tempRoot)) {
      throw new Error(`${taken.name} (uid ${taken.uid}) exists: another run is going on?`);
    }
    run("userdel", [taken.name]);
    run("groupdel", [taken.name]);
  }
  const root = makeTempRoot("bench-reset");
  const cleanup = () => cleanupHost(root, [`${AGENT.name}-apv`]);
  const onSignal = (signal: NodeJS.Signals) => {
    cleanup();
    process.exit(128 + (signal === "SIGINT" ? 2 : 15));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const spent: Spent = new Map();
    const runner = timingRunner(spent);
    const town = await applyTown(root, runner);
    const agent = town.agents.find((a) => a.name === AGENT.name)!;
    const ctx = (writeAsAgent: boolean): RoundContext => ({
      town,
      runner,
      decryptor: createDecryptor({ ageKeyFile: town.secrets.ageKeyFile, runner }),
      systemd: false,
      log: () => {},
      writeAsAgent,
    });
    const modes = [
      { label: "one reset (files placed by root through descriptors)", asAgent: false },
      { label: "baseline: the same with the as-agent Node writer", asAgent: true },
    ];
    const figures: { label: string; median: number; p95: number; spent: Spent }[] = [];
    for (const mode of modes) {
      const times: number[] = [];
      const totals: Spent = new Map();
      for (let i = 0; i < WARMUP + RUNS; i++) {
        // A file the round must drop: the reset is measured doing its work.
        writeFileSync(path.join(agent.home, "scratch.txt"), `round ${i}\n`);
        spent.clear();
        const t0 = performance.now();
        await resetAgent(ctx(mode.asAgent), agent);
        const ms = performance.now() - t0;
        if (existsSync(path.join(agent.home, "scratch.txt")))
          throw new Error("the reset left last round's file in the home");
        // As `nuketown reset` does once the agents are back: not part of the round.
        await emptyTrash(town, systemRunner);
        if (i < WARMUP) continue;
        times.push(ms);
        for (const [k, v] of spent) totals.set(k, (totals.get(k) ?? 0) + v / RUNS);
      }
      figures.push({ label: mode.label, ...stats(times), spent: totals });
    }
    const floor = await snapshotFloor(town, agent);

    console.log(`resetAgent of one agent on btrfs (image), real runner, ${RUNS} runs each`);
    console.log(`${"".padEnd(56)}${"median ms".padStart(10)}${"p95 ms".padStart(9)}`);
    for (const f of figures)
      console.log(`${f.label.padEnd(56)}${fmt(f.median).padStart(10)}${fmt(f.p95).padStart(9)}`);
    console.log(
      `${"floor: rename the home aside + btrfs subvolume snapshot".padEnd(56)}${fmt(floor.median).padStart(10)}${fmt(floor.p95).padStart(9)}`,
    );
    const [mine, before] = figures;
    console.log("");
    console.log(`one reset / as-agent writer: ${(mine!.median / before!.median).toFixed(2)}x`);
    console.log(`one reset / floor: ${(mine!.median / floor.median).toFixed(2)}x`);
    const met = mine!.median < GOAL_MS;
    console.log(
      `goal: one reset under ${GOAL_MS} ms: median ${fmt(mine!.median)} ms ${met ? "<" : ">="} ${GOAL_MS} ms, ${met ? "met" : "NOT met"}`,
    );
    console.log("\nwhere one reset spends its time (mean ms per reset)");
    const keys = [...new Set(figures.flatMap((f) => [...f.spent.keys()]))].sort();
    console.log(
      `${"".padEnd(30)}${["root writer", "as-agent"].map((t) => t.padStart(13)).join("")}`,
    );
    for (const key of keys)
      console.log(
        `${key.padEnd(30)}${figures.map((f) => fmt(f.spent.get(key) ?? 0).padStart(13)).join("")}`,
      );
    console.log(
      `${"in-process (fs, scans, render)".padEnd(30)}${figures
        .map((f) => fmt(f.median - sum(f.spent.values())).padStart(13))
        .join("")}`,
    );
    return 0;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    cleanup();
  }
}

async function applyTown(root: string, runner: Runner): Promise<ResolvedTown> {
  const file = path.join(root, "town.json");
  writeFileSync(
    file,
    JSON.stringify({
      name: "nt-test-bench-reset",
      domain: "bench.local",
      agentsDir: path.join(root, "agents"),
      persistDir: path.join(root, "persist"),
      stateDir: path.join(root, "state"),
      runtimeDir: path.join(root, "run"),
      etcDir: path.join(root, "etc"),
      uidRange: { min: AGENT.uid, max: AGENT.uid },
      homes: { backend: "image", image: { size: "1G" } },
      approval: { group: `${AGENT.name}-apv` },
      agents: {
        [AGENT.name]: {
          uid: AGENT.uid,
          role: "bench",
          description: "Benchmark agent.",
          // As the host bench's agent: three persisted paths, one declared file.
          persist: ["projects", ".config/tool", { path: ".bash_history", type: "file" }],
          files: { ".config/notes/readme.md": { text: "# notes\n" } },
        },
      },
    }),
  );
  const { town } = await loadTown(file);
  const plan = planHost(town, await observeHost(town));
  if (plan.errors.length > 0)
    throw new Error(`cannot apply the bench town:\n${plan.errors.map(formatProblem).join("\n")}`);
  await applyPlan(plan, {
    town,
    runner,
    decryptor: createDecryptor({ ageKeyFile: town.secrets.ageKeyFile, runner }),
    systemd: await systemdIsInit(),
    log: () => {},
  });
  return town;
}

/** What any btrfs rollback costs: the home renamed into the trash, a new snapshot of blank. */
async function snapshotFloor(town: ResolvedTown, agent: ResolvedAgent) {
  const times: number[] = [];
  await unmountBelow(agent.home, systemRunner);
  await ensureDir(trashDir(town), 0o700);
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const t0 = performance.now();
    await rename(agent.home, path.join(trashDir(town), `floor.${i}`));
    await systemRunner.run("btrfs", ["subvolume", "snapshot", blankOf(town, agent), agent.home]);
    if (i >= WARMUP) times.push(performance.now() - t0);
    await emptyTrash(town, systemRunner);
  }
  return stats(times);
}

function stats(values: readonly number[]) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
  return { median: at(0.5), p95: at(0.95) };
}

const sum = (values: Iterable<number>) => [...values].reduce((a, b) => a + b, 0);
const fmt = (ms: number) => ms.toFixed(1);

if (import.meta.main) process.exitCode = await benchReset();
