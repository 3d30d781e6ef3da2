/**
 * How long validating a large town takes, next to copying the same
 * declaration in the same process (so a slow machine shows up as a slow
 * baseline, not as a slow validator). Goal: a 1,000-agent town well under a second.
 *
 *   node bench/run.ts [agents]        (default 1000)
 *
 * Then the cloud renderer (bench/cloud.ts: 1,000 cloud agents to validated
 * YAML, against a JSON round trip of the same objects) and, as root only: the host (bench/host.ts: resets, no-op apply), one
 * reset (bench/reset.ts: goal under 50 ms, beside the as-agent writer it replaced), the
 * approval round trip (bench/approval.ts), sudo end to end through the
 * installed gate (bench/sudo.ts), chat latency (bench/chat.ts), an online
 * agent's memory and how fast it is back after a reset or `nuketown up`
 * (bench/online.ts), and an approval clicked in the dashboard
 * (bench/dashboard.ts).
 */
import { performance } from "node:perf_hooks";
import { formatProblem } from "../src/town/problems.ts";
import { resolveTown } from "../src/town/resolve.ts";
import { benchApproval } from "./approval.ts";
import { benchChat } from "./chat.ts";
import { benchCloud } from "./cloud.ts";
import { benchDashboard } from "./dashboard.ts";
import { benchHost } from "./host.ts";
import { benchOnline } from "./online.ts";
import { benchReset } from "./reset.ts";
import { benchSudo } from "./sudo.ts";
import { generateTown } from "./towns.ts";

const GOAL_MS = 1000;
const WARMUP = 3;
const MIN_RUNS = 10;
const MAX_RUNS = 30;
// Per measured case, so the whole bench stays well under ~20 s even on a slow machine.
const BUDGET_MS = 5000;

interface Figures {
  readonly name: string;
  readonly median: number;
  readonly p95: number;
  readonly runs: number;
}

/** Time `fn` after warm-up: at least MIN_RUNS runs, more while the budget lasts. */
function measure(name: string, fn: () => unknown): Figures {
  for (let i = 0; i < WARMUP; i++) fn();
  const times: number[] = [];
  const start = performance.now();
  while (
    times.length < MAX_RUNS &&
    (times.length < MIN_RUNS || performance.now() - start < BUDGET_MS)
  ) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { name, median: percentile(times, 0.5), p95: percentile(times, 0.95), runs: times.length };
}

/** Nearest-rank percentile of sorted samples. */
function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;
}

function main(argv: readonly string[]): number {
  const agents = argv[0] === undefined ? 1000 : Number(argv[0]);
  const declaration = generateTown(agents);
  const context = { hostname: "bench", baseDir: "/etc/nuketown" };

  const check = resolveTown(declaration, context);
  if (check.errors.length > 0) {
    console.error(`the generated ${agents}-agent town is invalid:`);
    for (const problem of check.errors) console.error(`  ${formatProblem(problem)}`);
    return 1;
  }

  const validate = measure("resolveTown", () => resolveTown(declaration, context));
  const baselines = [
    measure("structuredClone", () => structuredClone(declaration)),
    measure("JSON round-trip", () => JSON.parse(JSON.stringify(declaration))),
  ];

  const ms = (v: number) => v.toFixed(1).padStart(9);
  const count = agents.toLocaleString("en-US");
  console.log(
    `town of ${count} agents (${(JSON.stringify(declaration).length / 1024).toFixed(0)} KiB as JSON)\n`,
  );
  console.log(`${"".padEnd(18)}${"median ms".padStart(9)}  ${"p95 ms".padStart(9)}  runs`);
  for (const f of [validate, ...baselines]) {
    console.log(`${f.name.padEnd(18)}${ms(f.median)}  ${ms(f.p95)}  ${f.runs}`);
  }
  console.log("");
  for (const b of baselines) {
    console.log(`validate / ${b.name}: ${(validate.median / b.median).toFixed(1)}x`);
  }
  const met = validate.median < GOAL_MS;
  console.log(
    `\ngoal: validation of a ${count}-agent town well under a second: ` +
      `median ${validate.median.toFixed(1)} ms ${met ? "<" : ">="} ${GOAL_MS} ms, ${met ? "met" : "NOT met"}`,
  );
  return 0;
}

process.exitCode = main(process.argv.slice(2));
// The host, approval and chat benches need root (accounts, sockets handed to groups, servers' users).
// Rendering 1,000 cloud agents needs nothing of the host; the others need root.
for (const next of [
  () => benchCloud(1000),
  benchHost,
  benchReset,
  benchApproval,
  benchSudo,
  benchChat,
  () => benchOnline(),
  benchDashboard,
]) {
  if (process.exitCode !== 0) break;
  console.log("");
  process.exitCode = await next();
}
