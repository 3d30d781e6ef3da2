/**
 * The agent's task queue: one task at a time per workspace (project), tasks
 * in different projects side by side up to a limit, first come first served
 * within a project. Pure: it only decides what may start; the daemon runs it.
 */

export interface QueueItem {
  readonly id: string;
  readonly project: string;
}

export class TaskQueue<T extends QueueItem> {
  readonly #maxParallel: number;
  /** In arrival order. */
  readonly #waiting: T[] = [];
  readonly #running = new Map<string, T>();

  constructor(maxParallel: number) {
    if (!Number.isInteger(maxParallel) || maxParallel < 1)
      throw new RangeError(`maxParallel must be a positive integer, got ${maxParallel}`);
    this.#maxParallel = maxParallel;
  }

  /** Queue a task; returns how many tasks wait before it in its project (running ones included). */
  add(item: T): number {
    if (this.has(item.id)) throw new Error(`task ${item.id} is already queued`);
    const ahead =
      this.#waiting.filter((t) => t.project === item.project).length +
      [...this.#running.values()].filter((t) => t.project === item.project).length;
    this.#waiting.push(item);
    return ahead;
  }

  /**
   * Tasks that may start now, in arrival order, marked running: the first
   * waiting task of every idle project, while fewer than the limit run.
   */
  take(): T[] {
    const busy = new Set([...this.#running.values()].map((t) => t.project));
    const started: T[] = [];
    let index = 0;
    while (index < this.#waiting.length && this.#running.size < this.#maxParallel) {
      const item = this.#waiting[index]!;
      if (busy.has(item.project)) {
        // Every later task of this project waits behind this one.
        busy.add(item.project);
        index++;
        continue;
      }
      this.#waiting.splice(index, 1);
      this.#running.set(item.id, item);
      busy.add(item.project);
      started.push(item);
    }
    return started;
  }

  /** A running task is over (finished, failed or cancelled): its project is free. */
  done(id: string): boolean {
    return this.#running.delete(id);
  }

  /**
   * Cancel a task. A waiting one is removed at once; a running one stays
   * running until the daemon has stopped it and calls `done`.
   */
  cancel(id: string): "queued" | "running" | undefined {
    const index = this.#waiting.findIndex((t) => t.id === id);
    if (index >= 0) {
      this.#waiting.splice(index, 1);
      return "queued";
    }
    return this.#running.has(id) ? "running" : undefined;
  }

  has(id: string): boolean {
    return this.#running.has(id) || this.#waiting.some((t) => t.id === id);
  }

  get(id: string): T | undefined {
    return this.#running.get(id) ?? this.#waiting.find((t) => t.id === id);
  }

  /** Waiting tasks, in the order they will be considered. */
  get waiting(): readonly T[] {
    return [...this.#waiting];
  }

  get running(): readonly T[] {
    return [...this.#running.values()];
  }

  get maxParallel(): number {
    return this.#maxParallel;
  }
}
