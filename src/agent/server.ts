/**
 * The agent daemon's socket server: the agent's socket (0600, plus an ACL for
 * the town's mayor: `ls -la` and `getfacl` tell who can talk to it), the
 * agent protocol's frames (docs/agent-protocol.md), and its peers'
 * subscriptions. What a frame asks is done by the task runner; this only
 * validates, answers and fans the runner's events out, each fitted to a frame.
 */
import { chmod, mkdir, rm } from "node:fs/promises";
import net from "node:net";
import { RefusedError } from "../errors.ts";
import { readPasswd } from "../os/etc.ts";
import { type Runner, systemRunner } from "../os/process.ts";
import { formatProblem } from "../town/problems.ts";
import { missingHumanAccounts } from "../town/rules.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { ClientFrameSchema, parseFrame } from "./frames.ts";
import {
  AGENT_PROTOCOL_VERSION,
  type AgentStatus,
  clip,
  encodeFrame,
  isTaskEnd,
  LineSplitter,
  MAX_FRAME_BYTES,
  type TaskEvent,
  type TaskInfo,
} from "./protocol.ts";
import type { TaskRunner } from "./runner.ts";

/** What the server asks of the task runner (a stand-in in its tests). */
export type TaskSource = Pick<
  TaskRunner,
  "stopping" | "listen" | "submit" | "find" | "list" | "active" | "cancel" | "status"
>;

export interface AgentServerOptions {
  readonly town: ResolvedTown;
  readonly agent: ResolvedAgent;
  readonly tasks: TaskSource;
  /** Runs setfacl. */
  readonly runner?: Runner;
  readonly clock?: () => Date;
  readonly log?: (line: string) => void;
  /** Problems that do not stop the server (no ACL for the mayor). */
  readonly warn?: (message: string) => void;
  /** Every warning so far, for `status`. */
  readonly warnings?: () => readonly string[];
  /** More for `status` (the agent's chat presence, when it runs in this process). */
  readonly extraStatus?: () => Partial<AgentStatus>;
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

export class AgentServer {
  readonly #o: AgentServerOptions;
  readonly #tasks: TaskSource;
  readonly #runner: Runner;
  readonly #clock: () => Date;
  readonly #log: (line: string) => void;
  readonly #warn: (message: string) => void;
  readonly #connections = new Set<Connection>();
  #server: net.Server | undefined;
  #closed: Promise<void> = Promise.resolve();
  #unlisten: (() => void) | undefined;
  #startedAt = "";

  constructor(options: AgentServerOptions) {
    this.#o = options;
    this.#tasks = options.tasks;
    this.#runner = options.runner ?? systemRunner;
    this.#clock = options.clock ?? (() => new Date());
    this.#log = options.log ?? (() => {});
    this.#warn = options.warn ?? ((message) => this.#log(`warning: ${message}`));
  }

  get socketPath(): string {
    return this.#o.agent.socket;
  }

  /** Listen on the agent's socket, private, then hand it to the mayor. */
  async start(): Promise<void> {
    const agent = this.#o.agent;
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
    this.#unlisten = this.#tasks.listen((event) => this.#onEvent(event));
    await chmod(agent.socket, 0o600);
    await this.#grantMayor();
    this.#startedAt = this.#clock().toISOString();
  }

