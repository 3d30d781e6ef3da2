/**
 * The approval protocol (docs/approval-protocol.md): version 1,
 * newline-delimited JSON frames over Unix sockets. Pure: frames are
 * validated here with zod, so the daemon answers a malformed frame with an
 * error and keeps serving.
 */
import { z } from "zod";

import { MAX_FRAME_BYTES, type ParsedFrame, PROTOCOL_VERSION } from "../wire/framing.ts";

import { MAX_WRITABLE_FILES } from "./writable.ts";

export {
  encodeFrame,
  LineSplitter,
  MAX_FRAME_BYTES,
  type ParsedFrame,
  PROTOCOL_VERSION,
} from "../wire/framing.ts";
export { commandHash, writableLines } from "./binding.ts";

const text = z.string().max(4096);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/);

/** What the gate asks for, on the request socket. Identity comes from sudo, via the gate. */
export const RequestSchema = z.strictObject({
  agent: z.strictObject({ name: text, uid: z.int().nonnegative() }),
  argv: z.array(z.string().max(MAX_FRAME_BYTES)).min(1),
  /** argv[0] resolved against the secure path: what would really run. */
  command: text,
  cwd: text,
  /** `uid`: the target's uid, as the gate resolved it (policy matches it, not the name). */
  runAs: z.strictObject({
    user: text,
    group: text.optional(),
    uid: z.int().nonnegative().optional(),
  }),
  /** The controlling terminal of the agent's sudo, as the kernel has it (never the agent's fds). */
  tty: text.optional(),
  /**
   * The program (index 0) and file arguments the agent could change, each
   * with the sha256 of its contents: part of the hash the human approves.
   */
  writable: z
    .array(
      z.strictObject({
        index: z.int().nonnegative(),
        path: text,
        sha256,
        why: text,
      }),
    )
    .max(MAX_WRITABLE_FILES)
    .optional(),
  /** -i / -s: argv is run through the target's shell. */
  shell: z.enum(["login", "non-login"]).optional(),
  /** `nuketown unlock NAME`: not a command, a declared secret to decrypt for the agent. */
  unlock: z.strictObject({ secret: text }).optional(),
  /** `nuketown change approve ID` (root): a change to the system configuration, bound to its commit. */
  change: z
    .strictObject({
      id: text,
      host: text,
      commit: z.string().regex(/^[0-9a-f]{40}$/),
      base: z.string().regex(/^[0-9a-f]{40}$/),
      risk: z.enum(["high", "low"]),
      reasons: z.array(text).max(20),
      explanation: z.string().max(16384),
      diffstat: z.string().max(16384),
      closure: z.string().max(16384),
    })
    .optional(),
});
export type ApprovalRequest = z.infer<typeof RequestSchema>;

export type DecisionKind = "approved" | "denied" | "timeout" | "cancelled";

export interface DecidedBy {
  /** `limit`: the agent already had as many requests waiting as it may, or asked too often (approval.askLimit). */
  readonly kind: "human" | "policy" | "test-mode" | "daemon" | "limit";
  /** The human's id (Unix user, or chat id), when a human decided. */
  readonly id?: string;
  /** Index of the policy rule that decided. */
  readonly rule?: number;
}

export interface Decision {
  readonly decision: DecisionKind;
  readonly by: DecidedBy;
  readonly reason: string;
  /** For an approved unlock: where the plaintext is, until it expires. */
  readonly path?: string;
}

export interface PendingRequest extends ApprovalRequest {
  readonly id: string;
  readonly time: string;
  readonly hash: string;
  readonly expires: string;
}

/** Frames a gate may send. */
export const GateFrameSchema = z.discriminatedUnion("type", [
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("request"),
    request: RequestSchema,
  }),
  // An approved command the gate did not run: what was approved changed before it could start.
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("refused"),
    id: text,
    agent: z.strictObject({ name: text, uid: z.int().nonnegative() }),
    reason: text,
  }),
  // `nuketown lock [NAME]`: remove unlocked secrets now; giving access up needs no approval.
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("lock"),
    agent: z.strictObject({ name: text, uid: z.int().nonnegative() }),
    secret: text.optional(),
  }),
]);

/** Frames a human's client may send on the control socket. */
export const ControlFrameSchema = z.discriminatedUnion("type", [
  z.strictObject({ v: z.literal(PROTOCOL_VERSION), type: z.literal("hello") }),
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("auth"),
    nonce: z.string().regex(/^[0-9a-f]{32}$/),
  }),
  z.strictObject({ v: z.literal(PROTOCOL_VERSION), type: z.literal("list") }),
  z.strictObject({ v: z.literal(PROTOCOL_VERSION), type: z.literal("subscribe") }),
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("decide"),
    id: text,
    decision: z.enum(["approve", "deny"]),
    reason: text.optional(),
    /** Where the human decided, for the audit: the control socket serves the terminal and the web. */
    channel: z.enum(["terminal", "web"]).optional(),
    /** The request's hash as the human was shown it (at least 8 hex digits): the answer counts only for it. */
    hash: z
      .string()
      .regex(/^[0-9a-f]{8,64}$/)
      .optional(),
  }),
]);
export type ControlFrame = z.infer<typeof ControlFrameSchema>;

/** One line → a validated frame, or the reason it is not one. */
export function parseFrame<T>(line: string, schema: z.ZodType<T>): ParsedFrame<T> {
  if (Buffer.byteLength(line) > MAX_FRAME_BYTES)
    return { ok: false, error: `frame larger than ${MAX_FRAME_BYTES} bytes` };
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { ok: false, error: "frame is not JSON" };
  }
  if (json !== null && typeof json === "object" && "v" in json && json.v !== PROTOCOL_VERSION) {
    return {
      ok: false,
      error: `unsupported protocol version ${JSON.stringify(json.v)} (this daemon speaks ${PROTOCOL_VERSION})`,
    };
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return {
      ok: false,
      error: `malformed frame: ${first?.path.join(".") || "frame"}: ${first?.message ?? "invalid"}`,
    };
  }
  return { ok: true, frame: parsed.data };
}
