/**
 * The `command` runtime: any executable. It gets the task as one JSON object
 * on stdin and writes JSON lines on stdout:
 *
 *   {"type":"progress","text":"running the tests"}
 *   {"type":"answer","text":"Done: 3 files changed"}
 *   {"type":"session","id":"abc"}      (optional: handed back as `session` next time)
 *   {"type":"error","text":"cannot do that"}   (optional: the task fails with this)
 *
 * Any other line is a progress line as it is. Pure: no I/O here.
 */
import type { ResolvedAgent } from "../../town/types.ts";
import type { OutputParser, RuntimeOutput, RuntimeTask } from "./types.ts";

/** What the command reads on stdin. */
export interface CommandTaskInput {
  readonly version: 1;
  readonly id: string;
  readonly agent: string;
  readonly project: string;
  readonly prompt: string;
  readonly branch: string;
  readonly requestedBranch?: string;
  readonly mode: string;
  readonly workspace: string;
  readonly source?: string;
  readonly replyTo?: string;
  /** The session id this conversation's last task reported, if any. */
  readonly session?: string;
  readonly warnings: readonly string[];
}

export function commandInput(
  task: RuntimeTask,
  workspace: { workspace: string; branch: string; warnings: readonly string[] },
  session?: string,
): CommandTaskInput {
  return {
    version: 1,
    id: task.id,
    agent: task.agent,
    project: task.project,
    prompt: task.prompt,
    branch: workspace.branch,
    ...(task.branch !== undefined && { requestedBranch: task.branch }),
    mode: task.mode,
    workspace: workspace.workspace,
    ...(task.source !== undefined && { source: task.source }),
    ...(task.replyTo !== undefined && { replyTo: task.replyTo }),
    ...(session !== undefined && { session }),
    warnings: workspace.warnings,
  };
}

export function commandArgs(agent: Pick<ResolvedAgent, "runtime">): string[] {
  return [...agent.runtime.args];
}

export function parseCommandLine(line: string): RuntimeOutput {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    return { type: "progress", text: line };
  }
  if (json === null || typeof json !== "object" || Array.isArray(json))
    return { type: "progress", text: line };
  const frame = json as { type?: unknown; text?: unknown; id?: unknown };
  if (frame.type === "session" && typeof frame.id === "string" && frame.id !== "")
    return { type: "session", id: frame.id };
  if (typeof frame.text !== "string") return { type: "progress", text: line };
  switch (frame.type) {
    case "progress":
      return { type: "progress", text: frame.text };
    case "answer":
      return { type: "answer", text: frame.text };
    case "error":
      return { type: "error", text: frame.text };
    default:
      return { type: "progress", text: line };
  }
}

export function commandParser(): OutputParser {
  return { line: (line) => [parseCommandLine(line)] };
}
