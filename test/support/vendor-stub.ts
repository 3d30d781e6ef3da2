/**
 * Loopback stand-ins of the two vendor APIs the real agent CLIs call: the
 * Anthropic Messages API (`POST /v1/messages`, server-sent events) for
 * `claude`, and the OpenAI Responses API (`POST /v1/responses`, server-sent
 * events) for `codex`. NAMED STAND-INS: the vendors cannot be reached here.
 *
 * Run as its own process (inside the test's network namespace, where the
 * CLIs run too):
 *
 *   node test/support/vendor-stub.ts <dir>
 *
 * It listens on 127.0.0.1, writes the port to `<dir>/port`, reads
 * `<dir>/script.json` afresh for every request (so a test changes the
 * scenario between steps) and appends every request to `<dir>/requests.jsonl`.
 *
 * A script says, per vendor, what the model does in the main conversation:
 * `steps[i]` answers the request that carries i tool results — a shell
 * command to run (through whichever shell tool the CLI offers) or the final
 * text. `status` answers every request with that HTTP error; `failFirst`
 * answers the first N main requests with 500 (the CLI retries). Requests
 * that are not the main conversation (titles, summaries, quota probes) get
 * a short text.
 */
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";

export type StubStep =
  | { readonly shell: string }
  | { readonly text: string }
  /** A call of any tool the CLI offers by that name (claude: e.g. an MCP tool, mcp__<server>__<tool>). */
  | { readonly tool: string; readonly input?: Record<string, unknown> };

export interface VendorScript {
  readonly steps: readonly StubStep[];
  readonly status?: number;
  readonly failFirst?: number;
  /** How the first `failFirst` requests fail: an HTTP 500 (default) or a stream cut before its end. */
  readonly failWith?: "500" | "drop";
  /** Held back this long before answering (ms): a slow model. */
  readonly delayMs?: number;
}

export interface StubScript {
  readonly anthropic?: VendorScript;
  readonly openai?: VendorScript;
}

