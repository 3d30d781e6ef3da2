/**
 * `nuketown agent <name>`: the agent daemon, one per agent, running as the
 * agent. Two parts, each testable on its own: the socket server (server.ts:
 * the agent's socket, the protocol's frames, subscribers) and the task runner
 * (runner.ts: the queue, workspaces, runtimes, a cgroup per task, history).
 * A task that fails in any way is a report, never a dead daemon.
 */
import { printable } from "../output.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import type { AgentStatus } from "./protocol.ts";
import { TaskRunner, type TaskRunnerOptions } from "./runner.ts";
import { AgentServer } from "./server.ts";

/** The task runner's options (its warnings are the daemon's), and what the server needs more. */
export interface AgentDaemonOptions extends Omit<TaskRunnerOptions, "warn"> {
  readonly town: ResolvedTown;
  /** More for `status` (the agent's chat presence, when it runs in this process). */
  readonly extraStatus?: () => Partial<AgentStatus>;
}

export class AgentDaemon {
  readonly #agent: ResolvedAgent;
  readonly #log: (line: string) => void;
  readonly #warnings: string[] = [];
  readonly tasks: TaskRunner;
  readonly server: AgentServer;
  #stopping = false;

  constructor(options: AgentDaemonOptions) {
    this.#agent = options.agent;
    const log = options.log ?? (() => {});
    // Lines carry text others chose (a task's source and project, a runtime's error): one line
    // each, with control characters escaped, so none can forge a log line or drive a terminal.
    this.#log = (line) => log(printable(line).replace(/\n/g, "\\n"));
    const warn = (message: string) => {
      this.#warnings.push(message);
      this.#log(`warning: ${message}`);
    };
    this.tasks = new TaskRunner({ ...options, log: this.#log, warn });
    this.server = new AgentServer({
      town: options.town,
      agent: options.agent,
      tasks: this.tasks,
      ...(options.runner !== undefined && { runner: options.runner }),
      ...(options.clock !== undefined && { clock: options.clock }),
      log: this.#log,
      warn,
      warnings: () => this.#warnings,
      ...(options.extraStatus !== undefined && { extraStatus: options.extraStatus }),
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
    await this.tasks.prepare();
    await this.server.start();
    await this.tasks.detectContainment();
    this.#log(
      `listening on ${agent.socket} (runtime ${agent.runtime.kind}, up to ${agent.runtime.maxParallel} projects at a time)`,
    );
  }

  /** Stop taking work, cancel what is queued and running, and close the socket. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    // No new peers; the ones connected hear their tasks cancelled before they are closed.
    this.server.close();
    await this.tasks.stop();
    await this.server.stop();
    this.#log("stopped");
  }
}
