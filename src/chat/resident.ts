/**
 * The agent's chat service (`nuketown chat`), transport-neutral: takes
 * messages from the chat network, decides whether the sender may give the
 * agent work, hands each conversation to the agent daemon in order, and
 * posts progress and answers back where they were asked.
 *
 * It acts on the host only through the agent daemon's socket and the agent's
 * own sudo (which a human approves): a channel, never an actor.
 */
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { AgentClient, type TaskOutcome } from "../agent/client.ts";
import { clip, type TaskEvent } from "../agent/protocol.ts";
import { AuditLog } from "../audit/log.ts";
import { EXIT, type NuketownError } from "../errors.ts";
import { startProcess } from "../os/process.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { CHAT_HELP, parseCommand, stripMention } from "./commands.ts";
import { Ledger } from "./ledger.ts";
import { allowedFor, chatIdKey, type Resident, residents } from "./people.ts";
import {
  type ChatMessage,
  type ChatTransport,
  type PresenceState,
  type SendOptions,
  type SentMessage,
  saidBefore,
} from "./transport.ts";

export interface ResidentOptions {
  readonly town: ResolvedTown;
  readonly agent: ResolvedAgent;
  readonly transport: ChatTransport;
  /** Persisted: the ledger of handled messages and the chat audit log. */
  readonly stateDir: string;
  readonly log: (line: string) => void;
  /** Asks for and runs the reset of `!reset` (default: the agent's own sudo, so a human approves). */
  readonly reset?: () => Promise<{ code: number; output: string }>;
  /** How often, while work runs, to look for a sudo waiting for a human (ms). */
  readonly approvalPoll?: number;
  /** Least time between two edits of a progress message (ms). */
  readonly progressEvery?: number;
  /** Post a progress message once work has run this long without one (ms). */
  readonly progressAfter?: number;
  /** Show typing and a busy presence once work has run this long (ms). */
  readonly busyAfter?: number;
  /** The transport gave up for good (a refused credential): the service should exit non-zero. */
  readonly onFatal?: (error: Error) => void;
}

interface Conversation {
  /** Work of this conversation runs one message after the other. */
  tail: Promise<void>;
  running?: AbortController;
  /** Messages waiting behind the running one. */
  waiting: number;
  /** What its tasks carry as `replyTo`: the daemon keeps one runtime session per value. */
  readonly replyTo: string;
  /** The branch its first task worked on: the conversation goes on there, not on a new branch per message. */
  branch?: string;
}

/** A room's conversation, or a thread's: each is one runtime session. */
export function conversationKey(message: Pick<ChatMessage, "room" | "thread">): string {
  return message.thread ? `${message.room} ${message.thread}` : message.room;
}

export class ChatResident {
  readonly #o: ResidentOptions;
  readonly #transport: ChatTransport;
  readonly #allowed: Map<string, Resident>;
  readonly #everyone: Map<string, Resident>;
  readonly #conversations = new Map<string, Conversation>();
  /** Threads this agent has answered in: they go on without a mention. */
  readonly #threads = new Set<string>();
  readonly #names: string[];
  #ledger: Ledger | undefined;
  #audit: AuditLog;
  #presence: { state: PresenceState; status: string } = { state: "available", status: "" };
  #poll: NodeJS.Timeout | undefined;
  /** Conversations whose work shows as busy right now. */
  #shownBusy = 0;
  #stopped = false;

  constructor(options: ResidentOptions) {
    this.#o = options;
    this.#transport = options.transport;
    this.#allowed = allowedFor(options.town, options.agent, options.transport.kind);
    this.#everyone = residents(options.town, options.transport.kind);
    this.#audit = new AuditLog(path.join(options.stateDir, "audit.jsonl"), { mode: 0o600 });
    const self = options.transport.self;
    const localpart = self.replace(/^@/, "").split(/[:@]/)[0] ?? "";
    this.#names = [self, localpart, options.agent.name];
  }

