/**
 * The humans of the chat end-to-end tests, on clients that are not
 * nuketown's: over Matrix the raw client-server API with fetch (a password
 * login, joins, messages, reactions, the /sync timeline), over XMPP
 * @xmpp/client used directly (its SASL login, MUC joins, messages,
 * XEP-0444 reactions, XEP-0461 replies). What the agent and the town bot
 * send must read right in any client, and what any client sends must reach
 * them; our own transports would agree with themselves whatever they did.
 */
import { randomUUID } from "node:crypto";
import { client, type XmlElement, type Client as XmppClient, xml } from "@xmpp/client";

/** A message a person's client received (never the person's own). */
export interface Heard {
  /** Matrix event id; XMPP stanza id (the room's in a MUC, the account's archive's in a direct chat). */
  readonly id: string;
  /** Matrix room id; XMPP MUC address, or the peer's bare JID in a direct chat. */
  readonly room: string;
  /** Matrix user id; bare JID (in a MUC, the occupant's real JID). */
  readonly sender: string | undefined;
  /** The text, without a reply's quoted fallback. */
  readonly body: string;
  readonly thread?: string;
  readonly inReplyTo?: string;
}

export interface HeardReaction {
  readonly room: string;
  readonly sender: string | undefined;
  readonly target: string;
  readonly key: string;
}

export interface SayOptions {
  readonly thread?: string;
  readonly replyTo?: string;
}

/** A person in a chat client of their own, with everything it received. */
export interface Person {
  /** Matrix user id, bare JID. */
  readonly id: string;
  readonly inbox: Heard[];
  readonly reactions: HeardReaction[];
  /** Called with every message received (a bench's echo bot). */
  readonly listeners: Set<(message: Heard) => void>;
  /** Says `text` in `room`; resolves with the id others refer to the message by. */
  send(room: string, text: string, options?: SayOptions): Promise<{ id: string }>;
  react(room: string, target: string, key: string): Promise<void>;
  /** The direct chat with `user` (Matrix: a new room marked direct, `user` invited). */
  directRoom(user: string): Promise<string>;
  /** The first message (already received or still to come) that matches, or a timeout error. */
  waitFor(what: string, match: (message: Heard) => boolean, ms?: number): Promise<Heard>;
  stop(): Promise<void>;
}

/** The inbox, its listeners and waiting for a message: the same on both networks. */
abstract class ChatClient implements Person {
  abstract readonly id: string;
  readonly inbox: Heard[] = [];
  readonly reactions: HeardReaction[] = [];
  readonly listeners = new Set<(message: Heard) => void>();
  readonly #waiters = new Set<() => void>();
  readonly #name: string;

  constructor(name: string) {
    this.#name = name;
  }

  abstract send(room: string, text: string, options?: SayOptions): Promise<{ id: string }>;
  abstract react(room: string, target: string, key: string): Promise<void>;
  abstract directRoom(user: string): Promise<string>;
  abstract stop(): Promise<void>;

  protected heard(message: Heard): void {
    this.inbox.push(message);
    for (const wake of this.#waiters) wake();
    for (const listener of this.listeners) listener(message);
  }

  waitFor(what: string, match: (message: Heard) => boolean, ms = 30_000): Promise<Heard> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.inbox.find(match);
        if (!found) return false;
        this.#waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        const seen = this.inbox.map((m) => `${m.sender} in ${m.room}: ${m.body}`).join("\n");
        reject(new Error(`${this.#name} timed out waiting for ${what}; received:\n${seen}`));
      }, ms);
      if (!check()) this.#waiters.add(check);
    });
  }
}

// --- Matrix: the client-server API over fetch ---

type Json = Record<string, unknown>;
const object = (value: unknown): Json | undefined =>
  typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Json)
    : undefined;
const text = (value: unknown): string | undefined =>
  typeof value === "string" ? value : undefined;

export interface MatrixPersonOptions {
  /** http://127.0.0.1:<port> */
  readonly homeserver: string;
  readonly localpart: string;
  readonly password: string;
  /** For error messages and the device's name. */
  readonly name: string;
  /** Rooms to join (ids or aliases). */
  readonly rooms?: readonly string[];
  /** Whose invitations to accept. */
  readonly inviters?: readonly string[];
}

