/**
 * The Matrix transport, on matrix-js-sdk without end-to-end encryption.
 *
 * The SDK runs the /sync loop (long polls, keep-alives, reconnects) and the
 * HTTP calls, over node:http (http-fetch.ts: Node's fetch needs WebAssembly,
 * which --lite-mode turns off); what the loop brings is read from the raw
 * sync responses, not from the SDK's room models. The client has no room
 * store (the SDK's StubStore): every response is handled once and dropped,
 * so memory stays flat however long the agent runs and however busy its
 * rooms are.
 *
 * Restart safety, or why no message is answered twice:
 * - `matrix-sync.json` in the state dir holds the sync token (`next_batch`) of
 *   the last response handled, the newest event time seen (`watermark`) and
 *   the ids of the last messages delivered. It is written (in place, 0600;
 *   see StateWriter) after a response is read and before any of its messages
 *   is delivered, so a crash can lose a message but never hand one over twice.
 * - A start with a token resumes from it: the first /sync is incremental and
 *   brings only what came after, including what was said while the process
 *   was down (up to the timeline limit per room; older ones are logged as a
 *   gap). Of that first response, events older than the watermark or already
 *   delivered are dropped too, should the server ever answer a resumed sync
 *   with history.
 * - A start without a token (the first one) never lets the SDK do an initial
 *   sync, whose timelines are history (and which Synapse may even answer from
 *   its response cache, with a token minutes old, when the same device did an
 *   identical initial sync shortly before). It asks for the current token
 *   with a /sync that carries no timelines, only the pending invitations,
 *   saves it and resumes from it: nothing said before the start is delivered.
 * - In a room joined since the last response (a declared room, an accepted
 *   invite), what came before this account's join is history too.
 */
import { randomUUID } from "node:crypto";
import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  writeSync,
} from "node:fs";
import path from "node:path";
import { format } from "node:util";
import { Preset } from "matrix-js-sdk/lib/@types/partials.js";
import { ClientEvent, MatrixClient } from "matrix-js-sdk/lib/client.js";
import { Filter, type IFilterDefinition } from "matrix-js-sdk/lib/filter.js";
import { ConnectionError, HTTPError, MatrixError } from "matrix-js-sdk/lib/http-api/errors.js";
import type { BaseRequestOpts } from "matrix-js-sdk/lib/http-api/interface.js";
import { Method } from "matrix-js-sdk/lib/http-api/method.js";
import { type Logger, logger as sdkGlobalLogger } from "matrix-js-sdk/lib/logger.js";
import { StubStore } from "matrix-js-sdk/lib/store/stub.js";
import { type ISyncStateData, SetPresence, SyncState } from "matrix-js-sdk/lib/sync.js";
import type { ISyncResponse } from "matrix-js-sdk/lib/sync-accumulator.js";
import {
  backoffDelay,
  type ChatMessage,
  type ChatReaction,
  type ChatTransport,
  type ConnectionState,
  type PresenceState,
  type SendOptions,
  type SentMessage,
  splitText,
  TransportFatalError,
  type TransportHandlers,
  type TransportOptions,
} from "../transport.ts";
import { type HttpFetch, httpFetch } from "./http-fetch.ts";

export interface MatrixOptions extends TransportOptions {
  /** The client-server API's base URL, e.g. https://matrix.example.org */
  readonly homeserver: string;
  /** This account, e.g. @alice:example.org */
  readonly userId: string;
  /** An access token of this account (no password login). */
  readonly accessToken: string;
}

/** The state file in `stateDir`. */
export const SYNC_STATE_FILE = "matrix-sync.json";

/** How many delivered message ids the state file remembers. */
const HANDLED_IDS = 200;
/** Events per room a /sync brings; more than that while down is a gap. */
const TIMELINE_LIMIT = 50;
/** Typing notices expire on the server after this unless refreshed. */
const TYPING_TIMEOUT_MS = 30_000;
/** Attempts of an idempotent PUT (send, edit, react) on connection errors, 5xx and 429. */
const SEND_ATTEMPTS = 5;
/** The longest preview line of a text sent as a file. */
const PREVIEW_CHARS = 200;

// The SDK logs through loglevel to the console, at debug level by default.
// The client's own logger (forwardingLogger) goes to options.log; the
// module-level one, and the child loggers it makes from now on (which copy its
// method factory but set their own level to debug), keep warnings and errors,
// less the one that rooms without a store (see ResumingStore) cause: a power
// level change in a room whose create event this response did not carry.
const globalLogger = sdkGlobalLogger as unknown as {
  methodFactory: (method: string) => (...message: unknown[]) => void;
  setLevel(level: string, persist: boolean): void;
};
globalLogger.methodFactory = (method) =>
  method === "warn" || method === "error"
    ? function (this: { prefix?: string }, ...message: unknown[]) {
        const line = format(...message);
        if (!line.includes("does not have an m.room.create event"))
          console.error(`matrix-js-sdk ${method}: ${this?.prefix ?? ""}${line}`);
      }
    : () => {};
globalLogger.setLevel("warn", false);

interface SyncFile {
  readonly userId: string;
  readonly since: string;
  readonly watermark: number;
  readonly handled: readonly string[];
}

