/**
 * The change socket, served inside approvald (root): agents propose,
 * verify and read changes here, since the change store and the config
 * repo are root's. Anyone may connect (0666); who asks is the kernel's
 * word — the connection's SO_PEERCRED uid must be an agent of the town —
 * and a request cannot name anyone. Work is done by ChangeControl as root,
 * which reads agents' clones and builds their changes as the agents
 * themselves; approve and apply are not offered here at all.
 */
import { chmod, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { parseFrame } from "../approval/protocol.ts";
import { NuketownError } from "../errors.ts";
import { ensureDir } from "../os/files.ts";
import { type PeerCredentials, peerCredentials } from "../os/peercred.ts";
import type { Runner } from "../os/process.ts";
import type { ResolvedTown } from "../town/types.ts";
import { encodeFrame, LineSplitter } from "../wire/framing.ts";
import { ChangeControl } from "./control.ts";
import {
  type ChangeFrame,
  ChangeFrameSchema,
  type ChangeReply,
  changeHint,
  changeSocketPath,
} from "./protocol.ts";

export interface ChangeServiceOptions {
  readonly town: ResolvedTown;
  readonly runner?: Runner;
  readonly log?: (line: string) => void;
  /** The perl that reads peer credentials. @default "perl" */
  readonly perl?: string;
}

const MAX_CONNECTIONS = 64;
/** A connection that says nothing for this long is closed. */
const IDLE_MS = 30_000;

export class ChangeService {
  readonly #town: ResolvedTown;
  readonly #runner: Runner | undefined;
  readonly #log: (line: string) => void;
  readonly #perl: string;
  readonly #sockets = new Set<net.Socket>();
  #server: net.Server | undefined;

  constructor(options: ChangeServiceOptions) {
    this.#town = options.town;
    this.#runner = options.runner;
    this.#log = options.log ?? (() => {});
    this.#perl = options.perl ?? "perl";
  }

  get socketPath(): string {
    return changeSocketPath(this.#town);
  }

  async start(): Promise<void> {
    const socketPath = this.socketPath;
    await ensureDir(path.dirname(socketPath), 0o755);
    await rm(socketPath, { force: true });
    // Paused: the peer's credentials are read before a byte of its request.
    const server = net.createServer({ pauseOnConnect: true }, (socket) => this.#serve(socket));
    // Every connection costs a perl; agents cannot open them without end.
    server.maxConnections = MAX_CONNECTIONS;
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
    // Any account may knock; the kernel says who it is.
    await chmod(socketPath, 0o666);
  }

  async stop(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise((resolve) => server.close(resolve));
    await rm(this.socketPath, { force: true });
  }

  #serve(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => {});
    socket.setTimeout(IDLE_MS, () => socket.destroy());
    const reply = (frame: ChangeReply) => {
      if (!socket.destroyed) socket.end(encodeFrame(frame));
    };
    const refuse = (type: ChangeFrame["type"] | "frame", error: Error) =>
      reply({
        type: "error",
        error: error.message,
        code: error instanceof NuketownError ? error.exitCode : 1,
        hint: changeHint(type, error.message),
      });
    peerCredentials(socket, this.#perl).then(
      (peer) => {
        let asked = false;
        socket.setEncoding("utf8");
        const splitter = new LineSplitter(
          (line) => {
            if (asked) return;
            asked = true;
            // A build may take long: from here on the daemon is the slow side.
            socket.setTimeout(0);
            const parsed = parseFrame(line, ChangeFrameSchema);
            if (!parsed.ok) return refuse("frame", new NuketownError(parsed.error, 2));
            this.#handle(peer, parsed.frame).then(reply, (error: Error) =>
              refuse(parsed.frame.type, error),
            );
          },
          () => refuse("frame", new NuketownError("frame too large", 2)),
        );
        socket.on("data", (chunk: string) => splitter.push(chunk));
        socket.resume();
      },
      (error: Error) => {
        this.#log(`change: cannot tell who connected: ${error.message}`);
        refuse("frame", error);
      },
    );
  }

  async #handle(peer: PeerCredentials, frame: ChangeFrame): Promise<ChangeReply> {
    const agent = this.#town.agents.find((a) => a.uid === peer.uid);
    if (!agent)
      throw new NuketownError(
        `uid ${peer.uid} is not an agent of ${this.#town.name}: the change socket serves agents only`,
        3,
      );
    const control = new ChangeControl({
      town: this.#town,
      uid: 0,
      ...(this.#runner && { runner: this.#runner }),
    });
    try {
      if (frame.type === "status") {
        if (frame.id !== undefined)
          return { type: "proposal", proposal: await control.get(frame.id) };
        return { type: "proposals", proposals: await control.list() };
      }
      if (frame.type === "verify") {
        this.#log(`change: ${agent.name} (pid ${peer.pid}) verifies ${frame.id}`);
        const proposal = await control.verify(frame.id, { requester: agent.name });
        this.#log(`change: ${frame.id} ${proposal.state}`);
        return { type: "proposal", proposal };
      }
      this.#log(`change: ${agent.name} (pid ${peer.pid}) proposes for ${frame.host}`);
      const proposal = await control.propose({
        host: frame.host,
        explanation: frame.explanation,
        // Who proposes is the peer, never a claim.
        agent: agent.name,
        ...(frame.branch !== undefined && { branch: frame.branch }),
        ...(frame.from !== undefined && { from: frame.from }),
        ...(frame.patch !== undefined && { patchText: frame.patch }),
      });
      this.#log(`change: ${proposal.id} proposed by ${agent.name}, risk ${proposal.risk}`);
      return { type: "proposal", proposal };
    } finally {
      await control.close();
    }
  }
}
