import assert from "node:assert/strict";
import { test } from "node:test";
import { generateTown } from "../../bench/towns.ts";
import { formatProblem } from "../../src/town/problems.ts";
import { resolveTown } from "../../src/town/resolve.ts";
import { FIXED_CONTEXT } from "../support/fixtures.ts";

test("GIVEN generateTown(50) WHEN resolved THEN there are no errors and the town is varied", () => {
  const result = resolveTown(generateTown(50), FIXED_CONTEXT);
  assert.deepEqual(result.errors.map(formatProblem), []);
  const agents = result.town?.agents ?? [];
  assert.equal(agents.length, 50);
  assert.ok(agents.some((a) => a.devices.length > 0));
  assert.ok(agents.some((a) => a.sudo.enable && a.sudo.policy.rules.length > 0));
  assert.ok(agents.some((a) => a.chat.enable && a.chat.matrix !== undefined));
  assert.ok(agents.some((a) => a.cloud.enable));
  assert.ok(
    agents.some((a) => a.git.signing.format === "ssh") &&
      agents.some((a) => a.git.signing.format === "openpgp"),
  );
});

test("generateTown is deterministic", () => {
  assert.deepEqual(generateTown(20), generateTown(20));
});
