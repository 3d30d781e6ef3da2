/**
 * `npm run attack` (as root): replays every attack of issue 17 against a town
 * it brings up in a temp dir (test/attack/), one line per attempt — held,
 * SUCCEEDED, or not run with the reason — and closes with
 * `N attempts, K succeeded`. Exits 0 only when none succeeded and every
 * attempt ran (one this host cannot mount, such as a crontab without cron,
 * is skipped and says why). The town is torn down whatever happens.
 *   npm run attack [-- scenario-name…]   (default: every scenario)
 */
import { formatResult, notRun, runScenario, SCENARIOS, summary } from "../test/attack/attempts.ts";
import { bringUpTown } from "../test/attack/town.ts";

if (process.getuid?.() !== 0) {
  process.stderr.write(
    "npm run attack: run it as root (it makes test accounts, mounts and sudoers)\n",
  );
  process.exit(4);
}
const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !SCENARIOS.some((s) => s.name === name));
if (unknown.length > 0) {
  process.stderr.write(
    `npm run attack: no scenario ${unknown.map((n) => JSON.stringify(n)).join(", ")}; there are: ${SCENARIOS.map((s) => JSON.stringify(s.name)).join(", ")}\n`,
  );
  process.exit(2);
}
const scenarios =
  wanted.length === 0 ? SCENARIOS : SCENARIOS.filter((s) => wanted.includes(s.name));

const began = Date.now();
const town = await bringUpTown((line) => process.stderr.write(`attack: ${line}\n`));
process.stderr.write(`attack: up in ${Math.round((Date.now() - began) / 1000)} s\n`);
const results = [];
try {
  for (const scenario of scenarios) {
    const start = Date.now();
    const outcome = await runScenario(town, scenario);
    const took = ((Date.now() - start) / 1000).toFixed(1);
    process.stderr.write(`attack: ${scenario.name} (${took} s)\n`);
    for (const result of outcome) {
      results.push(result);
      process.stdout.write(`${formatResult(result)}\n`);
    }
  }
} finally {
  await town.stop();
}
process.stderr.write(`attack: ${Math.round((Date.now() - began) / 1000)} s\n`);
const missing = notRun(results);
if (missing.length > 0)
  process.stdout.write(
    `${missing.length} attempts could not be run: ${missing.map((r) => r.id).join(", ")}\n`,
  );
process.stdout.write(`${summary(results)}\n`);
process.exitCode = results.some((r) => r.held === false) || missing.length > 0 ? 1 : 0;
