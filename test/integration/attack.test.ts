/**
 * Issue 17's attacks replayed against a live town (the same attempts as
 * `npm run attack`, test/attack/): each scenario runs as the agents against
 * the real daemons, and every attempt must have held.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  type AttemptResult,
  formatResult,
  runScenario,
  SCENARIOS,
  summary,
} from "../attack/attempts.ts";
import { type AttackTown, bringUpTown } from "../attack/town.ts";
import { isRoot } from "../support/host.ts";

describe("issue 17's attacks on a live town", { skip: !isRoot() && "needs root" }, () => {
  let town: AttackTown | undefined;
  const results: AttemptResult[] = [];

  before(async () => {
    town = await bringUpTown();
  });

  after(async () => {
    await town?.stop();
    if (results.length > 0) process.stderr.write(`attack: ${summary(results)}\n`);
  });

  for (const scenario of SCENARIOS) {
    it(`${scenario.name}: ${Object.keys(scenario.attempts).join(", ")} held`, async (t) => {
      assert.ok(town, "the town is up");
      const outcome = await runScenario(town, scenario);
      results.push(...outcome);
      const lines = outcome.map(formatResult).join("\n");
      for (const skipped of outcome.filter((r) => r.skipped)) t.diagnostic(formatResult(skipped));
      assert.ok(
        outcome.every((r) => r.held === true || r.skipped),
        `not every attempt held:\n${lines}`,
      );
    });
  }
});
