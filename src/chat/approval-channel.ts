/**
 * The approval daemon's chat channel: the town bot posts each sudo request
 * to the approvers (a direct chat with each, or the declared approval room)
 * and takes a decision from a reaction (👍 / 👎) or a reply (`approve`,
 * `deny <reason>`) on its own request message.
 *
 * Only declared approvers count, identified by the id the server verified;
 * the requesting agent never does (the daemon refuses that too). Events from
 * before this process started, and reactions to anything but a live request
 * of this process, are ignored: a restart never replays old decisions.
 */
import type { ApprovalChannel, DecideResult, HumanAnswer } from "../approval/channel.ts";
import { MAX_SHOWN_ARGV, showArgument } from "../approval/desktop.ts";
import { type Decision, type PendingRequest, writableLines } from "../approval/protocol.ts";
import { changeLines } from "../change/present.ts";
import type { ResolvedTown } from "../town/types.ts";
import { type ChatDecision, reactionDecision, replyDecision } from "./decisions.ts";
import { chatIdKey, type Resident, residents } from "./people.ts";
import type { ChatMessage, ChatReaction, ChatTransport, SentMessage } from "./transport.ts";

export interface ChatApprovalOptions {
  readonly town: ResolvedTown;
  /** The town bot's account. */
  readonly transport: ChatTransport;
  readonly log: (line: string) => void;
  readonly clock?: () => Date;
}

interface Posted {
  readonly request: PendingRequest;
  readonly decide: (answer: HumanAnswer) => Promise<DecideResult>;
  readonly posts: SentMessage[];
  /** The whole argv is shown: only then may a chat answer approve. */
  readonly complete: boolean;
  /** Settles once every post is out: an outcome is shown on all of them. */
  posting: Promise<void>;
}

export class ChatApprovalChannel implements ApprovalChannel {
  readonly name = "chat";
  readonly #town: ResolvedTown;
  readonly #transport: ChatTransport;
  readonly #log: (line: string) => void;
  readonly #clock: () => Date;
  readonly #people: Map<string, Resident>;
  /** Live requests by id. */
  readonly #requests = new Map<string, Posted>();
  /** The bot's request messages: message id → request id. */
  readonly #messages = new Map<string, string>();
  #startedAt = Number.POSITIVE_INFINITY;
  /** Posts being sent: a human may answer one before its send has returned its id to us. */
  readonly #inFlight = new Set<Promise<void>>();
  #online: Promise<void> = notStarted();

  constructor(options: ChatApprovalOptions) {
    this.#town = options.town;
    this.#transport = options.transport;
    this.#log = options.log;
    this.#clock = options.clock ?? (() => new Date());
    this.#people = residents(options.town, options.transport.kind);
  }