export interface LoggedRequest {
  readonly vendor: "anthropic" | "openai" | "other";
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: unknown;
  /** What the stub decided: "step N", "side", "status 401", "retry 500". */
  readonly answer: string;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json =>
  v !== null && typeof v === "object" && !Array.isArray(v);

function main(dir: string): void {
  const scriptFile = path.join(dir, "script.json");
  const logFile = path.join(dir, "requests.jsonl");
  const failures = { anthropic: 0, openai: 0 };
  let ids = 0;
  const nextId = (prefix: string) => `${prefix}_${process.pid}_${++ids}`;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body: unknown = raw;
      try {
        body = raw === "" ? undefined : JSON.parse(raw);
      } catch {}
      const url = req.url ?? "/";
      const script = readScript(scriptFile);
      const log = (vendor: LoggedRequest["vendor"], answer: string) =>
        appendFileSync(
          logFile,
          `${JSON.stringify({ vendor, method: req.method ?? "", url, headers: req.headers, body, answer })}\n`,
        );
      const route = url.split("?")[0] ?? "";
      if (req.method === "POST" && route.endsWith("/messages") && !route.includes("count_tokens")) {
        return answerAnthropic(script.anthropic, body, res, log);
      }
      if (req.method === "POST" && route.endsWith("/messages/count_tokens")) {
        log("anthropic", "count_tokens");
        return json(res, 200, { input_tokens: 10 });
      }
      if (req.method === "POST" && route.endsWith("/responses")) {
        return answerOpenai(script.openai, body, res, log);
      }
      if (route.endsWith("/models")) {
        log("other", "models");
        return json(res, 200, { object: "list", data: [], models: [] });
      }
      log("other", "404");
      json(res, 404, { error: { type: "not_found_error", message: `no stub for ${route}` } });
    });
  });

  const later = (ms: number | undefined, then: () => void) => (ms ? setTimeout(then, ms) : then());

  function answerAnthropic(
    script: VendorScript | undefined,
    body: unknown,
    res: http.ServerResponse,
    log: (vendor: "anthropic", answer: string) => void,
  ) {
    const request = isObject(body) ? body : {};
    if (script?.status !== undefined) {
      log("anthropic", `status ${script.status}`);
      return json(res, script.status, {
        type: "error",
        error: {
          type: script.status === 401 ? "authentication_error" : "api_error",
          message: script.status === 401 ? "invalid x-api-key" : "stub error",
        },
      });
    }
    const tools = Array.isArray(request.tools) ? request.tools.filter(isObject) : [];
    const hasBash = tools.some((t) => t.name === "Bash");
    if (!hasBash || script === undefined) {
      log("anthropic", "side");
      return anthropicMessage(res, request, [{ type: "text", text: "ok" }], "end_turn");
    }
    if (failures.anthropic < (script.failFirst ?? 0)) {
      failures.anthropic++;
      log("anthropic", "retry 500");
      return json(res, 500, { type: "error", error: { type: "api_error", message: "overloaded" } });
    }
    const messages = Array.isArray(request.messages) ? request.messages.filter(isObject) : [];
    // Only the turn since the last human prompt counts: a resumed conversation starts over at step 0.
    const lastPrompt = lastIndex(messages, (m) => m.role === "user" && !hasToolResult(m));
    const done = messages.slice(lastPrompt + 1).filter(hasToolResult).length;
    const step = script.steps[Math.min(done, script.steps.length - 1)] ?? { text: "done" };
    log("anthropic", `step ${done}`);
    later(script.delayMs, () => {
      if ("tool" in step)
        anthropicMessage(
          res,
          request,
          [{ type: "tool_use", id: nextId("toolu"), name: step.tool, input: step.input ?? {} }],
          "tool_use",
        );
      else if ("shell" in step)
        anthropicMessage(
          res,
          request,
          [
            {
              type: "tool_use",
              id: nextId("toolu"),
              name: "Bash",
              input: { command: step.shell, description: "run a command" },
            },
          ],
          "tool_use",
        );
      else anthropicMessage(res, request, [{ type: "text", text: step.text }], "end_turn");
    });
  }

  function anthropicMessage(
    res: http.ServerResponse,
    request: Json,
    content: Json[],
    stopReason: string,
  ) {
    const message = {
      id: nextId("msg"),
      type: "message",
      role: "assistant",
      model: typeof request.model === "string" ? request.model : "stub",
      content,
      stop_reason: stopReason,
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: 5 },
    };
    if (request.stream !== true) return json(res, 200, message);
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const send = (event: string, data: Json) =>
      res.write(`event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`);
    send("message_start", {
      message: {
        ...message,
        content: [],
        stop_reason: null,
        usage: { input_tokens: 10, output_tokens: 1 },
      },
    });
    content.forEach((block, index) => {
      if (block.type === "text") {
        send("content_block_start", { index, content_block: { type: "text", text: "" } });
        send("content_block_delta", { index, delta: { type: "text_delta", text: block.text } });
      } else {
        send("content_block_start", {
          index,
          content_block: { type: "tool_use", id: block.id, name: block.name, input: {} },
        });
        send("content_block_delta", {
          index,
          delta: { type: "input_json_delta", partial_json: JSON.stringify(block.input) },
        });
      }
      send("content_block_stop", { index });
    });
    send("message_delta", {
      delta: { stop_reason: stopReason, stop_sequence: null },
      usage: { output_tokens: 5 },
    });
    send("message_stop", {});
    res.end();
  }

  function answerOpenai(
    script: VendorScript | undefined,
    body: unknown,
    res: http.ServerResponse,
    log: (vendor: "openai", answer: string) => void,
  ) {
    const request = isObject(body) ? body : {};
    if (script?.status !== undefined) {
      log("openai", `status ${script.status}`);
      return json(res, script.status, {
        error: {
          message: script.status === 401 ? "Incorrect API key provided" : "stub error",
          type: script.status === 401 ? "invalid_request_error" : "server_error",
          code: script.status === 401 ? "invalid_api_key" : null,
        },
      });
    }
    const tools = Array.isArray(request.tools) ? request.tools.filter(isObject) : [];
    const toolName = (t: Json) => (typeof t.name === "string" ? t.name : String(t.type ?? ""));
    const shell = tools.find((t) =>
      ["shell_command", "exec_command", "shell", "local_shell"].includes(toolName(t)),
    );
    if (shell === undefined || script === undefined) {
      log("openai", "side");
      return openaiResponse(res, [assistantText("ok")]);
    }
    if (failures.openai < (script.failFirst ?? 0)) {
      failures.openai++;
      if (script.failWith === "drop") {
        log("openai", "retry drop");
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write(
          `event: response.created\ndata: ${JSON.stringify({ type: "response.created", response: { id: nextId("resp"), status: "in_progress", output: [] } })}\n\n`,
        );
        return void res.end();
      }
      log("openai", "retry 500");
      return json(res, 500, { error: { message: "overloaded", type: "server_error" } });
    }
    const input = Array.isArray(request.input) ? request.input.filter(isObject) : [];
    const lastPrompt = lastIndex(
      input,
      (i) => i.role === "user" && i.type === "message" && !isInstructions(i),
    );
    const done = input
      .slice(lastPrompt + 1)
      .filter(
        (i) =>
          i.type === "function_call_output" ||
          i.type === "custom_tool_call_output" ||
          i.type === "local_shell_call_output",
      ).length;
    const step = script.steps[Math.min(done, script.steps.length - 1)] ?? { text: "done" };
    log("openai", `step ${done} via ${toolName(shell)}`);
    later(script.delayMs, () => {
      if ("tool" in step) return openaiResponse(res, [assistantText(`no tool ${step.tool} here`)]);
      if (!("shell" in step)) return openaiResponse(res, [assistantText(step.text)]);
      const name = toolName(shell);
      const callId = nextId("call");
      const args =
        name === "shell_command"
          ? { command: step.shell }
          : name === "exec_command"
            ? { cmd: step.shell }
            : { command: ["bash", "-lc", step.shell] };
      if (name === "local_shell")
        return openaiResponse(res, [
          {
            type: "local_shell_call",
            id: nextId("lsh"),
            call_id: callId,
            status: "completed",
            action: { type: "exec", command: ["bash", "-lc", step.shell] },
          },
        ]);
      openaiResponse(res, [
        {
          type: "function_call",
          id: nextId("fc"),
          call_id: callId,
          name,
          arguments: JSON.stringify(args),
        },
      ]);
    });
  }

  function openaiResponse(res: http.ServerResponse, items: Json[]) {
    const id = nextId("resp");
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const send = (data: Json) =>
      res.write(`event: ${String(data.type)}\ndata: ${JSON.stringify(data)}\n\n`);
    send({
      type: "response.created",
      response: { id, object: "response", status: "in_progress", output: [] },
    });
    items.forEach((item, index) => {
      send({ type: "response.output_item.added", output_index: index, item });
      send({ type: "response.output_item.done", output_index: index, item });
    });
    send({
      type: "response.completed",
      response: {
        id,
        object: "response",
        status: "completed",
        output: items,
        usage: {
          input_tokens: 10,
          input_tokens_details: { cached_tokens: 0 },
          output_tokens: 5,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: 15,
        },
      },
    });
    res.end();
  }

  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    if (address && typeof address === "object")
      writeFileSync(path.join(dir, "port"), String(address.port));
  });
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}

const assistantText = (text: string): Json => ({
  type: "message",
  id: `msg_${Math.random().toString(36).slice(2)}`,
  role: "assistant",
  status: "completed",
  content: [{ type: "output_text", text, annotations: [] }],
});

function hasToolResult(message: Json): boolean {
  return (
    Array.isArray(message.content) &&
    message.content.some((b) => isObject(b) && b.type === "tool_result")
  );
}

/** codex sends its own instructions and environment context as user messages, too. */
function isInstructions(item: Json): boolean {
  const content = Array.isArray(item.content) ? item.content : [];
  const text = content
    .map((c) => (isObject(c) && typeof c.text === "string" ? c.text : ""))
    .join("");
  return (
    /^\s*<(environment_context|user_instructions|permissions|INSTRUCTIONS)/i.test(text) ||
    text.startsWith("# AGENTS.md")
  );
}

function lastIndex<T>(items: readonly T[], test: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (test(items[i] as T)) return i;
  return -1;
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function readScript(file: string): StubScript {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as StubScript;
  } catch {
    return {};
  }
}

if (import.meta.main) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write("usage: vendor-stub.ts <dir>\n");
    process.exit(2);
  }
  main(dir);
}