/** A room event as /sync delivers it: JSON from the network, checked field by field. */
interface RawEvent {
  readonly type?: unknown;
  readonly event_id?: unknown;
  readonly sender?: unknown;
  readonly state_key?: unknown;
  readonly origin_server_ts?: unknown;
  readonly content?: unknown;
  readonly unsigned?: unknown;
}

type Json = Record<string, unknown>;

type Delivery =
  | { readonly kind: "message"; readonly id: string; readonly message: ChatMessage }
  | { readonly kind: "reaction"; readonly id: string; readonly reaction: ChatReaction };

export class MatrixTransport implements ChatTransport {
  readonly kind = "matrix";
  readonly self: string;
  /** A Matrix event may be 64 KiB of JSON; 8000 UTF-16 units stay under it even fully escaped. */
  readonly maxMessageChars = 8000;

  readonly #options: MatrixOptions;
  readonly #stateFile: string;
  readonly #stateWriter: StateWriter;
  #client: MatrixClient | undefined;
  #fetch: HttpFetch | undefined;
  #handlers: TransportHandlers | undefined;
  #running = false;
  /** Aborted by stop: ends a start that is still waiting for the server. */
  #lifetime = new AbortController();
  #connection: string | undefined;
  #state: SyncFile | undefined;
  /** Set once the first /sync response of this start has been read. */
  #synced = false;
  readonly #declaredRoomIds = new Set<string>();
  /** Declared rooms not joined yet: tried again whenever the connection comes back. */
  readonly #unjoined = new Set<string>();
  readonly #invitesSeen = new Set<string>();
  readonly #encryptedLogged = new Set<string>();
  /** Rooms of exactly two members (joined, none invited), from /sync summaries or the API. */
  readonly #pairs = new Map<string, boolean>();
  /** m.direct account data: user → rooms. */
  #direct: Record<string, string[]> = {};
  readonly #directLookups = new Map<string, Promise<string>>();
  #txn = 0;

  constructor(options: MatrixOptions) {
    this.#options = options;
    this.self = options.userId;
    this.#stateFile = path.join(options.stateDir, SYNC_STATE_FILE);
    this.#stateWriter = new StateWriter(this.#stateFile);
  }

