/**
 * Runtime sessions per conversation (a chat room, a talk thread), kept under
 * the agent's persisted state dir so a conversation resumes after a restart
 * and a reset: `<stateDir>/sessions.json`.
 */
import { appendFile, mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../os/files.ts";
import type { SessionStore } from "./runtimes/types.ts";

interface SessionFile {
  readonly version: 1;
  readonly sessions: Record<string, { readonly id: string; readonly updated: string }>;
}

/** The key of a conversation: sessions belong to one runtime, in one workspace. */
export function conversationKey(
  kind: string,
  project: string,
  conversation: string | undefined,
): string | undefined {
  return conversation === undefined || conversation === ""
    ? undefined
    : `${kind}\u0000${project}\u0000${conversation}`;
}

export class FileSessionStore implements SessionStore {
  readonly #file: string;
  readonly #clock: () => Date;
  /** Writes one after another: two tasks ending together must not lose an id. */
  #chain: Promise<void> = Promise.resolve();

  constructor(file: string, clock: () => Date = () => new Date()) {
    this.#file = file;
    this.#clock = clock;
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.#read()).sessions[key]?.id;
  }

  set(key: string, id: string): Promise<void> {
    return this.#update((sessions) => ({
      ...sessions,
      [key]: { id, updated: this.#clock().toISOString() },
    }));
  }

  forget(key: string): Promise<void> {
    return this.#update((sessions) => {
      const { [key]: _gone, ...rest } = sessions;
      return rest;
    });
  }

  #update(change: (sessions: SessionFile["sessions"]) => SessionFile["sessions"]): Promise<void> {
    const next = this.#chain.then(async () => {
      const current = await this.#read();
      const file: SessionFile = { version: 1, sessions: change(current.sessions) };
      await writeFileAtomic(this.#file, `${JSON.stringify(file, null, 2)}\n`, {
        mode: 0o600,
        dirMode: 0o700,
      });
    });
    this.#chain = next.catch(() => {});
    return next;
  }

  async #read(): Promise<SessionFile> {
    try {
      const parsed = JSON.parse(await readFile(this.#file, "utf8")) as SessionFile;
      return parsed.version === 1 && parsed.sessions ? parsed : { version: 1, sessions: {} };
    } catch {
      return { version: 1, sessions: {} };
    }
  }
}

/** `<stateDir>/tasks.jsonl`: one line per task that ended, appended. */
export class TaskHistory {
  readonly #file: string;
  constructor(file: string) {
    this.#file = file;
  }

  get file(): string {
    return this.#file;
  }

  async append(record: object): Promise<void> {
    await mkdir(path.dirname(this.#file), { recursive: true, mode: 0o700 });
    await appendFile(this.#file, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  }

  /** The last `count` records (for `list` after a restart). */
  async tail(count: number): Promise<unknown[]> {
    const text = await readFile(this.#file, "utf8").catch(() => "");
    return text
      .split("\n")
      .filter((line) => line.trim() !== "")
      .slice(-count)
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as unknown];
        } catch {
          return [];
        }
      });
  }
}
