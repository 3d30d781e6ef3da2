/**
 * What every runtime (claude-code, codex, command) looks like to the daemon:
 * given a task and its prepared workspace, run it, stream progress, return
 * the answer, or throw a RuntimeFailure that becomes a failed-task report.
 */
import type { FailureReason, TaskMode, WorkspaceReport } from "../protocol.ts";

export interface RuntimeTask {
  readonly id: string;
  readonly agent: string;
  readonly project: string;
  readonly prompt: string;
  /** The branch asked for, if any (the one worked on is in the workspace report). */
  readonly branch?: string;
  readonly mode: TaskMode;
  readonly source?: string;
  readonly replyTo?: string;
}

export interface RunContext {
  readonly task: RuntimeTask;
  readonly workspace: WorkspaceReport;
  /** A progress line for the task's subscribers. */
  readonly emit: (text: string) => void;
  /** Aborted when the task is cancelled or the daemon stops. */
  readonly signal: AbortSignal;
  /** Where the task's processes are kept; without it, only the runtime's process group. */
  readonly processes?: TaskProcesses;
}

/**
 * A task's processes, all of them, whatever setsid or double fork they did
 * (a cgroup of the task's own, else a scan for its marker: src/agent/containment.ts).
 */
export interface TaskProcesses {
  /** The task cgroup's cgroup.procs: the runtime's first process writes its pid here before exec. */
  readonly joinFile?: string;
  /** Send a signal to every process of the task (SIGKILL: at once where a cgroup holds them). */
  signal(signal: NodeJS.Signals): Promise<void>;
}

export interface RuntimeResult {
  readonly answer: string;
  /** The runtime's conversation id, stored so the next task of the conversation resumes it. */
  readonly sessionId?: string;
  readonly tmuxSession?: string;
}

export interface Runtime {
  readonly kind: string;
  run(context: RunContext): Promise<RuntimeResult>;
}

export type RuntimeFailureReason = Extract<
  FailureReason,
  "missing-runtime" | "crashed" | "timeout" | "runtime-error" | "refused" | "auth"
>;

export class RuntimeFailure extends Error {
  readonly reason: RuntimeFailureReason;
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stderr: string | undefined;
  constructor(
    reason: RuntimeFailureReason,
    message: string,
    details: { exitCode?: number | null; signal?: string | null; stderr?: string } = {},
  ) {
    super(message);
    this.name = "RuntimeFailure";
    this.reason = reason;
    this.exitCode = details.exitCode ?? undefined;
    this.signal = details.signal ?? undefined;
    this.stderr = details.stderr || undefined;
  }
}

/** The task was cancelled (or the daemon is stopping) and its process is gone. */
export class TaskAborted extends Error {
  constructor() {
    super("cancelled");
    this.name = "TaskAborted";
  }
}

/** One line of a runtime's stdout, understood. */
export type RuntimeOutput =
  | { readonly type: "progress"; readonly text: string }
  | { readonly type: "answer"; readonly text: string }
  | { readonly type: "session"; readonly id: string }
  | { readonly type: "error"; readonly text: string; readonly why?: ErrorKind };

/**
 * What kind of error a runtime reported, when its output says: its tools were
 * refused by its permission settings, the vendor refused its credentials, or
 * the session asked to resume is unknown to it (then the task is retried once
 * in a new session).
 */
export type ErrorKind = "refused" | "auth" | "unknown-session";

/** Turns a runtime's stdout lines into progress, answer, session and error outputs. */
export interface OutputParser {
  line(line: string): RuntimeOutput[];
  /** After the last line: what the stream as a whole says (an error nobody recovered from). */
  end?(): RuntimeOutput[];
}

/** Conversation → runtime session id, kept under the agent's state dir. */
export interface SessionStore {
  get(key: string): Promise<string | undefined>;
  set(key: string, id: string): Promise<void>;
  /** The session cannot be resumed (its runtime's state went with a reset): start afresh. */
  forget?(key: string): Promise<void>;
}