  async start(handlers: TransportHandlers): Promise<void> {
    if (this.#running) throw new Error(`matrix: ${this.self} is already started`);
    this.#running = true;
    this.#lifetime = new AbortController();
    this.#handlers = handlers;
    this.#synced = false;
    this.#connection = undefined;
    this.#setConnection("connecting");
    this.#state = loadSyncFile(this.#stateFile, this.self, this.#options.log);
    for (const room of this.#options.rooms)
      if (room.startsWith("!")) this.#declaredRoomIds.add(room);
    const store = new ResumingStore((data) => this.#onSyncResponse(data));
    const fetch = httpFetch();
    this.#fetch = fetch;
    const client = new MatrixClient({
      fetchFn: fetch as typeof globalThis.fetch,
      baseUrl: this.#options.homeserver,
      userId: this.self,
      accessToken: this.#options.accessToken,
      useAuthorizationHeader: true,
      disableVoip: true,
      store,
      logger: forwardingLogger(this.#options.log, "matrix-js-sdk"),
    });
    clearingTimeouts(client);
    this.#client = client;
    try {
      this.#state = await this.#connect(client, this.#state);
      store.resumeFrom(this.#state.since);
      this.#direct = await this.#fetchDirect(client).catch((error: unknown) => {
        this.#options.log(`matrix: cannot read the m.direct account data: ${describe(error)}`);
        return {};
      });
      const prepared = this.#untilPrepared(client);
      client.on(ClientEvent.Sync, (state, _previous, data) => this.#onSyncState(state, data));
      await client.startClient({
        filter: syncFilter(this.self),
        lazyLoadMembers: true,
        threadSupport: false,
        pollTimeout: 30_000,
      });
      await prepared;
      // MatrixRTC (group calls) starts on the first sync and tracks every room.
      client.matrixRTC.stop();
      // The name first, so that joining a room is one membership event, not two.
      await this.#setDisplayName(client);
      for (const room of this.#options.rooms) this.#unjoined.add(room);
      await this.#joinDeclaredRooms(client);
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#lifetime.abort();
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    client.stopClient();
    client.removeAllListeners();
    this.#fetch?.close();
    this.#fetch = undefined;
    this.#stateWriter.close();
    this.#setConnection("offline", "stopped");
  }

  async send(room: string, text: string, options: SendOptions = {}): Promise<SentMessage> {
    const content = { msgtype: "m.text", body: text, ...relation(options) };
    return { id: await this.#sendEvent(room, "m.room.message", content), room };
  }

  async edit(message: SentMessage, text: string): Promise<void> {
    await this.#sendEvent(message.room, "m.room.message", {
      msgtype: "m.text",
      body: `* ${text}`,
      "m.new_content": { msgtype: "m.text", body: text },
      "m.relates_to": { rel_type: "m.replace", event_id: message.id },
    });
  }

  async react(room: string, target: string, key: string): Promise<void> {
    await this.#sendEvent(room, "m.reaction", {
      "m.relates_to": { rel_type: "m.annotation", event_id: target, key },
    });
  }

  async sendLong(
    room: string,
    text: string,
    name: string,
    options: SendOptions = {},
  ): Promise<SentMessage> {
    const client = this.#requireClient();
    const bytes = Buffer.from(text, "utf8");
    let uri: string;
    try {
      const upload = await client.uploadContent(new Blob([bytes]), {
        name,
        type: "text/plain; charset=utf-8",
      });
      uri = upload.content_uri;
    } catch (error) {
      this.#options.log(
        `matrix: uploading ${name} to ${room} failed (${describe(error)}); sending it as messages`,
      );
      const pieces = splitText(text, this.maxMessageChars);
      const first = await this.send(room, pieces[0] ?? "", options);
      for (const piece of pieces.slice(1))
        await this.send(room, piece, options.thread ? { thread: options.thread } : {});
      return first;
    }
    const content = {
      msgtype: "m.file",
      body: preview(text, name),
      filename: name,
      url: uri,
      info: { mimetype: "text/plain", size: bytes.length },
      ...relation(options),
    };
    return { id: await this.#sendEvent(room, "m.room.message", content), room };
  }

  async typing(room: string, on: boolean): Promise<void> {
    await this.#requireClient().sendTyping(room, on, TYPING_TIMEOUT_MS);
  }

  async setPresence(state: PresenceState, status?: string): Promise<void> {
    const client = this.#requireClient();
    const presence = state === "away" ? SetPresence.Unavailable : SetPresence.Online;
    // /sync sets presence too: it must say the same, or the next poll undoes an "away".
    await client.setSyncPresence(presence);
    await client.setPresence({ presence, status_msg: status ?? "" });
  }

  directRoom(user: string): Promise<string> {
    // One lookup per user at a time, so two callers never create two rooms.
    const pending = this.#directLookups.get(user);
    if (pending) return pending;
    const lookup = this.#findOrCreateDirect(user).finally(() => this.#directLookups.delete(user));
    this.#directLookups.set(user, lookup);
    return lookup;
  }

  // --- start ---

  /**
   * Checks the token (whoami) and, on a first start, gets the sync state to
   * start from; a refused token rejects, a server that is down is retried.
   */
  async #connect(client: MatrixClient, saved: SyncFile | undefined): Promise<SyncFile> {
    const signal = this.#lifetime.signal;
    for (let attempt = 0; ; attempt++) {
      let state: SyncFile;
      try {
        const { user_id } = await client.whoami();
        if (user_id !== this.self)
          throw new Error(
            `matrix: the access token given for ${this.self} belongs to ${user_id} on ${this.#options.homeserver}`,
          );
        state = saved ?? (await this.#firstState(client));
      } catch (error) {
        if (signal.aborted) throw stoppedError(this.self);
        if (isRefusedCredential(error)) throw credentialError(this.self, this.#options, error);
        if (!(error instanceof HTTPError || error instanceof ConnectionError)) throw error;
        if (!isTransient(error))
          throw new Error(
            `matrix: ${this.#options.homeserver} refused to start ${this.self}: ${describe(error)}`,
          );
        const delay = backoffDelay(attempt);
        this.#setConnection(
          "connecting",
          `${this.#options.homeserver} unreachable (${describe(error)}); retrying in ${Math.round(delay / 1000)} s`,
        );
        await sleep(delay, signal);
        if (signal.aborted) throw stoppedError(this.self);
        continue;
      }
      return state;
    }
  }

  /** The state of a first start: the current sync token, and the invitations waiting. */
  async #firstState(client: MatrixClient): Promise<SyncFile> {
    const none = { not_types: ["*"] };
    const filter = {
      presence: none,
      account_data: none,
      room: {
        timeline: { limit: 0 },
        state: none,
        ephemeral: none,
        account_data: none,
        // Synapse answers a /sync like one it answered minutes ago from a cache, token and all.
        not_rooms: [`!${randomUUID()}:nuketown.invalid`],
      },
    };
    const data = await this.#request<Json>(client, Method.Get, "/sync", undefined, {
      timeout: "0",
      filter: JSON.stringify(filter),
    });
    if (typeof data.next_batch !== "string") throw new Error("matrix: /sync without next_batch");
    const state: SyncFile = {
      userId: this.self,
      since: data.next_batch,
      watermark: 0,
      handled: [],
    };
    this.#stateWriter.save(state);
    const invites = record(record(data.rooms)?.invite) ?? {};
    for (const [roomId, invited] of Object.entries(invites))
      this.#onInvite(roomId, events(record(record(invited)?.invite_state)?.events));
    return state;
  }