  /** Take no new connections; the ones open stay until `stop` (they hear their tasks end). */
  close(): void {
    const server = this.#server;
    this.#closed = new Promise<void>((resolve) => {
      if (server) server.close(() => resolve());
      else resolve();
    });
  }

  /** Close the socket and every connection, and remove the socket file. */
  async stop(): Promise<void> {
    if (this.#server?.listening) this.close();
    this.#unlisten?.();
    for (const connection of this.#connections) connection.socket.end();
    for (const connection of this.#connections) connection.socket.destroy();
    await this.#closed;
    await rm(this.#o.agent.socket, { force: true });
  }

  async #grantMayor(): Promise<void> {
    const { town, agent } = this.#o;
    const mayor = town.mayor;
    if (!mayor) {
      this.#warn(`no mayor is declared: only ${agent.name} can reach ${agent.socket}`);
      return;
    }
    // setfacl would only say "Invalid argument near character 3".
    const users = await readPasswd().catch(() => undefined);
    if (users && !users.some((u) => u.name === mayor.unixUser)) {
      const [problem] = missingHumanAccounts(town, (name) => name !== mayor.unixUser);
      this.#warn(
        `only ${agent.name} can reach ${agent.socket}: ${problem ? formatProblem(problem) : `no Unix account "${mayor.unixUser}" on this host`}`,
      );
      return;
    }
    try {
      const result = await this.#runner.run(
        town.install.setfacl,
        ["-m", `u:${mayor.unixUser}:rw`, agent.socket],
        { allowFailure: true },
      );
      if (result.code !== 0)
        this.#warn(
          `the mayor ${mayor.unixUser} cannot reach ${agent.socket}: setfacl failed: ${result.stderr.trim()}`,
        );
    } catch (error) {
      this.#warn(
        `the mayor ${mayor.unixUser} cannot reach ${agent.socket}: ${(error as Error).message}`,
      );
    }
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

  #send(connection: Connection, frame: Frame): void {
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

  #onEvent(event: TaskEvent): void {
    const frame = fitEvent({ type: "event", ...event });
    for (const connection of this.#connections) {
      if (connection.all || connection.tasks.has(event.id)) this.#send(connection, frame);
    }
    if (isTaskEnd(event))
      for (const connection of this.#connections) connection.tasks.delete(event.id);
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
          fitList({ type: "tasks", ...ref }, "tasks", this.#tasks.list()),
        );
      case "task": {
        if (this.#tasks.stopping)
          return void this.#send(connection, {
            type: "error",
            ...ref,
            error: "the agent daemon is stopping",
          });
        const { project, prompt, branch, mode, source, replyTo } = frame;
        this.#tasks.submit({ project, prompt, branch, mode, source, replyTo }, (task, position) => {
          // The reply goes first: a watching client learns the id before any event of the task.
          this.#send(connection, { type: "accepted", ...ref, task, position });
          if (frame.watch) connection.tasks.add(task.id);
        });
        return;
      }
      case "cancel": {
        const { reply, then } = this.#tasks.cancel(frame.id);
        this.#send(connection, { ...reply, ...ref });
        then?.();
        return;
      }
      case "subscribe": {
        if (frame.task !== undefined) {
          const task = this.#tasks.find(frame.task);
          if (!task)
            return void this.#send(connection, {
              type: "error",
              ...ref,
              error: `no task ${frame.task}`,
            });
          connection.tasks.add(task.id);
          return void this.#send(connection, { type: "subscribed", ...ref, tasks: [task] });
        }
        connection.all = true;
        return void this.#send(
          connection,
          fitList({ type: "subscribed", ...ref }, "tasks", this.#tasks.active()),
        );
      }
    }
  }

  async #statusOf(): Promise<AgentStatus> {
    const agent = this.#o.agent;
    return {
      agent: { name: agent.name, uid: agent.uid, role: agent.role },
      pid: process.pid,
      protocol: AGENT_PROTOCOL_VERSION,
      startedAt: this.#startedAt,
      ...(await this.#tasks.status()),
      warnings: [...(this.#o.warnings?.() ?? [])],
      ...this.#o.extraStatus?.(),
    };
  }
}

type Frame = { type: string; [key: string]: unknown };

function fits(frame: Frame): boolean {
  return Buffer.byteLength(encodeFrame(frame)) <= MAX_FRAME_BYTES;
}

/** A reply listing items, cut to fit one frame; `more` says how many were left off. */
export function fitList(head: Frame, key: string, items: readonly unknown[]): Frame {
  let kept = items.length;
  let frame: Frame = { ...head, [key]: items };
  while (!fits(frame) && kept > 0) {
    kept = Math.floor(kept / 2);
    frame = { ...head, [key]: items.slice(0, kept), more: items.length - kept };
  }
  return frame;
}

/** A status, its queue (then what runs, then its warnings) cut to fit one frame. */
export function fitStatus(frame: Frame): Frame {
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
export function fitEvent(frame: Frame): Frame {
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
