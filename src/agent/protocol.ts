/**
 * The agent protocol (docs/agent-protocol.md): version 1, newline-delimited
 * JSON frames on the agent daemon's socket. Framing is the approval
 * protocol's (same version field, same 64 KiB frame limit, same splitter);
 * what is said in the frames is defined here. Pure: no I/O.
 */
import {
  encodeFrame,
  LineSplitter,
  MAX_FRAME_BYTES,
  type ParsedFrame,
  PROTOCOL_VERSION,
} from "../wire/framing.ts";

export { encodeFrame, LineSplitter, MAX_FRAME_BYTES, type ParsedFrame };

/** The agent protocol speaks the framing's version; both are 1. */
export const AGENT_PROTOCOL_VERSION = PROTOCOL_VERSION;

/** A prompt must fit in one frame with room for the rest of it. */
export const MAX_PROMPT_CHARS = 48 * 1024;
/**
 * Answer text per `task.answer` event (the whole answer is their
 * concatenation), and the most `task.finished` repeats: even escaped six-fold
 * by JSON, it fits one frame.
 */
export const ANSWER_CHUNK_BYTES = 8 * 1024;
/** Prompts in task descriptions (events, lists) are cut to this; the history keeps them whole. */
export const PROMPT_PREVIEW_CHARS = 500;
/** Longest progress line sent to clients (longer lines are cut with "…"). */
export const MAX_PROGRESS_CHARS = 4000;
/** Uncommitted changes listed in a report sent to clients; `dirtyCount` says how many there are. */
export const MAX_DIRTY_LINES = 200;

/** A report cut to what a frame can carry: the first MAX_DIRTY_LINES changes (each clipped) and their count. */
export function capReport(report: WorkspaceReport): WorkspaceReport {
  const { dirtyCount: _count, ...rest } = report;
  const lines = report.dirty.length > MAX_DIRTY_LINES;
  const dirty = report.dirty.slice(0, MAX_DIRTY_LINES).map((line) => clip(line, 200));
  const warnings = report.warnings.slice(0, 20).map((line) => clip(line, 1000));
  return { ...rest, dirty, warnings, ...(lines && { dirtyCount: report.dirty.length }) };
}

export const TASK_MODES = ["batch", "interactive"] as const;
export type TaskMode = (typeof TASK_MODES)[number];

export const TASK_STATES = ["queued", "running", "finished", "failed", "cancelled"] as const;
export type TaskState = (typeof TASK_STATES)[number];

/** Why a task failed: what a client shows, and what a bot may retry on. */
export const FAILURE_REASONS = [
  "unknown-project",
  "workspace",
  "missing-runtime",
  "crashed",
  "timeout",
  "runtime-error",
  "refused",
  "auth",
  "internal",
] as const;
export type FailureReason = (typeof FAILURE_REASONS)[number];

export const EVENT_NAMES = [
  "task.queued",
  "task.started",
  "task.progress",
  "task.answer",
  "task.finished",
  "task.failed",
  "task.cancelled",
] as const;
export type EventName = (typeof EVENT_NAMES)[number];

/** Names a project: one directory under ~/projects. */
export function isProjectName(name: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$/.test(name) && !name.endsWith(".git");
}

/**
 * A branch name git accepts (git-check-ref-format(1), `--branch`), kept to a
 * conservative alphabet so it is also safe in a path, a tmux target or a log line.
 */
export function isBranchName(name: string): boolean {
  if (!/^[A-Za-z0-9._/-]{1,200}$/.test(name)) return false;
  if (name.startsWith("-") || name.includes("..") || name.includes("//")) return false;
  if (name.endsWith("/") || name.endsWith(".") || name === "HEAD") return false;
  return name
    .split("/")
    .every((segment) => segment !== "" && !segment.startsWith(".") && !segment.endsWith(".lock"));
}

/** What a client asks for (validated by the daemon with `TaskRequestSchema`, frames.ts). */
export type { ClientFrame, TaskRequest } from "./frames.ts";

/** A task as the daemon reports it in replies and events. */
export interface TaskInfo {
  readonly id: string;
  readonly project: string;
  readonly prompt: string;
  /** The branch asked for, if any. */
  readonly branch?: string;
  readonly mode: TaskMode;
  readonly source?: string;
  readonly replyTo?: string;
  readonly state: TaskState;
  readonly queuedAt: string;
  readonly startedAt?: string;
  readonly endedAt?: string;
  /** Where it runs, once started. */
  readonly workspace?: string;
  /** The branch it works on, once started. */
  readonly workBranch?: string;
  /** The tmux session of an interactive task. */
  readonly tmuxSession?: string;
}

