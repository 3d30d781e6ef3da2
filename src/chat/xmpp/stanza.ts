/**
 * Reading XMPP stanzas for the XMPP transport (xmpp.ts): addresses, the
 * extensions a chat message carries (XEP-0203 delay, XEP-0359 stanza ids,
 * XEP-0461 replies with their XEP-0428 fallback, XEP-0444 reactions),
 * XEP-0313 archive results, the stream features offered, and mentions. Pure
 * functions of an element, so they are tested without a server.
 */
import type { XmlElement } from "@xmpp/client";

export const NS = {
  muc: "http://jabber.org/protocol/muc",
  mucUser: "http://jabber.org/protocol/muc#user",
  mucOwner: "http://jabber.org/protocol/muc#owner",
  discoInfo: "http://jabber.org/protocol/disco#info",
  dataForms: "jabber:x:data",
  conference: "jabber:x:conference",
  delay: "urn:xmpp:delay",
  stanzaId: "urn:xmpp:sid:0",
  occupantId: "urn:xmpp:occupant-id:0",
  reply: "urn:xmpp:reply:0",
  fallback: "urn:xmpp:fallback:0",
  reactions: "urn:xmpp:reactions:0",
  correct: "urn:xmpp:message-correct:0",
  chatStates: "http://jabber.org/protocol/chatstates",
  hints: "urn:xmpp:hints",
  ping: "urn:xmpp:ping",
  stanzas: "urn:ietf:params:xml:ns:xmpp-stanzas",
  mam: "urn:xmpp:mam:2",
  forward: "urn:xmpp:forward:0",
  rsm: "http://jabber.org/protocol/rsm",
  streams: "http://etherx.jabber.org/streams",
  sm: "urn:xmpp:sm:3",
  sasl2: "urn:xmpp:sasl:2",
  bind2: "urn:xmpp:bind:0",
} as const;

/** An XMPP address split into its parts; localpart and domain lowercased (their common case fold). */
export interface Jid {
  readonly local: string;
  readonly domain: string;
  readonly resource: string;
  /** local@domain, or the domain alone. */
  readonly bare: string;
}

/** Parses an address; undefined when it has no domain or an empty part. */
export function parseJid(address: string | undefined): Jid | undefined {
  if (address === undefined) return undefined;
  const slash = address.indexOf("/");
  const resource = slash === -1 ? "" : address.slice(slash + 1);
  const rest = slash === -1 ? address : address.slice(0, slash);
  const at = rest.indexOf("@");
  const local = at === -1 ? "" : rest.slice(0, at).toLowerCase();
  const domain = (at === -1 ? rest : rest.slice(at + 1)).toLowerCase();
  if (domain === "" || /\s/.test(domain) || (at !== -1 && local === "")) return undefined;
  if (slash !== -1 && resource === "") return undefined;
  return { local, domain, resource, bare: local ? `${local}@${domain}` : domain };
}

/** The bare form of an address, or undefined when it does not parse. */
export function bareJid(address: string | undefined): string | undefined {
  return parseJid(address)?.bare;
}

/**
 * The XEP-0203 delay stamp in ms, when the entity that added it is `trusted`
 * (the room for MUC history, the server for offline messages); a sender's own
 * claim of a delay is no server time.
 */
export function trustedDelay(stanza: XmlElement, trusted: string): number | undefined {
  for (const delay of stanza.getChildren("delay", NS.delay)) {
    if (bareJid(delay.attrs.from) !== trusted) continue;
    const time = Date.parse(delay.attrs.stamp ?? "");
    // Never later than now: a stamp in the future would push watermarks past what is said next.
    if (Number.isFinite(time)) return Math.min(time, Date.now());
  }
  return undefined;
}

/** The XEP-0359 stanza id that `by` assigned. */
export function stanzaIdBy(stanza: XmlElement, by: string): string | undefined {
  for (const element of stanza.getChildren("stanza-id", NS.stanzaId)) {
    if (bareJid(element.attrs.by) === by && element.attrs.id) return element.attrs.id;
  }
  return undefined;
}

/** The XEP-0359 origin id the sender set, else the message's id attribute. */
export function originId(stanza: XmlElement): string | undefined {
  const origin = stanza.getChild("origin-id", NS.stanzaId)?.attrs.id;
  return origin || stanza.attrs.id || undefined;
}

/** XEP-0461: the message this one replies to, as the sender names it, and its author. */
export function replyOf(stanza: XmlElement): { id: string; to?: string } | undefined {
  const reply = stanza.getChild("reply", NS.reply);
  const id = reply?.attrs.id;
  if (!id) return undefined;
  return reply.attrs.to ? { id, to: reply.attrs.to } : { id };
}

