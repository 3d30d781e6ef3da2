/**
 * What an approval channel is to the daemon: a place where humans see
 * requests and answer them. Channels (terminal, desktop, chat, web) import
 * this, never the daemon.
 */
import type { Decision, PendingRequest } from "./protocol.ts";

/** A place where humans see requests and answer them (terminal, desktop, chat, web). */
export interface ApprovalChannel {
  readonly name: string;
  /** A request waits for a human; `decide` records their answer. */
  requested(request: PendingRequest, decide: (answer: HumanAnswer) => Promise<DecideResult>): void;
  /** The request was decided, by this channel or another: update what the human sees. */
  resolved(request: PendingRequest, decision: Decision): void;
  close(): Promise<void>;
}

export interface HumanAnswer {
  readonly approve: boolean;
  /** Who answered, as the channel verified it (Unix user, chat id). */
  readonly human: string;
  readonly reason?: string;
  /** The request's hash (or its first 8+ hex digits) as the human was shown it: the answer is bound to it. */
  readonly hash?: string;
}

export type DecideResult = { ok: true } | { ok: false; error: string };
