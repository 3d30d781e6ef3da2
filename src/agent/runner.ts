/**
 * The agent daemon's task runner: the queue (one task at a time per project,
 * projects side by side up to runtime.maxParallel), each task's workspace,
 * its runtime, the cgroup that keeps its processes together, and the history
 * every task that ends is appended to. It knows nothing of sockets: it takes
 * requests and says what happens through one event listener (the socket
 * server fans events out to its subscribers). A task that fails in any way is
 * a report, never a dead runner.
 */
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { type Runner, systemRunner } from "../os/process.ts";
import type { ResolvedAgent } from "../town/types.ts";
import { TaskContainment } from "./containment.ts";
import {
  type AgentStatus,
  ANSWER_CHUNK_BYTES,
  capReport,
  chunkText,
  clip,
  clipBytes,
  type FailureReason,
  PROMPT_PREVIEW_CHARS,
  type TaskEvent,
  type TaskInfo,
  type TaskMode,
  type TaskState,
  type WorkspaceReport,
} from "./protocol.ts";
import { TaskQueue } from "./queue.ts";
import {
  createRuntime,
  type Runtime,
  RuntimeFailure,
  type RuntimeResult,
  type SessionStore,
  TaskAborted,
} from "./runtimes/index.ts";
import { tmuxSessionName } from "./runtimes/tmux.ts";
import { FileSessionStore, TaskHistory } from "./sessions.ts";
import {
  inspectWorkspace,
  knownProjects,
  PROJECTS_DIR,
  persistenceWarning,
  prepareWorkspace,
  WorkspaceError,
} from "./workspace.ts";

export interface TaskRunnerOptions {
  readonly agent: ResolvedAgent;
  /** Runs git and tmux. */
  readonly runner?: Runner;
  /** Default: the agent's declared runtime. */
  readonly runtime?: Runtime;
  readonly sessions?: SessionStore;
  readonly clock?: () => Date;
  /** One line per thing worth knowing (journald). */
  readonly log?: (line: string) => void;
  /** The environment runtimes and git start from. */
  readonly env?: NodeJS.ProcessEnv;
  /** Between SIGTERM and SIGKILL when a runtime is stopped. */
  readonly killGraceMs?: number;
  /** How each task's processes are kept together. @default a cgroup per task when the daemon's is delegated */
  readonly containment?: TaskContainment;
  /** Problems that do not stop the runner (projects not persisted, no cgroup). */
  readonly warn?: (message: string) => void;
}

/** What a client asks the runner to do (validated already: frames.ts). */
export interface NewTask {
  readonly project: string;
  readonly prompt: string;
  readonly branch?: string | undefined;
  readonly mode: TaskMode;
  readonly source?: string | undefined;
  readonly replyTo?: string | undefined;
}

/** An event as the runner emits it: whole, before any fitting to a frame. */
export type RunnerEvent = TaskEvent;

/** The reply to a cancel request, and what to do once it is sent. */
export interface CancelReply {
  readonly reply: { type: string; [key: string]: unknown };
  readonly then?: () => void;
}

interface TaskRecord {
  readonly id: string;
  readonly project: string;
  readonly prompt: string;
  readonly branch?: string;
  readonly mode: TaskMode;
  readonly source?: string;
  readonly replyTo?: string;
  readonly queuedAt: string;
  readonly controller: AbortController;
  state: TaskState;
  startedAt?: string;
  endedAt?: string;
  workspace?: string;
  workBranch?: string;
  tmuxSession?: string;
  cancelReason?: string;
}

/** Ended tasks remembered for `list`, `cancel` and `subscribe`. */
const RECENT_TASKS = 50;

