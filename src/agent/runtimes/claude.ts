/**
 * The `claude-code` runtime: `claude -p … --output-format stream-json
 * --verbose`, resumed with `--resume <session id>` when the conversation
 * has one. Its stream is one JSON object per line:
 *
 * - `system` (subtype `init`): the session id, model, tools;
 * - `assistant`: a message whose content blocks are text, tool_use, thinking;
 * - `user`: tool results fed back to the model;
 * - `result`: the end: `result` is the answer, `is_error`/`subtype` say
 *   whether it failed (`error_max_turns`, `error_during_execution`…).
 *
 * Pure: no I/O here.
 */

import type { ResolvedAgent } from "../../town/types.ts";
import { isObject, str } from "./json.ts";
import type { OutputParser, RuntimeOutput, RuntimeTask } from "./types.ts";

export function claudeBatchArgs(
  agent: Pick<ResolvedAgent, "runtime">,
  task: Pick<RuntimeTask, "prompt">,
  session?: string,
): string[] {
  return [
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    ...(session !== undefined ? ["--resume", session] : []),
    ...agent.runtime.args,
    // The prompt is an operand even when it starts with "-".
    "--",
    task.prompt,
  ];
}

export function claudeInteractiveArgs(
  agent: Pick<ResolvedAgent, "runtime">,
  task: Pick<RuntimeTask, "prompt">,
  session?: string,
): string[] {
  return [
    ...(session !== undefined ? ["--resume", session] : []),
    ...agent.runtime.args,
    "--",
    task.prompt,
  ];
}

/** What a tool call is about, in a few words: its command, file, pattern or url. */
export function describeToolInput(input: unknown): string {
  if (!isObject(input)) return "";
  for (const key of ["command", "file_path", "pattern", "path", "url", "query", "description"]) {
    const value = str(input[key]);
    if (value) return value.split("\n")[0] ?? "";
  }
  return "";
}

export function claudeParser(): OutputParser {
  return {
    line(line) {
      let event: unknown;
      try {
        event = JSON.parse(line);
      } catch {
        return [{ type: "progress", text: line }];
      }
      if (!isObject(event)) return [{ type: "progress", text: line }];
      const out: RuntimeOutput[] = [];
      const session = str(event.session_id) ?? str(event.sessionId);
      switch (event.type) {
        case "system": {
          if (event.subtype === "init") {
            if (session) out.push({ type: "session", id: session });
            const model = str(event.model);
            out.push({
              type: "progress",
              text: `claude session ${session ?? "?"} started${model ? ` (${model})` : ""}`,
            });
          }
          break;
        }
        case "assistant": {
          const message = isObject(event.message) ? event.message : {};
          const content = Array.isArray(message.content) ? message.content : [];
          for (const block of content) {
            if (!isObject(block)) continue;
            if (block.type === "text" && str(block.text)?.trim())
              out.push({ type: "progress", text: String(block.text).trim() });
            else if (block.type === "tool_use") {
              const what = describeToolInput(block.input);
              out.push({
                type: "progress",
                text: `→ ${str(block.name) ?? "tool"}${what ? `: ${what}` : ""}`,
              });
            }
          }
          break;
        }
        case "user": {
          const message = isObject(event.message) ? event.message : {};
          const content = Array.isArray(message.content) ? message.content : [];
          for (const block of content) {
            if (isObject(block) && block.type === "tool_result" && block.is_error === true) {
              const detail = toolResultText(block.content);
              out.push({
                type: "progress",
                text: `tool error${detail ? `: ${detail.split("\n")[0]}` : ""}`,
              });
            }
          }
          break;
        }
        case "result": {
          if (session) out.push({ type: "session", id: session });
          const subtype = str(event.subtype) ?? "success";
          const result = str(event.result);
          if (event.is_error === true || subtype !== "success") {
            const turns =
              typeof event.num_turns === "number" ? ` after ${event.num_turns} turns` : "";
            out.push({
              type: "error",
              text: result?.trim()
                ? `${subtype}: ${result.trim()}`
                : `claude stopped: ${subtype}${turns}`,
            });
          } else {
            const cost =
              typeof event.total_cost_usd === "number"
                ? `, $${event.total_cost_usd.toFixed(4)}`
                : "";
            const turns = typeof event.num_turns === "number" ? `${event.num_turns} turns` : "done";
            out.push({ type: "progress", text: `claude finished (${turns}${cost})` });
            out.push({ type: "answer", text: result ?? "" });
          }
          break;
        }
        default:
          // stream_event (partial messages) and future event types carry nothing we report.
          break;
      }
      return out;
    },
  };
}

function toolResultText(content: unknown): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content
      .map((part) => (isObject(part) ? (str(part.text) ?? "") : ""))
      .filter((t) => t !== "")
      .join("\n");
  return "";
}
