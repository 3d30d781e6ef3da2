/**
 * What the XMPP transport remembers across restarts, so that no message is
 * delivered twice and none said while it was down is lost (see xmpp.ts for
 * how it is used). One small JSON file in the state dir, written atomically
 * (tmp + fsync + rename, 0600) before each delivery: a crash can lose a
 * message but never hand one over twice.
 *
 * Per room (a MUC, or the peer's bare JID for direct chats):
 * - `watermark`: the time of the newest message handled there (server time
 *   from a delay stamp, else arrival time), or, for a MUC, the time it was
 *   first joined;
 * - `handled`: the ids of the last messages and reactions delivered, and, of
 *   a MUC, those of the history it sent on the first join (not delivered).
 * Plus when the file was first written (`created`), the rooms joined on an
 * invitation (to join them again after a restart), and the account's mark in
 * its message archive (`archive`): the archive id of the newest message
 * read from it (null: the archive was empty when the mark was first set;
 * absent: never set).
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeSync,
} from "node:fs";
import path from "node:path";

/** The state file in `stateDir`. */
export const XMPP_STATE_FILE = "xmpp-state.json";

/** Ids remembered per room. */
const HANDLED_IDS = 100;
/**
 * History a MUC is asked for on the first join, not to deliver it but to
 * know its ids: a later join asks from the watermark less the clock margin,
 * which may reach back before the first join.
 */
export const FIRST_JOIN_HISTORY = 20;
/** Rooms remembered; the ones quiet longest are forgotten first. */
const MAX_ROOMS = 200;
/**
 * History is asked for, and accepted, from this long before the watermark:
 * the watermark of a live message is this machine's clock, a history stamp
 * the server's (in whole seconds). Within the margin, ids decide.
 */
export const CLOCK_MARGIN_MS = 60_000;

interface RoomRecord {
  watermark: number;
  handled: string[];
}

interface StateFile {
  readonly jid: string;
  readonly created: number;
  readonly rooms: Record<string, RoomRecord>;
  readonly invited: Record<string, { readonly password?: string }>;
  archive?: string | null;
}

export class DeliveryState {
  /** No state file was there: this is the account's first start with this state dir. */
  readonly fresh: boolean;
  readonly #file: string;
  readonly #data: StateFile;
  /** Ids of history sent on a MUC's first join, kept once the join is over. */
  readonly #preJoin = new Map<string, string[]>();

  private constructor(file: string, data: StateFile, fresh: boolean) {
    this.#file = file;
    this.#data = data;
    this.fresh = fresh;
  }

