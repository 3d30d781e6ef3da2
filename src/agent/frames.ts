/**
 * The zod schemas of the agent protocol's client frames: what the agent
 * daemon validates. Clients only need the types (protocol.ts).
 */
import { z } from "zod";
import { parseFrame } from "../approval/protocol.ts";
import {
  AGENT_PROTOCOL_VERSION,
  isBranchName,
  isProjectName,
  MAX_PROMPT_CHARS,
  TASK_MODES,
} from "./protocol.ts";

export { parseFrame };

const v = z.literal(AGENT_PROTOCOL_VERSION);
const text = z.string().max(4096);
/** Echoed in the reply, so a client can match replies to its requests. */
const ref = z.string().max(100).optional();
const taskId = z.string().regex(/^[0-9a-f]{8,32}$/, "expected a task id");

export const TaskRequestSchema = z.strictObject({
  project: z.string().refine(isProjectName, {
    message: "expected a project name (one directory under ~/projects: letters, digits, . _ -)",
  }),
  prompt: z.string().min(1).max(MAX_PROMPT_CHARS),
  branch: z.string().refine(isBranchName, { message: "expected a git branch name" }).optional(),
  mode: z.enum(TASK_MODES).default("batch"),
  /** Where the task came from: "talk", "matrix:!room:server", "dashboard"… */
  source: text.optional(),
  /** The conversation it answers (a chat thread, a message id): runtime sessions are kept per conversation. */
  replyTo: text.optional(),
});
/** What a client asks for. */
export type TaskRequest = z.input<typeof TaskRequestSchema>;

/** Frames a client may send. */
export const ClientFrameSchema = z.discriminatedUnion("type", [
  z.strictObject({ v, type: z.literal("status"), ref }),
  z.strictObject({ v, type: z.literal("list"), ref }),
  TaskRequestSchema.extend({
    v,
    type: z.literal("task"),
    ref,
    /** Also send this task's events on this connection, after the reply. */
    watch: z.boolean().default(false),
  }),
  z.strictObject({ v, type: z.literal("cancel"), ref, id: taskId }),
  z.strictObject({
    v,
    type: z.literal("subscribe"),
    ref,
    /** Only this task's events; all tasks' when absent. */
    task: taskId.optional(),
  }),
]);
export type ClientFrame = z.infer<typeof ClientFrameSchema>;
