/**
 * The chat transport: what the agent's chat service (`nuketown chat`) and the
 * town bot of the approval daemon need from a chat network, and nothing more.
 * Matrix (matrix.ts), XMPP (xmpp.ts) and the dashboard's web chat implement
 * it; everything above this interface is transport-neutral and tested
 * against the real servers.
 */

/** `web`: the dashboard's own chat, for a town with no chat server (src/dashboard/chat.ts). */
export type TransportKind = "matrix" | "xmpp" | "web";

/** A message someone sent, as the server delivered it. */
export interface ChatMessage {
  /**
   * The server's id of the message, stable across restarts (Matrix event id;
   * XMPP stanza-id when the server assigns one, else `<sender>/<id attribute>`).
   */
  readonly id: string;
  /** Where it was said: a Matrix room id; an XMPP MUC's bare address, or the peer's bare JID in a direct chat. */
  readonly room: string;
  /** A one-to-one chat (Matrix DM room of two members; XMPP type="chat"). */
  readonly direct: boolean;
  /**
   * Who sent it, as the server verified it: a Matrix user id, or a bare JID
   * (in a MUC, the occupant's real JID). Undefined when the server does not
   * say (an anonymous MUC): such a message is never acted on.
   */
  readonly sender: string | undefined;
  /** Plain text; a reply's quoted fallback already removed. */
  readonly body: string;
  /** The thread it belongs to (Matrix thread root event id; XMPP <thread>). */
  readonly thread?: string;
  /** The message it replies to (Matrix m.in_reply_to; XMPP XEP-0461 reply). */
  readonly inReplyTo?: string;
  /** The message names this account (Matrix mention/pill or user id/localpart in the text; XMPP nick or JID). */
  readonly mentionsMe: boolean;
  /**
   * Server time it was sent, in ms since the epoch (Matrix origin_server_ts;
   * XMPP delay stamp, else arrival). An XMPP delay stamp may name only its
   * second (Prosody's do): see `saidBefore`.
   */
  readonly time: number;
}

/** A reaction to a message (Matrix m.reaction annotation; XMPP XEP-0444). */
export interface ChatReaction {
  readonly room: string;
  /** Verified sender, as for messages. */
  readonly sender: string | undefined;
  /** The message reacted to. */
  readonly target: string;
  /** The reaction as sent (an emoji, possibly with variation selectors and skin tones). */
  readonly key: string;
  readonly time: number;
}

/** A message this account sent: what `edit` and reactions refer to. */
export interface SentMessage {
  readonly id: string;
  readonly room: string;
}

export interface SendOptions {
  /** Post in this thread. */
  readonly thread?: string;
  /** Reply to this message (quoting it where the network has a reply form). */
  readonly replyTo?: string;
}

export type PresenceState = "available" | "busy" | "away";

/**
 * A failure retrying cannot mend (the server refused the credential): the
 * chat service reports it and exits non-zero. No imports here on purpose:
 * the transports also run stripped to plain JavaScript on their own.
 */
export class TransportFatalError extends Error {
  override readonly name = "TransportFatalError";
}

export type ConnectionState = "connecting" | "online" | "offline";

export interface TransportHandlers {
  readonly message: (message: ChatMessage) => void;
  readonly reaction?: (reaction: ChatReaction) => void;
  /** Connection changes, for logs and status; the transport reconnects on its own. */
  readonly connection?: (state: ConnectionState, detail?: string) => void;
  /**
   * The transport cannot go on and will not retry (the server refused its
   * credential: a revoked token, a logged-out device). The service should
   * stop and exit non-zero, so systemd or `nuketown up` starts it again and
   * says why, instead of staying up deaf.
   */
  readonly fatal?: (error: Error) => void;
}

