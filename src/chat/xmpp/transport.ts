/**
 * The XMPP transport, on @xmpp/client (xmpp.js): password login (SCRAM, or
 * PLAIN over TLS), one resource per process, the declared MUC rooms joined
 * with the display name as nick, direct chats with any bare JID.
 *
 * Connection: one xmpp.js client for the transport's life. Its own reconnect
 * (a fixed 1 s, and not for a first connect that fails) is off; the loop in
 * #run connects, waits for the bound session, and after a disconnect or a
 * failed attempt waits `backoffDelay` and tries again. A credential the server
 * refuses rejects the first start; later it is logged and retried like any
 * failure. An XEP-0199 ping every 30 s finds a dead connection (no answer in
 * 10 s: the socket is dropped, which reconnects).
 *
 * XEP-0198 stream management is never enabled (the server's offer of it is
 * removed from its stream features), for two reasons. xmpp.js 0.14 resets its
 * count of received stanzas when it has already acknowledged some that came
 * in the same read as <enabled/>, so its next acknowledgement counts back and
 * Prosody closes the stream ("Client acknowledged less stanzas than already
 * acknowledged"): a session dropped seconds after it began. And a session the
 * server keeps for resumption outlives a process that crashed (Prosody: 10
 * minutes): direct messages go on being queued to it instead of to offline
 * storage, and a room keeps its dead occupant. Without it, a lost connection
 * ends the session as soon as the server sees it lost, and every session is a
 * fresh one that catches up (below).
 *
 * Who sent a message, as the server verified it: in a direct chat the bare
 * JID of the `from` the server stamps; in a MUC the occupant's real JID,
 * which a non-anonymous room tells in presence (<item jid>). Messages carry
 * only the nick, so the sender is looked up by the XEP-0421 occupant id the
 * room stamps on messages and presence (Prosody does by default; it is stable
 * per real JID and cannot be forged), else, for live messages only, by the
 * nick's current occupant. A message whose author is not known (left before
 * we joined; an anonymous room) has no sender. The <item jid> some servers
 * add to stored messages is not read: Prosody passes an occupant's own
 * muc#user element through, so it can be forged.
 *
 * Ids (`ChatMessage.id`, `SentMessage.id`, reaction targets, `inReplyTo`):
 * - A received message: the XEP-0359 stanza id the room (groupchat) or this
 *   account's archive (chat) assigned, trusted only when that entity
 *   advertises urn:xmpp:sid:0 (then it strips forged ones); else
 *   `<sender bare JID>/<origin id>` (the room's address when the sender is
 *   unknown). A bare JID has no "/", so the origin id is what follows the
 *   first "/".
 * - A message sent: in a MUC the stanza id the room gave our own reflected
 *   copy (what XEP-0444 and XEP-0461 say peers refer to in groupchat), else
 *   after 5 s or in a room without stanza ids the id attribute; in a direct
 *   chat the id attribute, which is also its <origin-id> (what peers refer to
 *   there). So a peer's reaction or reply names our message by the very id
 *   `send` returned.
 * - A reaction target or reply id that names a message seen in this process
 *   is translated to that message's id; an unknown one is passed as is
 *   (right for our own messages and for stanza ids).
 * - An edit (XEP-0308) refers to the original's id attribute, kept per id in
 *   memory (lost on restart: then the id itself is used).
 *
 * Restart safety (no message delivered twice, none said while down lost),
 * with the state in DeliveryState (xmpp-state.ts):
 * - MUC: a room joined for the first time delivers none of the history it
 *   sends (its last 20 messages, whose ids are remembered) and sets its
 *   watermark to now; afterwards each (re)join asks for the history since
 *   the watermark less a clock margin (the watermark of a live message is our
 *   clock, a history stamp the server's, in whole seconds), and of what
 *   comes, anything before that or already handled is dropped. A room sends
 *   at most its history length (Prosody: 20 by default, from its archive
 *   with mod_muc_mam); more said while down are not delivered. (Were more
 *   than the 100 remembered ids delivered in one room within the margin
 *   before a stop, the oldest of them could come again.)
 * - Direct, when the account has an XEP-0313 archive (MAM) that stamps
 *   stanza ids: the state keeps a mark in it, the archive id of the newest
 *   message read. The first session of a new state only sets the mark to the
 *   newest archived message. Every later session, after its initial presence
 *   (so nothing falls between what it reads and what comes live), reads the
 *   archive after the mark, page by page, and delivers each message from a
 *   peer not delivered before, by its archive id; the mark moves after each
 *   page, and with each live message once the session has caught up. That
 *   covers what came while the process was down and what a dying connection
 *   swallowed (a session the server thought alive got it, not offline
 *   storage). The archive id is also the stanza id of the live or offline
 *   copy of the same message, so none is delivered twice. A mark the archive
 *   no longer has (expired), or a state from before marks, is read from the
 *   oldest message kept, with the rules below for stored messages.
 * - Direct, without such an archive: messages sent while offline come from
 *   the server's offline storage with a delay stamp; they are delivered when
 *   not delivered before and newer than the peer's watermark (a new peer:
 *   than the state file); on the very first start, none.
 * - The state is saved before each delivery.
 * - What each person's reactions were is kept in memory only: a reaction
 *   set changed while down delivers all its keys again.
 *
 * Not supported: files (no HTTP upload: sendLong splits), incoming edits
 * (ignored, as on Matrix), MUC private messages (ignored: the sender is only
 * a nick), carbons (not enabled; a carbon has no body of its own, so none is
 * delivered).
 */
import { randomBytes, randomUUID } from "node:crypto";
import {
  type Client,
  type XmlElement,
  type XmppError,
  xml,
  client as xmppClient,
} from "@xmpp/client";
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
import { ScramSha1 } from "./scram.ts";
import {
  type ArchivedMessage,
  archivedMessage,
  bareJid,
  dateTime,
  errorOf,
  type Jid,
  mentionsAny,
  NS,
  originId,
  parseJid,
  reactionsOf,
  replyOf,
  stanzaIdBy,
  trustedDelay,
  withoutReplyFallback,
  withoutStreamManagement,
} from "./stanza.ts";
import { CLOCK_MARGIN_MS, DeliveryState, FIRST_JOIN_HISTORY } from "./state.ts";

export interface XmppOptions extends TransportOptions {
  /**
   * Where to connect: `xmpp://host:port` (TCP, STARTTLS when the server offers
   * it) or `xmpps://host:port` (direct TLS).
   */
  readonly service: string;
  /** The XMPP domain of the account (the stream's `to`), e.g. example.org. */
  readonly domain: string;
  /** This account's bare JID, e.g. agent@example.org. */
  readonly jid: string;
  readonly password: string;
}

