/**
 * `nuketown approvald`: the approval daemon. Gates (root, via sudo) ask on a
 * request socket only root can reach; humans answer on a control socket
 * whose group is the approvers group. Policy and test mode may answer first;
 * otherwise every channel is told and the first valid decision wins;
 * silence until the timeout means no. Every request and decision is audited.
 */
import { randomBytes } from "node:crypto";
import { chmod, chown, lstat, mkdir, readdir, readFile, rm } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { AuditLog } from "../audit/log.ts";
import { changePolicy } from "../change/proposal.ts";
import type { SecretDecryptor } from "../host/secrets.ts";
import { ensureDir, writeFileAtomic } from "../os/files.ts";
import { type Runner, systemRunner } from "../os/process.ts";
import { parseGroup, parseMountinfo, parsePasswd } from "../os/tables.ts";
import type { ResolvedTown } from "../town/types.ts";
import { AskLimit, DEFAULT_ASK_LIMIT } from "./ask-limit.ts";
import { DenialBursts } from "./bursts.ts";
import type { ApprovalChannel, DecideResult, HumanAnswer } from "./channel.ts";
import { readApprovalMode } from "./mode.ts";
import { evaluatePolicy } from "./policy.ts";
import {
  type ApprovalRequest,
  ControlFrameSchema,
  commandHash,
  type Decision,
  encodeFrame,
  GateFrameSchema,
  LineSplitter,
  type PendingRequest,
  parseFrame,
} from "./protocol.ts";

export interface DaemonOptions {
  readonly town: ResolvedTown;
  readonly audit: AuditLog;
  readonly channels?: readonly ApprovalChannel[];
  readonly clock?: () => Date;
  /** Where the pending requests are journalled, so a restart fails them closed. */
  readonly journal?: string;
  /** /etc/passwd and /etc/group, for the approvers group and humans' uids. */
  readonly etc?: string;
  /** Decrypts secrets that agents unlock. */
  readonly decryptor?: SecretDecryptor;
  /** Runs mount (the tmpfs for unlocked secrets). */
  readonly runner?: Runner;
  /** How long a burst of denials is folded into one record (bursts.ts). */
  readonly denialWindowMs?: number;
}

/** Requests one agent may have waiting for a human at once. */
export const MAX_PENDING_PER_AGENT = 8;

interface Waiting {
  readonly request: PendingRequest;
  readonly socket: net.Socket;
  readonly timer: NodeJS.Timeout;
}

export class ApprovalDaemon {
  readonly #town: ResolvedTown;
  readonly #audit: AuditLog;
  readonly #channels: ApprovalChannel[];
  readonly #clock: () => Date;
  readonly #journal: string;
  readonly #etc: string;
  readonly #pending = new Map<string, Waiting>();
  readonly #subscribers = new Set<net.Socket>();
  readonly #servers: net.Server[] = [];
  readonly #authDir: string;
  readonly #decryptor: SecretDecryptor | undefined;
  readonly #runner: Runner;
  /** Unlocked secrets by path, with the timer that locks them again. */
  #mountedTmpfs = false;
  readonly #unlocked = new Map<string, { agent: string; secret: string; timer: NodeJS.Timeout }>();
  readonly #bursts: DenialBursts;
  readonly #asks: AskLimit;

