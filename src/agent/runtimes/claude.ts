/**
 * The `claude-code` runtime: `claude -p … --output-format stream-json
 * --verbose`, resumed with `--resume <session id>` when the conversation
 * has one. Its stream is one JSON object per line (as claude 2.1 prints it):
 *
 * - `system` (subtype `init`): the session id, model, tools; (`api_retry`)
 *   a retried API call; (`permission_denied`) a tool call refused;
 * - `assistant`: a message whose content blocks are text, tool_use, thinking;
 * - `user`: tool results fed back to the model;
 * - `result`: the end: `result` is the answer, `is_error`/`subtype` say
 *   whether it failed (`error_max_turns`, `error_during_execution`…).
 *
 * Pure: no I/O here.
 */

import type { ResolvedAgent } from "../../town/types.ts";
import { isObject, type Json, str } from "./json.ts";
import type { OutputParser, RuntimeOutput } from "./types.ts";

/**
 * The permission mode, also in the rendered settings.json but said again
 * here so that a home without it can never fall back to asking (headless,
 * asking means refusing): every tool, or only `runtime.allowedTools` (the
 * list is in settings.json) with everything else refused.
 */
export function claudePermissionArgs(agent: Pick<ResolvedAgent, "runtime">): string[] {
  return [
    "--permission-mode",
    agent.runtime.allowedTools === undefined ? "bypassPermissions" : "dontAsk",
  ];
}

/**
 * The prompt goes on stdin, not in argv: another user can read a process's
 * arguments in /proc, and the prompt is the mayor's words to this agent.
 */
export function claudeBatchArgs(agent: Pick<ResolvedAgent, "runtime">, session?: string): string[] {
  return [
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    ...claudePermissionArgs(agent),
    ...(session !== undefined ? ["--resume", session] : []),
    ...agent.runtime.args,
  ];
}

/** The terminal UI; the prompt is typed into it (see runInTmux), never passed in argv. */
export function claudeInteractiveArgs(
  agent: Pick<ResolvedAgent, "runtime">,
  session?: string,
): string[] {
  return [
    ...claudePermissionArgs(agent),
    ...(session !== undefined ? ["--resume", session] : []),
    ...agent.runtime.args,
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
          if (event.subtype === "permission_denied") {
            const tool = str(event.tool_name) ?? "a tool";
            out.push({
              type: "progress",
              text: `refused: ${tool}: ${str(event.message) ?? ""}`.trim(),
            });
          } else if (event.subtype === "api_retry") {
            const attempt = typeof event.attempt === "number" ? event.attempt : "?";
            const max = typeof event.max_retries === "number" ? event.max_retries : "?";
            const status = typeof event.error_status === "number" ? ` ${event.error_status}` : "";
            out.push({
              type: "progress",
              text: `retrying (${attempt}/${max}):${status} ${str(event.error) ?? "API error"}`,
            });
          } else if (event.subtype === "init") {
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
        case "result":
          out.push(...resultOutputs(event, session));
          break;
        default:
          // stream_event (partial messages) and future event types carry nothing we report.
          break;
      }
      return out;
    },
  };
}

/**
 * The end of a run. Honest about it: an error result, a result whose
 * `subtype` is not success, and a success whose tool calls were refused
 * (`permission_denials`: claude then answers without having done the work)
 * are all errors, each with claude's own words. The session id of a result
 * is kept only when the run worked: for a resume id claude does not know, it
 * echoes that id back.
 */
function resultOutputs(event: Json, session: string | undefined): RuntimeOutput[] {
  const subtype = str(event.subtype) ?? "success";
  const result = str(event.result)?.trim();
  const errors = Array.isArray(event.errors)
    ? event.errors.map((e) => (typeof e === "string" ? e : JSON.stringify(e)))
    : [];
  const failed = event.is_error === true || subtype !== "success";
  if (failed) {
    const status = typeof event.api_error_status === "number" ? event.api_error_status : undefined;
    const turns = typeof event.num_turns === "number" ? ` after ${event.num_turns} turns` : "";
    const words = [...new Set([result, ...errors].filter((t): t is string => !!t))].join("; ");
    if (status === 401 || status === 403 || str(event.api_error_type) === "authentication_error")
      return [
        {
          type: "error",
          why: "auth",
          text: `the vendor refused the agent's credentials (${status ?? "auth"}): ${words || "authentication failed"}`,
        },
      ];
    if (errors.some((e) => /no conversation found/i.test(e)))
      return [{ type: "error", why: "unknown-session", text: words }];
    return [
      {
        type: "error",
        text: words ? `${subtype}: ${words}` : `claude stopped: ${subtype}${turns}`,
      },
    ];
  }
  const out: RuntimeOutput[] = session ? [{ type: "session", id: session }] : [];
  const denials = Array.isArray(event.permission_denials)
    ? event.permission_denials.filter(isObject)
    : [];
  if (denials.length > 0) {
    const what = denials
      .map((d) => {
        const detail = describeToolInput(d.tool_input);
        return `${str(d.tool_name) ?? "tool"}${detail ? ` (${detail})` : ""}`;
      })
      .join("; ");
    out.push({
      type: "error",
      why: "refused",
      text: `finished with refusals: claude's permission settings refused ${what}${result ? `; it said: ${result}` : ""}`,
    });
    return out;
  }
  const cost =
    typeof event.total_cost_usd === "number" ? `, $${event.total_cost_usd.toFixed(4)}` : "";
  const turns = typeof event.num_turns === "number" ? `${event.num_turns} turns` : "done";
  out.push({ type: "progress", text: `claude finished (${turns}${cost})` });
  out.push({ type: "answer", text: str(event.result) ?? "" });
  return out;
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