  /** The approvers reachable on this transport. */
  approvers(): Resident[] {
    return [...this.#people.values()].filter((r) => r.kind === "human" && r.approver);
  }

  /**
   * Connect the bot. Requests that come while it connects are posted once it
   * is online (the transport retries a failed connect on its own).
   */
  start(): Promise<void> {
    this.#startedAt = this.#clock().getTime();
    this.#online = this.#transport
      .start({
        message: (message) => {
          this.#onMessage(message).catch((error: Error) => this.#log(`chat: ${error.message}`));
        },
        reaction: (reaction) => {
          this.#onReaction(reaction).catch((error: Error) => this.#log(`chat: ${error.message}`));
        },
        connection: (state, detail) => this.#log(`chat: ${state}${detail ? ` (${detail})` : ""}`),
      })
      .then(() => {
        // Presence is a courtesy: a hiccup setting it must not mark the bot as never started.
        this.#transport
          .setPresence("available", "asks humans before agents use sudo")
          .catch((error: Error) => this.#log(`chat: presence: ${error.message}`));
      });
    return this.#online;
  }

  requested(request: PendingRequest, decide: (answer: HumanAnswer) => Promise<DecideResult>): void {
    const complete =
      request.unlock !== undefined ||
      request.argv.map(showArgument).join(" ").length <= MAX_SHOWN_ARGV;
    const posted: Posted = { request, decide, posts: [], complete, posting: Promise.resolve() };
    this.#requests.set(request.id, posted);
    posted.posting = this.#post(posted).catch((error: Error) =>
      this.#log(`chat: could not post request ${request.id}: ${error.message}`),
    );
    this.#inFlight.add(posted.posting);
    posted.posting.finally(() => this.#inFlight.delete(posted.posting));
  }

  resolved(request: PendingRequest, decision: Decision): void {
    const posted = this.#requests.get(request.id);
    if (!posted) return;
    this.#requests.delete(request.id);
    const text = `${outcomeLine(decision)}\n\n${requestText(request, this.#clock(), posted.complete, false)}`;
    // Posts still on their way get the outcome too, once they are out.
    posted.posting.then(() => {
      for (const post of posted.posts) {
        this.#messages.delete(post.id);
        this.#transport
          .edit(post, text)
          .catch((error: Error) =>
            this.#log(`chat: could not update ${post.id}: ${error.message}`),
          );
      }
    });
  }

  async close(): Promise<void> {
    await this.#transport.stop();
  }

  async #post(posted: Posted): Promise<void> {
    const { request } = posted;
    await this.#online;
    const text = requestText(request, this.#clock(), posted.complete, true);
    const rooms = this.#town.chat.approvalRoom
      ? [this.#town.chat.approvalRoom]
      : await this.#directRooms();
    if (rooms.length === 0) {
      this.#log(
        `chat: request ${request.id}: no approver has an account on ${this.#transport.kind}`,
      );
      return;
    }
    await Promise.all(
      rooms.map(async (room) => {
        const post = await this.#transport.send(room, text);
        posted.posts.push(post);
        if (this.#requests.has(request.id)) this.#messages.set(post.id, request.id);
      }),
    );
  }

  /** The live request a message of the bot's is about, waiting for posts still on their way. */
  async #requestOf(message: string): Promise<string | undefined> {
    if (!this.#messages.has(message) && this.#inFlight.size > 0)
      await Promise.allSettled([...this.#inFlight]);
    return this.#messages.get(message);
  }

  /** Each approver's direct room; one unreachable approver must not keep the others from theirs. */
  async #directRooms(): Promise<string[]> {
    const approvers = this.approvers();
    const rooms = await Promise.allSettled(
      approvers.map((a) => this.#transport.directRoom(a.chatId)),
    );
    return rooms.flatMap((room, i) => {
      if (room.status === "fulfilled") return [room.value];
      this.#log(
        `chat: no direct room with ${approvers[i]?.chatId}: ${(room.reason as Error).message}`,
      );
      return [];
    });
  }

  async #onReaction(reaction: ChatReaction): Promise<void> {
    if (reaction.time < this.#startedAt) return;
    const id = await this.#requestOf(reaction.target);
    if (id === undefined) return;
    const decision = reactionDecision(reaction.key);
    if (!decision) return;
    await this.#answer(id, decision, reaction.sender, reaction.room, reaction.time);
  }

  async #onMessage(message: ChatMessage): Promise<void> {
    if (message.time < this.#startedAt) return;
    const self = this.#transport.self;
    const decision = replyDecision(message.body, [self, self.replace(/^@/, ""), localpart(self)]);
    if (!decision) return;
    // Which request: the one replied to, the one named, or the only one asked in this room.
    let id = message.inReplyTo !== undefined ? await this.#requestOf(message.inReplyTo) : undefined;
    if (id === undefined && decision.request !== undefined) {
      const named = decision.request;
      const matches = [...this.#requests.keys()].filter((r) => r.startsWith(named));
      if (matches.length === 1) id = matches[0];
    }
    // A word that neither replies to a post nor names a request may only deny, and only the
    // one request waiting in that room: "ok, lunch?" must never approve anything.
    if (
      id === undefined &&
      message.inReplyTo === undefined &&
      decision.request === undefined &&
      !decision.approve
    ) {
      const here = [...this.#requests.values()].filter((p) =>
        p.posts.some((post) => post.room === message.room),
      );
      if (here.length === 1) id = here[0]?.request.id;
      else if (here.length > 1 && this.#isApprover(message.sender)) {
        await this.#transport.send(
          message.room,
          `${here.length} requests wait here: reply to one, or name it (approve ${here[0]?.request.id}).`,
          { replyTo: message.id },
        );
        return;
      }
    }
    if (id === undefined) return;
    await this.#answer(id, decision, message.sender, message.room, message.time, message.id);
  }

  #isApprover(sender: string | undefined): Resident | undefined {
    if (sender === undefined) return undefined;
    const who = this.#people.get(chatIdKey(this.#transport.kind, sender));
    return who?.kind === "human" && who.approver ? who : undefined;
  }

  async #answer(
    id: string,
    decision: ChatDecision,
    sender: string | undefined,
    room: string,
    time: number,
    replyTo?: string,
  ): Promise<void> {
    const posted = this.#requests.get(id);
    if (!posted) return;
    // Said before this request existed: it was meant for another one.
    if (time < Date.parse(posted.request.time) - 1000) return;
    const who = this.#isApprover(sender);
    if (!who) {
      // Not a decision: a stranger's (or an agent's) 👍 changes nothing.
      this.#log(
        `chat: ignored a decision on ${id} from ${sender ?? "an unverified sender"}: not an approver`,
      );
      return;
    }
    if (decision.approve && !posted.complete) {
      await this.#transport.send(
        room,
        `Request ${id} is too long to show here whole: it can only be denied in chat. Review it with nuketown approvals --json.`,
        replyTo ? { replyTo } : {},
      );
      return;
    }
    const human = this.#town.humans.find((h) => h.name === who.name);
    const result = await posted.decide({
      approve: decision.approve,
      human: human?.unixUser ?? who.name,
      // What the post showed: the answer counts for that hash only.
      hash: posted.request.hash,
      reason:
        decision.reason ??
        `${decision.approve ? "approved" : "denied"} by ${who.name} in chat (${who.chatId})`,
    });
    if (!result.ok) {
      await this.#transport.send(room, `Not taken: ${result.error}`, replyTo ? { replyTo } : {});
    }
  }
}

