/**
 * A runtime's process ends when the runtime does, even if something it
 * started in a new session (setsid) keeps its stdout and stderr open.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { runProcess } from "../../src/agent/runtimes/process.ts";

const hasSetsid = spawnSync("setsid", ["--version"]).status === 0;

function run(script: string, timeoutMs: number, signal = new AbortController().signal) {
  const lines: string[] = [];
  const started = Date.now();
  return runProcess({
    command: "sh",
    args: ["-c", script],
    cwd: "/",
    env: process.env,
    timeoutMs,
    signal,
    killGraceMs: 200,
    onLine: (line) => lines.push(line),
  }).then((outcome) => ({ outcome, lines, elapsed: Date.now() - started }));
}

describe("runProcess", { skip: !hasSetsid && "needs setsid" }, () => {
  it("resolves soon after the runtime exits though a setsid grandchild holds its output", async () => {
    const { outcome, lines, elapsed } = await run(
      "setsid sh -c 'sleep 20' & echo started; exit 0",
      30_000,
    );
    assert.equal(outcome.kind, "exited");
    assert.ok(outcome.kind === "exited" && outcome.code === 0);
    assert.deepEqual(lines, ["started"]);
    assert.ok(elapsed < 6000, `took ${elapsed} ms`);
  });

  it("keeps the timeout armed once the runtime exited", async () => {
    const { outcome, elapsed } = await run("setsid sleep 20 & echo started", 500);
    assert.ok(elapsed < 6000, `took ${elapsed} ms`);
    assert.ok(["exited", "timeout"].includes(outcome.kind));
  });

  it("ends a runtime whose grandchild escaped its group when it times out", async () => {
    const { outcome, elapsed } = await run("setsid sleep 20 & sleep 20", 500);
    assert.equal(outcome.kind, "timeout");
    assert.ok(elapsed < 6000, `took ${elapsed} ms`);
  });

  it("ends on cancel after the runtime exited", async () => {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const { outcome, elapsed } = await run(
      "setsid sleep 20 & echo started",
      30_000,
      controller.signal,
    );
    assert.ok(elapsed < 6000, `took ${elapsed} ms`);
    assert.ok(["exited", "aborted"].includes(outcome.kind));
  });
});
