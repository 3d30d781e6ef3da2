/**
 * An online agent's chat presence inside its agent daemon's process: one
 * Node runtime per idle online agent instead of two. The resident (messages
 * → tasks → answers) lives as long as the process; the transport under it
 * may fail and is started again here, never taking the daemon's running
 * tasks with it:
 *
 * - a transport that cannot start (the server down, a start that failed
 *   half-way) is opened anew with `backoffDelay`;
 * - a credential the server refuses, at start or later (a revoked Matrix
 *   token), is said in the log and in the daemon's `status` ("failed: …"),
 *   and tried again, the credential read anew each time, from a minute
 *   doubling to a quarter of an hour: apply may have placed a new one;
 * - an error thrown out of the transport's own code (`restart`) replaces it.
 *
 * What the resident sends while the transport is away waits for the next
 * one (up to `sendPatienceMs`): an answer that was ready during an outage
 * arrives once the agent is back online.
 */
import type { AgentStatus } from "../agent/protocol.ts";
import {
  backoffDelay,
  type ChatMessage,
  type ChatReaction,
  type ChatTransport,
  type ConnectionState,
  type PresenceState,
  type SendOptions,
  type SentMessage,
  TransportFatalError,
  type TransportHandlers,
  type TransportKind,
} from "./transport.ts";

/** What `status` says of the agent's chat. */
export type PresenceStatus = NonNullable<AgentStatus["chat"]>;

export interface RestartingOptions {
  readonly kind: TransportKind;
  /** The account's id (Matrix user id, bare JID), known before any transport is open. */
  readonly self: string;
  /** A new transport, not started; called again for each restart. Throws when it cannot be made. */
  readonly open: () => Promise<ChatTransport>;
  readonly log: (line: string) => void;
  /** A refused credential is tried again after this, doubling. @default 60 s */
  readonly refusedDelayMs?: number;
  /** …up to this. @default 15 min */
  readonly maxRefusedDelayMs?: number;
  /** Delay before the n-th attempt after any other failure. @default backoffDelay */
  readonly delay?: (attempt: number) => number;
  /** How long a send waits for the transport to be back online. @default 10 min */
  readonly sendPatienceMs?: number;
  readonly clock?: () => Date;
}

/** Before a transport is open: Matrix's limit, the smaller of the two. */
const DEFAULT_MAX_CHARS = 8000;
/** A transport online this long has earned a fresh back-off. */
const STABLE_MS = 60_000;

/**
 * A transport that is always there for the resident: it delegates to the
 * current real transport and replaces it when it fails.
 */
