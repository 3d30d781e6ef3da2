/**
 * A runtime's process ends when the runtime does, even if something it
 * started in a new session (setsid) keeps its stdout and stderr open; with
 * the task's processes, it joins their cgroup before exec and every stop
 * reaches all of them.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
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

describe("runProcess with the task's processes", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nt-process-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Stands in for the task's cgroup: a plain file for the pid, and a record of the signals. */
  function processes(name: string) {
    const signals: string[] = [];
    const joinFile = path.join(dir, `${name}.procs`);
    return {
      signals,
      joinFile,
      processes: {
        joinFile,
        signal: async (signal: NodeJS.Signals) => {
          signals.push(signal);
        },
      },
    };
  }

  it("joins before exec: the pid written is the runtime's own", async () => {
    const task = processes("joins");
    const lines: string[] = [];
    const outcome = await runProcess({
      command: "sh",
      args: ["-c", 'echo "pid $$"'],
      cwd: "/",
      env: process.env,
      timeoutMs: 10_000,
      signal: new AbortController().signal,
      onLine: (line) => lines.push(line),
      processes: task.processes,
    });
    assert.equal(outcome.kind, "exited");
    assert.deepEqual(lines, [`pid ${readFileSync(task.joinFile, "utf8").trim()}`]);
    assert.deepEqual(task.signals, ["SIGKILL"], "what it left behind is killed when it exits");
  });

  it("signals all of them on timeout: SIGTERM, then SIGKILL after the grace", async () => {
    const task = processes("timeout");
    const outcome = await runProcess({
      command: "sh",
      args: ["-c", "trap '' TERM; sleep 20"],
      cwd: "/",
      env: process.env,
      timeoutMs: 200,
      killGraceMs: 200,
      signal: new AbortController().signal,
      onLine: () => {},
      processes: task.processes,
    });
    assert.equal(outcome.kind, "timeout");
    assert.deepEqual(task.signals.slice(0, 2), ["SIGTERM", "SIGKILL"]);
  });

  it("tells a missing or unexecutable runtime apart, though it starts through sh", async () => {
    const notExecutable = path.join(dir, "plain-file");
    writeFileSync(notExecutable, "#!/bin/sh\n", { mode: 0o644 });
    for (const [command, why] of [
      [path.join(dir, "nowhere"), "not found"],
      ["no-such-runtime-anywhere", "not found"],
      [notExecutable, "not executable (permission denied)"],
    ] as const) {
      const task = processes("missing");
      const outcome = await runProcess({
        command,
        args: [],
        cwd: "/",
        env: process.env,
        timeoutMs: 10_000,
        signal: new AbortController().signal,
        onLine: () => {},
        processes: task.processes,
      });
      assert.deepEqual(outcome, { kind: "missing", error: `${command}: ${why}` });
    }
  });
});
