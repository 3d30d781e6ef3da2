/**
 * A human's connection to the approval daemon's control socket: prove who
 * you are (create the file the daemon names, which only your uid can own),
 * then list, watch and decide requests.
 */
import { open, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { EXIT, NuketownError } from "../errors.ts";
import { encodeFrame, LineSplitter, type PendingRequest } from "./protocol.ts";

type Frame = { type: string; [key: string]: unknown };

export class ControlClient {
  readonly #socket: net.Socket;
  readonly #waiters: ((frame: Frame) => void)[] = [];
  #onEvent: ((frame: Frame) => void) | undefined;
  /** Who the daemon says we are. */
  as = "";
  /** Resolves when the connection is gone (the daemon stopped, or `close`). */
  readonly closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding("utf8");
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});
    const splitter = new LineSplitter(
      (line) => {
        const frame = JSON.parse(line) as Frame;
        if (frame.type === "event") this.#onEvent?.(frame);
        else this.#waiters.shift()?.(frame);
      },
      () => socket.destroy(new Error("the daemon sent an oversized frame")),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
  }

  /**
   * `proveAs` (root only): prove the identity of this uid instead of our own,
   * as the dashboard does for the human signed in at the browser.
   */
  static async connect(
    socketPath: string,
    options: { proveAs?: number } = {},
  ): Promise<ControlClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath, () => resolve(s));
      s.once("error", (error: NodeJS.ErrnoException) =>
        reject(
          new NuketownError(
            error.code === "EACCES"
              ? `${socketPath}: permission denied (only root and the approvers group may approve)`
              : `cannot reach the approval daemon at ${socketPath} (${error.code}): is nuketown approvald running?`,
            error.code === "EACCES" ? EXIT.refused : EXIT.missing,
          ),
        ),
      );
    });
    const client = new ControlClient(socket);
    const challenge = await client.#ask({ type: "hello" });
    const nonce = String(challenge.nonce);
    const proof = path.join(String(challenge.dir), nonce);
    const handle = await open(proof, "wx", 0o600).catch((error: NodeJS.ErrnoException) => {
      throw new NuketownError(
        `cannot prove who you are (${error.code} on ${proof}): are you in the approvers group?`,
        EXIT.refused,
      );
    });
    try {
      if (options.proveAs !== undefined) await handle.chown(options.proveAs, -1);
    } finally {
      await handle.close();
    }
    try {
      const welcome = await client.#ask({ type: "auth", nonce });
      if (welcome.type !== "welcome") throw new NuketownError(String(welcome.error), EXIT.refused);
      client.as = String(welcome.as);
    } finally {
      await rm(proof, { force: true }).catch(() => {});
    }
    return client;
  }

  #ask(frame: object): Promise<Frame> {
    return new Promise((resolve, reject) => {
      this.#waiters.push(resolve);
      this.#socket.once("close", () =>
        reject(new NuketownError("the approval daemon closed the connection", EXIT.refused)),
      );
      this.#socket.write(encodeFrame(frame));
    });
  }

  async list(): Promise<PendingRequest[]> {
    const reply = await this.#ask({ type: "list" });
    return reply.requests as PendingRequest[];
  }

  /** Current requests, then every event as it happens. */
  async subscribe(onEvent: (frame: Frame) => void): Promise<PendingRequest[]> {
    this.#onEvent = onEvent;
    const reply = await this.#ask({ type: "subscribe" });
    return reply.requests as PendingRequest[];
  }

  async decide(
    id: string,
    approve: boolean,
    reason?: string,
    channel: "terminal" | "web" = "terminal",
    /** The request's hash as the human saw it: the daemon refuses the answer for any other. */
    hash?: string,
  ): Promise<void> {
    const reply = await this.#ask({
      type: "decide",
      id,
      decision: approve ? "approve" : "deny",
      ...(reason !== undefined && { reason }),
      ...(channel !== "terminal" && { channel }),
      ...(hash !== undefined && { hash }),
    });
    if (reply.type !== "ok") throw new NuketownError(String(reply.error), EXIT.refused);
  }

  close(): void {
    this.#socket.end();
  }
}
