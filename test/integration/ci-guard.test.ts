/**
 * The integration tests need root (real accounts, mounts, sudo) and skip
 * without it, which is right on a developer's laptop and wrong in CI: a CI
 * run that is not root would pass by testing nothing. Under CI=true this
 * test fails instead.
 */
import assert from "node:assert/strict";
import { it } from "node:test";
import { isRoot } from "../support/host.ts";

it("CI runs the integration tests as root, so none of them is skipped", () => {
  if (process.env.CI !== "true") return;
  assert.ok(
    isRoot(),
    "CI=true but not root: every integration test that needs root would be skipped; run .ci/run as root",
  );
});