export class RestartingTransport implements ChatTransport {
  readonly kind: TransportKind;
  readonly self: string;
  readonly #o: RestartingOptions;
  readonly #clock: () => Date;
  #inner: ChatTransport | undefined;
  #online = false;
  #onlineSince = 0;
  #handlers: TransportHandlers | undefined;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #refusals = 0;
  #restarts = 0;
  #opening: Promise<void> | undefined;
  readonly #firstOnline: {
    resolve: () => void;
    reject: (error: Error) => void;
    promise: Promise<void>;
  };
  readonly #waiters = new Set<() => void>();
  #presence: { state: PresenceState; status?: string } | undefined;
  #status: PresenceStatus;

  constructor(options: RestartingOptions) {
    this.kind = options.kind;
    this.self = options.self;
    this.#o = options;
    this.#clock = options.clock ?? (() => new Date());
    let resolve = () => {};
    let reject: (error: Error) => void = () => {};
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Whoever awaits start() hears of a stop before the first connection; nobody else need.
    promise.catch(() => {});
    this.#firstOnline = { resolve, reject, promise };
    this.#status = {
      network: options.kind,
      account: options.self,
      state: "connecting",
      since: this.#clock().toISOString(),
      restarts: 0,
    };
  }

  get maxMessageChars(): number {
    return this.#inner?.maxMessageChars ?? DEFAULT_MAX_CHARS;
  }

  /** Where the chat stands, for `status`. */
  status(): PresenceStatus {
    return { ...this.#status, restarts: this.#restarts };
  }

  /** Open the first transport; resolves once online (a refused credential waits for a later try). */
  start(handlers: TransportHandlers): Promise<void> {
    this.#handlers = handlers;
    this.#stopped = false;
    this.#open();
    return this.#firstOnline.promise;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#firstOnline.reject(
      new Error(`${this.kind}: ${this.self} was stopped before it was online`),
    );
    this.#wake();
    await this.#opening?.catch(() => {});
    const inner = this.#inner;
    this.#inner = undefined;
    this.#online = false;
    await inner?.stop().catch(() => {});
    this.#setStatus("offline", "stopped");
  }

  /** Replace the transport now (an error came out of it), after the usual back-off. */
  restart(why: string): void {
    const inner = this.#inner;
    if (this.#stopped || !inner) return;
    this.#drop(inner, why, false);
  }

  // ---- calls ------------------------------------------------------------------

  send(room: string, text: string, options?: SendOptions): Promise<SentMessage> {
    return this.#call((t) => t.send(room, text, options));
  }

  edit(message: SentMessage, text: string): Promise<void> {
    return this.#call((t) => t.edit(message, text));
  }

  react(room: string, target: string, key: string): Promise<void> {
    return this.#call((t) => t.react(room, target, key));
  }

  sendLong(room: string, text: string, name: string, options?: SendOptions): Promise<SentMessage> {
    return this.#call((t) => t.sendLong(room, text, name, options));
  }

  directRoom(user: string): Promise<string> {
    return this.#call((t) => t.directRoom(user));
  }

  /** Typing is of the moment: while offline it is not sent at all. */
  async typing(room: string, on: boolean): Promise<void> {
    const inner = this.#inner;
    if (inner && this.#online) await inner.typing(room, on);
  }

  /** Kept, and set again on every transport that comes online. */
  async setPresence(state: PresenceState, status?: string): Promise<void> {
    this.#presence = { state, ...(status !== undefined && { status }) };
    const inner = this.#inner;
    if (inner && this.#online) await inner.setPresence(state, status);
  }

  /**
   * Call the transport once it is online; a call that fails because the
   * transport went away under it is made again on the next one (twice at
   * most: a Matrix send whose answer was lost may then show twice, which
   * beats an answer never sent).
   */
  async #call<T>(fn: (transport: ChatTransport) => Promise<T>): Promise<T> {
    for (let tries = 0; ; tries++) {
      const inner = await this.#ready();
      try {
        return await fn(inner);
      } catch (error) {
        const wentAway = inner !== this.#inner || !this.#online;
        if (this.#stopped || !wentAway || tries >= 2) throw error;
        this.#o.log(
          `chat: a call failed as the connection went (${(error as Error).message}); trying again once back`,
        );
      }
    }
  }

  #ready(): Promise<ChatTransport> {
    const patience = this.#o.sendPatienceMs ?? 600_000;
    return new Promise((resolve, reject) => {
      const check = () => {
        if (this.#stopped) {
          done();
          reject(new Error(`${this.kind}: ${this.self} was stopped`));
          return;
        }
        const inner = this.#inner;
        if (!inner || !this.#online) return;
        done();
        resolve(inner);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(
            `${this.kind}: ${this.self} has been offline for ${Math.round(patience / 1000)} s (${this.#status.detail ?? this.#status.state})`,
          ),
        );
      }, patience);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  #wake(): void {
    for (const check of [...this.#waiters]) check();
  }

  // ---- the transport's life ------------------------------------------------------

  #open(): void {
    if (this.#stopped || this.#opening) return;
    this.#opening = this.#openOnce().finally(() => {
      this.#opening = undefined;
    });
  }

  async #openOnce(): Promise<void> {
    this.#setStatus("connecting");
    let inner: ChatTransport;
    try {
      inner = await this.#o.open();
    } catch (error) {
      this.#failed(error, undefined);
      return;
    }
    if (this.#stopped) return;
    this.#inner = inner;
    const mine = () => this.#inner === inner && !this.#stopped;
    const handlers = this.#handlers;
    try {
      await inner.start({
        message: (message: ChatMessage) => {
          if (mine()) handlers?.message(message);
        },
        reaction: (reaction: ChatReaction) => {
          if (mine()) handlers?.reaction?.(reaction);
        },
        connection: (state: ConnectionState, detail?: string) => {
          if (!mine()) return;
          this.#connection(state, detail);
          handlers?.connection?.(state, detail);
        },
        fatal: (error: Error) => {
          if (mine()) this.#drop(inner, error.message, true);
        },
      });
    } catch (error) {
      // Dropped already (a fatal report during the start), or stopped: handled there.
      if (this.#inner !== inner || this.#stopped) return;
      this.#inner = undefined;
      this.#failed(error, inner);
      return;
    }
    if (!mine()) {
      await inner.stop().catch(() => {});
      return;
    }
    this.#refusals = 0;
    this.#connection("online");
    if (this.#presence)
      await inner
        .setPresence(this.#presence.state, this.#presence.status)
        .catch((error: Error) => this.#o.log(`chat: presence: ${error.message}`));
    this.#firstOnline.resolve();
  }

  #connection(state: ConnectionState, detail?: string): void {
    const wasOnline = this.#online;
    this.#online = state === "online";
    if (this.#online && !wasOnline) this.#onlineSince = Date.now();
    this.#setStatus(state, detail);
    if (this.#online) this.#wake();
  }

  /** A transport that stopped working: stop it and open another after a while. */
  #drop(inner: ChatTransport, why: string, refused: boolean): void {
    if (this.#inner !== inner) return;
    this.#inner = undefined;
    this.#online = false;
    void inner.stop().catch(() => {});
    if (Date.now() - this.#onlineSince > STABLE_MS) this.#attempt = 0;
    this.#retry(why, refused);
  }

  #failed(error: unknown, inner: ChatTransport | undefined): void {
    void inner?.stop().catch(() => {});
    if (this.#stopped) return;
    this.#retry((error as Error).message ?? String(error), error instanceof TransportFatalError);
  }

  #retry(why: string, refused: boolean): void {
    if (this.#stopped) return;
    this.#restarts++;
    const delay = refused
      ? Math.min(
          (this.#o.refusedDelayMs ?? 60_000) * 2 ** this.#refusals++,
          this.#o.maxRefusedDelayMs ?? 15 * 60_000,
        )
      : (this.#o.delay ?? backoffDelay)(this.#attempt++);
    const next = `trying again in ${Math.round(delay / 1000)} s`;
    this.#setStatus(refused ? "failed" : "offline", `${why}; ${next}`);
    this.#o.log(`chat: ${refused ? "failed" : "the transport stopped"}: ${why}; ${next}`);
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  #setStatus(state: PresenceStatus["state"], detail?: string): void {
    if (this.#status.state === state && this.#status.detail === detail) return;
    this.#status = {
      network: this.kind,
      account: this.self,
      state,
      ...(detail !== undefined && { detail }),
      since: this.#clock().toISOString(),
      restarts: this.#restarts,
    };
  }
}
