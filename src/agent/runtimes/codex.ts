/**
 * The `codex` runtime: `codex exec --json -` with the prompt on stdin
 * (`codex exec --json resume <thread id> -` to continue a conversation). Its
 * JSONL events:
 *
 * - `thread.started` {thread_id}: the id to resume with;
 * - `item.started` / `item.updated` / `item.completed` {item}: an
 *   agent_message, reasoning, command_execution, file_change, mcp_tool_call,
 *   web_search, todo_list or error item;
 * - `turn.completed` {usage}: the answer is the turn's last agent message;
 * - `turn.failed` {error: {message}}, `error` {message}: the task fails.
 *
 * The older `{"id":…,"msg":{"type":…}}` event shape is understood too.
 * Pure: no I/O here.
 */

import type { ResolvedAgent } from "../../town/types.ts";
import { isObject, type Json, str } from "./json.ts";
import type { OutputParser, RuntimeOutput, RuntimeTask } from "./types.ts";

export function codexBatchArgs(agent: Pick<ResolvedAgent, "runtime">, session?: string): string[] {
  // The prompt goes on stdin ("-"): never parsed as an option, whatever it starts with.
  return [
    "exec",
    "--json",
    ...agent.runtime.args,
    ...(session !== undefined ? ["resume", session] : []),
    "-",
  ];
}

export function codexInteractiveArgs(
  agent: Pick<ResolvedAgent, "runtime">,
  task: Pick<RuntimeTask, "prompt">,
  session?: string,
): string[] {
  return [
    ...agent.runtime.args,
    ...(session !== undefined ? ["resume", session] : []),
    "--",
    task.prompt,
  ];
}

export function codexParser(): OutputParser {
  let lastMessage: string | undefined;
  const describe = (item: Json, completed: boolean): RuntimeOutput[] => {
    switch (item.type) {
      case "agent_message": {
        const text = str(item.text)?.trim();
        if (!completed || !text) return [];
        lastMessage = str(item.text);
        return [{ type: "progress", text }];
      }
      case "reasoning": {
        const text = str(item.text)?.trim();
        return completed && text ? [{ type: "progress", text }] : [];
      }
      case "command_execution": {
        const command = str(item.command) ?? "";
        if (!completed) return [{ type: "progress", text: `$ ${command}` }];
        const code = typeof item.exit_code === "number" ? ` (exit ${item.exit_code})` : "";
        return [{ type: "progress", text: `$ ${command}${code}` }];
      }
      case "file_change": {
        if (!completed) return [];
        const changes = Array.isArray(item.changes) ? item.changes : [];
        const files = changes
          .map((c) => (isObject(c) ? `${str(c.kind) ?? "update"} ${str(c.path) ?? "?"}` : ""))
          .filter((f) => f !== "");
        return [{ type: "progress", text: `files: ${files.join(", ") || "changed"}` }];
      }
      case "mcp_tool_call":
        return completed
          ? []
          : [
              {
                type: "progress",
                text: `→ ${str(item.server) ?? "mcp"}.${str(item.tool) ?? "tool"}`,
              },
            ];
      case "web_search":
        return completed ? [] : [{ type: "progress", text: `search: ${str(item.query) ?? ""}` }];
      case "error":
        return completed ? [{ type: "progress", text: `error: ${str(item.message) ?? ""}` }] : [];
      default:
        return [];
    }
  };
  const finish = (): RuntimeOutput[] => {
    const answer = lastMessage ?? "";
    lastMessage = undefined;
    return [{ type: "answer", text: answer }];
  };

  return {
    line(line) {
      let event: unknown;
      try {
        event = JSON.parse(line);
      } catch {
        return [{ type: "progress", text: line }];
      }
      if (!isObject(event)) return [{ type: "progress", text: line }];
      if (isObject(event.msg)) return legacy(event.msg);
      switch (event.type) {
        case "thread.started":
        case "thread.resumed": {
          const id = str(event.thread_id);
          return id ? [{ type: "session", id }] : [];
        }
        case "item.started":
          return isObject(event.item) ? describe(event.item, false) : [];
        case "item.completed":
          return isObject(event.item) ? describe(event.item, true) : [];
        case "turn.completed":
          return finish();
        case "turn.failed": {
          const error = isObject(event.error) ? str(event.error.message) : undefined;
          return [{ type: "error", text: error ?? "codex turn failed" }];
        }
        case "error":
          return [{ type: "error", text: str(event.message) ?? "codex reported an error" }];
        default:
          return [];
      }
    },
  };

  function legacy(msg: Json): RuntimeOutput[] {
    switch (msg.type) {
      case "session_configured": {
        const id = str(msg.session_id);
        return id ? [{ type: "session", id }] : [];
      }
      case "agent_message": {
        const text = str(msg.message);
        if (!text?.trim()) return [];
        lastMessage = text;
        return [{ type: "progress", text: text.trim() }];
      }
      case "exec_command_begin": {
        const command = Array.isArray(msg.command) ? msg.command.join(" ") : str(msg.command);
        return [{ type: "progress", text: `$ ${command ?? ""}` }];
      }
      case "task_complete": {
        const last = str(msg.last_agent_message);
        if (last !== undefined) lastMessage = last;
        return finish();
      }
      case "error":
        return [{ type: "error", text: str(msg.message) ?? "codex reported an error" }];
      default:
        return [];
    }
  }
}
