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
 * - `turn.failed` {error: {message}}: the task fails;
 * - `error` {message}: a retry notice ("Reconnecting... 1/5 …") or the
 *   error a failed turn ends with; fatal only if the turn never completes.
 *
 * An `error` item is a warning (an unknown model's metadata, say).
 *
 * The older `{"id":…,"msg":{"type":…}}` event shape is understood too.
 * Pure: no I/O here.
 */

import type { ResolvedAgent } from "../../town/types.ts";
import { isObject, type Json, str } from "./json.ts";
import type { OutputParser, RuntimeOutput } from "./types.ts";

/**
 * The sandbox mode, also in the rendered config.toml but said again here:
 * without it codex falls back to its read-only sandbox, where nothing the
 * agent was asked to do can be done.
 */
export function codexSandboxArgs(agent: Pick<ResolvedAgent, "runtime">): string[] {
  return ["--sandbox", agent.runtime.sandbox];
}

/** Trust for a directory the rendered config does not list (a project cloned later). */
export function codexTrustArgs(dir: string): string[] {
  return ["-c", `projects.${JSON.stringify(dir)}.trust_level="trusted"`];
}

export function codexBatchArgs(agent: Pick<ResolvedAgent, "runtime">, session?: string): string[] {
  // The prompt goes on stdin ("-"): never parsed as an option, whatever it starts with.
  return [
    "exec",
    "--json",
    ...codexSandboxArgs(agent),
    ...agent.runtime.args,
    ...(session !== undefined ? ["resume", session] : []),
    "-",
  ];
}

/**
 * The terminal UI; the prompt is typed into it (see runInTmux), never passed
 * in argv. `--no-daemon`: by default it starts a shared app-server daemon in
 * the background that outlives the window (and the task).
 */
export function codexInteractiveArgs(
  agent: Pick<ResolvedAgent, "runtime">,
  session?: string,
  cwd?: string,
): string[] {
  return [
    ...(session !== undefined ? ["resume", session] : []),
    "--no-daemon",
    ...codexSandboxArgs(agent),
    ...(cwd !== undefined ? codexTrustArgs(cwd) : []),
    ...agent.runtime.args,
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
        // An error item is codex's warning: the turn goes on.
        return completed ? [{ type: "progress", text: `warning: ${str(item.message) ?? ""}` }] : [];
      default:
        return [];
    }
  };
  /** The last `error` event of the turn: fatal only if the turn does not complete. */
  let pendingError: string | undefined;
  let ended = false;
  const finish = (): RuntimeOutput[] => {
    const answer = lastMessage ?? "";
    lastMessage = undefined;
    pendingError = undefined;
    ended = true;
    return [{ type: "answer", text: answer }];
  };
  const failure = (text: string): RuntimeOutput => {
    ended = true;
    pendingError = undefined;
    return { type: "error", text, ...(isAuthError(text) && { why: "auth" as const }) };
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
          return [failure(error ?? "codex turn failed")];
        }
        case "error": {
          // "Reconnecting... 1/5 (…)" while codex retries, and the error that ends a turn
          // before turn.failed: progress either way; end() says whether it was the last word.
          const message = str(event.message) ?? "codex reported an error";
          if (/^Reconnecting\b/i.test(message))
            return [{ type: "progress", text: `retrying: ${message}` }];
          pendingError = message;
          return [{ type: "progress", text: `error: ${message}` }];
        }
        default:
          return [];
      }
    },
    end() {
      return !ended && pendingError !== undefined ? [failure(pendingError)] : [];
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
        return [failure(str(msg.message) ?? "codex reported an error")];
      default:
        return [];
    }
  }
}

function isAuthError(message: string): boolean {
  return /\b(401|403)\b|unauthori[sz]ed|invalid[_ ]api[_ ]key|incorrect api key/i.test(message);
}

/** What codex says on stderr when `exec resume` names a thread it has no rollout for. */
export function isUnknownCodexSession(stderr: string): boolean {
  return /no rollout found for thread id/i.test(stderr);
}