/** The request as the approvers read it: exact argv, where, as whom, the hash, the deadline. */
export function requestText(
  request: PendingRequest,
  now: Date,
  complete: boolean,
  open: boolean,
): string {
  const argv = request.argv.map(showArgument).join(" ");
  const target = request.runAs.group
    ? `${request.runAs.user}:${request.runAs.group}`
    : request.runAs.user;
  const seconds = Math.max(0, Math.ceil((Date.parse(request.expires) - now.getTime()) / 1000));
  const what = request.change
    ? [`🛠 ${changeLines(request.agent.name, request.change).join("\n")}`]
    : request.unlock
      ? [
          `🔐 ${request.agent.name} asks to unlock the secret ${showArgument(request.unlock.secret)}`,
        ]
      : [
          `🔐 ${request.agent.name} asks to run, as ${target}:`,
          complete
            ? argv
            : `${argv.slice(0, MAX_SHOWN_ARGV)} … (${argv.length - MAX_SHOWN_ARGV} more characters)`,
          `in ${showArgument(request.cwd)} · program ${showArgument(request.command)}${
            request.shell
              ? ` · through ${request.runAs.user}'s ${request.shell === "login" ? "login " : ""}shell`
              : ""
          }`,
          ...writableLines(request, showArgument).map((l) => `⚠ ${l}`),
        ];
  return [
    ...what,
    `request ${request.id} · hash ${request.hash.slice(0, 16)} · expires ${request.expires}${open ? ` (in ${seconds} s)` : ""}`,
    ...(open
      ? [
          complete
            ? "React 👍 to approve or 👎 to deny, or reply approve / deny <reason>."
            : "Too long to show whole: react 👎 or reply deny; approve with nuketown approve after nuketown approvals --json.",
        ]
      : []),
  ].join("\n");
}

function localpart(id: string): string {
  return id.replace(/^@/, "").split(/[:@]/)[0] ?? id;
}

function notStarted(): Promise<void> {
  const never = Promise.reject(new Error("the chat channel was not started"));
  never.catch(() => {});
  return never;
}

function outcomeLine(decision: Decision): string {
  switch (decision.decision) {
    case "approved":
      return `✅ approved (${decision.reason})`;
    case "denied":
      return `⛔ denied (${decision.reason})`;
    case "timeout":
      return `⌛ expired, so denied (${decision.reason})`;
    case "cancelled":
      return `✖ withdrawn (${decision.reason})`;
  }
}
