/**
 * The agent daemon's task runner on its own, without a socket: a stand-in
 * runtime, a real git clone in a temp home.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { TaskEvent } from "../../src/agent/protocol.ts";
import { TaskRunner } from "../../src/agent/runner.ts";
import type { RunContext, Runtime } from "../../src/agent/runtimes/types.ts";
import type { ResolvedAgent } from "../../src/town/types.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

/** A runtime each task of which waits until the test lets it answer (or it is cancelled). */
class GatedRuntime implements Runtime {
  readonly kind = "gated";
  readonly started: string[] = [];
  readonly aborted: string[] = [];
  readonly #gates = new Map<string, () => void>();

  run(context: RunContext): Promise<{ answer: string }> {
    this.started.push(context.task.prompt);
    context.emit(`working on ${context.task.prompt}`);
    return new Promise((resolve, reject) => {
      this.#gates.set(context.task.prompt, () =>
        resolve({ answer: `done: ${context.task.prompt}` }),
      );
      context.signal.addEventListener("abort", () => {
        this.aborted.push(context.task.prompt);
        reject(context.signal.reason ?? new Error("aborted"));
      });
    });
  }

  finish(prompt: string): void {
    const gate = this.#gates.get(prompt);
    assert.ok(gate, `${prompt} is not running`);
    gate();
  }
}

function git(cwd: string, ...args: string[]): void {
  const result = spawnSync(
    "git",
    ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args],
    { cwd, encoding: "utf8" },
  );
  assert.equal(result.status, 0, result.stderr);
}

async function until(what: string, probe: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe("the agent's task runner, without a socket", () => {
  let root: string;
  let agent: ResolvedAgent;

  before(() => {
    root = mkdtempSync(path.join(tmpdir(), "nt-runner-"));
    const town = resolveOrThrow(minimalDeclaration());
    const declared = town.agents[0];
    assert.ok(declared);
    const home = path.join(root, "home");
    agent = {
      ...declared,
      home,
      stateDir: path.join(root, "state"),
      runtimeDir: path.join(root, "run"),
      socket: path.join(root, "run", "agent.sock"),
      runtime: { ...declared.runtime, maxParallel: 2 },
    };
    for (const project of ["site", "blog"]) {
      const dir = path.join(home, "projects", project);
      mkdirSync(dir, { recursive: true });
      git(dir, "init", "--quiet");
      git(dir, "commit", "--quiet", "--allow-empty", "-m", "init");
    }
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const start = async () => {
    const runtime = new GatedRuntime();
    const warnings: string[] = [];
    const runner = new TaskRunner({
      agent,
      runtime,
      env: { ...process.env, HOME: agent.home },
      warn: (w) => warnings.push(w),
    });
    await runner.prepare();
    const events: TaskEvent[] = [];
    runner.listen((e) => events.push(e));
    return { runner, runtime, events, warnings };
  };

  it("tells the id before any event, then queued, started, progress, answer, finished", async () => {
    const { runner, runtime, events } = await start();
    const order: string[] = [];
    runner.listen((e) => order.push(e.event));
    const task = runner.submit({ project: "site", prompt: "fix it", mode: "batch" }, (info, at) => {
      order.push(`accepted ${info.state} at ${at}`);
    });
    await until("the runtime", () => runtime.started.includes("fix it"));
    assert.equal(runner.pending, 1);
    runtime.finish("fix it");
    await runner.idle();
    assert.deepEqual(order, [
      "accepted queued at 0",
      "task.queued",
      "task.started",
      "task.progress",
      "task.answer",
      "task.finished",
    ]);
    const end = events.at(-1);
    assert.equal(end?.event, "task.finished");
    assert.equal(end?.id, task.id);
    assert.equal(end?.event === "task.finished" && end.answer, "done: fix it");
    assert.equal(runner.find(task.id)?.state, "finished");
    assert.equal(runner.list()[0]?.id, task.id, "remembered among the recent tasks");
    const history = readFileSync(path.join(agent.stateDir, "tasks.jsonl"), "utf8");
    assert.match(history, new RegExp(`"id":"${task.id}".*"answer":"done: fix it"`));
  });

  it("runs one task per project at a time, others beside it, and cancels a waiting one", async () => {
    const { runner, runtime, events } = await start();
    runner.submit({ project: "site", prompt: "one", mode: "batch" });
    let position = -1;
    const two = runner.submit({ project: "site", prompt: "two", mode: "batch" }, (_t, at) => {
      position = at;
    });
    runner.submit({ project: "blog", prompt: "three", mode: "batch" });
    assert.equal(position, 1, "one task of site is ahead");
    await until("one and three", () => runtime.started.length === 2);
    assert.deepEqual(runtime.started.sort(), ["one", "three"]);
    assert.deepEqual(
      runner.active().map((t) => t.state),
      ["running", "running", "queued"],
    );
    const { reply, then } = runner.cancel(two.id);
    assert.deepEqual(reply, { type: "cancelled", id: two.id, was: "queued" });
    then?.();
    await until("two's end", () =>
      events.some((e) => e.id === two.id && e.event === "task.cancelled"),
    );
    assert.match(
      String(runner.cancel(two.id).reply.error),
      /already ended \(cancelled\)/,
      "a second cancel says it is over",
    );
    runtime.finish("one");
    runtime.finish("three");
    await runner.idle();
    assert.ok(!runtime.started.includes("two"), "the cancelled task never ran");
  });

  it("fails a task for a project it does not know, and keeps running", async () => {
    const { runner, events } = await start();
    const task = runner.submit({ project: "nowhere", prompt: "hello", mode: "batch" });
    await runner.idle();
    const end = events.find((e) => e.id === task.id && e.event === "task.failed");
    assert.equal(end?.event === "task.failed" && end.reason, "unknown-project");
  });

  it("on stop, cancels what waits and what runs, and takes no more", async () => {
    const { runner, runtime, events } = await start();
    runner.submit({ project: "site", prompt: "long", mode: "batch" });
    const waiting = runner.submit({ project: "site", prompt: "after", mode: "batch" });
    await until("the runtime", () => runtime.started.includes("long"));
    await runner.stop("the test stopped it");
    assert.deepEqual(runtime.aborted, ["long"]);
    const cancelled = events.filter((e) => e.event === "task.cancelled");
    assert.equal(cancelled.length, 2);
    for (const e of cancelled)
      assert.equal(e.event === "task.cancelled" && e.reason, "the test stopped it");
    assert.ok(cancelled.some((e) => e.id === waiting.id));
    assert.equal(runner.pending, 0);
    assert.equal(runner.stopping, true);
    assert.throws(
      () => runner.submit({ project: "site", prompt: "late", mode: "batch" }),
      /stopping/,
    );
  });
});