  /** Resolves on the first PREPARED; rejects when the token is refused meanwhile, or on stop. */
  #untilPrepared(client: MatrixClient): Promise<void> {
    const signal = this.#lifetime.signal;
    return new Promise((resolve, reject) => {
      const settle = (error?: Error) => {
        client.off(ClientEvent.Sync, onSync);
        signal.removeEventListener("abort", onAbort);
        if (error) reject(error);
        else resolve();
      };
      const onSync = (state: SyncState, _previous: SyncState | null, data?: ISyncStateData) => {
        if (state === SyncState.Prepared) settle();
        else if (isRefusedCredential(data?.error))
          settle(credentialError(this.self, this.#options, data?.error));
        else if (state === SyncState.Stopped) settle(stoppedError(this.self));
      };
      const onAbort = () => settle(stoppedError(this.self));
      client.on(ClientEvent.Sync, onSync);
      signal.addEventListener("abort", onAbort);
    });
  }

  async #joinDeclaredRooms(client: MatrixClient): Promise<void> {
    for (const room of [...this.#unjoined]) {
      try {
        const { room_id } = await this.#request<{ room_id: string }>(
          client,
          Method.Post,
          `/join/${encodeURIComponent(room)}`,
          {},
        );
        this.#declaredRoomIds.add(room_id);
        this.#unjoined.delete(room);
      } catch (error) {
        this.#options.log(
          `matrix: cannot join ${room} (tried again on reconnect): ${describe(error)}`,
        );
      }
    }
  }

  async #setDisplayName(client: MatrixClient): Promise<void> {
    const name = this.#options.displayName;
    if (!name) return;
    try {
      const profile = await client
        .getProfileInfo(this.self, "displayname")
        .catch(() => ({ displayname: undefined }));
      if (profile.displayname !== name) await client.setDisplayName(name);
    } catch (error) {
      this.#options.log(`matrix: cannot set the display name of ${this.self}: ${describe(error)}`);
    }
  }

  // --- the sync loop ---

  #onSyncState(state: SyncState, data: ISyncStateData | undefined): void {
    switch (state) {
      case SyncState.Prepared:
      case SyncState.Syncing:
        if (this.#connection?.startsWith("online")) break;
        this.#setConnection("online");
        if (this.#unjoined.size > 0 && this.#client) void this.#joinDeclaredRooms(this.#client);
        break;
      case SyncState.Reconnecting:
      case SyncState.Catchup:
        this.#setConnection("connecting", data?.error ? describe(data.error) : undefined);
        break;
      case SyncState.Error:
        if (isRefusedCredential(data?.error)) {
          this.#options.log(
            `matrix: the homeserver no longer accepts the access token of ${this.self}; sync stopped`,
          );
          this.#setConnection("offline", "access token refused");
          // The SDK has stopped for good: staying up would be staying deaf.
          const fatal = this.#handlers?.fatal;
          if (fatal && this.#running) fatal(credentialError(this.self, this.#options, data?.error));
        } else this.#setConnection("offline", data?.error ? describe(data.error) : undefined);
        break;
      case SyncState.Stopped:
        this.#setConnection("offline", "stopped");
        break;
    }
  }

  #setConnection(state: ConnectionState, detail?: string): void {
    const key = `${state} ${detail ?? ""}`;
    if (key === this.#connection) return;
    this.#connection = key;
    try {
      this.#handlers?.connection?.(state, detail);
    } catch (error) {
      this.#options.log(`matrix: the connection handler threw: ${describe(error)}`);
    }
  }

  /**
   * Called by the SDK's sync loop (through the store) with each /sync
   * response, after the SDK has read it and before the next poll. Must not
   * throw: the SDK does not catch it.
   */
  async #onSyncResponse(data: ISyncResponse): Promise<void> {
    try {
      await this.#handleSyncResponse(data as unknown as Json);
    } catch (error) {
      this.#options.log(`matrix: handling a /sync response failed: ${describe(error)}`);
    }
  }

  async #handleSyncResponse(data: Json): Promise<void> {
    const first = !this.#synced;
    this.#synced = true;
    const since = typeof data.next_batch === "string" ? data.next_batch : undefined;
    for (const event of events(record(data.account_data)?.events)) {
      if (event.type === "m.direct") this.#direct = directMap(event.content);
    }
    const rooms = record(data.rooms);
    for (const [roomId, invited] of Object.entries(record(rooms?.invite) ?? {}))
      this.#onInvite(roomId, events(record(record(invited)?.invite_state)?.events));
    for (const roomId of Object.keys(record(rooms?.leave) ?? {})) {
      this.#pairs.delete(roomId);
      this.#invitesSeen.delete(roomId);
    }

    const previous = this.#state;
    const handled = new Set(previous?.handled ?? []);
    let watermark = previous?.watermark ?? 0;
    const candidates: { room: string; event: RawEvent }[] = [];
    for (const [roomId, joinedValue] of Object.entries(record(rooms?.join) ?? {})) {
      this.#invitesSeen.delete(roomId);
      const joined = record(joinedValue) ?? {};
      const timeline = record(joined.timeline);
      const roomEvents = events(timeline?.events);
      this.#noteMembers(roomId, joined, roomEvents);
      const cut = ownJoinIndex(roomEvents, this.self);
      if (timeline?.limited === true && cut < 0)
        this.#options.log(
          `matrix: ${roomId}: more than ${TIMELINE_LIMIT} events since the last sync; older ones were not delivered`,
        );
      roomEvents.forEach((event, index) => {
        const ts = typeof event.origin_server_ts === "number" ? event.origin_server_ts : 0;
        const keep = index > cut && !(first && ts < (previous?.watermark ?? 0));
        if (keep) candidates.push({ room: roomId, event });
        // Another server's clock (or a lie) must not push the watermark into the future,
        // where it would hide everything said while we are down.
        const seen = Math.min(ts, Date.now());
        if (seen > watermark) watermark = seen;
      });
    }

    const deliveries: Delivery[] = [];
    for (const { room, event } of candidates) {
      if (typeof event.event_id !== "string" || handled.has(event.event_id)) continue;
      const delivery = await this.#read(room, event);
      if (delivery) deliveries.push(delivery);
    }
    // Stopped meanwhile: neither delivered nor recorded, so a restart brings them again.
    if (!this.#running) return;
    const delivered = deliveries.map((delivery) => delivery.id);
    if (since !== undefined && (since !== previous?.since || delivered.length > 0)) {
      const next: SyncFile = {
        userId: this.self,
        since,
        watermark,
        handled: [...(previous?.handled ?? []), ...delivered].slice(-HANDLED_IDS),
      };
      this.#stateWriter.save(next);
      this.#state = next;
    }
    for (const delivery of deliveries) this.#deliver(delivery);
  }

  #deliver(delivery: Delivery): void {
    if (!this.#running) return;
    try {
      if (delivery.kind === "message") this.#handlers?.message(delivery.message);
      else this.#handlers?.reaction?.(delivery.reaction);
    } catch (error) {
      this.#options.log(`matrix: the ${delivery.kind} handler threw: ${describe(error)}`);
    }
  }

  /** What an event means to the agent: a message, a reaction, or nothing. */
  async #read(room: string, event: RawEvent): Promise<Delivery | undefined> {
    const sender = typeof event.sender === "string" ? event.sender : undefined;
    const id = typeof event.event_id === "string" ? event.event_id : undefined;
    if (sender === undefined || id === undefined || sender === this.self) return undefined;
    if (record(event.unsigned)?.redacted_because !== undefined) return undefined;
    const time = typeof event.origin_server_ts === "number" ? event.origin_server_ts : Date.now();
    const content = record(event.content) ?? {};
    const relates = record(content["m.relates_to"]);
    if (event.type === "m.room.encrypted") {
      if (!this.#encryptedLogged.has(room)) {
        this.#encryptedLogged.add(room);
        this.#options.log(
          `matrix: ${room}: encrypted messages are ignored (this account does not do end-to-end encryption); first from ${sender}`,
        );
      }
      return undefined;
    }
    if (event.type === "m.reaction") {
      const target = relates?.event_id;
      const key = relates?.key;
      if (relates?.rel_type !== "m.annotation" || typeof target !== "string") return undefined;
      if (typeof key !== "string") return undefined;
      return { kind: "reaction", id, reaction: { room, sender, target, key, time } };
    }
    if (event.type !== "m.room.message") return undefined;
    // m.notice is what bots send: answering them could start a loop between two bots.
    if (content.msgtype !== "m.text" && content.msgtype !== "m.emote") return undefined;
    if (relates?.rel_type === "m.replace") return undefined;
    if (typeof content.body !== "string") return undefined;
    const thread =
      relates?.rel_type === "m.thread" && typeof relates.event_id === "string"
        ? relates.event_id
        : stringField(record(event.unsigned), "org.matrix.msc4023.thread_id");
    const replyTo = stringField(record(relates?.["m.in_reply_to"]), "event_id");
    // In a thread, m.in_reply_to with is_falling_back is only for clients without threads.
    const inReplyTo =
      relates?.rel_type === "m.thread" && relates.is_falling_back ? undefined : replyTo;
    const body = replyTo !== undefined ? stripReplyFallback(content.body) : content.body;
    return {
      kind: "message",
      id,
      message: {
        id,
        room,
        direct: await this.#isDirect(room),
        sender,
        body,
        ...(thread !== undefined ? { thread } : {}),
        ...(inReplyTo !== undefined ? { inReplyTo } : {}),
        mentionsMe: mentionsMe(content, body, this.self, this.#options.displayName),
        time,
      },
    };
  }

  #noteMembers(roomId: string, joined: Json, timeline: readonly RawEvent[]): void {
    // Lazy-loaded member events in the state block are not changes; a gap may hide some.
    const changed =
      record(joined.timeline)?.limited === true ||
      timeline.some((event) => event.type === "m.room.member");
    if (changed) this.#pairs.delete(roomId);
    const summary = record(joined.summary);
    const joinedCount = summary?.["m.joined_member_count"];
    const invitedCount = summary?.["m.invited_member_count"];
    if (typeof joinedCount === "number" && typeof invitedCount === "number")
      this.#pairs.set(roomId, joinedCount === 2 && invitedCount === 0);
  }

  /** m.direct says so, or the room has two members and nobody else is invited. */
  async #isDirect(room: string): Promise<boolean> {
    if (Object.values(this.#direct).some((rooms) => rooms.includes(room))) return true;
    // A declared room is a room, even while only two are in it: there the agent waits to be mentioned.
    if (this.#declaredRoomIds.has(room)) return false;
    const known = this.#pairs.get(room);
    if (known !== undefined || !this.#client) return known ?? false;
    const encoded = encodeURIComponent(room);
    try {
      const joined = await this.#request<{ joined?: Json }>(
        this.#client,
        Method.Get,
        `/rooms/${encoded}/joined_members`,
      );
      let pair = Object.keys(joined.joined ?? {}).length === 2;
      if (pair) {
        const invited = await this.#request<{ chunk?: unknown[] }>(
          this.#client,
          Method.Get,
          `/rooms/${encoded}/members`,
          undefined,
          { membership: "invite" },
        );
        pair = (invited.chunk ?? []).length === 0;
      }
      this.#pairs.set(room, pair);
      return pair;
    } catch (error) {
      this.#options.log(`matrix: ${room}: cannot count members: ${describe(error)}`);
      return false;
    }
  }

  #onInvite(roomId: string, state: readonly RawEvent[]): void {
    if (this.#invitesSeen.has(roomId)) return;
    this.#invitesSeen.add(roomId);
    // The server appends the real, signed invite after the stripped state the inviting server
    // chose to send: the last matching event is the one to trust.
    const invite = state.findLast(
      (event) =>
        event.type === "m.room.member" &&
        event.state_key === this.self &&
        record(event.content)?.membership === "invite",
    );
    const inviter = typeof invite?.sender === "string" ? invite.sender : undefined;
    const client = this.#client;
    if (!client) return;
    const allowed =
      (inviter !== undefined && this.#options.inviters.has(inviter)) ||
      this.#declaredRoomIds.has(roomId);
    const answer = allowed
      ? this.#request(client, Method.Post, `/join/${encodeURIComponent(roomId)}`, {}).then(
          async () => {
            this.#options.log(`matrix: accepted the invitation to ${roomId} from ${inviter}`);
            if (inviter && record(invite?.content)?.is_direct === true)
              await this.#recordDirect(client, inviter, roomId);
          },
        )
      : client.leave(roomId).then(() => {
          this.#options.log(
            `matrix: declined the invitation to ${roomId} from ${inviter ?? "an unknown sender"} (not an allowed inviter)`,
          );
        });
    answer.catch((error: unknown) => {
      this.#invitesSeen.delete(roomId);
      this.#options.log(`matrix: answering the invitation to ${roomId} failed: ${describe(error)}`);
    });
  }

  // --- direct rooms ---

  async #findOrCreateDirect(user: string): Promise<string> {
    const client = this.#requireClient();
    this.#direct = await this.#fetchDirect(client);
    const joined = new Set(
      (await this.#request<{ joined_rooms: string[] }>(client, Method.Get, "/joined_rooms"))
        .joined_rooms,
    );
    for (const room of this.#direct[user] ?? []) {
      if (joined.has(room) && (await this.#isMember(client, room, user))) return room;
    }
    // Only rooms marked direct count: a room that merely has two members (a declared room
    // nobody else joined yet) is where the other side expects to be mentioned, not a DM.
    const { room_id } = await client.createRoom({
      is_direct: true,
      invite: [user],
      preset: Preset.TrustedPrivateChat,
    });
    await this.#recordDirect(client, user, room_id);
    this.#options.log(`matrix: opened a direct room with ${user}: ${room_id}`);
    return room_id;
  }

  async #isMember(client: MatrixClient, room: string, user: string): Promise<boolean> {
    const member = await this.#request<Json>(
      client,
      Method.Get,
      `/rooms/${encodeURIComponent(room)}/state/m.room.member/${encodeURIComponent(user)}`,
    ).catch(() => undefined);
    return member?.membership === "join" || member?.membership === "invite";
  }

  async #fetchDirect(client: MatrixClient): Promise<Record<string, string[]>> {
    const content = await this.#request<Json>(
      client,
      Method.Get,
      `/user/${encodeURIComponent(this.self)}/account_data/m.direct`,
    ).catch((error: unknown) => {
      if (error instanceof MatrixError && error.errcode === "M_NOT_FOUND") return {};
      throw error;
    });
    return directMap(content);
  }

  async #recordDirect(client: MatrixClient, user: string, room: string): Promise<void> {
    const direct = await this.#fetchDirect(client);
    const rooms = direct[user] ?? [];
    if (rooms.includes(room)) return;
    direct[user] = [...rooms, room];
    await this.#request(
      client,
      Method.Put,
      `/user/${encodeURIComponent(this.self)}/account_data/m.direct`,
      direct,
    );
    this.#direct = direct;
  }

  // --- HTTP ---

  #requireClient(): MatrixClient {
    if (!this.#client) throw new Error(`matrix: ${this.self} is not started`);
    return this.#client;
  }

  #request<T>(
    client: MatrixClient,
    method: Method,
    apiPath: string,
    body?: unknown,
    query?: Record<string, string>,
  ): Promise<T> {
    // A dead kept-alive socket must not hang a request (and the sync loop) for the kernel's
    // retransmission timeout: /sync long-polls 30 s, so a minute bounds them all.
    return client.http.authedRequest<T>(method, apiPath, query, body as never, {
      localTimeoutMs: 60_000,
      priority: "auto",
    });
  }

  /** PUT with a transaction id, so a retry after a lost answer never posts twice. */
  async #sendEvent(room: string, type: string, content: Json): Promise<string> {
    const client = this.#requireClient();
    const txn = `nt.${Date.now().toString(36)}.${(this.#txn++).toString(36)}`;
    const apiPath = `/rooms/${encodeURIComponent(room)}/send/${encodeURIComponent(type)}/${txn}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const { event_id } = await this.#request<{ event_id: string }>(
          client,
          Method.Put,
          apiPath,
          content,
        );
        return event_id;
      } catch (error) {
        if (!isTransient(error) || attempt + 1 >= SEND_ATTEMPTS || !this.#running) throw error;
        const asked = error instanceof MatrixError ? error.data.retry_after_ms : undefined;
        await sleep(
          typeof asked === "number" ? asked : backoffDelay(attempt),
          this.#lifetime.signal,
        );
      }
    }
  }
}

/**
 * The SDK's request timeouts are timers it never clears (timeoutSignal in
 * http-api/utils.ts): a stopped client would keep the process alive for up to
 * 110 s after the last /sync. Every request goes through requestOtherUrl; this
 * gives it the same timeout as a signal whose timer is cleared when the
 * request settles.
 */
function clearingTimeouts(client: MatrixClient): void {
  const http = client.http;
  const original = http.requestOtherUrl.bind(http);
  const wrapped = async (
    method: Method,
    url: URL | string,
    body?: Parameters<typeof original>[2],
    opts?: BaseRequestOpts,
  ): Promise<unknown> => {
    const ms = opts?.localTimeoutMs;
    if (opts === undefined || ms === undefined) return original(method, url, body, opts);
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), ms);
    const abortSignal = opts.abortSignal
      ? AbortSignal.any([opts.abortSignal, timeout.signal])
      : timeout.signal;
    try {
      return await original(method, url, body, { ...opts, localTimeoutMs: undefined, abortSignal });
    } finally {
      clearTimeout(timer);
    }
  };
  http.requestOtherUrl = wrapped as typeof http.requestOtherUrl;
}

/** A store that keeps nothing but hands the SDK the saved token and us each response. */
class ResumingStore extends StubStore {
  #saved: string | null = null;
  readonly #onSync: (data: ISyncResponse) => Promise<void>;

  constructor(onSync: (data: ISyncResponse) => Promise<void>) {
    super();
    this.#onSync = onSync;
  }

  resumeFrom(token: string): void {
    this.#saved = token;
  }

  override getSavedSyncToken(): Promise<string | null> {
    return Promise.resolve(this.#saved);
  }

  override setSyncData(data: ISyncResponse): Promise<void> {
    return this.#onSync(data);
  }
}

/**
 * The sync filter: nobody's presence, no typing or receipts, of account data
 * only m.direct, members loaded lazily.
 */
function syncFilter(userId: string): Filter {
  const definition: IFilterDefinition = {
    presence: { not_types: ["*"] },
    account_data: { types: ["m.direct"] },
    room: {
      state: { lazy_load_members: true },
      timeline: { limit: TIMELINE_LIMIT, lazy_load_members: true },
      ephemeral: { not_types: ["*"] },
      account_data: { not_types: ["*"] },
    },
  };
  const filter = new Filter(userId);
  filter.setDefinition(definition);
  return filter;
}

/** m.relates_to for a message sent into a thread or as a reply. */
function relation(options: SendOptions): Json {
  if (options.thread)
    return {
      "m.relates_to": {
        rel_type: "m.thread",
        event_id: options.thread,
        is_falling_back: true,
        "m.in_reply_to": { event_id: options.replyTo ?? options.thread },
      },
    };
  if (options.replyTo)
    return { "m.relates_to": { "m.in_reply_to": { event_id: options.replyTo } } };
  return {};
}

/** The first lines of a long text, for the body of the file message. */
function preview(text: string, name: string): string {
  const lines = text
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line !== "")
    .slice(0, 3)
    .map((line) => (line.length > PREVIEW_CHARS ? `${line.slice(0, PREVIEW_CHARS)}…` : line));
  return [...lines, `… (${text.length} characters in ${name})`].join("\n");
}

/**
 * A reply's body without the quoted fallback: the leading "> <@user> …"
 * lines and the blank line after them.
 */
function stripReplyFallback(body: string): string {
  if (!body.startsWith("> <")) return body;
  const lines = body.split("\n");
  let index = 0;
  while (index < lines.length && lines[index]?.startsWith(">")) index++;
  if (lines[index] === "") index++;
  return lines.slice(index).join("\n");
}

/** Whether a message names this account: an intentional mention, a pill, the user id, display name or localpart as a word. */
function mentionsMe(content: Json, body: string, self: string, displayName: string): boolean {
  const ids = record(content["m.mentions"])?.user_ids;
  if (Array.isArray(ids) && ids.includes(self)) return true;
  if (body.includes(self)) return true;
  const html = typeof content.formatted_body === "string" ? content.formatted_body : "";
  if (
    html.includes(`matrix.to/#/${self}`) ||
    html.includes(`matrix.to/#/${encodeURIComponent(self)}`)
  )
    return true;
  const localpart = self.slice(1, self.includes(":") ? self.indexOf(":") : undefined);
  return [displayName, localpart].some((name) => name.trim() !== "" && hasWord(body, name.trim()));
}