export interface ChatTransport {
  readonly kind: TransportKind;
  /** This account's own id (Matrix user id, bare JID). */
  readonly self: string;
  /** Longest text one message carries; `sendLong` splits or uploads beyond it. */
  readonly maxMessageChars: number;
  /**
   * Connect, join the declared rooms, and deliver events to the handlers until
   * `stop`. Resolves once online the first time; a failed first connect is
   * retried with backoff too (rejects only on a credential the server refused).
   * Messages and reactions this account sent itself are never delivered.
   */
  start(handlers: TransportHandlers): Promise<void>;
  stop(): Promise<void>;
  send(room: string, text: string, options?: SendOptions): Promise<SentMessage>;
  /** Replace the text of a message this account sent. */
  edit(message: SentMessage, text: string): Promise<void>;
  react(room: string, target: string, key: string): Promise<void>;
  /** Long text as a file where the network has file transfer, else as several messages split at line ends. */
  sendLong(room: string, text: string, name: string, options?: SendOptions): Promise<SentMessage>;
  typing(room: string, on: boolean): Promise<void>;
  setPresence(state: PresenceState, status?: string): Promise<void>;
  /** The direct chat with a user, opened (Matrix: created and invited) when there is none yet. */
  directRoom(user: string): Promise<string>;
}

/**
 * How coarse a message's `time` may be: a stamp in whole seconds (XMPP delay
 * stamps) names a message said anywhere in the second that follows it.
 */
export const TIME_PRECISION_MS = 1000;

/**
 * Whether a message stamped `time` was surely said before `instant` (this
 * machine's clock, e.g. a first start): only when the whole second its stamp
 * may stand for was over by then. A message stamped 12:00:07 and a start at
 * 12:00:07.400 are in either order; here the message counts as said after.
 * (A filter that is the only thing keeping history out, such as the XMPP
 * state's for a new peer's offline messages, takes the other side: `<`.)
 */
export function saidBefore(time: number, instant: number): boolean {
  return time + TIME_PRECISION_MS <= instant;
}

/** What every transport is built from. */
export interface TransportOptions {
  /** Rooms to join (Matrix room ids or aliases; XMPP MUC bare addresses). */
  readonly rooms: readonly string[];
  /** Whose invitations to accept (Matrix ids / bare JIDs); everyone else's are declined. */
  readonly inviters: ReadonlySet<string>;
  /** A directory that persists across rounds, owned by the process, for sync state. */
  readonly stateDir: string;
  /** The name shown in rooms (MUC nick, Matrix display name). */
  readonly displayName: string;
  readonly log: (line: string) => void;
}

/** Delays between connection attempts: 1 s doubling to a minute, with ±20% jitter. */
export function backoffDelay(attempt: number, random: () => number = Math.random): number {
  const base = Math.min(60_000, 1000 * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.8 + 0.4 * random()));
}

/**
 * Split text into pieces of at most `max` characters, at line ends where it
 * can, else at spaces, else hard; pieces of a fenced code block are kept
 * fenced so each renders on its own.
 */
export function splitText(text: string, max: number): string[] {
  if (max < 16) throw new Error("splitText: max is too small");
  // Room for the fences balanceFences may add.
  const limit = max - 8;
  const pieces: string[] = [];
  let rest = text;
  while (rest.length > limit) {
    const window = rest.slice(0, limit);
    let cut = window.lastIndexOf("\n");
    if (cut < limit / 2) cut = window.lastIndexOf(" ");
    if (cut < limit / 2) cut = limit;
    pieces.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).replace(/^[\n ]/, "");
  }
  if (rest.trim() !== "" || pieces.length === 0) pieces.push(rest);
  return balanceFences(pieces);
}

function balanceFences(pieces: string[]): string[] {
  let open = false;
  return pieces.map((piece) => {
    const fences = (piece.match(/^```/gm) ?? []).length;
    const start = open ? "```\n" : "";
    open = (fences % 2 === 1) !== open;
    return `${start}${piece}${open ? "\n```" : ""}`;
  });
}