export class TaskRunner {
  readonly #agent: ResolvedAgent;
  readonly #runner: Runner;
  readonly #runtime: Runtime;
  readonly #clock: () => Date;
  readonly #log: (line: string) => void;
  readonly #warn: (message: string) => void;
  readonly #env: NodeJS.ProcessEnv;
  readonly #queue: TaskQueue<TaskRecord>;
  readonly #history: TaskHistory;
  readonly #recent: TaskRecord[] = [];
  readonly #running = new Set<Promise<void>>();
  readonly #listeners = new Set<(event: RunnerEvent) => void>();
  readonly #idle = new Set<() => void>();
  #containment: TaskContainment | undefined;
  #stopping = false;

  constructor(options: TaskRunnerOptions) {
    this.#agent = options.agent;
    this.#runner = options.runner ?? systemRunner;
    this.#clock = options.clock ?? (() => new Date());
    this.#log = options.log ?? (() => {});
    this.#warn = options.warn ?? ((message) => this.#log(`warning: ${message}`));
    this.#env = options.env ?? process.env;
    this.#queue = new TaskQueue(options.agent.runtime.maxParallel);
    this.#containment = options.containment;
    this.#history = new TaskHistory(path.join(options.agent.stateDir, "tasks.jsonl"));
    this.#runtime =
      options.runtime ??
      createRuntime(options.agent, {
        runner: this.#runner,
        sessions:
          options.sessions ??
          new FileSessionStore(path.join(options.agent.stateDir, "sessions.json"), this.#clock),
        env: this.#env,
        scratchDir: path.join(options.agent.runtimeDir, "tasks"),
        ...(options.killGraceMs !== undefined && { killGraceMs: options.killGraceMs }),
      });
  }

  /** Whether it still takes tasks. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** Tasks running or waiting. */
  get pending(): number {
    return this.#queue.running.length + this.#queue.waiting.length;
  }

  /** The agent's state directory; a project that is not persisted is said once. */
  async prepare(): Promise<void> {
    const agent = this.#agent;
    const persistence = persistenceWarning(agent, path.join(agent.home, PROJECTS_DIR));
    if (persistence) this.#warn(persistence);
    await mkdir(agent.stateDir, { recursive: true, mode: 0o700 });
  }

  /** How tasks' processes are kept together (a cgroup each when the daemon's is delegated). */
  async detectContainment(): Promise<void> {
    this.#containment ??= await TaskContainment.detect();
    if (this.#containment.cgroup !== undefined) this.#log(this.#containment.describe());
    else this.#warn(this.#containment.describe());
  }

  /** Every event of every task, in order; returns the unsubscribe. */
  listen(listener: (event: RunnerEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Queue a task. `accepted` runs before any event of it (a client learns the
   * id, and may subscribe, before it hears of the task).
   */
  submit(request: NewTask, accepted?: (task: TaskInfo, position: number) => void): TaskInfo {
    if (this.#stopping) throw new Error("the agent daemon is stopping");
    const task: TaskRecord = {
      id: randomBytes(4).toString("hex"),
      project: request.project,
      prompt: request.prompt,
      ...(request.branch !== undefined && { branch: request.branch }),
      mode: request.mode,
      ...(request.source !== undefined && { source: request.source }),
      ...(request.replyTo !== undefined && { replyTo: request.replyTo }),
      queuedAt: this.#clock().toISOString(),
      controller: new AbortController(),
      state: "queued",
    };
    const position = this.#queue.add(task);
    accepted?.(this.#info(task), position);
    this.#log(
      `task ${task.id} queued: project ${task.project}, ${task.mode}${task.source ? `, from ${task.source}` : ""}`,
    );
    this.#emit(task, { event: "task.queued", task: this.#info(task), position });
    this.#pump();
    return this.#info(task);
  }

  /** A task queued, running or recently ended. */
  find(id: string): TaskInfo | undefined {
    const task = this.#queue.get(id) ?? this.#recent.find((t) => t.id === id);
    return task && this.#info(task);
  }

  /** Running, then waiting, then recently ended tasks. */
  list(): TaskInfo[] {
    return [...this.active(), ...this.#recent.map((t) => this.#info(t))];
  }

  /** Running, then waiting tasks. */
  active(): TaskInfo[] {
    return [...this.#queue.running, ...this.#queue.waiting].map((t) => this.#info(t));
  }

  cancel(id: string): CancelReply {
    const task = this.#queue.get(id);
    const was = task && this.#queue.cancel(id);
    if (!task || !was) {
      const ended = this.#recent.find((t) => t.id === id);
      return {
        reply: {
          type: "error",
          error: ended ? `task ${id} already ended (${ended.state})` : `no task ${id}`,
        },
      };
    }
    task.cancelReason = "cancelled by request";
    const then =
      was === "queued"
        ? () => void this.#end(task, "cancelled", {})
        : () => {
            this.#log(`task ${id} cancelling: stopping its runtime`);
            task.controller.abort();
          };
    return { reply: { type: "cancelled", id, was }, then };
  }

  /** The runner's part of the daemon's status. */
  async status(): Promise<Pick<AgentStatus, "runtime" | "running" | "queued" | "projects">> {
    const agent = this.#agent;
    return {
      runtime: {
        kind: agent.runtime.kind,
        command: agent.runtime.command,
        timeout: agent.runtime.timeout,
        maxParallel: agent.runtime.maxParallel,
      },
      running: this.#queue.running.map((t) => this.#info(t)),
      queued: this.#queue.waiting.map((t) => this.#info(t)),
      projects: await knownProjects(agent),
    };
  }

  /** Resolves once nothing runs or waits (at once when idle). */
  idle(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.add(resolve));
  }

  /** Stop taking work, cancel what is queued and running, and wait for it to end. */
  async stop(reason = "the agent daemon stopped"): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    for (const task of this.#queue.waiting) {
      this.#queue.cancel(task.id);
      task.cancelReason = reason;
      await this.#end(task, "cancelled", {});
    }
    for (const task of this.#queue.running) {
      task.cancelReason = reason;
      task.controller.abort();
    }
    await Promise.allSettled([...this.#running]);
  }

  // ---- tasks ---------------------------------------------------------------

  #info(task: TaskRecord): TaskInfo {
    return {
      id: task.id,
      project: task.project,
      prompt: clip(task.prompt, PROMPT_PREVIEW_CHARS),
      ...(task.branch !== undefined && { branch: task.branch }),
      mode: task.mode,
      ...(task.source !== undefined && { source: clip(task.source, 200) }),
      ...(task.replyTo !== undefined && { replyTo: clip(task.replyTo, 200) }),
      state: task.state,
      queuedAt: task.queuedAt,
      ...(task.startedAt !== undefined && { startedAt: task.startedAt }),
      ...(task.endedAt !== undefined && { endedAt: task.endedAt }),
      ...(task.workspace !== undefined && { workspace: task.workspace }),
      ...(task.workBranch !== undefined && { workBranch: task.workBranch }),
      ...(task.tmuxSession !== undefined && { tmuxSession: task.tmuxSession }),
    };
  }

  #emit(task: TaskRecord, event: DistributiveOmit<TaskEvent, "id" | "time">): void {
    const whole = {
      ...event,
      ...("report" in event && event.report && { report: capReport(event.report) }),
      id: task.id,
      time: this.#clock().toISOString(),
    } as TaskEvent;
    for (const listener of this.#listeners) {
      try {
        listener(whole);
      } catch (error) {
        this.#log(`internal: an event listener threw: ${(error as Error).message}`);
      }
    }
  }

  #pump(): void {
    if (this.#stopping) return;
    for (const task of this.#queue.take()) {
      const run = this.#run(task).catch((error: Error) =>
        this.#log(`internal: task ${task.id}: ${error.stack ?? error.message}`),
      );
      this.#running.add(run);
      void run.finally(() => this.#running.delete(run));
    }
  }

  #settled(): void {
    if (this.pending > 0) return;
    for (const resolve of this.#idle) resolve();
    this.#idle.clear();
  }

  async #run(task: TaskRecord): Promise<void> {
    const agent = this.#agent;
    const signal = task.controller.signal;
    task.state = "running";
    task.startedAt = this.#clock().toISOString();
    let report: WorkspaceReport | undefined;
    try {
      report = await prepareWorkspace(agent, task, {
        runner: this.#runner,
        env: this.#env,
        log: (line) => this.#log(`task ${task.id}: ${line}`),
      });
      if (signal.aborted) throw new TaskAborted();
      task.workspace = report.workspace;
      task.workBranch = report.branch;
      if (task.mode === "interactive") task.tmuxSession = tmuxSessionName(agent.name, task.project);
      this.#log(`task ${task.id} started in ${report.workspace} on ${report.branch}`);
      this.#emit(task, { event: "task.started", task: this.#info(task), report });

      this.#containment ??= await TaskContainment.detect();
      const processes = await this.#containment.forTask(task.id);
      this.#log(`task ${task.id}: its processes: ${processes.description}`);
      let result: RuntimeResult;
      try {
        result = await this.#runtime.run({
          task: {
            id: task.id,
            agent: agent.name,
            project: task.project,
            prompt: task.prompt,
            ...(task.branch !== undefined && { branch: task.branch }),
            mode: task.mode,
            ...(task.source !== undefined && { source: task.source }),
            ...(task.replyTo !== undefined && { replyTo: task.replyTo }),
          },
          workspace: report,
          emit: (text) => this.#emit(task, { event: "task.progress", text }),
          signal,
          processes,
        });
      } finally {
        // Whatever way the runtime ended, nothing it started outlives the task: gone (checked)
        // before the workspace is inspected and the end is told.
        const end = await processes.close();
        const { cgroup, marker } = end.killed;
        if (cgroup + marker > 0)
          this.#log(
            `task ${task.id}: killed ${cgroup + marker} process(es) it left behind` +
              (marker > 0
                ? ` (${marker} found by NUKETOWN_TASK_ID${processes.cgroup === undefined ? "" : ", outside its cgroup"})`
                : ""),
          );
        if (end.left.length > 0)
          this.#log(
            `warning: task ${task.id}: process(es) ${end.left.join(", ")} of it are still alive`,
          );
        if (end.cgroupLeft !== undefined)
          this.#log(`warning: task ${task.id}: cannot remove its cgroup ${end.cgroupLeft}`);
      }
      if (signal.aborted) throw new TaskAborted();
      const after = await this.#afterRun(report);
      await this.#end(task, "finished", {
        answer: result.answer,
        ...(after.commit !== undefined && { commit: after.commit }),
        report: after.report,
        ...(result.sessionId !== undefined && { sessionId: result.sessionId }),
      });
    } catch (error) {
      if (signal.aborted || error instanceof TaskAborted) {
        const after = report && (await this.#afterRun(report));
        await this.#end(task, "cancelled", after ? { report: after.report } : {});
      } else if (error instanceof WorkspaceError) {
        await this.#end(task, "failed", {
          reason: error.reason,
          error: error.message,
          ...(error.report && { report: fillReport(error.report) }),
        });
      } else if (error instanceof RuntimeFailure) {
        const after = report && (await this.#afterRun(report));
        await this.#end(task, "failed", {
          reason: error.reason,
          error: error.message,
          ...(error.exitCode !== undefined && { exitCode: error.exitCode }),
          ...(error.signal !== undefined && { signal: error.signal }),
          ...(error.stderr !== undefined && { stderr: error.stderr }),
          ...(after && { report: after.report }),
        });
      } else {
        this.#log(`internal: task ${task.id}: ${(error as Error).stack ?? String(error)}`);
        await this.#end(task, "failed", {
          reason: "internal",
          error: `internal error in the agent daemon: ${(error as Error).message}`,
        });
      }
    } finally {
      this.#queue.done(task.id);
      this.#pump();
      this.#settled();
    }
  }

  /** The workspace after the runtime: uncommitted changes are reported, never touched. */
  async #afterRun(report: WorkspaceReport): Promise<{ report: WorkspaceReport; commit?: string }> {
    try {
      const now = await inspectWorkspace(this.#agent, report.workspace, {
        runner: this.#runner,
        env: this.#env,
      });
      const warnings = [...report.warnings];
      if (now.dirty.length > 0)
        warnings.push(
          `${now.dirty.length} uncommitted change(s) left in ${report.workspace}: kept as they are`,
        );
      return {
        report: { ...report, branch: now.branch || report.branch, dirty: now.dirty, warnings },
        ...(now.commit !== undefined && { commit: now.commit }),
      };
    } catch {
      return { report };
    }
  }

  async #end(
    task: TaskRecord,
    state: "finished" | "failed" | "cancelled",
    details: {
      answer?: string;
      commit?: string;
      report?: WorkspaceReport;
      sessionId?: string;
      reason?: FailureReason;
      error?: string;
      exitCode?: number;
      signal?: string;
      stderr?: string;
    },
  ): Promise<void> {
    task.state = state;
    task.endedAt = this.#clock().toISOString();
    const info = this.#info(task);
    const report = details.report && { report: details.report };
    if (state === "finished") {
      const answer = details.answer ?? "";
      for (const text of chunkText(answer)) this.#emit(task, { event: "task.answer", text });
      const shown = clipBytes(answer, ANSWER_CHUNK_BYTES);
      this.#emit(task, {
        event: "task.finished",
        task: info,
        answer: shown.text,
        truncated: shown.truncated,
        ...(details.commit !== undefined && { commit: details.commit }),
        ...report,
        ...(details.sessionId !== undefined && { sessionId: details.sessionId }),
      });
      this.#log(
        `task ${task.id} finished${details.commit ? ` at ${details.commit.slice(0, 12)}` : ""}`,
      );
    } else if (state === "failed") {
      const stderr =
        details.stderr === undefined ? undefined : clipBytes(details.stderr, 4096).text;
      this.#emit(task, {
        event: "task.failed",
        task: info,
        reason: details.reason ?? "internal",
        error: clip(details.error ?? "failed", 4000),
        ...(details.exitCode !== undefined && { exitCode: details.exitCode }),
        ...(details.signal !== undefined && { signal: details.signal }),
        ...(stderr !== undefined && { stderr }),
        ...report,
      });
      this.#log(`task ${task.id} failed (${details.reason}): ${details.error}`);
    } else {
      const reason = task.cancelReason ?? "cancelled";
      this.#emit(task, { event: "task.cancelled", task: info, reason, ...report });
      this.#log(`task ${task.id} cancelled: ${reason}`);
    }
    this.#recent.unshift(task);
    this.#recent.length = Math.min(this.#recent.length, RECENT_TASKS);
    try {
      await this.#history.append({
        ...info,
        prompt: task.prompt,
        ...(task.source !== undefined && { source: task.source }),
        ...(task.replyTo !== undefined && { replyTo: task.replyTo }),
        ...details,
      });
    } catch (error) {
      this.#log(`warning: cannot append to ${this.#history.file}: ${(error as Error).message}`);
    }
    // A task cancelled while queued never ran: its end may be the last thing pending.
    if (state === "cancelled" && task.startedAt === undefined) this.#settled();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function fillReport(partial: Partial<WorkspaceReport>): WorkspaceReport {
  return {
    workspace: partial.workspace ?? "",
    branch: partial.branch ?? "",
    created: partial.created ?? false,
    cloned: partial.cloned ?? false,
    dirty: partial.dirty ?? [],
    warnings: partial.warnings ?? [],
  };
}
