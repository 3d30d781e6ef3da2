/**
 * `nuketown agent <name>`: the agent daemon, one per agent, running as the
 * agent. It listens on the agent's socket (0600, plus an ACL for the town's
 * mayor: `ls -la` and `getfacl` tell who can talk to it), queues tasks (one
 * at a time per project, projects side by side up to runtime.maxParallel),
 * prepares each task's workspace, runs the runtime, streams progress to
 * subscribers, and appends every task that ends to its history. A task that
 * fails in any way is a report, never a dead daemon.
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { RefusedError } from "../errors.ts";
import { readPasswd } from "../os/etc.ts";
import { type Runner, systemRunner } from "../os/process.ts";
import { printable } from "../output.ts";
import { formatProblem } from "../town/problems.ts";
import { missingHumanAccounts } from "../town/rules.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { TaskContainment } from "./containment.ts";
import { ClientFrameSchema, parseFrame } from "./frames.ts";
import {
  AGENT_PROTOCOL_VERSION,
  type AgentStatus,
  ANSWER_CHUNK_BYTES,
  capReport,
  chunkText,
  clip,
  clipBytes,
  encodeFrame,
  type FailureReason,
  LineSplitter,
  MAX_FRAME_BYTES,
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

export interface AgentDaemonOptions {
  readonly town: ResolvedTown;
  readonly agent: ResolvedAgent;
  /** Runs git, setfacl and tmux. */
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

interface Connection {
  readonly socket: net.Socket;
  /** Subscribed to every task's events. */
  all: boolean;
  /** Subscribed to these tasks' events. */
  readonly tasks: Set<string>;
}

/** A subscriber this far behind is dropped rather than buffered without end. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
/** Ended tasks remembered for `list`, `cancel` and `subscribe`. */
const RECENT_TASKS = 50;

export class AgentDaemon {
  readonly #town: ResolvedTown;
  readonly #agent: ResolvedAgent;
  readonly #runner: Runner;
  readonly #runtime: Runtime;
  readonly #clock: () => Date;
  readonly #log: (line: string) => void;
  readonly #env: NodeJS.ProcessEnv;
  readonly #queue: TaskQueue<TaskRecord>;
  readonly #history: TaskHistory;
  readonly #recent: TaskRecord[] = [];
  readonly #connections = new Set<Connection>();
  readonly #running = new Set<Promise<void>>();
  readonly #warnings: string[] = [];
  #containment: TaskContainment | undefined;
  #server: net.Server | undefined;
  #startedAt = "";
  #stopping = false;

