/**
 * An agent's side of the change socket (src/change/service.ts): one
 * request, one answer. Used by `nuketown mcp` and by `nuketown change`
 * when an agent runs it.
 */
import net from "node:net";
import { NuketownError } from "../errors.ts";
import { encodeFrame } from "../wire/framing.ts";
import type { Proposal } from "./proposal.ts";
import { type ChangeFrame, type ChangeReply, changeHint } from "./protocol.ts";

/** A refusal or failure the daemon reported (or not reaching it), with what to do about it. */
export class ChangeServiceError extends NuketownError {
  readonly hint: string;
  constructor(message: string, exitCode: number, hint: string) {
    super(message, exitCode);
    this.hint = hint;
  }
}

const MAX_REPLY_CHARS = 32 * 1024 * 1024;

type Request = ChangeFrame extends infer F
  ? F extends { v: number }
    ? Omit<F, "v">
    : never
  : never;

export function askChangeService(
  socketPath: string,
  request: Request & { type: "status"; id?: undefined },
): Promise<readonly Proposal[]>;
export function askChangeService(socketPath: string, request: Request): Promise<Proposal>;
export function askChangeService(
  socketPath: string,
  request: Request,
): Promise<Proposal | readonly Proposal[]> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let buffer = "";
    let answered = false;
    socket.setEncoding("utf8");
    // The daemon is root's and trusted; its answers (a list of proposals) outgrow a request frame.
    socket.on("data", (chunk: string) => {
      buffer += chunk;
      const end = buffer.indexOf("\n");
      if (end < 0) {
        if (buffer.length > MAX_REPLY_CHARS) socket.destroy(new Error("oversized answer"));
        return;
      }
      answered = true;
      let reply: ChangeReply;
      try {
        reply = JSON.parse(buffer.slice(0, end)) as ChangeReply;
      } catch {
        return reject(new ChangeServiceError("approvald sent something else than JSON", 5, ""));
      }
      if (reply.type === "proposal") resolve(reply.proposal);
      else if (reply.type === "proposals") resolve(reply.proposals);
      else reject(new ChangeServiceError(reply.error, reply.code, reply.hint));
      socket.end();
    });
    socket.on("connect", () => socket.write(encodeFrame(request)));
    socket.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        ["ENOENT", "ECONNREFUSED"].includes(error.code ?? "")
          ? new ChangeServiceError(
              `approvald is not running: nothing listens on ${socketPath} (${error.code})`,
              4,
              changeHint("connect", ""),
            )
          : new ChangeServiceError(
              `cannot reach approvald at ${socketPath}: ${error.message}`,
              5,
              changeHint("connect", ""),
            ),
      ),
    );
    socket.on("close", () => {
      if (!answered)
        reject(new ChangeServiceError("approvald closed the connection without an answer", 5, ""));
    });
  });
}