/** XEP-0444: the target and the full set of the sender's reactions to it. */
export function reactionsOf(stanza: XmlElement): { target: string; keys: string[] } | undefined {
  const reactions = stanza.getChild("reactions", NS.reactions);
  const target = reactions?.attrs.id;
  if (!target) return undefined;
  const keys = reactions
    .getChildren("reaction")
    .map((reaction) => reaction.getText().trim())
    .filter((key) => key !== "");
  return { target, keys: [...new Set(keys)] };
}

/**
 * The body without the part XEP-0428 marks as a fallback for the XEP-0461
 * reply: the code point ranges its <body start end/> elements give; with no
 * range (or a range that does not fit), the leading "> " quote lines.
 */
export function withoutReplyFallback(stanza: XmlElement, body: string): string {
  const fallbacks = stanza
    .getChildren("fallback", NS.fallback)
    .filter((fallback) => fallback.attrs.for === NS.reply);
  if (fallbacks.length === 0) return body;
  const points = Array.from(body);
  const ranges: [number, number][] = [];
  let valid = true;
  for (const fallback of fallbacks) {
    for (const part of fallback.getChildren("body")) {
      const { start, end } = part.attrs;
      if (start === undefined && end === undefined) {
        ranges.push([0, points.length]);
        continue;
      }
      const from = Number(start ?? 0);
      const to = Number(end ?? points.length);
      if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > points.length) {
        valid = false;
      } else if (from < to) ranges.push([from, to]);
    }
  }
  if (!valid || ranges.length === 0) return stripQuote(body);
  const cut = new Set<number>();
  for (const [from, to] of ranges) for (let index = from; index < to; index++) cut.add(index);
  return points
    .filter((_, index) => !cut.has(index))
    .join("")
    .replace(/^\n+/, "");
}

/** Leading quote lines ("> …", ">…") and the blank line after them. */
export function stripQuote(body: string): string {
  const lines = body.split("\n");
  let index = 0;
  while (index < lines.length && lines[index]?.startsWith(">")) index++;
  if (index === 0) return body;
  if (lines[index]?.trim() === "") index++;
  return lines.slice(index).join("\n");
}

/** Whether `text` names any of `names` as a whole word, ignoring case. */
export function mentionsAny(text: string, names: readonly string[]): boolean {
  return names.some((name) => name.trim() !== "" && hasWord(text, name.trim()));
}

function hasWord(text: string, word: string): boolean {
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])${escaped}($|[^\\p{L}\\p{N}_])`, "iu").test(text);
}

/** An XEP-0082 date-time in whole seconds, as a MUC's history `since` wants it. */
export function dateTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/\.000Z$/, "Z");
}

/** The defined condition of a stanza's <error/>, with its text when there is one. */
export function errorOf(stanza: XmlElement): string {
  const error = stanza.getChild("error");
  if (!error) return "error";
  const condition = error
    .getChildElements()
    .find((child) => child.getNS() === NS.stanzas && child.name !== "text");
  const text = error.getChildText("text", NS.stanzas);
  const name = condition?.name ?? "error";
  return text ? `${name}: ${text}` : name;
}

/** A message from an XEP-0313 archive query: its archive id, when it was archived, and the message. */
export interface ArchivedMessage {
  readonly id: string;
  readonly stamp: number;
  readonly message: XmlElement;
}

/**
 * The archived message a query result carries, when `stanza` is a result of
 * the query `queryId`: <result queryid id><forwarded><delay stamp/><message/>.
 * Who sent the result (the account's own archive) is the caller's to check.
 */
export function archivedMessage(stanza: XmlElement, queryId: string): ArchivedMessage | undefined {
  const result = stanza.getChild("result", NS.mam);
  const id = result?.attrs.id;
  if (!result || !id || result.attrs.queryid !== queryId) return undefined;
  const forwarded = result.getChild("forwarded", NS.forward);
  const message = forwarded?.getChild("message");
  const stamp = Date.parse(forwarded?.getChild("delay", NS.delay)?.attrs.stamp ?? "");
  if (!message || !Number.isFinite(stamp)) return undefined;
  return { id, stamp, message };
}

/**
 * Removes XEP-0198 stream management from a <stream:features> element, as
 * a stream feature and as a SASL2 or Bind2 inline feature, so that the
 * client never enables it (see xmpp.ts for why). Changes `features`.
 */
export function withoutStreamManagement(features: XmlElement): void {
  features.remove("sm", NS.sm);
  const inline = features.getChild("authentication", NS.sasl2)?.getChild("inline");
  if (!inline) return;
  inline.remove("sm", NS.sm);
  const bind = inline.getChild("bind", NS.bind2)?.getChild("inline");
  if (!bind) return;
  bind.children = bind.children.filter(
    (child) => typeof child === "string" || !child.is("feature") || child.attrs.var !== NS.sm,
  );
}