/** Longest body sent in one message; sendLong splits beyond it. */
const MAX_MESSAGE_CHARS = 4000;
const PING_INTERVAL_MS = 30_000;
const PING_TIMEOUT_MS = 10_000;
/** From opening the socket to a bound (or resumed) session. */
const CONNECT_TIMEOUT_MS = 30_000;
/** From the join presence to the room's subject (the end of its history). */
const JOIN_TIMEOUT_MS = 10_000;
const IQ_TIMEOUT_MS = 10_000;
/** Messages asked for per archive page (Prosody gives at most 50). */
const ARCHIVE_PAGE = 50;
/** How long send waits for a MUC to reflect our message with its stanza id. */
const REFLECTION_TIMEOUT_MS = 5_000;
/** How long send, edit, react and typing wait for a connection (or a room join) that is under way. */
const READY_TIMEOUT_MS = 30_000;
/** Messages remembered for translating ids (reaction targets, replies, edits). */
const REMEMBERED_MESSAGES = 2000;
/** (room, sender, target) triples whose reactions are remembered, to tell the added ones. */
const REMEMBERED_REACTIONS = 1000;
const REMEMBERED_OCCUPANTS = 1000;
/** Nicks tried when the display name is taken in a room: "name", "name_2", … */
const NICK_ATTEMPTS = 3;

interface Room {
  readonly address: string;
  /** Joined on an invitation (remembered in the state file), not declared. */
  readonly invited: boolean;
  readonly password: string | undefined;
  nick: string;
  nickAttempt: number;
  /** out: not in the room; joining: join presence sent; in: the room's history is over. */
  status: "out" | "joining" | "in";
  /** The room assigns stanza ids (and strips forged ones). */
  stanzaIds: boolean;
  /** The room stamps XEP-0421 occupant ids (and strips forged ones). */
  occupantIds: boolean;
  ownOccupantId: string | undefined;
  /** nick → real bare JID, for those present. */
  readonly occupants: Map<string, string | undefined>;
  /** occupant id → real bare JID (stable per person and room). */
  readonly people: Map<string, string>;
  joined: (() => void) | undefined;
  anonymityLogged: boolean;
}

/** What is needed to refer to a message on the wire. */
interface MessageRef {
  readonly room: string;
  /** What peers name it by in reactions and replies (stanza id in groupchat, else origin id). */
  readonly ref: string;
  /** Its id attribute, which XEP-0308 corrections name. */
  readonly origin: string | undefined;
  /** Its author's address, for XEP-0461's `to` (occupant JID in a MUC). */
  readonly author: string | undefined;
}

/** One page of an archive query, in the archive's order. */
interface ArchivePage {
  readonly items: ArchivedMessage[];
  /** The archive id of the page's last message. */
  readonly last: string | undefined;
  /** No more after this page. */
  readonly complete: boolean;
}

interface Pending {
  readonly resolve: (stanzaId: string | undefined) => void;
  readonly reject: (error: Error) => void;
}

export class XmppTransport implements ChatTransport {
  readonly kind = "xmpp";
  readonly self: string;
  readonly maxMessageChars = MAX_MESSAGE_CHARS;

  readonly #options: XmppOptions;
  readonly #domain: string;
  readonly #localpart: string;
  readonly #resource = `nuketown-${randomBytes(4).toString("hex")}`;
  #client: Client | undefined;
  #handlers: TransportHandlers | undefined;
  #running = false;
  #online = false;
  #everOnline = false;
  /** Counts sessions (not resumptions), so work begun in one is not finished in the next. */
  #session = 0;
  /** Aborted by stop: ends waits and the reconnect loop. */
  #lifetime = new AbortController();
  #first: { resolve: () => void; reject: (error: Error) => void } | undefined;
  #connection: string | undefined;
  #state: DeliveryState | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  /** This account's archive assigns stanza ids to the messages it receives. */
  #accountStanzaIds = false;
  /** This account has an archive to catch up from (MAM with stanza ids). */
  #accountArchive = false;
  /** This session has read the archive up to its start: live messages may move the mark. */
  #caughtUp = false;
  /** Archive queries under way: query id → the results come so far. */
  readonly #archiveQueries = new Map<string, XmlElement[]>();
  #presence: { show?: string; status?: string } = {};
  readonly #rooms = new Map<string, Room>();
  readonly #refs = new Map<string, MessageRef>();
  /** `${room}\n${ref}` → the id we gave that message. */
  readonly #idsByRef = new Map<string, string>();
  /** `${room}\n${sender}\n${target}` → the keys that sender's last reaction set had. */
  readonly #reactionsSeen = new Map<string, string[]>();
  /** `${room}\n${ref}` → our own reactions to it (XEP-0444 sends the whole set each time). */
  readonly #ownReactions = new Map<string, string[]>();
  /** `${room}\n${origin id}` → a send waiting for the room to reflect it. */
  readonly #pending = new Map<string, Pending>();
  readonly #waiters = new Set<() => void>();