export class MatrixPerson extends ChatClient {
  readonly id: string;
  /** This device's access token (from the password login). */
  readonly accessToken: string;
  readonly #homeserver: string;
  readonly #inviters: ReadonlySet<string>;
  readonly #joining = new Set<string>();
  readonly #stopping = new AbortController();
  readonly #direct = new Map<string, string>();
  #loop: Promise<void> = Promise.resolve();

  private constructor(
    options: MatrixPersonOptions,
    login: { userId: string; accessToken: string },
  ) {
    super(options.name);
    this.id = login.userId;
    this.accessToken = login.accessToken;
    this.#homeserver = options.homeserver;
    this.#inviters = new Set(options.inviters ?? []);
  }

  /** Logs in with the password, joins `rooms`, and hears everything said from then on. */
  static async login(options: MatrixPersonOptions): Promise<MatrixPerson> {
    const response = await fetch(`${options.homeserver}/_matrix/client/v3/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: options.localpart },
        password: options.password,
        initial_device_display_name: `nt-test ${options.name}`,
      }),
    });
    const body = (await response.json()) as Json;
    if (!response.ok) throw new Error(`${options.name}: login: ${JSON.stringify(body)}`);
    const person = new MatrixPerson(options, {
      userId: text(body.user_id) ?? "",
      accessToken: text(body.access_token) ?? "",
    });
    // Where "from then on" starts: a sync that brings no timeline.
    const first = await person.#api("GET", "/sync", undefined, {
      timeout: "0",
      filter: JSON.stringify({ room: { timeline: { limit: 0 } } }),
    });
    for (const room of options.rooms ?? []) await person.#join(room);
    person.#loop = person.#sync(text(first.next_batch) ?? "");
    return person;
  }

  async send(room: string, body: string, options: SayOptions = {}): Promise<{ id: string }> {
    const relation = options.thread
      ? {
          rel_type: "m.thread",
          event_id: options.thread,
          // What clients without threads show: a reply to the thread's root (or to replyTo).
          is_falling_back: options.replyTo === undefined,
          "m.in_reply_to": { event_id: options.replyTo ?? options.thread },
        }
      : options.replyTo
        ? { "m.in_reply_to": { event_id: options.replyTo } }
        : undefined;
    const content = { msgtype: "m.text", body, ...(relation && { "m.relates_to": relation }) };
    return { id: await this.#sendEvent(room, "m.room.message", content) };
  }

  async react(room: string, target: string, key: string): Promise<void> {
    await this.#sendEvent(room, "m.reaction", {
      "m.relates_to": { rel_type: "m.annotation", event_id: target, key },
    });
  }

  async directRoom(user: string): Promise<string> {
    const known = this.#direct.get(user);
    if (known) return known;
    const created = await this.#api("POST", "/createRoom", {
      is_direct: true,
      invite: [user],
      preset: "trusted_private_chat",
    });
    const room = text(created.room_id) ?? "";
    // As clients do: the room is marked direct in the account's m.direct.
    const path = `/user/${encodeURIComponent(this.id)}/account_data/m.direct`;
    const direct = await this.#api("GET", path).catch(() => ({}) as Json);
    const rooms = Array.isArray(direct[user]) ? (direct[user] as string[]) : [];
    await this.#api("PUT", path, { ...direct, [user]: [...rooms, room] });
    this.#direct.set(user, room);
    return room;
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    await this.#loop;
  }

  async #sync(since: string): Promise<void> {
    let token = since;
    while (!this.#stopping.signal.aborted) {
      try {
        const data = await this.#api("GET", "/sync", undefined, { since: token, timeout: "30000" });
        token = text(data.next_batch) ?? token;
        this.#read(data);
      } catch {
        if (this.#stopping.signal.aborted) return;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  #read(data: Json): void {
    const rooms = object(data.rooms);
    for (const [room, joined] of Object.entries(object(rooms?.join) ?? {})) {
      const events = object(object(joined)?.timeline)?.events;
      for (const event of Array.isArray(events) ? events : []) this.#event(room, object(event));
    }
    for (const [room, invited] of Object.entries(object(rooms?.invite) ?? {})) {
      const events = object(object(invited)?.invite_state)?.events;
      const invite = (Array.isArray(events) ? events : [])
        .map(object)
        .find((e) => e?.type === "m.room.member" && e.state_key === this.id);
      const sender = text(invite?.sender);
      if (sender && this.#inviters.has(sender)) void this.#join(room).catch(() => {});
    }
  }

  #event(room: string, event: Json | undefined): void {
    const sender = text(event?.sender);
    const id = text(event?.event_id);
    if (!event || !id || sender === this.id) return;
    const content = object(event.content) ?? {};
    const relation = object(content["m.relates_to"]);
    if (event.type === "m.reaction") {
      const target = text(relation?.event_id);
      const key = text(relation?.key);
      if (relation?.rel_type === "m.annotation" && target && key)
        this.reactions.push({ room, sender, target, key });
      return;
    }
    const body = text(content.body);
    // An edit replaces what a client shows; it is no new message.
    if (event.type !== "m.room.message" || body === undefined || relation?.rel_type === "m.replace")
      return;
    const thread = relation?.rel_type === "m.thread" ? text(relation.event_id) : undefined;
    const replyTo = text(object(relation?.["m.in_reply_to"])?.event_id);
    const inReplyTo = thread && relation?.is_falling_back === true ? undefined : replyTo;
    this.heard({
      id,
      room,
      sender,
      body: replyTo ? withoutQuote(body) : body,
      ...(thread && { thread }),
      ...(inReplyTo && { inReplyTo }),
    });
  }

  async #join(room: string): Promise<void> {
    if (this.#joining.has(room)) return;
    this.#joining.add(room);
    await this.#api("POST", `/join/${encodeURIComponent(room)}`, {});
  }

  async #sendEvent(room: string, type: string, content: Json): Promise<string> {
    const txn = randomUUID();
    const sent = await this.#api(
      "PUT",
      `/rooms/${encodeURIComponent(room)}/send/${type}/${txn}`,
      content,
    );
    return text(sent.event_id) ?? "";
  }

  async #api(
    method: string,
    route: string,
    body?: Json,
    query: Record<string, string> = {},
  ): Promise<Json> {
    const search = new URLSearchParams(query).toString();
    const response = await fetch(
      `${this.#homeserver}/_matrix/client/v3${route}${search ? `?${search}` : ""}`,
      {
        method,
        headers: {
          authorization: `Bearer ${this.accessToken}`,
          ...(body && { "content-type": "application/json" }),
        },
        ...(body && { body: JSON.stringify(body) }),
        signal: this.#stopping.signal,
      },
    );
    const json = (await response.json()) as Json;
    if (!response.ok)
      throw new Error(`${method} ${route}: ${response.status} ${JSON.stringify(json)}`);
    return json;
  }
}

/** A reply's fallback as clients write it: leading "> " lines and the blank line after them. */
function withoutQuote(body: string): string {
  const lines = body.split("\n");
  let index = 0;
  while (index < lines.length && lines[index]?.startsWith(">")) index++;
  if (index === 0) return body;
  if (lines[index] === "") index++;
  return lines.slice(index).join("\n");
}

// --- XMPP: @xmpp/client directly ---

const NS = {
  muc: "http://jabber.org/protocol/muc",
  mucUser: "http://jabber.org/protocol/muc#user",
  mucOwner: "http://jabber.org/protocol/muc#owner",
  dataForms: "jabber:x:data",
  stanzaId: "urn:xmpp:sid:0",
  reply: "urn:xmpp:reply:0",
  fallback: "urn:xmpp:fallback:0",
  reactions: "urn:xmpp:reactions:0",
  hints: "urn:xmpp:hints",
  streams: "http://etherx.jabber.org/streams",
  sm: "urn:xmpp:sm:3",
  sasl2: "urn:xmpp:sasl:2",
  bind2: "urn:xmpp:bind:0",
} as const;

/**
 * xmpp.js 0.14 miscounts XEP-0198 acks ("Client acknowledged more stanzas
 * than sent by server") and the server closes the stream: the client is
 * kept from enabling stream management by never seeing it offered.
 */
function withoutStreamManagement(session: XmppClient): void {
  session.prependListener("element", (element) => {
    if (!element.is("features", NS.streams)) return;
    element.remove("sm", NS.sm);
    const inline = element.getChild("authentication", NS.sasl2)?.getChild("inline");
    inline?.remove("sm", NS.sm);
    const bind = inline?.getChild("bind", NS.bind2)?.getChild("inline");
    if (bind)
      bind.children = bind.children.filter(
        (c) => typeof c === "string" || !c.is("feature") || c.attrs.var !== NS.sm,
      );
  });
}

const bare = (address: string | undefined) => address?.split("/")[0]?.toLowerCase();

export interface XmppPersonOptions {
  /** xmpp://127.0.0.1:<port> */
  readonly service: string;
  readonly domain: string;
  readonly localpart: string;
  readonly password: string;
  /** The nick in rooms, and for error messages. */
  readonly name: string;
  /** MUCs to join; a room nobody is in yet is made, non-anonymous and persistent, as clients do. */
  readonly rooms?: readonly string[];
}

interface Room {
  /** nick → real bare JID, from the room's presences (a non-anonymous room says). */
  readonly occupants: Map<string, string>;
}

export class XmppPerson extends ChatClient {
  readonly id: string;
  readonly #session: XmppClient;
  readonly #nick: string;
  readonly #rooms = new Map<string, Room>();
  /** Our own MUC messages' reflections, by the id we gave them. */
  readonly #reflections = new Map<string, (stanzaId: string | undefined) => void>();
  readonly #presences: XmlElement[] = [];
  /** XEP-0444 sends the whole set of one's reactions to a message each time. */
  readonly #ownReactions = new Map<string, string[]>();

