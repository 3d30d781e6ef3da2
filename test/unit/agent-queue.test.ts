import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { TaskQueue } from "../../src/agent/queue.ts";

const task = (id: string, project: string) => ({ id, project });
const ids = (items: readonly { id: string }[]) => items.map((t) => t.id);

describe("the agent's task queue", () => {
  it("runs one task at a time per project, in arrival order", () => {
    const queue = new TaskQueue(4);
    queue.add(task("a1", "site"));
    queue.add(task("a2", "site"));
    queue.add(task("a3", "site"));
    assert.deepEqual(ids(queue.take()), ["a1"]);
    assert.deepEqual(ids(queue.take()), [], "nothing more starts while a1 runs");
    queue.done("a1");
    assert.deepEqual(ids(queue.take()), ["a2"]);
    queue.done("a2");
    assert.deepEqual(ids(queue.take()), ["a3"]);
  });

  it("runs different projects side by side up to maxParallel", () => {
    const queue = new TaskQueue(2);
    queue.add(task("s1", "site"));
    queue.add(task("s2", "site"));
    queue.add(task("b1", "blog"));
    queue.add(task("d1", "docs"));
    // GIVEN two slots WHEN site and blog start THEN docs waits for a slot, s2 for site.
    assert.deepEqual(ids(queue.take()), ["s1", "b1"]);
    assert.deepEqual(ids(queue.running), ["s1", "b1"]);
    queue.done("b1");
    assert.deepEqual(ids(queue.take()), ["d1"], "the free slot goes to the next idle project");
    queue.done("s1");
    assert.deepEqual(ids(queue.take()), ["s2"]);
  });

  it("keeps a later task of a busy project behind the earlier one, even when slots are free", () => {
    const queue = new TaskQueue(3);
    queue.add(task("s1", "site"));
    assert.deepEqual(ids(queue.take()), ["s1"]);
    queue.add(task("s2", "site"));
    queue.add(task("b1", "blog"));
    queue.add(task("s3", "site"));
    assert.deepEqual(ids(queue.take()), ["b1"]);
    queue.done("s1");
    assert.deepEqual(ids(queue.take()), ["s2"], "s2 before s3: FIFO within the project");
  });

  it("reports how many tasks are ahead in the same project", () => {
    const queue = new TaskQueue(2);
    assert.equal(queue.add(task("s1", "site")), 0);
    queue.take();
    assert.equal(queue.add(task("s2", "site")), 1, "the running one counts");
    assert.equal(queue.add(task("b1", "blog")), 0);
    assert.equal(queue.add(task("s3", "site")), 2);
  });

  it("cancels a queued task at once and leaves a running one to the daemon", () => {
    const queue = new TaskQueue(1);
    queue.add(task("s1", "site"));
    queue.add(task("s2", "site"));
    queue.take();
    assert.equal(queue.cancel("s2"), "queued");
    assert.equal(queue.has("s2"), false);
    assert.equal(queue.cancel("s1"), "running");
    assert.equal(queue.has("s1"), true, "still running until the runtime is stopped");
    assert.equal(queue.cancel("nope"), undefined);
    queue.done("s1");
    assert.equal(queue.cancel("s1"), undefined);
    assert.deepEqual(ids(queue.take()), []);
  });

  it("refuses a duplicate id and a limit below one", () => {
    const queue = new TaskQueue(1);
    queue.add(task("s1", "site"));
    assert.throws(() => queue.add(task("s1", "blog")), /already queued/);
    assert.throws(() => new TaskQueue(0), /positive integer/);
  });
});