  constructor(options: AgentDaemonOptions) {
    this.#town = options.town;
    this.#agent = options.agent;
    this.#runner = options.runner ?? systemRunner;
    this.#clock = options.clock ?? (() => new Date());
    const log = options.log ?? (() => {});
    // Lines carry text others chose (a task's source and project, a runtime's error): one line
    // each, with control characters escaped, so none can forge a log line or drive a terminal.
    this.#log = (line) => log(printable(line).replace(/\n/g, "\\n"));
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

  get socketPath(): string {
    return this.#agent.socket;
  }

  /** Problems that do not stop the daemon (no ACL for the mayor, projects not persisted). */
  get warnings(): readonly string[] {
    return this.#warnings;
  }

  async start(): Promise<void> {
    const agent = this.#agent;
    const persistence = persistenceWarning(agent, path.join(agent.home, PROJECTS_DIR));
    if (persistence) this.#warn(persistence);
    await mkdir(agent.stateDir, { recursive: true, mode: 0o700 });
    try {
      await mkdir(agent.runtimeDir, { recursive: true, mode: 0o711 });
    } catch (error) {
      throw new RefusedError(
        `cannot create ${agent.runtimeDir} (${(error as NodeJS.ErrnoException).code}): ` +
          "nuketown apply (or the boot-time reset) makes it for the agent; run it first",
      );
    }
    if (await isListening(agent.socket))
      throw new RefusedError(`another agent daemon already listens on ${agent.socket}`);
    await rm(agent.socket, { force: true });

    const server = net.createServer((socket) => this.#serve(socket));
    this.#server = server;
    // Created private: nobody may connect between listen() and the chmod/ACL below.
    const umask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(agent.socket, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } finally {
      process.umask(umask);
    }
    await chmod(agent.socket, 0o600);
    await this.#grantMayor();
    this.#containment ??= await TaskContainment.detect();
    if (this.#containment.cgroup !== undefined) this.#log(this.#containment.describe());
    else this.#warn(this.#containment.describe());
    this.#startedAt = this.#clock().toISOString();
    this.#log(
      `listening on ${agent.socket} (runtime ${agent.runtime.kind}, up to ${agent.runtime.maxParallel} projects at a time)`,
    );
  }

  /** Stop taking work, cancel what is queued and running, and close the socket. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    const closed = new Promise<void>((resolve) => {
      if (this.#server) this.#server.close(() => resolve());
      else resolve();
    });
    for (const task of this.#queue.waiting) {
      this.#queue.cancel(task.id);
      task.cancelReason = "the agent daemon stopped";
      await this.#end(task, "cancelled", {});
    }
    for (const task of this.#queue.running) {
      task.cancelReason = "the agent daemon stopped";
      task.controller.abort();
    }
    await Promise.allSettled([...this.#running]);
    for (const connection of this.#connections) connection.socket.end();
    for (const connection of this.#connections) connection.socket.destroy();
    await closed;
    await rm(this.#agent.socket, { force: true });
    this.#log("stopped");
  }

  async #grantMayor(): Promise<void> {
    const mayor = this.#town.mayor;
    if (!mayor) {
      this.#warn(`no mayor is declared: only ${this.#agent.name} can reach ${this.#agent.socket}`);
      return;
    }
    // setfacl would only say "Invalid argument near character 3".
    const users = await readPasswd().catch(() => undefined);
    if (users && !users.some((u) => u.name === mayor.unixUser)) {
      const [problem] = missingHumanAccounts(this.#town, (name) => name !== mayor.unixUser);
      this.#warn(
        `only ${this.#agent.name} can reach ${this.#agent.socket}: ${problem ? formatProblem(problem) : `no Unix account "${mayor.unixUser}" on this host`}`,
      );
      return;
    }
    try {
      const result = await this.#runner.run(
        this.#town.install.setfacl,
        ["-m", `u:${mayor.unixUser}:rw`, this.#agent.socket],
        { allowFailure: true },
      );
      if (result.code !== 0)
        this.#warn(
          `the mayor ${mayor.unixUser} cannot reach ${this.#agent.socket}: setfacl failed: ${result.stderr.trim()}`,
        );
    } catch (error) {
      this.#warn(
        `the mayor ${mayor.unixUser} cannot reach ${this.#agent.socket}: ${(error as Error).message}`,
      );
    }
  }

  #warn(message: string): void {
    this.#warnings.push(message);
    this.#log(`warning: ${message}`);
  }

  // ---- connections ---------------------------------------------------------

  #serve(socket: net.Socket): void {
    const connection: Connection = { socket, all: false, tasks: new Set() };
    this.#connections.add(connection);
    socket.setEncoding("utf8");
    const splitter = new LineSplitter(
      (line) => this.#onLine(connection, line),
      () =>
        this.#send(connection, {
          type: "error",
          error: `frame larger than ${MAX_FRAME_BYTES} bytes`,
        }),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => this.#connections.delete(connection));
  }

  #send(connection: Connection, frame: { type: string; [key: string]: unknown }): void {
    const socket = connection.socket;
    if (socket.destroyed || !socket.writable) return;
    let line = encodeFrame(frame);
    if (Buffer.byteLength(line) > MAX_FRAME_BYTES) {
      this.#log(`internal: a ${frame.type} frame was too large to send`);
      // An event is fitted before it gets here; one that still does not fit is dropped, never
      // replaced by an error nobody asked for.
      if (frame.type === "event") return;
      line = encodeFrame({
        type: "error",
        ...(typeof frame.ref === "string" && { ref: frame.ref }),
        error: `internal: the ${frame.type} reply was larger than a frame`,
      });
    }
    socket.write(line);
    if (socket.writableLength > MAX_BUFFERED_BYTES) {
      this.#log("dropping a subscriber that does not read its events");
      socket.destroy();
    }
  }

  #onLine(connection: Connection, line: string): undefined {
    const parsed = parseFrame(line, ClientFrameSchema);
    if (!parsed.ok) {
      const ref = refOf(line);
      return void this.#send(connection, {
        type: "error",
        ...(ref !== undefined && { ref }),
        error: parsed.error,
      });
    }
    const frame = parsed.frame;
    const ref = frame.ref === undefined ? {} : { ref: frame.ref };
    switch (frame.type) {
      case "status":
        this.#statusOf()
          .then((status) =>
            this.#send(connection, fitStatus({ type: "status", ...ref, ...status })),
          )
          .catch((error: Error) =>
            this.#send(connection, { type: "error", ...ref, error: `internal: ${error.message}` }),
          );
        return;
      case "list":
        return void this.#send(
          connection,
          fitList({ type: "tasks", ...ref }, "tasks", [
            ...this.#queue.running.map((t) => this.#info(t)),
            ...this.#queue.waiting.map((t) => this.#info(t)),
            ...this.#recent.map((t) => this.#info(t)),
          ]),
        );
      case "task": {
        if (this.#stopping)
          return void this.#send(connection, {
            type: "error",
            ...ref,
            error: "the agent daemon is stopping",
          });
        const task: TaskRecord = {
          id: randomBytes(4).toString("hex"),
          project: frame.project,
          prompt: frame.prompt,
          ...(frame.branch !== undefined && { branch: frame.branch }),
          mode: frame.mode,
          ...(frame.source !== undefined && { source: frame.source }),
          ...(frame.replyTo !== undefined && { replyTo: frame.replyTo }),
          queuedAt: this.#clock().toISOString(),
          controller: new AbortController(),
          state: "queued",
        };
        const position = this.#queue.add(task);
        // The reply goes first: a watching client learns the id before any event of the task.
        this.#send(connection, { type: "accepted", ...ref, task: this.#info(task), position });
        if (frame.watch) connection.tasks.add(task.id);
        this.#log(
          `task ${task.id} queued: project ${task.project}, ${task.mode}${task.source ? `, from ${task.source}` : ""}`,
        );
        this.#emit(task, { event: "task.queued", task: this.#info(task), position });
        this.#pump();
        return;
      }
      case "cancel": {
        const { reply, then } = this.#cancel(frame.id);
        this.#send(connection, { ...reply, ...ref });
        then?.();
        return;
      }
      case "subscribe": {
        if (frame.task !== undefined) {
          const task = this.#queue.get(frame.task) ?? this.#recent.find((t) => t.id === frame.task);
          if (!task)
            return void this.#send(connection, {
              type: "error",
              ...ref,
              error: `no task ${frame.task}`,
            });
          connection.tasks.add(task.id);
          return void this.#send(connection, {
            type: "subscribed",
            ...ref,
            tasks: [this.#info(task)],
          });
        }
        connection.all = true;
        return void this.#send(
          connection,
          fitList(
            { type: "subscribed", ...ref },
            "tasks",
            [...this.#queue.running, ...this.#queue.waiting].map((t) => this.#info(t)),
          ),
        );
      }
    }
  }

  /** The reply to a cancel request, and what to do once it is sent. */
  #cancel(id: string): { reply: { type: string; [key: string]: unknown }; then?: () => void } {
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

  async #statusOf(): Promise<AgentStatus> {
    const agent = this.#agent;
    return {
      agent: { name: agent.name, uid: agent.uid, role: agent.role },
      pid: process.pid,
      protocol: AGENT_PROTOCOL_VERSION,
      startedAt: this.#startedAt,
      runtime: {
        kind: agent.runtime.kind,
        command: agent.runtime.command,
        timeout: agent.runtime.timeout,
        maxParallel: agent.runtime.maxParallel,
      },
      running: this.#queue.running.map((t) => this.#info(t)),
      queued: this.#queue.waiting.map((t) => this.#info(t)),
      projects: await knownProjects(agent),
      warnings: [...this.#warnings],
    };
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
    const frame = fitEvent({
      type: "event",
      ...event,
      ...("report" in event && event.report && { report: capReport(event.report) }),
      id: task.id,
      time: this.#clock().toISOString(),
    });
    for (const connection of this.#connections) {
      if (connection.all || connection.tasks.has(task.id)) this.#send(connection, frame);
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
    for (const connection of this.#connections) connection.tasks.delete(task.id);
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

type Frame = { type: string; [key: string]: unknown };

function fits(frame: Frame): boolean {
  return Buffer.byteLength(encodeFrame(frame)) <= MAX_FRAME_BYTES;
}

/** A reply listing items, cut to fit one frame; `more` says how many were left off. */
function fitList(head: Frame, key: string, items: readonly unknown[]): Frame {
  let kept = items.length;
  let frame: Frame = { ...head, [key]: items };
  while (!fits(frame) && kept > 0) {
    kept = Math.floor(kept / 2);
    frame = { ...head, [key]: items.slice(0, kept), more: items.length - kept };
  }
  return frame;
}

/** A status, its queue (then what runs, then its warnings) cut to fit one frame. */
function fitStatus(frame: Frame): Frame {
  let fitted = frame;
  for (const key of ["queued", "running", "warnings", "projects"]) {
    if (fits(fitted)) break;
    const items = fitted[key] as readonly unknown[];
    const cut = fitList({ ...fitted }, key, items);
    const { more, ...rest } = cut;
    fitted = more === undefined ? rest : { ...rest, [`${key}More`]: more };
  }
  return fitted;
}

/**
 * An event cut to fit one frame: a client must see every task's end, so its
 * report goes first, then its answer, error and stderr shrink, then the task
 * description is cut to the bone.
 */
function fitEvent(frame: Frame): Frame {
  if (fits(frame)) return frame;
  let fitted: Frame = frame;
  if (fitted.report !== undefined) {
    const { report: _report, ...rest } = fitted;
    fitted = rest;
  }
  for (const key of ["answer", "stderr", "error", "text"]) {
    while (!fits(fitted) && typeof fitted[key] === "string" && (fitted[key] as string) !== "") {
      const text = fitted[key] as string;
      const half = Math.floor(text.length / 2);
      fitted = {
        ...fitted,
        [key]: half < 2 ? "" : clip(text, half),
        ...(key === "answer" && { truncated: true }),
      };
    }
  }
  if (!fits(fitted) && typeof fitted.task === "object" && fitted.task !== null) {
    const task = fitted.task as TaskInfo;
    fitted = {
      ...fitted,
      task: {
        id: task.id,
        project: task.project,
        prompt: clip(task.prompt, 100),
        mode: task.mode,
        state: task.state,
        queuedAt: task.queuedAt,
        ...(task.startedAt !== undefined && { startedAt: task.startedAt }),
        ...(task.endedAt !== undefined && { endedAt: task.endedAt }),
      },
    };
  }
  return fitted;
}

/** The `ref` of a frame that failed validation, so the error still reaches the right request. */
function refOf(line: string): string | undefined {
  try {
    const json = JSON.parse(line) as { ref?: unknown };
    return typeof json?.ref === "string" && json.ref.length <= 100 ? json.ref : undefined;
  } catch {
    return undefined;
  }
}

function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createConnection(socketPath);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