  private constructor(options: XmppPersonOptions, session: XmppClient) {
    super(options.name);
    this.id = `${options.localpart}@${options.domain}`.toLowerCase();
    this.#session = session;
    this.#nick = options.name;
    session.on("stanza", (stanza) => this.#stanza(stanza));
  }

  /** Logs in, is available, and joins `rooms`. */
  static async login(options: XmppPersonOptions): Promise<XmppPerson> {
    const session = client({
      service: options.service,
      domain: options.domain,
      username: options.localpart,
      password: options.password,
      resource: `nt-test-${options.name}`,
    });
    session.reconnect.stop();
    session.on("error", () => {});
    withoutStreamManagement(session);
    const person = new XmppPerson(options, session);
    await session.start();
    await session.send(xml("presence"));
    for (const room of options.rooms ?? []) await person.#join(room);
    return person;
  }

  async send(room: string, body: string, options: SayOptions = {}): Promise<{ id: string }> {
    const muc = this.#rooms.has(room);
    const id = randomUUID();
    const replied = options.replyTo ? this.inbox.find((m) => m.id === options.replyTo) : undefined;
    // A quote of what is replied to, marked (XEP-0428) so that clients that know replies drop it.
    const fallback = replied ? `> ${replied.body.split("\n").join("\n> ")}\n` : "";
    const stanza = xml(
      "message",
      { to: room, type: muc ? "groupchat" : "chat", id },
      xml("body", {}, `${fallback}${body}`),
      options.thread ? xml("thread", {}, options.thread) : undefined,
      options.replyTo ? xml("reply", { xmlns: NS.reply, id: options.replyTo }) : undefined,
      fallback
        ? xml(
            "fallback",
            { xmlns: NS.fallback, for: NS.reply },
            xml("body", { start: "0", end: String(Array.from(fallback).length) }),
          )
        : undefined,
      xml("origin-id", { xmlns: NS.stanzaId, id }),
    );
    if (!muc) {
      await this.#session.send(stanza);
      return { id };
    }
    // In a room, others refer to a message by the stanza id the room gave it.
    const reflected = new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), 10_000);
      this.#reflections.set(id, (stanzaId) => {
        clearTimeout(timer);
        resolve(stanzaId);
      });
    });
    await this.#session.send(stanza);
    const stanzaId = await reflected;
    this.#reflections.delete(id);
    if (!stanzaId) throw new Error(`${room} gave "${body}" no stanza id`);
    return { id: stanzaId };
  }

  async react(room: string, target: string, key: string): Promise<void> {
    const mine = this.#ownReactions.get(`${room}\n${target}`) ?? [];
    if (!mine.includes(key)) mine.push(key);
    this.#ownReactions.set(`${room}\n${target}`, mine);
    await this.#session.send(
      xml(
        "message",
        { to: room, type: this.#rooms.has(room) ? "groupchat" : "chat", id: randomUUID() },
        xml(
          "reactions",
          { xmlns: NS.reactions, id: target },
          mine.map((reaction) => xml("reaction", {}, reaction)),
        ),
        xml("store", { xmlns: NS.hints }),
      ),
    );
  }

  /** A direct chat is the peer's bare JID. */
  async directRoom(user: string): Promise<string> {
    return bare(user) ?? user;
  }

  async stop(): Promise<void> {
    await this.#session.stop().catch(() => {});
  }

  async #join(room: string): Promise<void> {
    this.#rooms.set(room, { occupants: new Map() });
    const self = `${room}/${this.#nick}`;
    const joined = this.#presence(`our presence in ${room}`, (p) => p.attrs.from === self);
    await this.#session.send(
      xml(
        "presence",
        { to: self },
        xml("x", { xmlns: NS.muc }, xml("history", { maxstanzas: "0" })),
      ),
    );
    const codes = (await joined)
      .getChild("x", NS.mucUser)
      ?.getChildren("status")
      .map((s) => s.attrs.code);
    if (!codes?.includes("201")) return;
    // A new room is locked until its owner configures it.
    const field = (name: string, value: string) =>
      xml("field", { var: name }, xml("value", {}, value));
    await this.#session.iqCaller.request(
      xml(
        "iq",
        { type: "set", to: room },
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
    );
  }

  async #presence(what: string, match: (p: XmlElement) => boolean): Promise<XmlElement> {
    for (let i = 0; i < 200; i++) {
      const found = this.#presences.find(match);
      if (found) return found;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${this.#nick} timed out waiting for ${what}`);
  }

  #stanza(stanza: XmlElement): void {
    if (stanza.is("presence")) this.#onPresence(stanza);
    else if (stanza.is("message")) this.#onMessage(stanza);
  }

  #onPresence(stanza: XmlElement): void {
    this.#presences.push(stanza);
    const [address, nick] = [bare(stanza.attrs.from), stanza.attrs.from?.split("/")[1]];
    const room = address ? this.#rooms.get(address) : undefined;
    if (!room || !nick) return;
    const jid = bare(stanza.getChild("x", NS.mucUser)?.getChild("item")?.attrs.jid);
    if (stanza.attrs.type === "unavailable") room.occupants.delete(nick);
    else if (jid) room.occupants.set(nick, jid);
  }

  #onMessage(stanza: XmlElement): void {
    const from = stanza.attrs.from;
    const address = bare(from);
    if (!address || stanza.attrs.type === "error") return;
    const groupchat = stanza.attrs.type === "groupchat";
    const room = groupchat ? this.#rooms.get(address) : undefined;
    // Not in a room we are in; or a room's invitation or private message, not a person's message.
    if (groupchat ? !room : stanza.getChild("x", NS.mucUser)) return;
    const nick = groupchat ? from?.split("/")[1] : undefined;
    // The room's own notices (subject, status) have no nick.
    if (groupchat && !nick) return;
    const idBy = (by: string) =>
      stanza.getChildren("stanza-id", NS.stanzaId).find((s) => bare(s.attrs.by) === by)?.attrs.id;
    if (nick === this.#nick) {
      this.#reflections.get(stanza.attrs.id ?? "")?.(idBy(address));
      return;
    }
    const sender = groupchat ? room?.occupants.get(nick ?? "") : address;
    if (sender === this.id) return;
    const origin = stanza.getChild("origin-id", NS.stanzaId)?.attrs.id ?? stanza.attrs.id;
    const id = idBy(groupchat ? address : this.id) ?? `${address}/${origin ?? randomUUID()}`;
    const reactions = stanza.getChild("reactions", NS.reactions);
    if (reactions?.attrs.id) {
      for (const reaction of reactions.getChildren("reaction"))
        this.reactions.push({
          room: address,
          sender,
          target: reactions.attrs.id,
          key: reaction.getText(),
        });
      return;
    }
    const body = stanza.getChildText("body");
    if (body === null) return;
    const reply = stanza.getChild("reply", NS.reply)?.attrs.id;
    const thread = stanza.getChildText("thread") || undefined;
    // The quote a reply carries for clients without replies, where XEP-0428 marks it.
    const quote = stanza
      .getChildren("fallback", NS.fallback)
      .find((f) => f.attrs.for === NS.reply)
      ?.getChild("body");
    const points = Array.from(body);
    const cut = quote
      ? [Number(quote.attrs.start ?? 0), Number(quote.attrs.end ?? points.length)]
      : [0, 0];
    this.heard({
      id,
      room: address,
      sender,
      body: [...points.slice(0, cut[0]), ...points.slice(cut[1])].join(""),
      ...(thread && { thread }),
      ...(reply && { inReplyTo: reply }),
    });
  }
}
