/**
 * approval.askLimit: how many requests one agent may put to the humans in a
 * sliding window (src/approval/ask-limit.ts). The real thing, sudo through
 * the gate to approvald, is test/integration/approval-binding.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AskLimit } from "../../src/approval/ask-limit.ts";
import { resolveTown } from "../../src/town/resolve.ts";
import { FIXED_CONTEXT } from "../support/fixtures.ts";

describe("the ask limit", () => {
  it("takes up to the limit in the window, then refuses until the oldest leaves it", () => {
    let now = Date.parse("2026-12-02T10:00:00Z");
    const limit = new AskLimit({ requests: 3, minutes: 10 }, () => new Date(now));
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(limit.take("ada"), { ok: true });
      now += 60_000;
    }
    const refused = limit.take("ada");
    assert.equal(refused.ok, false);
    assert.match(
      refused.ok ? "" : refused.reason,
      /^ada has asked the humans 3 times in 10 minutes \(approval\.askLimit\): no more until 2026-12-02T10:10:00\.000Z$/,
    );
    // Another agent has its own window.
    assert.deepEqual(limit.take("vox"), { ok: true });
    // A refusal is not counted: the first ask leaves the window at 10:10, and one more fits.
    now = Date.parse("2026-12-02T10:10:00.001Z");
    assert.deepEqual(limit.take("ada"), { ok: true });
    assert.equal(limit.take("ada").ok, false);
    now = Date.parse("2026-12-02T10:11:00.001Z");
    assert.deepEqual(limit.take("ada"), { ok: true });
  });

  it("defaults to 60 requests in 10 minutes, and refuses a limit of none", () => {
    const town = (approval: Record<string, unknown>) =>
      resolveTown(
        { approval, humans: { mayor: {} }, agents: { ada: { uid: 1100 } } },
        FIXED_CONTEXT,
      );
    assert.deepEqual(town({}).town?.approval.askLimit, { requests: 60, minutes: 10 });
    assert.deepEqual(town({ askLimit: { requests: 5 } }).town?.approval.askLimit, {
      requests: 5,
      minutes: 10,
    });
    const none = town({ askLimit: { requests: 0 } });
    assert.equal(none.town, undefined);
    assert.deepEqual(
      none.errors.map((e) => e.path),
      ["approval.askLimit.requests"],
    );
  });
});