  async start(): Promise<void> {
    this.#ledger = await Ledger.open(path.join(this.#o.stateDir, "ledger.json"));
    await this.#transport.start({
      message: (message) => {
        this.#onMessage(message).catch((error: Error) =>
          this.#o.log(`message ${message.id}: ${error.message}`),
        );
      },
      connection: (state, detail) =>
        this.#o.log(`${this.#transport.kind}: ${state}${detail ? ` (${detail})` : ""}`),
      fatal: (error) => this.#o.onFatal?.(error),
    });
    await this.#setPresence("available", "ready").catch((error: Error) =>
      this.#o.log(`presence: ${error.message}`),
    );
    this.#o.log(`online as ${this.#transport.self}`);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#poll);
    for (const conversation of this.#conversations.values()) conversation.running?.abort();
    await Promise.allSettled([...this.#conversations.values()].map((c) => c.tail));
    await this.#transport.stop();
  }

  async #onMessage(message: ChatMessage): Promise<void> {
    const ledger = this.#ledger;
    if (!ledger || this.#stopped) return;
    // Said before this service first started: history, not a request. A stored message's
    // stamp may be its second only; one stamped in the second of the first start came after
    // it as far as anyone can tell (the transports deliver nothing from before a first start).
    if (ledger.has(message.id) || saidBefore(message.time, ledger.since)) return;
    const key = conversationKey(message);
    const fromAgent =
      message.sender !== undefined &&
      this.#everyone.get(chatIdKey(this.#transport.kind, message.sender))?.kind === "agent";
    // Another agent must name this one every time (or write to it directly): two agents that
    // follow each other's threads, or answer every room message, would talk forever.
    const addressed =
      message.direct ||
      message.mentionsMe ||
      (!fromAgent && (this.#o.agent.chat.respondTo === "all" || this.#threads.has(key)));
    if (!addressed) return;
    // Entered before any work: after a crash a message stays unanswered, never answered twice.
    await ledger.enter(message.id);

    const where: SendOptions = message.thread
      ? { thread: message.thread, replyTo: message.id }
      : { replyTo: message.id };
    const who = message.sender
      ? this.#allowed.get(chatIdKey(this.#transport.kind, message.sender))
      : undefined;
    if (!who) {
      await this.#record("chat.refused", {
        agent: this.#o.agent.name,
        room: message.room,
        sender: message.sender ?? "(unknown)",
        message: message.id,
      });
      if (await ledger.firstRefusal(message.room, message.sender ?? "")) {
        await this.#transport.send(
          message.room,
          `Sorry, I only take requests from the people ${this.#o.town.name} lets me work for. I have noted that you asked.`,
          where,
        );
      }
      this.#o.log(
        `refused a message from ${message.sender ?? "an unknown sender"} in ${message.room}`,
      );
      return;
    }

    const text = stripMention(message.body, this.#names);
    const command = parseCommand(text);
    await this.#record("chat.message", {
      agent: this.#o.agent.name,
      room: message.room,
      from: who.name,
      sender: who.chatId,
      message: message.id,
      ...(command && { command: command.name }),
    });
    const conversation = this.#conversation(key);
    if (command) return this.#command(command, message, where, conversation);
    if (text === "") return;
    if (message.thread) this.#threads.add(key);
    conversation.waiting += 1;
    conversation.tail = conversation.tail
      .then(() => {
        conversation.waiting -= 1;
        return this.#work(message, who, text, where, conversation);
      })
      .catch((error: Error) => this.#o.log(`conversation ${key}: ${error.message}`));
  }

  #conversation(key: string): Conversation {
    let conversation = this.#conversations.get(key);
    if (!conversation) {
      conversation = {
        tail: Promise.resolve(),
        waiting: 0,
        replyTo: `chat:${this.#transport.kind}:${key}`.slice(0, 4096),
      };
      this.#conversations.set(key, conversation);
    }
    return conversation;
  }

  async #command(
    command: NonNullable<ReturnType<typeof parseCommand>>,
    message: ChatMessage,
    where: SendOptions,
    conversation: Conversation,
  ): Promise<void> {
    const reply = (text: string) => this.#transport.send(message.room, text, where);
    switch (command.name) {
      case "help":
        await reply(CHAT_HELP);
        return;
      case "status":
        await reply(await this.#statusText(conversation));
        return;
      case "cancel":
        if (!conversation.running) {
          await reply("Nothing of this conversation is running.");
          return;
        }
        conversation.running.abort();
        await reply("Cancelling.");
        return;
      case "reset":
        await this.#reset(reply);
        return;
      case "unknown":
        await reply(
          `I do not know !${command.word}. ${CHAT_HELP.split("\n").slice(1).join(" · ")}`,
        );
        return;
    }
  }

  async #statusText(conversation: Conversation): Promise<string> {
    let client: AgentClient | undefined;
    try {
      client = await AgentClient.connect(this.#o.agent.socket);
      const status = await client.status();
      const lines = [`${status.agent.name} (${status.agent.role}), up since ${status.startedAt}`];
      // Other conversations' prompts are theirs: say only that work runs.
      for (const task of status.running)
        lines.push(
          task.replyTo === conversation.replyTo
            ? `working on ${task.project}: ${clip(task.prompt, 80)} (since ${task.startedAt ?? task.queuedAt})`
            : `working on ${task.project} for another conversation`,
        );
      if (status.running.length === 0) lines.push("not working on anything");
      if (status.queued.length > 0) lines.push(`${status.queued.length} waiting`);
      if (conversation.waiting > 0)
        lines.push(`${conversation.waiting} more of this conversation's messages wait their turn`);
      if (this.#presence.state === "away") lines.push(this.#presence.status);
      for (const warning of status.warnings) lines.push(`warning: ${warning}`);
      return lines.join("\n");
    } catch (error) {
      return `I cannot reach my agent daemon: ${(error as Error).message}`;
    } finally {
      client?.close();
    }
  }

  async #reset(reply: (text: string) => Promise<SentMessage>): Promise<void> {
    if (!this.#o.agent.sudo.enable && !this.#o.reset) {
      await reply("I cannot reset myself: sudo is not enabled for me, so nobody could approve it.");
      return;
    }
    await reply("Asking a human to approve a reset of my home (a new round)…");
    const result = await (this.#o.reset ?? (() => this.#sudoReset()))();
    // An approved reset stops every process of the agent, this one included: what follows is a refusal.
    await reply(
      result.code === 0
        ? "Reset done."
        : `No reset: ${clip(result.output.trim().split("\n").slice(-3).join(" ") || `exit ${result.code}`, 400)}`,
    );
  }

  /** `sudo nuketown reset <me>` through the shim first in PATH: the approval daemon asks a human. */
  #sudoReset(): Promise<{ code: number; output: string }> {
    const { town, agent } = this.#o;
    return new Promise((resolve) => {
      const argv = [town.install.bin, "reset", agent.name, "--manifest", town.paths.manifest];
      const child = startProcess("sudo", argv, {
        env: {
          ...process.env,
          PATH: `${town.install.shimDir}:${process.env.PATH ?? "/usr/bin:/bin"}`,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let output = "";
      child.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.stderr.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.on("error", (error) => resolve({ code: 127, output: error.message }));
      child.on("close", (code) => resolve({ code: code ?? 1, output }));
    });
  }

  async #work(
    message: ChatMessage,
    who: Resident,
    text: string,
    where: SendOptions,
    conversation: Conversation,
  ): Promise<void> {
    // Stopping: what waits stays unanswered (entered in the ledger), as after a crash.
    if (this.#stopped) return;
    const { agent, transport } = this.#o;
    const project = agent.chat.project;
    if (!project) {
      await transport.send(message.room, "I have no project to work in (chat.project).", where);
      return;
    }
    const controller = new AbortController();
    conversation.running = controller;
    const started = Date.now();
    let progress: SentMessage | undefined;
    let lastEdit = 0;
    let lastLine = "";
    const progressEvery = this.#o.progressEvery ?? 2000;
    const showProgress = async (line: string) => {
      lastLine = line;
      const now = Date.now();
      if (now - lastEdit < progressEvery) return;
      lastEdit = now;
      const body = `⏳ ${clip(line, 300)}`;
      if (progress) await transport.edit(progress, body).catch(() => {});
      else progress = await transport.send(message.room, body, where).catch(() => undefined);
    };
    const late = setTimeout(() => {
      showProgress(lastLine || "working on it").catch(() => {});
    }, this.#o.progressAfter ?? 5000);
    // Typing and busy only for work that takes a while: a quick answer is its own signal, and
    // four more requests per message would slow the server for everyone.
    let typing: NodeJS.Timeout | undefined;
    let shown = false;
    const show = setTimeout(() => {
      shown = true;
      transport.typing(message.room, true).catch(() => {});
      typing = setInterval(() => transport.typing(message.room, true).catch(() => {}), 20_000);
      this.#busy(+1);
    }, this.#o.busyAfter ?? 400);

    let outcome: TaskOutcome | undefined;
    let failure: string | undefined;
    try {
      outcome = await runOn(
        agent.socket,
        {
          project,
          prompt: text,
          ...(conversation.branch !== undefined && { branch: conversation.branch }),
          source: `${transport.kind}:${message.room}`.slice(0, 4096),
          replyTo: conversation.replyTo,
        },
        (event) => {
          if (event.event === "task.progress") showProgress(event.text).catch(() => {});
        },
        controller.signal,
      );
    } catch (error) {
      failure = `I cannot reach my agent daemon right now: ${(error as Error).message}`;
    } finally {
      clearTimeout(late);
      clearTimeout(show);
      clearInterval(typing);
      conversation.running = undefined;
      if (shown) {
        this.#busy(-1);
        transport.typing(message.room, false).catch(() => {});
      }
    }

    const branch = outcome?.end.report?.branch ?? outcome?.end.task.workBranch;
    if (conversation.branch === undefined && branch) conversation.branch = branch;
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const reply = failure ?? answerText(outcome);
    if (reply.length > transport.maxMessageChars)
      await transport.sendLong(message.room, reply, "answer.md", where);
    else await transport.send(message.room, reply, where);
    if (progress) {
      const mark =
        outcome?.state === "finished"
          ? "✓ done"
          : outcome?.state === "cancelled"
            ? "✗ cancelled"
            : "✗ failed";
      await transport.edit(progress, `${mark} in ${seconds} s`).catch(() => {});
    }
    await this.#record("chat.answered", {
      agent: agent.name,
      room: message.room,
      for: who.name,
      message: message.id,
      state: outcome?.state ?? "unreachable",
      ...(outcome && { task: outcome.id }),
    });
  }

  /** An audit record; a log that cannot take it (corrupted, disk full) is said, never fatal to the message. */
  async #record(event: string, data: Record<string, unknown>): Promise<void> {
    await this.#audit
      .append(event, data)
      .catch((error: Error) => this.#o.log(`audit: cannot record ${event}: ${error.message}`));
  }

  /** Work shown busy (+1) or ended (-1): presence says busy while any is. */
  #busy(delta: number): void {
    this.#shownBusy += delta;
    if (delta > 0) {
      this.#setPresence("busy", "working").catch(() => {});
      if (!this.#poll)
        this.#poll = setInterval(
          () =>
            this.#checkApproval().catch((error: Error) =>
              this.#o.log(`presence: ${error.message}`),
            ),
          this.#o.approvalPoll ?? 1000,
        );
    } else if (this.#shownBusy === 0) {
      clearInterval(this.#poll);
      this.#poll = undefined;
      this.#setPresence("available", "ready").catch(() => {});
    }
  }

  /** Away, with what it waits for, while one of the agent's sudo requests waits for a human. */
  async #checkApproval(): Promise<void> {
    const waiting = await sudoWaiting(this.#o.agent.uid, this.#o.town.install.gate).catch(() => []);
    // The work may have ended while we looked: never leave an idle agent "away".
    if (this.#shownBusy === 0 || this.#stopped) return;
    if (waiting.length > 0) {
      // Presence is seen in every room the agent is in: say what, never the command itself.
      await this.#setPresence("away", "waiting for a human to approve a sudo command");
    } else if (this.#presence.state === "away") {
      await this.#setPresence("busy", "working");
    }
  }

  async #setPresence(state: PresenceState, status: string): Promise<void> {
    if (this.#presence.state === state && this.#presence.status === status) return;
    this.#presence = { state, status };
    await this.#transport.setPresence(state, status);
  }
}

/**
 * Connect to the agent daemon and run one task. A daemon that is not there
 * yet (restarting after a round, a changed town) is waited for, up to
 * `patienceMs`: the message is not lost to a restart.
 */
async function runOn(
  socket: string,
  request: Parameters<AgentClient["run"]>[0],
  onEvent: (event: TaskEvent) => void,
  signal: AbortSignal,
  patienceMs = 30_000,
): Promise<TaskOutcome> {
  const deadline = Date.now() + patienceMs;
  let delay = 250;
  for (;;) {
    let client: AgentClient;
    try {
      client = await AgentClient.connect(socket);
    } catch (error) {
      const missing = (error as NuketownError).exitCode === EXIT.missing;
      if (!missing || signal.aborted || Date.now() + delay > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 4000);
      continue;
    }
    try {
      return await client.run(request, { onEvent, signal });
    } finally {
      client.close();
    }
  }
}

/** What the conversation is told at the end of a task. */
export function answerText(outcome: TaskOutcome | undefined): string {
  if (!outcome) return "I could not work on that.";
  const end = outcome.end;
  switch (end.event) {
    case "task.finished": {
      const answer = outcome.answer.trim() || "Done (no answer text).";
      const report = end.report;
      const where =
        end.commit && report
          ? `\n\n(committed ${end.commit.slice(0, 10)} on ${report.branch})`
          : "";
      return `${answer}${where}`;
    }
    case "task.cancelled":
      return `Cancelled: ${end.reason}`;
    case "task.failed":
      return `I could not finish that (${end.reason}): ${clip(end.error, 1000)}`;
  }
}

/**
 * The commands of the agent's sudo requests now waiting for a human: the
 * shim processes of the agent's uid (`… --gate <gate> … -- <args>`).
 */
export async function sudoWaiting(uid: number, gate: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, "utf8").catch(() => "");
    const real = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    if (real !== String(uid)) continue;
    const argv = (await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => ""))
      .split("\0")
      .filter((a) => a !== "");
    const gateAt = argv.indexOf("--gate");
    if (gateAt < 0 || argv[gateAt + 1] !== gate) continue;
    const separator = argv.indexOf("--");
    found.push(argv.slice(separator + 1).join(" "));
  }
  return found;
}