  static load(
    stateDir: string,
    jid: string,
    log: (line: string) => void,
    now = Date.now(),
  ): DeliveryState {
    const file = path.join(stateDir, XMPP_STATE_FILE);
    const empty = (): StateFile => ({ jid, created: now, rooms: {}, invited: {} });
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT")
        return new DeliveryState(file, empty(), true);
      throw error;
    }
    try {
      const data = parseState(JSON.parse(text));
      if (data.jid !== jid) {
        log(`xmpp: ${file} belongs to ${data.jid}, not ${jid}: starting without it`);
        return new DeliveryState(file, empty(), true);
      }
      return new DeliveryState(file, data, false);
    } catch (error) {
      log(
        `xmpp: ${file} is unreadable (${error instanceof Error ? error.message : String(error)}): starting without it`,
      );
      return new DeliveryState(file, empty(), true);
    }
  }

  watermark(room: string): number | undefined {
    return this.#data.rooms[room]?.watermark;
  }

  /**
   * Whether a message (or reaction) is new. `stamp` is the server's delay
   * stamp of a stored message (MUC history, offline storage, the archive),
   * undefined for one that arrived live. `muc` rooms deliver no history from
   * before they were first joined (its ids are remembered); direct chats
   * deliver offline messages stored since the state file exists (never on
   * the first start). `afterMark`: read from the archive after its mark,
   * where all that is not handled is new.
   */
  admits(
    room: string,
    id: string,
    stamp: number | undefined,
    muc: boolean,
    afterMark = false,
  ): boolean {
    const record = this.#data.rooms[room];
    if (record?.handled.includes(id)) return false;
    if (stamp === undefined || afterMark) return true;
    if (record === undefined) {
      if (!muc) return !this.fresh && stamp >= this.#data.created;
      const ids = this.#preJoin.get(room) ?? [];
      ids.push(id);
      this.#preJoin.set(room, ids.slice(-HANDLED_IDS));
      return false;
    }
    return stamp >= record.watermark - CLOCK_MARGIN_MS;
  }

  /** Notes a delivery and saves, before the handler sees it. */
  delivered(room: string, id: string, time: number): void {
    const record = this.#room(room, time);
    record.handled.push(id);
    if (record.handled.length > HANDLED_IDS)
      record.handled.splice(0, record.handled.length - HANDLED_IDS);
    if (time > record.watermark) record.watermark = time;
    this.save();
  }

  /** A MUC joined for the first time: what was said before now is not for us. */
  joined(room: string, now = Date.now()): void {
    if (this.#data.rooms[room] !== undefined) return;
    this.#room(room, now);
    this.save();
  }

  /** The archive id after which direct messages are unread; null: all of the archive; undefined: never marked. */
  archiveMark(): string | null | undefined {
    return this.#data.archive;
  }

  /** Moves the archive mark; saved with the next save. */
  markArchive(id: string | null): void {
    this.#data.archive = id;
  }

  invitedRooms(): [room: string, password: string | undefined][] {
    return Object.entries(this.#data.invited).map(([room, { password }]) => [room, password]);
  }

  addInvited(room: string, password: string | undefined): void {
    this.#data.invited[room] = password === undefined ? {} : { password };
    this.save();
  }

  removeInvited(room: string): void {
    if (!(room in this.#data.invited)) return;
    delete this.#data.invited[room];
    this.save();
  }

  save(): void {
    mkdirSync(path.dirname(this.#file), { recursive: true, mode: 0o700 });
    const temp = `${this.#file}.${process.pid}.tmp`;
    const fd = openSync(temp, "w", 0o600);
    try {
      writeSync(fd, `${JSON.stringify(this.#data)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.#file);
  }

  #room(room: string, watermark: number): RoomRecord {
    let record = this.#data.rooms[room];
    if (record) return record;
    record = { watermark, handled: this.#preJoin.get(room) ?? [] };
    this.#preJoin.delete(room);
    this.#data.rooms[room] = record;
    const names = Object.keys(this.#data.rooms);
    if (names.length > MAX_ROOMS) {
      const quietest = names
        .filter((name) => name !== room)
        .sort(
          (a, b) => (this.#data.rooms[a]?.watermark ?? 0) - (this.#data.rooms[b]?.watermark ?? 0),
        )
        .slice(0, names.length - MAX_ROOMS);
      for (const name of quietest) delete this.#data.rooms[name];
    }
    return record;
  }
}

function parseState(value: unknown): StateFile {
  const data = object(value);
  if (typeof data.jid !== "string") throw new Error("no jid");
  const rooms: Record<string, RoomRecord> = {};
  for (const [room, entry] of Object.entries(object(data.rooms ?? {}))) {
    const record = object(entry);
    if (typeof record.watermark !== "number") continue;
    const handled = Array.isArray(record.handled)
      ? record.handled.filter((id): id is string => typeof id === "string")
      : [];
    rooms[room] = { watermark: record.watermark, handled };
  }
  const invited: Record<string, { password?: string }> = {};
  for (const [room, entry] of Object.entries(object(data.invited ?? {}))) {
    const password = object(entry).password;
    invited[room] = typeof password === "string" ? { password } : {};
  }
  return {
    jid: data.jid,
    created: typeof data.created === "number" ? data.created : 0,
    rooms,
    invited,
    ...(typeof data.archive === "string" || data.archive === null ? { archive: data.archive } : {}),
  };
}

function object(value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new Error("not an object");
  return value as Record<string, unknown>;
}
