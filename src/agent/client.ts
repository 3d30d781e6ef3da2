/**
 * A connection to an agent daemon: ask its status, list, send a task and
 * follow its events until it ends, cancel. What `nuketown talk`, the chat
 * bridges and the dashboard use to hand work to an agent.
 *
 *   const outcome = await runTask(agent.socket, { project: "site", prompt: "fix the footer" }, {
 *     onEvent: (e) => e.event === "task.progress" && console.log(e.text),
 *   });
 *   if (outcome.state === "finished") console.log(outcome.answer);
 */
import net from "node:net";
import { EXIT, NuketownError } from "../errors.ts";
import {
  type AgentStatus,
  encodeFrame,
  isTaskEnd,
  LineSplitter,
  MAX_FRAME_BYTES,
  type TaskEnd,
  type TaskEvent,
  type TaskInfo,
  type TaskRequest,
} from "./protocol.ts";

export type {
  AgentStatus,
  FailureReason,
  TaskEnd,
  TaskEvent,
  TaskInfo,
  TaskRequest,
  WorkspaceReport,
} from "./protocol.ts";

type Frame = { type: string; ref?: string; [key: string]: unknown };

/** The daemon answered a request with an error (a bad request, an unknown task…). */
export class AgentRequestError extends NuketownError {
  constructor(message: string) {
    super(message, EXIT.refused);
  }
}

export interface TaskOutcome {
  readonly id: string;
  readonly state: "finished" | "failed" | "cancelled";
  /** The whole answer (reassembled from `task.answer` events); empty unless finished. */
  readonly answer: string;
  /** The last event: task.finished, task.failed or task.cancelled, with every detail. */
  readonly end: TaskEnd;
}

export interface RunOptions {
  /** Every event of the task, in order, the final one included. */
  readonly onEvent?: (event: TaskEvent) => void;
  /** Aborting asks the daemon to cancel the task; the outcome then says cancelled. */
  readonly signal?: AbortSignal;
}

interface Pending {
  readonly resolve: (frame: Frame) => void;
  readonly reject: (error: Error) => void;
  /** Runs as the reply is read, before any later line: a watcher sees its task's first event. */
  readonly onReply?: (frame: Frame) => void;
}

interface Watch {
  readonly events: TaskEvent[];
  answer: string;
  onEvent?: (event: TaskEvent) => void;
  done?: (outcome: TaskOutcome) => void;
}

export class AgentClient {
  readonly #socket: net.Socket;
  readonly #pending = new Map<string, Pending>();
  readonly #watches = new Map<string, Watch>();
  #listener: ((event: TaskEvent) => void) | undefined;
  #nextRef = 1;
  #closed: Error | undefined;
  readonly #closeListeners = new Set<(error: Error) => void>();

