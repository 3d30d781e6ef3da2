/**
 * What the agent's chat service has already handled, kept under a persisted
 * path (`~/.local/state/nuketown/chat/ledger.json`), so that a restart — or a
 * transport that hands an old event over again — never answers a message
 * twice. A message is entered before it is worked on: after a crash it is
 * left unanswered rather than answered twice.
 */
import { readFile } from "node:fs/promises";
import { writeFileAtomic } from "../os/files.ts";

/** Handled message ids kept; older ones are covered by `since` and the transports' own sync state. */
const KEEP_IDS = 5000;

interface LedgerFile {
  readonly v: 1;
  /** First start of the service (ms): anything said before it is history, not a request. */
  readonly since: number;
  readonly ids: readonly string[];
  /** `<room>\0<sender>` pairs already told they may not give orders (one refusal each). */
  readonly refused: readonly string[];
}

export class Ledger {
  readonly file: string;
  readonly since: number;
  readonly #ids: Set<string>;
  readonly #refused: Set<string>;
  #writing: Promise<void> = Promise.resolve();

  private constructor(file: string, data: LedgerFile) {
    this.file = file;
    this.since = data.since;
    this.#ids = new Set(data.ids);
    this.#refused = new Set(data.refused);
  }

  /** Open the ledger; a missing one starts now, an unreadable one is an error (never silently reset). */
  static async open(file: string, now: number = Date.now()): Promise<Ledger> {
    let text: string | undefined;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
    if (text === undefined) {
      const ledger = new Ledger(file, { v: 1, since: now, ids: [], refused: [] });
      await ledger.#save();
      return ledger;
    }
    const data = JSON.parse(text) as Partial<LedgerFile>;
    if (data.v !== 1 || typeof data.since !== "number" || !Array.isArray(data.ids))
      throw new Error(
        `${file}: not a chat ledger (delete it to start over: old messages are then history)`,
      );
    return new Ledger(file, {
      v: 1,
      since: data.since,
      ids: data.ids.filter((id): id is string => typeof id === "string"),
      refused: (data.refused ?? []).filter((r): r is string => typeof r === "string"),
    });
  }

  has(id: string): boolean {
    return this.#ids.has(id);
  }

  /** Enter a message as handled; resolves once that is on disk. */
  async enter(id: string): Promise<void> {
    this.#ids.add(id);
    if (this.#ids.size > KEEP_IDS) {
      const oldest = this.#ids.values().next().value;
      if (oldest !== undefined) this.#ids.delete(oldest);
    }
    await this.#save();
  }

  /** True the first time a sender is refused in a room; later refusals stay silent. */
  async firstRefusal(room: string, sender: string): Promise<boolean> {
    const key = `${room}\0${sender}`;
    if (this.#refused.has(key)) return false;
    this.#refused.add(key);
    await this.#save();
    return true;
  }

  #save(): Promise<void> {
    const data: LedgerFile = {
      v: 1,
      since: this.since,
      ids: [...this.#ids],
      refused: [...this.#refused],
    };
    // Writes are chained so a slow earlier write never lands after a newer one.
    this.#writing = this.#writing
      .catch(() => {})
      .then(() =>
        writeFileAtomic(this.file, `${JSON.stringify(data)}\n`, { mode: 0o600, dirMode: 0o700 }),
      );
    return this.#writing;
  }
}
