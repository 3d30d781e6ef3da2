/**
 * The agent daemon's socket server on its own: a real Unix socket in a temp
 * dir, a stand-in task source that records what it was asked.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentClient } from "../../src/agent/client.ts";
import type { TaskEvent, TaskInfo } from "../../src/agent/protocol.ts";
import type { NewTask } from "../../src/agent/runner.ts";
import { AgentServer, type TaskSource } from "../../src/agent/server.ts";
import type { ResolvedAgent, ResolvedTown } from "../../src/town/types.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

/** Tasks that only exist in memory; the test plays the runner's events. */
class FakeTasks implements TaskSource {
  stopping = false;
  readonly asked: NewTask[] = [];
  readonly #listeners = new Set<(event: TaskEvent) => void>();
  readonly #tasks: TaskInfo[] = [];

  listen(listener: (event: TaskEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  submit(request: NewTask, accepted?: (task: TaskInfo, position: number) => void): TaskInfo {
    this.asked.push(request);
    const task: TaskInfo = {
      id: `0000000${this.#tasks.length + 1}`,
      project: request.project,
      prompt: request.prompt,
      mode: request.mode,
      state: "queued",
      queuedAt: "2026-01-01T00:00:00.000Z",
    };
    this.#tasks.push(task);
    accepted?.(task, 0);
    this.emit({ event: "task.queued", id: task.id, time: task.queuedAt, task, position: 0 });
    return task;
  }

  find(id: string): TaskInfo | undefined {
    return this.#tasks.find((t) => t.id === id);
  }

  list(): TaskInfo[] {
    return [...this.#tasks];
  }

  active(): TaskInfo[] {
    return this.#tasks.filter((t) => t.state === "queued" || t.state === "running");
  }

  cancel(id: string) {
    return { reply: { type: "error", error: `no task ${id}` } };
  }

  async status() {
    return {
      runtime: { kind: "command", command: "true", timeout: 60, maxParallel: 1 },
      running: [],
      queued: this.active(),
      projects: ["site"],
    };
  }

  emit(event: TaskEvent): void {
    for (const listener of this.#listeners) listener(event);
  }
}

/** One raw connection: write lines, read replies as parsed objects. */
async function raw(socket: string) {
  const conn = net.createConnection(socket);
  await new Promise((resolve, reject) => conn.once("connect", resolve).once("error", reject));
  const frames: Record<string, unknown>[] = [];
  let buffer = "";
  conn.setEncoding("utf8");
  conn.on("data", (chunk: string) => {
    buffer += chunk;
    for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
      frames.push(JSON.parse(buffer.slice(0, i)) as Record<string, unknown>);
      buffer = buffer.slice(i + 1);
    }
  });
  const next = async (count: number) => {
    const deadline = Date.now() + 5000;
    while (frames.length < count) {
      if (Date.now() > deadline)
        throw new Error(`only ${frames.length} frames: ${JSON.stringify(frames)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return frames;
  };
  return { conn, frames, next, write: (line: string) => conn.write(`${line}\n`) };
}

describe("the agent daemon's socket server, with stand-in tasks", () => {
  let root: string;
  let town: ResolvedTown;
  let agent: ResolvedAgent;
  let tasks: FakeTasks;
  let server: AgentServer;
  const warnings: string[] = [];

  before(async () => {
    root = mkdtempSync(path.join(tmpdir(), "nt-server-"));
    const resolved = resolveOrThrow(minimalDeclaration());
    const declared = resolved.agents[0];
    assert.ok(declared);
    agent = {
      ...declared,
      runtimeDir: path.join(root, "run"),
      socket: path.join(root, "run", "agent.sock"),
    };
    // No mayor: the socket stays the agent's alone, and says so.
    town = { ...resolved, mayor: undefined, agents: [agent] };
    tasks = new FakeTasks();
    server = new AgentServer({
      town,
      agent,
      tasks,
      warn: (w) => warnings.push(w),
      warnings: () => warnings,
      extraStatus: () => ({
        chat: {
          network: "matrix",
          account: "@ada:test.local",
          state: "online",
          since: "2026-01-01T00:00:00.000Z",
          restarts: 0,
        },
      }),
    });
    await server.start();
  });
  after(async () => {
    await server.stop();
    rmSync(root, { recursive: true, force: true });
  });

  it("listens on a socket only the agent may use, and says nobody else can", () => {
    assert.equal(statSync(agent.socket).mode & 0o777, 0o600);
    assert.match(warnings.join("\n"), /no mayor is declared: only ada can reach/);
  });

  it("answers status with the runner's part, its warnings and what the process adds", async () => {
    const client = await AgentClient.connect(agent.socket);
    try {
      const status = await client.status();
      assert.equal(status.pid, process.pid);
      assert.deepEqual(status.projects, ["site"]);
      assert.equal(status.chat?.state, "online");
      assert.ok(status.warnings.some((w) => w.includes("no mayor")));
    } finally {
      client.close();
    }
  });

  it("answers a task with its id before its first event, and sends a watcher its events", async () => {
    const peer = await raw(agent.socket);
    peer.write(
      JSON.stringify({ v: 1, type: "task", ref: "r1", project: "site", prompt: "go", watch: true }),
    );
    const [accepted, queued] = await peer.next(2);
    assert.equal(accepted?.type, "accepted");
    assert.equal(accepted?.ref, "r1");
    assert.equal(queued?.type, "event");
    assert.equal(queued?.event, "task.queued");
    assert.deepEqual(tasks.asked.at(-1), {
      project: "site",
      prompt: "go",
      branch: undefined,
      mode: "batch",
      source: undefined,
      replyTo: undefined,
    });
    // An answer too large for a frame reaches the watcher cut, marked truncated.
    const task = tasks.find(String((accepted?.task as TaskInfo | undefined)?.id));
    assert.ok(task);
    tasks.emit({
      event: "task.finished",
      id: task.id,
      time: "2026-01-01T00:00:01.000Z",
      task: { ...task, state: "finished" },
      answer: "x".repeat(200_000),
      truncated: false,
    });
    const frames = await peer.next(3);
    const end = frames[2];
    assert.equal(end?.event, "task.finished");
    assert.equal(end?.truncated, true);
    assert.ok(String(end?.answer).length < 64 * 1024);
    // Its end ends the subscription: a later event of the same id is not sent.
    tasks.emit({ event: "task.progress", id: task.id, time: "t", text: "late" });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(peer.frames.length, 3);
    peer.conn.destroy();
  });

  it("answers a malformed frame with an error naming its ref, and goes on serving", async () => {
    const peer = await raw(agent.socket);
    peer.write(JSON.stringify({ v: 1, type: "task", ref: "bad", project: "../etc", prompt: "x" }));
    peer.write("not json at all");
    peer.write(JSON.stringify({ v: 1, type: "subscribe", ref: "s", task: "ffffffff" }));
    peer.write(JSON.stringify({ v: 1, type: "list", ref: "l" }));
    const [bad, garbage, unknown, list] = await peer.next(4);
    assert.equal(bad?.type, "error");
    assert.equal(bad?.ref, "bad");
    assert.match(String(bad?.error), /project/);
    assert.equal(garbage?.type, "error");
    assert.deepEqual(
      [unknown?.type, unknown?.ref, unknown?.error],
      ["error", "s", "no task ffffffff"],
    );
    assert.equal(list?.type, "tasks");
    assert.ok(Array.isArray(list?.tasks));
    peer.conn.destroy();
  });

  it("refuses tasks while the runner stops", async () => {
    tasks.stopping = true;
    try {
      const peer = await raw(agent.socket);
      peer.write(JSON.stringify({ v: 1, type: "task", ref: "x", project: "site", prompt: "late" }));
      const [reply] = await peer.next(1);
      assert.deepEqual([reply?.type, reply?.error], ["error", "the agent daemon is stopping"]);
      peer.conn.destroy();
    } finally {
      tasks.stopping = false;
    }
  });
});