  constructor(options: DaemonOptions) {
    this.#town = options.town;
    this.#audit = options.audit;
    this.#channels = [...(options.channels ?? [])];
    this.#clock = options.clock ?? (() => new Date());
    this.#journal = options.journal ?? path.join(options.town.stateDir, "approval-journal.json");
    this.#etc = options.etc ?? "/etc";
    this.#authDir = path.join(options.town.runtimeDir, "control-auth");
    this.#decryptor = options.decryptor;
    this.#runner = options.runner ?? systemRunner;
    this.#asks = new AskLimit(options.town.approval.askLimit ?? DEFAULT_ASK_LIMIT, this.#clock);
    this.#bursts = new DenialBursts({
      record: async (summary) => {
        await this.#audit.append("denials.suppressed", { ...summary });
      },
      clock: this.#clock,
      ...(options.denialWindowMs !== undefined && { windowMs: options.denialWindowMs }),
      onError: (error) => this.#report("summarising denials", error),
    });
  }

  /** Append a record about `agent`: a burst of its denials is summed up first, so its records stay in order. */
  async #auditAbout(agent: string, event: string, data: Record<string, unknown>): Promise<void> {
    await this.#bursts.end(agent);
    await this.#audit.append(event, data);
  }

  get pending(): PendingRequest[] {
    return [...this.#pending.values()].map((w) => w.request);
  }

  addChannel(channel: ApprovalChannel): void {
    this.#channels.push(channel);
  }

  async start(): Promise<void> {
    await this.#failClosedAfterRestart();
    const { requestSocket, controlSocket } = this.#town.paths;
    const approvers = await this.#approversGid();

    // The request socket sits in a root-only directory: only root (the gate) gets in.
    await ensureDir(path.dirname(requestSocket), 0o700);
    await this.#listen(requestSocket, (socket) => this.#serveGate(socket));
    await chmod(requestSocket, 0o600);

    // The control socket and the auth drop box: root and the approvers group only.
    await ensureDir(path.dirname(controlSocket), 0o755);
    await this.#listen(controlSocket, (socket) => this.#serveControl(socket));
    await chown(controlSocket, 0, approvers);
    await chmod(controlSocket, 0o660);
    await rm(this.#authDir, { recursive: true, force: true });
    await mkdir(this.#authDir, { mode: 0o730 });
    await chown(this.#authDir, 0, approvers);
    // Sticky and not listable: an approver can drop a file but neither see nor remove others'.
    await chmod(this.#authDir, 0o1730);
    await this.#prepareSecretsTmpfs();
    await this.#audit.append("daemon.started", { pid: process.pid });
  }

  async stop(): Promise<void> {
    for (const waiting of this.#pending.values()) {
      await this.#decide(waiting.request.id, {
        decision: "cancelled",
        by: { kind: "daemon" },
        reason: "the approval daemon stopped",
      });
    }
    for (const socket of this.#subscribers) socket.destroy();
    await this.#bursts.endAll();
    for (const file of [...this.#unlocked.keys()])
      await this.#lockFile(file, "the approval daemon stopped");
    // Nothing unlocked outlives the daemon, not even the empty tmpfs.
    if (this.#mountedTmpfs) {
      await this.#runner.run("umount", [this.#town.paths.unlockedSecrets], { allowFailure: true });
      this.#mountedTmpfs = false;
    }
    await Promise.all(
      this.#servers.map((server) => new Promise((resolve) => server.close(resolve))),
    );
    await Promise.all(this.#channels.map((c) => c.close()));
  }

  async #listen(socketPath: string, serve: (socket: net.Socket) => void): Promise<void> {
    await rm(socketPath, { force: true });
    const server = net.createServer(serve);
    this.#servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(socketPath, () => resolve());
    });
  }

  async #approversGid(): Promise<number> {
    const name = this.#town.approval.approversGroup;
    const group = parseGroup(await readFile(path.join(this.#etc, "group"), "utf8")).find(
      (g) => g.name === name,
    );
    if (!group)
      throw new Error(`the approvers group "${name}" does not exist: run nuketown apply first`);
    return group.gid;
  }

  // ---- gates ---------------------------------------------------------------

  #serveGate(socket: net.Socket): void {
    socket.setEncoding("utf8");
    let asked = false;
    const splitter = new LineSplitter(
      (line) => {
        const parsed = parseFrame(line, GateFrameSchema);
        if (!parsed.ok)
          return void socket.write(encodeFrame({ type: "error", error: parsed.error }));
        if (asked)
          return void socket.write(
            encodeFrame({ type: "error", error: "one request per connection" }),
          );
        asked = true;
        const frame = parsed.frame;
        const work =
          frame.type === "lock"
            ? this.#onLock(socket, frame.agent, frame.secret)
            : frame.type === "refused"
              ? this.#onRefused(socket, frame)
              : this.#onRequest(socket, frame.request);
        work.catch((error: Error) => {
          socket.end(encodeFrame({ type: "error", error: `internal error: ${error.message}` }));
        });
      },
      () => socket.write(encodeFrame({ type: "error", error: "frame too large" })),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      for (const waiting of this.#pending.values()) {
        if (waiting.socket === socket) {
          this.#decide(waiting.request.id, {
            decision: "cancelled",
            by: { kind: "daemon" },
            reason: "the requester went away",
          }).catch((error: Error) => this.#report("cancelling", error));
        }
      }
    });
  }

  async #onRequest(socket: net.Socket, request: ApprovalRequest): Promise<void> {
    const now = this.#clock();
    const agent = this.#town.agents.find(
      (a) => a.uid === request.agent.uid && a.name === request.agent.name,
    );
    const timeout = agent?.sudo.timeout ?? this.#town.approval.timeout;
    const pending: PendingRequest = {
      ...request,
      // 64 bits: a human types it, and an agent cannot hope to collide with a pending one.
      id: randomBytes(8).toString("hex"),
      time: now.toISOString(),
      hash: commandHash(request),
      expires: new Date(now.getTime() + timeout * 1000).toISOString(),
    };
    const name = request.agent.name;
    const answer = request.change ? undefined : await this.#answerAtOnce(request, agent);
    // A denial no human made, inside a burst of them: counted, not recorded one by one.
    if (
      answer?.decision === "denied" &&
      (await this.#bursts.denied(name, request.argv, answer.reason))
    ) {
      socket.end(encodeFrame({ type: "decision", id: pending.id, hash: pending.hash, ...answer }));
      return;
    }
    if (answer?.decision === "denied") await this.#audit.append("request", auditView(pending));
    else await this.#auditAbout(name, "request", auditView(pending));
    if (request.change)
      return this.#onChange(socket, pending, agent, (a) => this.#immediate(socket, pending, a));
    if (answer) return this.#immediate(socket, pending, answer);
    return this.#askHumans(socket, pending, timeout);
  }

  /** A decision made without a human: carried out, audited, sent. */
  async #immediate(socket: net.Socket, pending: PendingRequest, answer: Decision): Promise<void> {
    const decision = await this.#carryOut(pending, answer);
    await this.#audit.append("decision", {
      id: pending.id,
      ...decision,
      agent: pending.agent.name,
    });
    socket.end(encodeFrame({ type: "decision", id: pending.id, hash: pending.hash, ...decision }));
  }

  /**
   * What the daemon, the policy or test mode answer at once; undefined when a
   * human must be asked.
   */
  async #answerAtOnce(
    request: ApprovalRequest,
    agent: ResolvedTown["agents"][number] | undefined,
  ): Promise<Decision | undefined> {
    const unlockable =
      request.unlock && agent?.secrets.unlockable.find((u) => u.name === request.unlock?.secret);
    if (request.unlock && !unlockable) {
      return {
        decision: "denied",
        by: { kind: "daemon" },
        reason: `${request.agent.name} has no unlockable secret "${request.unlock.secret}"`,
      };
    }
    if (!agent || (!request.unlock && !agent.sudo.enable)) {
      return {
        decision: "denied",
        by: { kind: "daemon" },
        reason: `${request.agent.name} may not use sudo in this town`,
      };
    }

    // An agent cannot flood the humans (or the desktop) with questions.
    const waiting = [...this.#pending.values()].filter(
      (w) => w.request.agent.name === agent.name,
    ).length;
    if (waiting >= MAX_PENDING_PER_AGENT) {
      return {
        decision: "denied",
        by: { kind: "limit" },
        reason: `${agent.name} already has ${waiting} requests waiting for a human`,
      };
    }
    // Policy rules are about commands; an unlock always asks (or test mode answers).
    const policy = request.unlock
      ? ({ action: "ask", source: "default" } as const)
      : evaluatePolicy(
          agent.sudo.policy,
          {
            argv: request.argv,
            runAs: request.runAs.user,
            ...(request.runAs.uid !== undefined && { runAsUid: request.runAs.uid }),
            resolvedCommand: request.command,
          },
          // Targets by uid: a rule about root is about every name of uid 0.
          { accounts: await this.#accounts() },
        );
    if (policy.action === "deny") {
      const rule = policy.source === "rule" ? { rule: policy.rule } : {};
      return {
        decision: "denied",
        by: { kind: "policy", ...rule },
        reason: policy.reason ?? "denied by policy",
      };
    }
    const mode = await readApprovalMode(this.#town);
    if (mode !== "off") {
      const approve = mode === "auto-approve";
      return {
        decision: approve ? "approved" : "denied",
        by: { kind: "test-mode" },
        reason: `TEST MODE (${mode}): no human was asked`,
      };
    }
    // Rules match argv and user, not groups: a request for another group
    // (-g disk, -g shadow…) always goes to a human.
    if (policy.action === "allow" && request.runAs.group === undefined) {
      const rule = policy.source === "rule" ? { rule: policy.rule } : {};
      return {
        decision: "approved",
        by: { kind: "policy", ...rule },
        reason: policy.reason ?? "allowed by policy",
      };
    }
    // A human is asked: counted here, where nothing awaits between the count and the ask.
    const ask = this.#asks.take(agent.name);
    if (!ask.ok) return { decision: "denied", by: { kind: "limit" }, reason: ask.reason };
    return undefined;
  }

  /** The passwd table, for policy targets by uid; empty (names compared) when it cannot be read. */
  async #accounts(): Promise<{ name: string; uid: number }[]> {
    const text = await readFile(path.join(this.#etc, "passwd"), "utf8").catch(() => "");
    return parsePasswd(text);
  }

  /** An approved command the gate refused to run: it changed after the human saw it. */
  async #onRefused(
    socket: net.Socket,
    frame: { id: string; agent: { name: string; uid: number }; reason: string },
  ): Promise<void> {
    await this.#auditAbout(frame.agent.name, "refused", {
      id: frame.id,
      agent: frame.agent.name,
      reason: frame.reason,
    });
    socket.end(encodeFrame({ type: "ok", id: frame.id }));
  }

  /**
   * A change to the system configuration (only root's change control can
   * send one: the request socket is root's). The change policy may let a
   * low-risk change of a listed agent pass; test mode never decides a change.
   */
  async #onChange(
    socket: net.Socket,
    pending: PendingRequest,
    agent: ResolvedTown["agents"][number] | undefined,
    immediate: (answer: Decision) => Promise<void>,
  ): Promise<void> {
    const change = pending.change;
    if (!change) return;
    if (!agent)
      return immediate({
        decision: "denied",
        by: { kind: "daemon" },
        reason: `${pending.agent.name} is not an agent of this town`,
      });
    const policy = changePolicy(this.#town.change?.autoApprove ?? [], agent.name, change.risk);
    if (policy.action === "allow")
      return immediate({ decision: "approved", by: { kind: "policy" }, reason: policy.reason });
    return this.#askHumans(socket, pending, this.#town.approval.timeout);
  }

  async #askHumans(socket: net.Socket, pending: PendingRequest, timeout: number): Promise<void> {
    const timer = setTimeout(() => {
      this.#decide(pending.id, {
        decision: "timeout",
        by: { kind: "daemon" },
        reason: `no answer within ${timeout} s`,
      }).catch((error: Error) => this.#report("timing out a request", error));
    }, timeout * 1000);
    timer.unref();
    if (socket.destroyed) {
      // The gate left while we were auditing: nobody waits for an answer any more.
      clearTimeout(timer);
      await this.#audit.append("decision", {
        id: pending.id,
        agent: pending.agent.name,
        decision: "cancelled",
        by: { kind: "daemon" },
        reason: "the requester went away",
      });
      return;
    }
    this.#pending.set(pending.id, { request: pending, socket, timer });
    await this.#writeJournal();
    socket.write(
      encodeFrame({
        type: "pending",
        id: pending.id,
        hash: pending.hash,
        expires: pending.expires,
      }),
    );
    this.#broadcast({ type: "event", event: "request", request: pending });
    for (const channel of this.#channels) {
      channel.requested(pending, (answer) => this.humanDecides(pending.id, answer, channel.name));
    }
  }

  /** A human's answer from any channel; the first valid one wins. */
  async humanDecides(id: string, answer: HumanAnswer, channel: string): Promise<DecideResult> {
    const waiting = this.#pending.get(id);
    if (!waiting)
      return {
        ok: false,
        error: `no pending request ${id} (already decided, expired, or never existed)`,
      };
    if (answer.human === waiting.request.agent.name)
      return { ok: false, error: "an agent cannot approve its own request" };
    // The answer is bound to the request the human saw: a hash they were shown that is not this one's counts for nothing.
    if (answer.hash !== undefined && !waiting.request.hash.startsWith(answer.hash.toLowerCase()))
      return {
        ok: false,
        error: `request ${id} has hash ${waiting.request.hash.slice(0, 16)}, not the ${answer.hash.slice(0, 16)} you were shown: review it again (nuketown approvals)`,
      };
    const reason =
      answer.reason ??
      (answer.approve ? `approved by ${answer.human}` : `denied by ${answer.human}`);
    await this.#decide(
      id,
      {
        decision: answer.approve ? "approved" : "denied",
        by: { kind: "human", id: answer.human },
        reason,
      },
      channel,
    );
    return { ok: true };
  }

  async #decide(id: string, answer: Decision, channel?: string): Promise<void> {
    const waiting = this.#pending.get(id);
    if (!waiting) return;
    this.#pending.delete(id);
    clearTimeout(waiting.timer);
    const decision = await this.#carryOut(waiting.request, answer);
    await this.#auditAbout(waiting.request.agent.name, "decision", {
      id,
      ...decision,
      agent: waiting.request.agent.name,
      ...(channel && { channel }),
    });
    await this.#writeJournal();
    if (!waiting.socket.destroyed)
      waiting.socket.end(
        encodeFrame({ type: "decision", id, hash: waiting.request.hash, ...decision }),
      );
    this.#broadcast({ type: "event", event: "decision", id, ...decision });
    for (const c of this.#channels) c.resolved(waiting.request, decision);
  }

  /** A background step failed: say so, never crash the daemon every agent depends on. */
  #report(what: string, error: Error): void {
    process.stderr.write(`nuketown approvald: error while ${what}: ${error.message}\n`);
  }

  // ---- unlocked secrets --------------------------------------------------

  /** An approved unlock is carried out before the answer goes back: the answer carries the path. */
  async #carryOut(request: PendingRequest, decision: Decision): Promise<Decision> {
    if (decision.decision !== "approved" || !request.unlock) return decision;
    const agent = this.#town.agents.find((a) => a.name === request.agent.name);
    const secret = agent?.secrets.unlockable.find((u) => u.name === request.unlock?.secret);
    if (!agent || !secret || !this.#decryptor) {
      return {
        decision: "denied",
        by: { kind: "daemon" },
        reason: "this daemon cannot decrypt secrets",
      };
    }
    try {
      const plaintext = await this.#decryptor.decrypt(secret.source);
      const dir = path.join(this.#town.paths.unlockedSecrets, agent.name);
      // root:<agent's group>, read-only for the agent: it can read its secret
      // but neither replace it nor plant anything the daemon later removes.
      await ensureDir(dir, 0o750, 0, agent.gid);
      const file = path.join(dir, secret.name);
      await writeFileAtomic(file, plaintext, { mode: 0o440, uid: 0, gid: agent.gid });
      const previous = this.#unlocked.get(file);
      if (previous) clearTimeout(previous.timer);
      const timer = setTimeout(
        () =>
          this.#lockFile(file, `expired after ${secret.ttl} s`).catch((error: Error) =>
            this.#report("locking an expired secret", error),
          ),
        secret.ttl * 1000,
      );
      timer.unref();
      this.#unlocked.set(file, { agent: agent.name, secret: secret.name, timer });
      await this.#audit.append("secret.unlocked", {
        agent: agent.name,
        name: secret.name,
        path: file,
        ttl: secret.ttl,
      });
      return {
        ...decision,
        path: file,
        reason: `${decision.reason}; unlocked for ${secret.ttl} s`,
      };
    } catch (error) {
      return {
        decision: "denied",
        by: { kind: "daemon" },
        reason: `could not unlock: ${(error as Error).message}`,
      };
    }
  }

  async #lockFile(file: string, reason: string): Promise<void> {
    const entry = this.#unlocked.get(file);
    if (!entry) return;
    clearTimeout(entry.timer);
    this.#unlocked.delete(file);
    await rm(file, { recursive: true, force: true });
    await this.#audit.append("secret.locked", { agent: entry.agent, name: entry.secret, reason });
  }

  /** `nuketown lock [NAME]` from the gate: the agent gives access up. */
  async #onLock(
    socket: net.Socket,
    agent: { name: string; uid: number },
    secret?: string,
  ): Promise<void> {
    const removed: string[] = [];
    for (const [file, entry] of this.#unlocked) {
      if (entry.agent === agent.name && (secret === undefined || entry.secret === secret)) {
        await this.#lockFile(file, "locked by the agent");
        removed.push(entry.secret);
      }
    }
    socket.end(encodeFrame({ type: "locked", removed }));
  }

  /**
   * Unlocked secrets live on a tmpfs, never on disk. A restart forgets what
   * it unlocked, so whatever is there is removed: fail closed.
   */
  async #prepareSecretsTmpfs(): Promise<void> {
    const dir = this.#town.paths.unlockedSecrets;
    await ensureDir(dir, 0o755);
    const mounts = parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"));
    // Already in memory (the usual /run/nuketown): nothing to mount. Otherwise a tmpfs of our own.
    const holder = mounts
      .filter(
        (m) =>
          dir === m.mountPoint || dir.startsWith(m.mountPoint === "/" ? "/" : `${m.mountPoint}/`),
      )
      .sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0];
    if (holder?.fsType !== "tmpfs") {
      this.#mountedTmpfs = true;
      await this.#runner.run("mount", [
        "-t",
        "tmpfs",
        "-o",
        "mode=0755,size=16m,nosuid,nodev,noexec",
        "nuketown-secrets",
        dir,
      ]);
    }
    for (const entry of await readdir(dir))
      await rm(path.join(dir, entry), { recursive: true, force: true });
  }

  // ---- journal ----------------------------------------------------------

  // One write at a time, each of the pending set as it is then: concurrent renames could land a stale one last.
  #journalWrites: Promise<void> = Promise.resolve();
  #writeJournal(): Promise<void> {
    this.#journalWrites = this.#journalWrites.then(() => {
      const entries = [...this.#pending.values()].map((w) => auditView(w.request));
      return writeFileAtomic(this.#journal, `${JSON.stringify(entries)}\n`, { mode: 0o600 });
    });
    return this.#journalWrites;
  }

  /** Requests that were pending when the daemon died: their gates were told nothing, so record them as denied. */
  async #failClosedAfterRestart(): Promise<void> {
    const text = await readFile(this.#journal, "utf8").catch(() => "[]");
    let entries: { id?: string; agent?: string }[] = [];
    try {
      entries = JSON.parse(text);
    } catch {
      entries = [{ id: "unknown", agent: "unknown" }];
    }
    for (const entry of entries) {
      await this.#audit.append("decision", {
        id: entry.id ?? "unknown",
        agent: entry.agent ?? "unknown",
        decision: "cancelled",
        by: { kind: "daemon" },
        reason: "the approval daemon restarted while this request was pending (failed closed)",
      });
    }
    await writeFileAtomic(this.#journal, "[]\n", { mode: 0o600 });
  }

  // ---- humans -------------------------------------------------------------

  #broadcast(frame: object): void {
    const line = encodeFrame(frame);
    for (const socket of this.#subscribers) socket.write(line);
  }

  #serveControl(socket: net.Socket): void {
    socket.setEncoding("utf8");
    let nonce: string | undefined;
    let human: string | undefined;
    const reply = (frame: object) => socket.write(encodeFrame(frame));
    const handle = async (line: string) => {
      const parsed = parseFrame(line, ControlFrameSchema);
      if (!parsed.ok) return reply({ type: "error", error: parsed.error });
      const frame = parsed.frame;
      if (frame.type === "hello") {
        nonce = randomBytes(16).toString("hex");
        return reply({ type: "challenge", nonce, dir: this.#authDir });
      }
      if (frame.type === "auth") {
        if (!nonce || frame.nonce !== nonce)
          return reply({ type: "error", error: "auth without a matching challenge" });
        const who = await this.#authenticate(nonce);
        nonce = undefined;
        if (!who.ok) return reply({ type: "error", error: who.error });
        human = who.human;
        return reply({ type: "welcome", as: human });
      }
      if (!human) return reply({ type: "error", error: "authenticate first (hello, then auth)" });
      if (frame.type === "list") return reply({ type: "requests", requests: this.pending });
      if (frame.type === "subscribe") {
        this.#subscribers.add(socket);
        return reply({ type: "requests", requests: this.pending });
      }
      const result = await this.humanDecides(
        frame.id,
        {
          approve: frame.decision === "approve",
          human,
          ...(frame.reason !== undefined && { reason: frame.reason }),
          ...(frame.hash !== undefined && { hash: frame.hash }),
        },
        frame.channel ?? "terminal",
      );
      return reply(
        result.ok ? { type: "ok", id: frame.id } : { type: "error", error: result.error },
      );
    };
    // Frames of one client are handled in order.
    let queue = Promise.resolve();
    const splitter = new LineSplitter(
      (line) => {
        queue = queue
          .then(async () => {
            await handle(line);
          })
          .catch(() => {});
      },
      () => reply({ type: "error", error: "frame too large" }),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => this.#subscribers.delete(socket));
  }

  /**
   * Who is on the other end: they created `<authDir>/<nonce>`, and only its
   * owner could have. Root, or a declared approver's Unix account.
   */
  async #authenticate(
    nonce: string,
  ): Promise<{ ok: true; human: string } | { ok: false; error: string }> {
    const file = path.join(this.#authDir, nonce);
    const info = await lstat(file).catch(() => undefined);
    await rm(file, { force: true });
    if (!info?.isFile()) return { ok: false, error: `create ${file} to prove who you are` };
    // A hard link to someone else's file would borrow their ownership.
    if (info.nlink !== 1) return { ok: false, error: `${file} must be a new file, not a link` };
    if (info.uid === 0) return { ok: true, human: "root" };
    const user = parsePasswd(await readFile(path.join(this.#etc, "passwd"), "utf8")).find(
      (u) => u.uid === info.uid,
    );
    const approver = this.#town.humans.find((h) => h.approver && h.unixUser === user?.name);
    if (!approver) return { ok: false, error: `uid ${info.uid} is not a declared approver` };
    return { ok: true, human: approver.name };
  }
}

/** What the audit log and journal keep of a request (the full argv: it is what was approved). */
function auditView(request: PendingRequest) {
  return {
    id: request.id,
    agent: request.agent.name,
    uid: request.agent.uid,
    argv: request.argv,
    command: request.command,
    cwd: request.cwd,
    runAs: request.runAs,
    hash: request.hash,
    // The gate reads it from the kernel (sudo's controlling terminal), never from the agent's fds.
    ...(request.tty !== undefined && { tty: request.tty, ttyFrom: "sudo's controlling terminal" }),
    ...(request.writable !== undefined && {
      agentWritable: request.writable.map((f) => ({
        index: f.index,
        path: f.path,
        sha256: f.sha256,
        why: f.why,
      })),
    }),
    ...(request.change && {
      change: {
        id: request.change.id,
        host: request.change.host,
        base: request.change.base,
        commit: request.change.commit,
        risk: request.change.risk,
      },
    }),
  };
}