function hasWord(text: string, word: string): boolean {
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])${escaped}($|[^\\p{L}\\p{N}_])`, "iu").test(text);
}

/** The index of the event by which this account joined the room, or -1. */
function ownJoinIndex(timeline: readonly RawEvent[], self: string): number {
  for (let index = timeline.length - 1; index >= 0; index--) {
    const event = timeline[index];
    if (event?.type !== "m.room.member" || event.state_key !== self) continue;
    if (record(event.content)?.membership !== "join") continue;
    const before = record(record(event.unsigned)?.prev_content)?.membership;
    if (before !== "join") return index;
  }
  return -1;
}

function directMap(content: unknown): Record<string, string[]> {
  const map: Record<string, string[]> = {};
  for (const [user, rooms] of Object.entries(record(content) ?? {})) {
    if (Array.isArray(rooms)) map[user] = rooms.filter((room) => typeof room === "string");
  }
  return map;
}

function record(value: unknown): Json | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Json)
    : undefined;
}

function events(value: unknown): RawEvent[] {
  return Array.isArray(value) ? value.filter((event) => record(event) !== undefined) : [];
}

function stringField(value: Json | undefined, key: string): string | undefined {
  const field = value?.[key];
  return typeof field === "string" ? field : undefined;
}

function isRefusedCredential(error: unknown): boolean {
  return (
    error instanceof MatrixError &&
    (error.errcode === "M_UNKNOWN_TOKEN" ||
      error.errcode === "M_MISSING_TOKEN" ||
      error.httpStatus === 401)
  );
}

/** Worth another try: no connection, a server error, or "too many requests". */
function isTransient(error: unknown): boolean {
  if (error instanceof ConnectionError) return true;
  if (!(error instanceof HTTPError)) return false;
  const status = error.httpStatus ?? 0;
  return status === 429 || status >= 500;
}

function stoppedError(user: string): Error {
  return new Error(`matrix: ${user} was stopped while connecting`);
}

function credentialError(user: string, options: MatrixOptions, error: unknown): Error {
  return new TransportFatalError(
    `matrix: ${options.homeserver} refused the access token of ${user} (${describe(error)}): it was revoked or its device logged out; put a new token where chat.matrix.tokenSecret points and apply`,
  );
}

function describe(error: unknown): string {
  if (error instanceof MatrixError)
    return `${error.errcode ?? error.httpStatus}: ${error.error ?? error.message}`;
  return error instanceof Error ? error.message : String(error);
}

/** The SDK's client logger: warnings and errors to our log, the rest dropped. */
function forwardingLogger(log: (line: string) => void, name: string): Logger {
  const drop = () => {};
  const forward =
    (level: string) =>
    (...message: unknown[]) =>
      log(`${name} ${level}: ${format(...message)}`);
  return {
    trace: drop,
    debug: drop,
    info: drop,
    // Each start warns that the server lacks push rules newer than it: noise.
    warn: (...message: unknown[]) => {
      if (!/^Adding default global/.test(String(message[0]))) forward("warning")(...message);
    },
    error: forward("error"),
    getChild: (namespace) => forwardingLogger(log, `${name} ${namespace}`),
  };
}

export function loadSyncFile(
  file: string,
  userId: string,
  log: (line: string) => void,
): SyncFile | undefined {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  try {
    const data = JSON.parse(text) as Partial<SyncFile>;
    if (data.userId !== userId) {
      log(`matrix: ${file} belongs to ${data.userId}, not ${userId}: starting without it`);
      return undefined;
    }
    if (typeof data.since !== "string") throw new Error("no sync token");
    return {
      userId,
      since: data.since,
      watermark: typeof data.watermark === "number" ? data.watermark : 0,
      handled: Array.isArray(data.handled)
        ? data.handled.filter((id) => typeof id === "string")
        : [],
    };
  } catch (error) {
    log(`matrix: ${file} is unreadable (${describe(error)}): starting without it`);
    return undefined;
  }
}

/**
 * Writes the state file in place, through a descriptor kept open, padded
 * with spaces to its length so far (never truncated). The save before each
 * delivery is on the path of every message, and blocks the event loop:
 * making a temp file and renaming it over the old one waits on the
 * filesystem's journal, which other processes' writes held up to a second
 * (ext4, measured), while overwriting pages a file already has did not
 * (under 5 ms). A crash in the middle of a write leaves the new text's
 * first page, where `since` is, before the old text's rest: the file is
 * unreadable (a start without it) or resumes after the response whose
 * messages were not delivered; either loses them, neither hands one over
 * twice.
 */
export class StateWriter {
  readonly #file: string;
  #fd: number | undefined;
  #length = 0;

  constructor(file: string) {
    this.#file = file;
  }

  save(state: SyncFile): void {
    const fd = this.#fd ?? this.#open();
    const text = `${JSON.stringify(state)}\n`;
    const bytes = Buffer.from(text.padEnd(text.length + this.#length - Buffer.byteLength(text)));
    let written = 0;
    while (written < bytes.length)
      written += writeSync(fd, bytes, written, bytes.length - written, written);
    this.#length = Math.max(this.#length, bytes.length);
  }

  close(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
  }

  #open(): number {
    mkdirSync(path.dirname(this.#file), { recursive: true, mode: 0o700 });
    const fd = openSync(this.#file, constants.O_WRONLY | constants.O_CREAT, 0o600);
    try {
      fchmodSync(fd, 0o600);
      this.#length = fstatSync(fd).size;
    } catch (error) {
      closeSync(fd);
      throw error;
    }
    this.#fd = fd;
    return fd;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}