/** The state of the workspace a task ran in, as reported when it starts and ends. */
export interface WorkspaceReport {
  readonly workspace: string;
  readonly branch: string;
  /** The branch was created for this task. */
  readonly created: boolean;
  /** The project was cloned for this task. */
  readonly cloned: boolean;
  /** `git status --porcelain` lines: uncommitted changes, never discarded (the first MAX_DIRTY_LINES). */
  readonly dirty: readonly string[];
  /** How many uncommitted changes there are, when `dirty` lists only the first of them. */
  readonly dirtyCount?: number;
  readonly warnings: readonly string[];
}

interface EventBase {
  readonly id: string;
  /** ISO time the daemon emitted the event. */
  readonly time: string;
}

export type TaskEvent =
  | (EventBase & {
      readonly event: "task.queued";
      readonly task: TaskInfo;
      readonly position: number;
    })
  | (EventBase & {
      readonly event: "task.started";
      readonly task: TaskInfo;
      readonly report: WorkspaceReport;
    })
  | (EventBase & { readonly event: "task.progress"; readonly text: string })
  | (EventBase & { readonly event: "task.answer"; readonly text: string })
  | (EventBase & {
      readonly event: "task.finished";
      readonly task: TaskInfo;
      /** The answer, cut to fit one frame; the `task.answer` events carry all of it. */
      readonly answer: string;
      readonly truncated: boolean;
      readonly commit?: string;
      readonly report?: WorkspaceReport;
      readonly sessionId?: string;
    })
  | (EventBase & {
      readonly event: "task.failed";
      readonly task: TaskInfo;
      readonly reason: FailureReason;
      readonly error: string;
      readonly exitCode?: number;
      readonly signal?: string;
      /** The last lines the runtime wrote to stderr. */
      readonly stderr?: string;
      readonly report?: WorkspaceReport;
    })
  | (EventBase & {
      readonly event: "task.cancelled";
      readonly task: TaskInfo;
      readonly reason: string;
      readonly report?: WorkspaceReport;
    });

/** A terminal event: the task is over. */
export type TaskEnd = Extract<
  TaskEvent,
  { event: "task.finished" | "task.failed" | "task.cancelled" }
>;

export function isTaskEnd(event: TaskEvent): event is TaskEnd {
  return (
    event.event === "task.finished" ||
    event.event === "task.failed" ||
    event.event === "task.cancelled"
  );
}

export interface AgentStatus {
  readonly agent: { readonly name: string; readonly uid: number; readonly role: string };
  readonly pid: number;
  readonly protocol: number;
  readonly startedAt: string;
  readonly runtime: {
    readonly kind: string;
    readonly command: string;
    readonly timeout: number;
    readonly maxParallel: number;
  };
  readonly running: readonly TaskInfo[];
  readonly queued: readonly TaskInfo[];
  /** Projects the agent can work on: declared repos and existing clones. */
  readonly projects: readonly string[];
  readonly warnings: readonly string[];
  /** The agent's chat presence, when it runs in the daemon's process (an online agent). */
  readonly chat?: {
    readonly network: string;
    /** Its account: Matrix user id or bare JID. */
    readonly account: string;
    /** `failed`: the server refused the credential; it is tried again now and then. */
    readonly state: "connecting" | "online" | "offline" | "failed";
    /** Why it is not online, and when it tries again. */
    readonly detail?: string;
    /** When it entered this state. */
    readonly since: string;
    /** How often its transport was started again in this process. */
    readonly restarts: number;
  };
}

/** Cut text to `max` characters, marking the cut. */
export function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/**
 * Split an answer into chunks of at most `bytes` UTF-8 bytes each, never
 * inside a character, so each fits one frame whatever JSON escaping adds.
 */
export function chunkText(text: string, bytes = ANSWER_CHUNK_BYTES): string[] {
  const chunks: string[] = [];
  let current = "";
  let size = 0;
  for (const char of text) {
    const length = Buffer.byteLength(char);
    if (size + length > bytes && current !== "") {
      chunks.push(current);
      current = "";
      size = 0;
    }
    current += char;
    size += length;
  }
  if (current !== "") chunks.push(current);
  return chunks;
}

/** Cut text to at most `bytes` UTF-8 bytes. */
export function clipBytes(text: string, bytes: number): { text: string; truncated: boolean } {
  if (Buffer.byteLength(text) <= bytes) return { text, truncated: false };
  return { text: chunkText(text, bytes)[0] ?? "", truncated: true };
}