  constructor(options: XmppOptions) {
    const jid = parseJid(options.jid);
    if (!jid?.local || jid.resource)
      throw new Error(`xmpp: "${options.jid}" is not the bare JID of an account (name@domain)`);
    this.#options = options;
    this.self = jid.bare;
    this.#localpart = jid.local;
    this.#domain = options.domain.toLowerCase();
    if (jid.domain !== this.#domain)
      throw new Error(`xmpp: ${jid.bare} is not an account of ${this.#domain} (the XMPP domain)`);
  }

  async start(handlers: TransportHandlers): Promise<void> {
    if (this.#running) throw new Error(`xmpp: ${this.self} is already started`);
    this.#state = DeliveryState.load(this.#options.stateDir, this.self, this.#options.log);
    this.#running = true;
    this.#lifetime = new AbortController();
    this.#handlers = handlers;
    this.#connection = undefined;
    this.#everOnline = false;
    this.#rooms.clear();
    for (const room of this.#options.rooms) {
      const address = bareJid(room);
      if (address) this.#addRoom(address, false, undefined);
      else this.#options.log(`xmpp: "${room}" is not a room address; not joining it`);
    }
    for (const [room, password] of this.#state.invitedRooms()) this.#addRoom(room, true, password);
    const client = xmppClient({
      service: this.#options.service,
      domain: this.#domain,
      username: this.#localpart,
      password: this.#options.password,
      resource: this.#resource,
      timeout: 5000,
    });
    client.reconnect.stop();
    const local = isLoopbackService(this.#options.service);
    client.prependListener("element", (element) => {
      if (!element.is("features", NS.streams)) return;
      withoutStreamManagement(element);
      // Logging in over a plain socket to another machine lets anyone on the way strip
      // STARTTLS and play our server (and every sender it vouches for): refuse it.
      const sasl = element.getChild("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl");
      if (sasl && !local && client.socket?.secure !== true) {
        this.#options.log(
          `xmpp: ${this.#options.service} offers no TLS: not sending ${this.self}'s credentials in the clear`,
        );
        client.socket?.destroy();
      }
    });
    for (const entry of client.saslFactory._mechs)
      if (entry.name === "SCRAM-SHA-1") entry.mech = ScramSha1;
    client.on("error", (error) => {
      if (this.#online) this.#options.log(`xmpp: ${describe(error)}`);
    });
    client.on("stanza", (stanza) => {
      try {
        this.#onStanza(stanza);
      } catch (error) {
        this.#options.log(`xmpp: handling a ${stanza.name} stanza failed: ${describe(error)}`);
      }
    });
    this.#client = client;
    const first = new Promise<void>((resolve, reject) => {
      this.#first = { resolve, reject };
    });
    this.#run(client).catch((error: unknown) => {
      this.#options.log(`xmpp: the connection loop failed: ${describe(error)}`);
      this.#first?.reject(error instanceof Error ? error : new Error(String(error)));
      this.#first = undefined;
    });
    try {
      await first;
    } catch (error) {
      await this.stop();
      throw error;
    }
  }

  async stop(): Promise<void> {
    const wasRunning = this.#running;
    this.#running = false;
    this.#lifetime.abort();
    this.#first?.reject(new Error(`xmpp: ${this.self} was stopped while connecting`));
    this.#first = undefined;
    this.#stopPing();
    for (const pending of this.#pending.values())
      pending.reject(new Error(`xmpp: ${this.self} was stopped`));
    this.#pending.clear();
    const client = this.#client;
    this.#client = undefined;
    this.#online = false;
    if (client) {
      if (client.status === "online") {
        // Closing the stream tells the rooms we left; a dead server gets a few seconds.
        await within(
          client.stop().catch(() => {}),
          6000,
          undefined,
        );
      }
      await dropSocket(client);
      client.removeAllListeners();
      // An error event nobody listens to would throw.
      client.on("error", () => {});
    }
    if (wasRunning) this.#setConnection("offline", "stopped");
  }

  async send(room: string, text: string, options: SendOptions = {}): Promise<SentMessage> {
    const { client, address, muc } = await this.#target(room);
    const origin = randomUUID();
    const stanza = xml(
      "message",
      { to: address, type: muc ? "groupchat" : "chat", id: origin },
      xml("body", {}, text),
      options.thread ? xml("thread", {}, options.thread) : undefined,
      this.#replyElement(options.replyTo),
      xml("origin-id", { xmlns: NS.stanzaId, id: origin }),
      xml("active", { xmlns: NS.chatStates }),
    );
    if (!muc) {
      await client.send(stanza);
      this.#remember(origin, { room: address, ref: origin, origin, author: this.self });
      return { id: origin, room: address };
    }
    const reflected = this.#reflection(address, origin);
    // stop() may reject it before it is awaited.
    reflected.catch(() => {});
    try {
      await client.send(stanza);
    } catch (error) {
      this.#pending.get(`${address}\n${origin}`)?.resolve(undefined);
      throw error;
    }
    const id = (await reflected) ?? origin;
    this.#remember(id, { room: address, ref: id, origin, author: `${address}/${muc.nick}` });
    return { id, room: address };
  }

  async edit(message: SentMessage, text: string): Promise<void> {
    const { client, address, muc } = await this.#target(message.room);
    const original = this.#refs.get(message.id)?.origin ?? originOf(message.id);
    const id = randomUUID();
    await client.send(
      xml(
        "message",
        { to: address, type: muc ? "groupchat" : "chat", id },
        xml("body", {}, text),
        xml("replace", { xmlns: NS.correct, id: original }),
        xml("origin-id", { xmlns: NS.stanzaId, id }),
      ),
    );
  }

  async react(room: string, target: string, key: string): Promise<void> {
    const { client, address, muc } = await this.#target(room);
    const ref = this.#refs.get(target)?.ref ?? originOf(target);
    const mineKey = `${address}\n${ref}`;
    const mine = this.#ownReactions.get(mineKey) ?? [];
    if (!mine.includes(key)) mine.push(key);
    remember(this.#ownReactions, mineKey, mine, REMEMBERED_REACTIONS);
    await client.send(
      xml(
        "message",
        { to: address, type: muc ? "groupchat" : "chat", id: randomUUID() },
        xml(
          "reactions",
          { xmlns: NS.reactions, id: ref },
          mine.map((reaction) => xml("reaction", {}, reaction)),
        ),
        xml("store", { xmlns: NS.hints }),
      ),
    );
  }

  /**
   * As several messages, each at most maxMessageChars. A file would need
   * XEP-0363 HTTP upload, an HTTP service beside the XMPP server that a town
   * may not run; uploading where the server offers it is a later improvement.
   */
  async sendLong(
    room: string,
    text: string,
    _name: string,
    options: SendOptions = {},
  ): Promise<SentMessage> {
    const pieces = splitText(text, this.maxMessageChars);
    const first = await this.send(room, pieces[0] ?? "", options);
    for (const piece of pieces.slice(1))
      await this.send(room, piece, options.thread ? { thread: options.thread } : {});
    return first;
  }

  /** XEP-0085 chat states: composing, then active. */
  async typing(room: string, on: boolean): Promise<void> {
    const { client, address, muc } = await this.#target(room);
    await client.send(
      xml(
        "message",
        { to: address, type: muc ? "groupchat" : "chat", id: randomUUID() },
        xml(on ? "composing" : "active", { xmlns: NS.chatStates }),
        xml("no-store", { xmlns: NS.hints }),
      ),
    );
  }

  /** To the server (for contacts) and to each joined room; kept for later connections. */
  async setPresence(state: PresenceState, status?: string): Promise<void> {
    const show = state === "busy" ? "dnd" : state === "away" ? "away" : undefined;
    this.#presence = {
      ...(show ? { show } : {}),
      ...(status ? { status } : {}),
    };
    const client = this.#client;
    if (!client || !this.#online) return;
    await client.send(xml("presence", {}, ...this.#presenceChildren()));
    for (const room of this.#rooms.values()) {
      if (room.status === "in")
        await client.send(
          xml("presence", { to: `${room.address}/${room.nick}` }, ...this.#presenceChildren()),
        );
    }
  }

  /** A direct chat needs no setup: it is the peer's bare JID. */
  async directRoom(user: string): Promise<string> {
    const jid = parseJid(user);
    if (!jid?.local) throw new Error(`xmpp: "${user}" is not the address of a person`);
    return jid.bare;
  }

  // --- connection ---

  async #run(client: Client): Promise<void> {
    const signal = this.#lifetime.signal;
    for (let attempt = 0; this.#running; ) {
      this.#setConnection("connecting", this.#options.service);
      try {
        await this.#connect(client);
      } catch (error) {
        await dropSocket(client);
        if (!this.#running) return;
        if (isRefusedCredential(error)) {
          const refused = new TransportFatalError(
            `xmpp: ${this.#options.service} refused the credentials of ${this.self} (${describe(error)}): its password was changed or the account removed; put the password where chat.xmpp.passwordSecret points and apply`,
          );
          if (!this.#everOnline) {
            this.#first?.reject(refused);
            this.#first = undefined;
            return;
          }
          this.#options.log(refused.message);
          // As Matrix's revoked token: whoever runs the transport reads the credential anew
          // (the agent's daemon) or exits and says why, instead of retrying a stale password.
          const fatal = this.#handlers?.fatal;
          if (fatal) {
            this.#setConnection("offline", "credentials refused");
            fatal(refused);
            return;
          }
        }
        const wait = backoffDelay(attempt++);
        this.#setConnection(
          "offline",
          `${describe(error)}; retrying in ${Math.round(wait / 1000)} s`,
        );
        await sleep(wait, signal);
        continue;
      }
      const up = Date.now();
      const closed = untilDisconnected(client);
      this.#session++;
      this.#caughtUp = false;
      // A new session is in no room.
      for (const room of this.#rooms.values()) room.status = "out";
      this.#online = true;
      this.#everOnline = true;
      this.#setConnection("online");
      this.#notify();
      this.#startPing(client);
      await this.#setUpSession(client);
      this.#first?.resolve();
      this.#first = undefined;
      const detail = await closed;
      this.#online = false;
      this.#stopPing();
      if (!this.#running) return;
      // Back off afresh only after a session that lasted: a server that drops every session
      // at once must not see us log in and rejoin every room each second.
      if (Date.now() - up > 60_000) attempt = 0;
      const wait = backoffDelay(attempt++);
      this.#setConnection("offline", `${detail}; reconnecting in ${Math.round(wait / 1000)} s`);
      await sleep(wait, signal);
    }
  }

  /** One attempt: socket, stream, authentication, then a bound session. */
  #connect(client: Client): Promise<void> {
    const signal = this.#lifetime.signal;
    return new Promise((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        client.off("online", onOnline);
        client.off("error", onError);
        client.off("disconnect", onDisconnect);
        signal.removeEventListener("abort", onAbort);
      };
      const onOnline = () => {
        cleanup();
        resolve();
      };
      const fail = (error: unknown) => {
        cleanup();
        reject(error);
      };
      const onError = (error: XmppError) => fail(error);
      const onDisconnect = (detail?: { reason?: unknown }) =>
        fail(new Error(`the connection closed${reasonOf(detail)}`));
      const onAbort = () => fail(new Error("stopped"));
      const timer = setTimeout(
        () => fail(new Error(`no session within ${CONNECT_TIMEOUT_MS / 1000} s`)),
        CONNECT_TIMEOUT_MS,
      );
      client.on("online", onOnline);
      client.on("error", onError);
      client.on("disconnect", onDisconnect);
      signal.addEventListener("abort", onAbort);
      client
        .connect(this.#options.service)
        .then(() => {
          // Stanzas are small and answered at once: without this, Nagle's algorithm holds a
          // stanza until the peer's delayed ACK, ~40 ms a hop.
          client.socket?.setNoDelay?.(true);
          return client.open({ domain: this.#domain });
        })
        .catch(fail);
    });
  }

  /** A new session: initial presence, then the archive and the rooms. */
  async #setUpSession(client: Client): Promise<void> {
    // Stanza ids on direct messages are trusted only from an archive that says it assigns them.
    const features = await this.#features(client, this.self);
    this.#accountStanzaIds = features?.has(NS.stanzaId) ?? false;
    this.#accountArchive = this.#accountStanzaIds && (features?.has(NS.mam) ?? false);
    // Offline messages follow the initial presence; from here on messages come live too.
    await client.send(xml("presence", {}, ...this.#presenceChildren())).catch(() => {});
    await Promise.all([
      this.#catchUp(client),
      ...[...this.#rooms.values()].map((room) => this.#join(client, room)),
    ]);
  }

  /** Delivers the direct messages archived after the mark (see the module's doc). */
  async #catchUp(client: Client): Promise<void> {
    const state = this.#state;
    if (!state || !this.#accountArchive) return;
    const session = this.#session;
    const current = () => session === this.#session && this.#running;
    try {
      const mark = state.archiveMark();
      if (mark === undefined && state.fresh) {
        // The first start: nothing archived before it is for us.
        const newest = await this.#archivePage(client, { newest: true });
        if (!current()) return;
        state.markArchive(newest.last ?? null);
        state.save();
        this.#caughtUp = true;
        return;
      }
      let after = mark ?? undefined;
      // After a mark (null: the archive was empty when marked) all not handled is new;
      // read from the archive's start, the rules for stored messages decide.
      let afterMark = mark !== undefined;
      for (;;) {
        let page: ArchivePage;
        try {
          page = await this.#archivePage(client, { after });
        } catch (error) {
          if (after === undefined || (error as XmppError).condition !== "item-not-found")
            throw error;
          this.#options.log(
            `xmpp: the archive of ${this.self} no longer has its mark; reading all it keeps`,
          );
          after = undefined;
          afterMark = false;
          continue;
        }
        if (!current()) return;
        for (const item of page.items) this.#onArchived(item, afterMark);
        const last = page.last === after ? undefined : page.last;
        if (last !== undefined) {
          state.markArchive(last);
          state.save();
          after = last;
        } else if (after === undefined && state.archiveMark() !== null) {
          // All of an empty archive was read: from now on, all of it is new.
          state.markArchive(null);
          state.save();
        }
        if (page.complete || last === undefined) break;
      }
      this.#caughtUp = true;
    } catch (error) {
      if (current())
        this.#options.log(
          `xmpp: cannot read the archive of ${this.self} (messages sent while offline may be missing): ${describe(error)}`,
        );
    }
  }

  /** One page of the account's archive: after an id, from its start, or only its newest message. */
  async #archivePage(
    client: Client,
    where: { after?: string | undefined; newest?: boolean },
  ): Promise<ArchivePage> {
    const queryId = randomUUID();
    const results: XmlElement[] = [];
    this.#archiveQueries.set(queryId, results);
    try {
      const reply = await client.iqCaller.request(
        xml(
          "iq",
          { type: "set", to: this.self },
          xml(
            "query",
            { xmlns: NS.mam, queryid: queryId },
            xml(
              "set",
              { xmlns: NS.rsm },
              xml("max", {}, String(where.newest ? 1 : ARCHIVE_PAGE)),
              where.newest
                ? xml("before")
                : where.after !== undefined
                  ? xml("after", {}, where.after)
                  : undefined,
            ),
          ),
        ),
        IQ_TIMEOUT_MS,
      );
      const fin = reply.getChild("fin", NS.mam);
      const items = results
        .map((result) => archivedMessage(result, queryId))
        .filter((item): item is ArchivedMessage => item !== undefined);
      const last = fin?.getChild("set", NS.rsm)?.getChildText("last") || undefined;
      return { items, last, complete: fin?.attrs.complete === "true" };
    } finally {
      this.#archiveQueries.delete(queryId);
    }
  }

  /** A message read from the account's archive: a peer's is handled as if it came now, with its archive id. */
  #onArchived(item: ArchivedMessage, afterMark: boolean): void {
    const { message } = item;
    const from = parseJid(message.attrs.from);
    // Ours, sent from any session of this account.
    if (!from || from.bare === this.self) return;
    const type = message.attrs.type ?? "normal";
    if (type !== "chat" && type !== "normal") return;
    if (this.#onInvitation(message, from)) return;
    this.#onDirect(message, from, { id: item.id, stamp: item.stamp, afterMark });
  }

  #startPing(client: Client): void {
    this.#stopPing();
    this.#pingTimer = setInterval(() => void this.#ping(client), PING_INTERVAL_MS);
  }

  #stopPing(): void {
    clearInterval(this.#pingTimer);
    this.#pingTimer = undefined;
  }

  async #ping(client: Client): Promise<void> {
    try {
      await client.iqCaller.request(
        xml("iq", { type: "get", to: this.#domain }, xml("ping", { xmlns: NS.ping })),
        PING_TIMEOUT_MS,
      );
    } catch (error) {
      // An error reply is an answer too: only silence means the connection is dead.
      if ((error as Error).name !== "TimeoutError" || !this.#online || client !== this.#client)
        return;
      this.#options.log(`xmpp: no answer to a ping in ${PING_TIMEOUT_MS / 1000} s; reconnecting`);
      client.socket?.destroy();
    }
  }

  #setConnection(state: ConnectionState, detail?: string): void {
    const key = `${state} ${detail ?? ""}`;
    if (key === this.#connection) return;
    this.#connection = key;
    try {
      this.#handlers?.connection?.(state, detail);
    } catch (error) {
      this.#options.log(`xmpp: the connection handler threw: ${describe(error)}`);
    }
  }

  // --- rooms ---

  #addRoom(address: string, invited: boolean, password: string | undefined): Room {
    const existing = this.#rooms.get(address);
    if (existing) return existing;
    const room: Room = {
      address,
      invited,
      password,
      nick: this.#options.displayName.trim() || this.#localpart,
      nickAttempt: 0,
      status: "out",
      stanzaIds: false,
      occupantIds: false,
      ownOccupantId: undefined,
      occupants: new Map(),
      people: new Map(),
      joined: undefined,
      anonymityLogged: false,
    };
    this.#rooms.set(address, room);
    return room;
  }

  /** Joins and waits until the room's history is over (its subject came), or a while. */
  async #join(client: Client, room: Room): Promise<void> {
    if (room.status !== "out") return;
    const session = this.#session;
    room.status = "joining";
    room.occupants.clear();
    const features = await this.#features(client, room.address);
    if (session !== this.#session || room.status !== "joining") return;
    this.#noteFeatures(room, features);
    if (room.invited && !features?.has(NS.muc)) {
      // An invitation names an existing room: no joining (and so creating) anything else.
      room.status = "out";
      this.#options.log(`xmpp: ${room.address} is not an existing chat room; not joining it`);
      return;
    }
    const mark = this.#state?.watermark(room.address);
    const history =
      mark === undefined
        ? { maxstanzas: String(FIRST_JOIN_HISTORY) }
        : { since: dateTime(mark - CLOCK_MARGIN_MS) };
    const joined = new Promise<void>((resolve) => {
      room.joined = resolve;
    });
    try {
      await client.send(
        xml(
          "presence",
          { to: `${room.address}/${room.nick}`, id: randomUUID() },
          xml(
            "x",
            { xmlns: NS.muc },
            xml("history", history),
            room.password !== undefined ? xml("password", {}, room.password) : undefined,
          ),
          ...this.#presenceChildren(),
        ),
      );
    } catch (error) {
      room.status = "out";
      this.#options.log(`xmpp: cannot join ${room.address}: ${describe(error)}`);
      return;
    }
    const timedOut = await within(
      joined.then(() => false),
      JOIN_TIMEOUT_MS,
      true,
    );
    if (timedOut && room.status === "joining")
      this.#options.log(
        `xmpp: ${room.address} has not finished the join in ${JOIN_TIMEOUT_MS / 1000} s`,
      );
  }

  #noteFeatures(room: Room, features: Set<string> | undefined): void {
    room.stanzaIds = features?.has(NS.stanzaId) ?? false;
    room.occupantIds = features?.has(NS.occupantId) ?? false;
    if (features?.has("muc_semianonymous") && !room.anonymityLogged) {
      room.anonymityLogged = true;
      this.#options.log(
        `xmpp: ${room.address} is semi-anonymous: its senders cannot be verified (make it non-anonymous)`,
      );
    }
  }

  /** The subject ends a join's history: from here on messages are live. */
  #historyOver(room: Room): void {
    if (room.status !== "joining") return;
    room.status = "in";
    this.#state?.joined(room.address);
    room.joined?.();
    room.joined = undefined;
    this.#notify();
  }

  #onPresence(stanza: XmlElement): void {
    const from = parseJid(stanza.attrs.from);
    const room = from && this.#rooms.get(from.bare);
    if (!from?.resource || !room) return;
    if (stanza.attrs.type === "error") {
      this.#onJoinError(room, stanza);
      return;
    }
    const x = stanza.getChild("x", NS.mucUser);
    if (!x) return;
    const item = x.getChild("item");
    const codes = new Set(x.getChildren("status").map((status) => status.attrs.code));
    const real = bareJid(item?.attrs.jid);
    const occupantId = room.occupantIds
      ? stanza.getChild("occupant-id", NS.occupantId)?.attrs.id
      : undefined;
    if (occupantId && real) remember(room.people, occupantId, real, REMEMBERED_OCCUPANTS);
    const self = codes.has("110");
    if (stanza.attrs.type === "unavailable") {
      room.occupants.delete(from.resource);
      const nick = item?.attrs.nick;
      if (codes.has("303") && nick) {
        room.occupants.set(nick, real);
        if (self) room.nick = nick;
      } else if (self) this.#leftRoom(room, codes, x);
      return;
    }
    room.occupants.set(from.resource, real);
    if (!self) return;
    room.nick = from.resource;
    if (occupantId) room.ownOccupantId = occupantId;
    if (codes.has("201")) void this.#configureNewRoom(room);
  }

  #onJoinError(room: Room, stanza: XmlElement): void {
    if (room.status !== "joining") {
      this.#options.log(`xmpp: ${room.address} returned an error: ${errorOf(stanza)}`);
      return;
    }
    room.status = "out";
    room.joined?.();
    room.joined = undefined;
    const error = errorOf(stanza);
    const client = this.#client;
    if (error.startsWith("conflict") && room.nickAttempt + 1 < NICK_ATTEMPTS && client) {
      room.nickAttempt++;
      const base = this.#options.displayName.trim() || this.#localpart;
      room.nick = `${base}_${room.nickAttempt + 1}`;
      this.#options.log(`xmpp: ${room.address}: the nick is taken; joining as ${room.nick}`);
      void this.#join(client, room);
      return;
    }
    this.#options.log(`xmpp: cannot join ${room.address}: ${error}`);
  }

  #leftRoom(room: Room, codes: Set<string | undefined>, x: XmlElement): void {
    room.status = "out";
    room.occupants.clear();
    const why = x.getChild("destroy")
      ? "the room was destroyed"
      : codes.has("301")
        ? "banned"
        : codes.has("307")
          ? "kicked"
          : codes.has("321") || codes.has("322")
            ? "removed (affiliation)"
            : codes.has("332")
              ? "the room service shut down"
              : "left";
    this.#options.log(`xmpp: out of ${room.address}: ${why}`);
    if (room.invited && why !== "left" && !codes.has("332")) {
      this.#rooms.delete(room.address);
      this.#state?.removeInvited(room.address);
    }
  }

  /** A room this join created (status 201) is locked until configured: make it non-anonymous and persistent. */
  async #configureNewRoom(room: Room): Promise<void> {
    const client = this.#client;
    if (!client) return;
    const field = (name: string, value: string) =>
      xml("field", { var: name }, xml("value", {}, value));
    try {
      await client.iqCaller.request(
        xml(
          "iq",
          { type: "set", to: room.address },
          xml(
            "query",
            { xmlns: NS.mucOwner },
            xml(
              "x",
              { xmlns: NS.dataForms, type: "submit" },
              field("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
              field("muc#roomconfig_whois", "anyone"),
              field("muc#roomconfig_persistentroom", "1"),
            ),
          ),
        ),
        IQ_TIMEOUT_MS,
      );
      this.#options.log(`xmpp: created ${room.address} (non-anonymous, persistent)`);
      this.#noteFeatures(room, await this.#features(client, room.address));
    } catch (error) {
      this.#options.log(`xmpp: cannot configure the new room ${room.address}: ${describe(error)}`);
    }
  }

  // --- incoming ---

  #onStanza(stanza: XmlElement): void {
    if (!this.#running) return;
    if (stanza.name === "message") this.#onMessage(stanza);
    else if (stanza.name === "presence") this.#onPresence(stanza);
  }

  #onMessage(stanza: XmlElement): void {
    const result = stanza.getChild("result", NS.mam);
    if (result) {
      // Only this account's archive answers our queries (a stanza without `from` is from it).
      const query = this.#archiveQueries.get(result.attrs.queryid ?? "");
      const from = stanza.attrs.from === undefined ? undefined : parseJid(stanza.attrs.from);
      if (query && (from === undefined || (from.bare === this.self && !from.resource)))
        query.push(stanza);
      return;
    }
    const from = parseJid(stanza.attrs.from);
    if (!from) return;
    const type = stanza.attrs.type ?? "normal";
    if (type !== "groupchat" && this.#caughtUp && this.#accountArchive) {
      const archived = stanzaIdBy(stanza, this.self);
      // Saved with the next delivery (or the one after): at worst it is read again.
      if (archived) this.#state?.markArchive(archived);
    }
    if (type === "error") {
      this.#onErrorMessage(stanza, from);
      return;
    }
    // An occupant's groupchat message is no invitation, whatever it carries.
    if (type !== "groupchat" && this.#onInvitation(stanza, from)) return;
    if (type === "groupchat") this.#onGroupchat(stanza, from);
    else if (type === "chat" || type === "normal") this.#onDirect(stanza, from);
  }

  /** A direct message or reaction, live (or from offline storage), or `archived` (read from the account's archive). */
  #onDirect(
    stanza: XmlElement,
    from: Jid,
    archived?: { id: string; stamp: number; afterMark: boolean },
  ): void {
    const peer = from.bare;
    // Our own (another resource of this account); carbons come from it too.
    if (peer === this.self) return;
    // A MUC private message: the sender is only a nick.
    if (this.#rooms.has(peer) || stanza.getChild("x", NS.mucUser)) return;
    const stamp = archived ? archived.stamp : trustedDelay(stanza, this.#domain);
    const afterMark = archived?.afterMark ?? false;
    const origin = originId(stanza);
    const id =
      archived?.id ??
      (this.#accountStanzaIds ? stanzaIdBy(stanza, this.self) : undefined) ??
      `${peer}/${origin ?? randomUUID()}`;
    const reactions = reactionsOf(stanza);
    if (reactions) {
      this.#onReactions(peer, false, peer, id, stamp, reactions, afterMark);
      return;
    }
    const body = stanza.getChildText("body");
    if (body === null || stanza.getChild("replace", NS.correct)) return;
    this.#remember(id, { room: peer, ref: origin ?? id, origin, author: peer });
    this.#deliverMessage(stanza, {
      id,
      room: peer,
      direct: true,
      sender: peer,
      body,
      stamp,
      afterMark,
      names: [],
    });
  }

  #onGroupchat(stanza: XmlElement, from: Jid): void {
    const room = this.#rooms.get(from.bare);
    if (!room || room.status === "out") return;
    const body = stanza.getChildText("body");
    if (stanza.getChild("subject") && body === null) {
      this.#historyOver(room);
      return;
    }
    // The room's own notices have no author.
    if (!from.resource) return;
    const origin = originId(stanza);
    const stanzaId = room.stanzaIds ? stanzaIdBy(stanza, room.address) : undefined;
    const occupantId = room.occupantIds
      ? stanza.getChild("occupant-id", NS.occupantId)?.attrs.id
      : undefined;
    if (from.resource === room.nick || (occupantId && occupantId === room.ownOccupantId)) {
      if (origin) this.#pending.get(`${room.address}\n${origin}`)?.resolve(stanzaId);
      return;
    }
    const stamp = trustedDelay(stanza, room.address);
    const sender = this.#senderIn(room, from.resource, occupantId, stamp !== undefined);
    // This account in another session.
    if (sender === this.self) return;
    const id = stanzaId ?? `${sender ?? room.address}/${origin ?? randomUUID()}`;
    const reactions = reactionsOf(stanza);
    if (reactions) {
      this.#onReactions(room.address, true, sender, id, stamp, reactions);
      return;
    }
    if (body === null || stanza.getChild("replace", NS.correct)) return;
    this.#remember(id, {
      room: room.address,
      ref: stanzaId ?? origin ?? id,
      origin,
      author: `${room.address}/${from.resource}`,
    });
    this.#deliverMessage(stanza, {
      id,
      room: room.address,
      direct: false,
      sender,
      body,
      stamp,
      afterMark: false,
      names: [room.nick],
    });
  }

  /**
   * The real JID behind a nick: by the occupant id where the room stamps
   * them, else by who holds the nick now, which only a live message may use
   * (a stored one may be from an earlier holder of the nick).
   */
  #senderIn(
    room: Room,
    nick: string,
    occupantId: string | undefined,
    stored: boolean,
  ): string | undefined {
    if (room.occupantIds) return occupantId ? room.people.get(occupantId) : undefined;
    return stored ? undefined : room.occupants.get(nick);
  }

  #deliverMessage(
    stanza: XmlElement,
    message: {
      id: string;
      room: string;
      direct: boolean;
      sender: string | undefined;
      body: string;
      stamp: number | undefined;
      /** Read from the archive after its mark. */
      afterMark: boolean;
      names: string[];
    },
  ): void {
    const state = this.#state;
    if (!state?.admits(message.room, message.id, message.stamp, !message.direct, message.afterMark))
      return;
    const reply = replyOf(stanza);
    const body = reply ? withoutReplyFallback(stanza, message.body) : message.body;
    const thread = stanza.getChildText("thread") || undefined;
    const time = message.stamp ?? Date.now();
    const delivered: ChatMessage = {
      id: message.id,
      room: message.room,
      direct: message.direct,
      sender: message.sender,
      body,
      ...(thread !== undefined ? { thread } : {}),
      ...(reply ? { inReplyTo: this.#idOf(message.room, reply.id) } : {}),
      mentionsMe:
        this.#referencesMe(stanza, message.room) ||
        body.includes(this.self) ||
        mentionsAny(body, [...message.names, this.#options.displayName, this.#localpart]),
      time,
    };
    state.delivered(message.room, message.id, time);
    try {
      this.#handlers?.message(delivered);
    } catch (error) {
      this.#options.log(`xmpp: the message handler threw: ${describe(error)}`);
    }
  }

  #onReactions(
    room: string,
    muc: boolean,
    sender: string | undefined,
    id: string,
    stamp: number | undefined,
    reactions: { target: string; keys: string[] },
    afterMark = false,
  ): void {
    const state = this.#state;
    if (!state?.admits(room, id, stamp, muc, afterMark)) return;
    const target = this.#idOf(room, reactions.target);
    const key = `${room}\n${sender ?? ""}\n${target}`;
    const before = this.#reactionsSeen.get(key) ?? [];
    remember(this.#reactionsSeen, key, reactions.keys, REMEMBERED_REACTIONS);
    const added = reactions.keys.filter((reaction) => !before.includes(reaction));
    if (added.length === 0) return;
    const time = stamp ?? Date.now();
    state.delivered(room, id, time);
    for (const reaction of added) {
      const delivered: ChatReaction = { room, sender, target, key: reaction, time };
      try {
        this.#handlers?.reaction?.(delivered);
      } catch (error) {
        this.#options.log(`xmpp: the reaction handler threw: ${describe(error)}`);
      }
    }
  }

  /** XEP-0372 mention references to this account (or its occupant in the room). */
  #referencesMe(stanza: XmlElement, room: string): boolean {
    const nick = this.#rooms.get(room)?.nick;
    return stanza
      .getChildren("reference", "urn:xmpp:reference:0")
      .some(
        (reference) =>
          reference.attrs.type === "mention" &&
          (reference.attrs.uri === `xmpp:${this.self}` ||
            (nick !== undefined && reference.attrs.uri === `xmpp:${room}/${nick}`)),
      );
  }

  /**
   * XEP-0045 mediated invitations (from the room, naming the inviter) and
   * XEP-0249 direct ones (from the inviter). A room vouches for the inviter
   * only when it is on the inviter's own server (its domain or a subdomain):
   * any other service could name anyone.
   */
  #onInvitation(stanza: XmlElement, from: Jid): boolean {
    const mucUser = stanza.getChild("x", NS.mucUser);
    const invite = mucUser?.getChild("invite");
    if (mucUser?.getChild("decline")) return true;
    if (invite && !from.resource) {
      const inviter = parseJid(invite.attrs.from);
      const vouched =
        inviter !== undefined &&
        (from.domain === inviter.domain || from.domain.endsWith(`.${inviter.domain}`));
      this.#answerInvitation(
        from.bare,
        inviter?.bare,
        mucUser?.getChildText("password") ?? undefined,
        vouched ? undefined : "the room is not on the inviter's server",
      );
      return true;
    }
    const direct = stanza.getChild("x", NS.conference);
    if (!direct) return false;
    const room = bareJid(direct.attrs.jid);
    if (room) this.#answerInvitation(room, from.bare, direct.attrs.password, undefined);
    return true;
  }

  #answerInvitation(
    address: string,
    inviter: string | undefined,
    password: string | undefined,
    problem: string | undefined,
  ): void {
    if (inviter === undefined || !this.#options.inviters.has(inviter)) {
      this.#options.log(
        `xmpp: ignored the invitation to ${address} from ${inviter ?? "an unknown sender"} (not an allowed inviter)`,
      );
      return;
    }
    if (problem) {
      this.#options.log(`xmpp: ignored the invitation to ${address} from ${inviter} (${problem})`);
      return;
    }
    const known = this.#rooms.get(address);
    if (known && known.status !== "out") return;
    const room = known ?? this.#addRoom(address, true, password);
    if (!known) this.#state?.addInvited(address, password);
    this.#options.log(`xmpp: accepted the invitation to ${address} from ${inviter}`);
    const client = this.#client;
    if (client && this.#online) void this.#join(client, room);
  }

  #onErrorMessage(stanza: XmlElement, from: Jid): void {
    const id = stanza.attrs.id;
    const error = errorOf(stanza);
    const pending = id ? this.#pending.get(`${from.bare}\n${id}`) : undefined;
    if (pending) pending.reject(new Error(`xmpp: ${from.bare} refused the message: ${error}`));
    else
      this.#options.log(`xmpp: ${from.bare} returned an error for message ${id ?? "?"}: ${error}`);
  }

  // --- outgoing ---

  /** The client and the normalized address, once online (and, for a MUC, in the room). */
  async #target(room: string): Promise<{ client: Client; address: string; muc: Room | undefined }> {
    const address = bareJid(room);
    if (!address) throw new Error(`xmpp: "${room}" is not an XMPP address`);
    if (!this.#running) throw new Error(`xmpp: ${this.self} is not started`);
    await this.#until(() => this.#online, `${this.self} is offline`);
    const muc = this.#rooms.get(address);
    if (muc) await this.#until(() => muc.status === "in", `${this.self} is not in ${address}`);
    const client = this.#client;
    if (!client) throw new Error(`xmpp: ${this.self} is not started`);
    return { client, address, muc };
  }

  /** Resolves with the stanza id of our message's reflection, or undefined after a while. */
  #reflection(room: string, origin: string): Promise<string | undefined> {
    const key = `${room}\n${origin}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => settle(undefined), REFLECTION_TIMEOUT_MS);
      const settle = (stanzaId: string | undefined, error?: Error) => {
        clearTimeout(timer);
        this.#pending.delete(key);
        if (error) reject(error);
        else resolve(stanzaId);
      };
      this.#pending.set(key, {
        resolve: (stanzaId) => settle(stanzaId),
        reject: (error) => settle(undefined, error),
      });
    });
  }

  #replyElement(replyTo: string | undefined): XmlElement | undefined {
    if (!replyTo) return undefined;
    const known = this.#refs.get(replyTo);
    return xml("reply", {
      xmlns: NS.reply,
      id: known?.ref ?? originOf(replyTo),
      to: known?.author,
    });
  }

  #presenceChildren(): XmlElement[] {
    const { show, status } = this.#presence;
    return [
      ...(show ? [xml("show", {}, show)] : []),
      ...(status ? [xml("status", {}, status)] : []),
    ];
  }

  // --- bookkeeping ---

  #remember(id: string, ref: MessageRef): void {
    this.#refs.delete(id);
    this.#refs.set(id, ref);
    this.#idsByRef.set(`${ref.room}\n${ref.ref}`, id);
    if (this.#refs.size <= REMEMBERED_MESSAGES) return;
    const [oldest, old] = this.#refs.entries().next().value ?? [];
    if (oldest === undefined || old === undefined) return;
    this.#refs.delete(oldest);
    const key = `${old.room}\n${old.ref}`;
    if (this.#idsByRef.get(key) === oldest) this.#idsByRef.delete(key);
  }

  /** The id we gave the message a peer names by `ref`, or the ref itself. */
  #idOf(room: string, ref: string): string {
    return this.#idsByRef.get(`${room}\n${ref}`) ?? ref;
  }

  async #features(client: Client, to: string): Promise<Set<string> | undefined> {
    try {
      const reply = await client.iqCaller.request(
        xml("iq", { type: "get", to }, xml("query", { xmlns: NS.discoInfo })),
        IQ_TIMEOUT_MS,
      );
      const query = reply.getChild("query", NS.discoInfo);
      const vars = (query?.getChildren("feature") ?? []).map((feature) => feature.attrs.var);
      return new Set(vars.filter((name): name is string => name !== undefined));
    } catch {
      return undefined;
    }
  }

  #notify(): void {
    for (const check of [...this.#waiters]) check();
  }

  /** Resolves once `ready()` holds; rejects after READY_TIMEOUT_MS or on stop. */
  #until(ready: () => boolean, what: string): Promise<void> {
    if (ready()) return Promise.resolve();
    const signal = this.#lifetime.signal;
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        signal.removeEventListener("abort", onAbort);
      };
      const check = () => {
        if (!ready()) return;
        done();
        resolve();
      };
      const onAbort = () => {
        done();
        reject(new Error(`xmpp: ${this.self} was stopped`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`xmpp: ${what} (waited ${READY_TIMEOUT_MS / 1000} s)`));
      }, READY_TIMEOUT_MS);
      this.#waiters.add(check);
      signal.addEventListener("abort", onAbort);
    });
  }
}

/** The origin id in an id of ours: after the first "/" of `<sender>/<origin id>`, else the id itself. */
function originOf(id: string): string {
  const slash = id.indexOf("/");
  return slash === -1 ? id : id.slice(slash + 1);
}

/** Map.set that forgets the oldest entries beyond `max`. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) {
    const oldest = map.keys().next();
    if (oldest.done) break;
    map.delete(oldest.value);
  }
}

/** A SASL failure is the server refusing the credentials, except a temporary one. */
function isRefusedCredential(error: unknown): boolean {
  const { name, condition } = error as XmppError;
  return name === "SASLError" && condition !== "temporary-auth-failure" && condition !== "aborted";
}

function untilDisconnected(client: Client): Promise<string> {
  return new Promise((resolve) => {
    if (client.status === "disconnect" || client.status === "offline")
      return resolve("disconnected");
    const onDisconnect = (detail?: { reason?: unknown }) => {
      client.off("disconnect", onDisconnect);
      resolve(`disconnected${reasonOf(detail)}`);
    };
    client.on("disconnect", onDisconnect);
  });
}

/** Closes the socket at once, if there is one, and waits for xmpp.js to see it closed. */
async function dropSocket(client: Client): Promise<void> {
  const socket = client.socket;
  if (!socket) return;
  await within(
    new Promise<void>((resolve) => {
      socket.once("close", () => resolve());
      socket.destroy();
    }),
    1000,
    undefined,
  );
}

function reasonOf(detail: { reason?: unknown } | undefined): string {
  const reason = detail?.reason;
  return reason instanceof Error ? ` (${reason.message})` : "";
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** `promise`'s value, or `fallback` after `ms`; the timer is cleared either way. */
function within<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<F>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
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

/** The service is on this machine (plain XMPP is fine on loopback, as in the tests). */
export function isLoopbackService(service: string): boolean {
  let host: string;
  try {
    host = new URL(service).hostname.replace(/^\[|\]$/g, "");
  } catch {
    return false;
  }
  return host === "localhost" || host === "::1" || /^127(\.\d{1,3}){3}$/.test(host);
}