  private constructor(socket: net.Socket, socketPath: string) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    const splitter = new LineSplitter(
      (line) => this.#onLine(line),
      () => socket.destroy(new Error("the agent daemon sent an oversized frame")),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      const error = new NuketownError(
        `the agent daemon at ${socketPath} closed the connection`,
        EXIT.refused,
      );
      this.#closed = error;
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
      for (const listener of this.#closeListeners) listener(error);
    });
  }

  /** Connect to an agent daemon's socket (`agent.socket` of the resolved town). */
  static connect(socketPath: string): Promise<AgentClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      socket.once("connect", () => resolve(new AgentClient(socket, socketPath)));
      socket.once("error", (error: NodeJS.ErrnoException) =>
        reject(connectError(socketPath, error)),
      );
    });
  }

  status(): Promise<AgentStatus> {
    return this.#request({ type: "status" }).then((frame) => {
      const { type: _type, ref: _ref, v: _v, ...status } = frame;
      return status as unknown as AgentStatus;
    });
  }

  /** Running, queued, then recently ended tasks. */
  async list(): Promise<TaskInfo[]> {
    return (await this.#request({ type: "list" })).tasks as TaskInfo[];
  }

  /** Queue a task and return at once; follow it with `subscribe` or use `run`. */
  async submit(request: TaskRequest): Promise<TaskInfo> {
    return (await this.#request({ type: "task", ...request })).task as TaskInfo;
  }

  /** Cancel a queued or running task; says which it was. A running task ends with task.cancelled. */
  async cancel(id: string): Promise<"queued" | "running"> {
    return (await this.#request({ type: "cancel", id })).was as "queued" | "running";
  }

  /**
   * Receive events: of one task, or of every task when `task` is absent.
   * Returns the tasks live right now (or the one task).
   */
  async subscribe(onEvent: (event: TaskEvent) => void, task?: string): Promise<TaskInfo[]> {
    this.#listener = onEvent;
    const reply = await this.#request({ type: "subscribe", ...(task !== undefined && { task }) });
    return reply.tasks as TaskInfo[];
  }

  /** Send a task and follow it until it ends. Failures are outcomes, not exceptions. */
  run(request: TaskRequest, options: RunOptions = {}): Promise<TaskOutcome> {
    return new Promise((resolve, reject) => {
      let id: string | undefined;
      const watch: Watch = {
        events: [],
        answer: "",
        ...(options.onEvent && { onEvent: options.onEvent }),
        done: (outcome) => {
          cleanup();
          resolve(outcome);
        },
      };
      const onClose = (error: Error) => {
        cleanup();
        reject(
          new NuketownError(
            `${error.message}${id ? ` before task ${id} ended` : ""}`,
            EXIT.refused,
          ),
        );
      };
      const onAbort = () => {
        if (id) this.cancel(id).catch(() => {});
      };
      const cleanup = () => {
        if (id) this.#watches.delete(id);
        this.#closeListeners.delete(onClose);
        options.signal?.removeEventListener("abort", onAbort);
      };
      this.#closeListeners.add(onClose);
      this.#request({ type: "task", ...request, watch: true }, (reply) => {
        if (reply.type !== "accepted") return;
        id = (reply.task as TaskInfo).id;
        this.#watches.set(id, watch);
      }).then(
        () => {
          if (options.signal?.aborted) onAbort();
          else options.signal?.addEventListener("abort", onAbort, { once: true });
        },
        (error: Error) => {
          cleanup();
          reject(error);
        },
      );
    });
  }

  /** Called once if the daemon goes away. */
  onClose(listener: (error: Error) => void): void {
    this.#closeListeners.add(listener);
  }

  close(): void {
    this.#socket.end();
  }

  #request(frame: { type: string; [key: string]: unknown }, onReply?: (frame: Frame) => void) {
    return new Promise<Frame>((resolve, reject) => {
      if (this.#closed) return reject(this.#closed);
      const ref = String(this.#nextRef++);
      const line = encodeFrame({ ...frame, ref });
      // The daemon could only answer an oversized frame with an error it cannot tie to a request.
      if (Buffer.byteLength(line) > MAX_FRAME_BYTES)
        return reject(
          new AgentRequestError(
            `the ${frame.type} request is larger than a frame (${MAX_FRAME_BYTES} bytes)`,
          ),
        );
      this.#pending.set(ref, { resolve, reject, ...(onReply && { onReply }) });
      this.#socket.write(line);
    });
  }

  #onLine(line: string): void {
    let frame: Frame;
    try {
      frame = JSON.parse(line) as Frame;
    } catch {
      return;
    }
    if (frame.type === "event") {
      this.#onEvent(frame as unknown as TaskEvent);
      return;
    }
    // A reply: to the request it names. Every request carries a ref and fits a frame, so a
    // ref-less error answers none of ours: handing it to whichever request is pending would
    // fail an unrelated one.
    const ref = typeof frame.ref === "string" ? frame.ref : undefined;
    const pending = ref === undefined ? undefined : this.#pending.get(ref);
    if (!pending || ref === undefined) return;
    this.#pending.delete(ref);
    pending.onReply?.(frame);
    if (frame.type === "error") pending.reject(new AgentRequestError(String(frame.error)));
    else pending.resolve(frame);
  }

  #onEvent(event: TaskEvent): void {
    this.#listener?.(event);
    const watch = this.#watches.get(event.id);
    if (!watch) return;
    watch.events.push(event);
    if (event.event === "task.answer") watch.answer += event.text;
    watch.onEvent?.(event);
    if (isTaskEnd(event)) {
      const state = event.event.slice("task.".length) as TaskOutcome["state"];
      watch.done?.({
        id: event.id,
        state,
        answer: state === "finished" ? watch.answer : "",
        end: event,
      });
    }
  }
}

/** Connect, send one task, follow it to its end, disconnect. */
export async function runTask(
  socketPath: string,
  request: TaskRequest,
  options: RunOptions = {},
): Promise<TaskOutcome> {
  const client = await AgentClient.connect(socketPath);
  try {
    return await client.run(request, options);
  } finally {
    client.close();
  }
}

/** Connect, ask for the status, disconnect. */
export async function agentStatus(socketPath: string): Promise<AgentStatus> {
  const client = await AgentClient.connect(socketPath);
  try {
    return await client.status();
  } finally {
    client.close();
  }
}

function connectError(socketPath: string, error: NodeJS.ErrnoException): NuketownError {
  switch (error.code) {
    case "EACCES":
      return new NuketownError(
        `${socketPath}: permission denied: only the agent and the town's mayor may talk to it (getfacl ${socketPath})`,
        EXIT.refused,
      );
    case "ENOENT":
    case "ECONNREFUSED":
      return new NuketownError(
        `no agent daemon is listening at ${socketPath} (${error.code}): is \`nuketown agent <name>\` running? (systemctl status nuketown-agent-<name>, or nuketown up)`,
        EXIT.missing,
      );
    default:
      return new NuketownError(
        `cannot reach the agent daemon at ${socketPath}: ${error.message}`,
        EXIT.refused,
      );
  }
}
