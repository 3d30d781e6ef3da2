/**
 * An audit log: append-only JSONL, one record a line, each record
 * hash-chained to the one before and fsynced before `append` resolves. The
 * approval daemon writes the town's (requests and decisions), each chat
 * resident its own (who talked to it); change control is next.
 *
 *   {"v":1,"seq":1,"time":"…","event":"request","data":{…},"prev":"000…000","hash":"…"}
 *
 * `hash` is sha256(prev + canonicalJson({ v, seq, time, event, data })), with
 * object keys sorted recursively; `prev` is the hash of the record before (64
 * zeros for the first). A head file beside the log (`<file>.head`) holds the
 * last seq and hash, so removing records from the end is detected as well as
 * editing, deleting or reordering them. `verifyAudit` checks all of it.
 *
 * One process writes a log; appends inside it are serialised. A crash leaves at most a torn last line, which the next open
 * cuts off and records as `audit.repaired`; the head lags the log by at most
 * the one record whose append was interrupted.
 */
import { createHash } from "node:crypto";
import { constants, createReadStream } from "node:fs";
import { type FileHandle, mkdir, open, readFile, stat } from "node:fs/promises";
import path from "node:path";
import { RefusedError } from "../errors.ts";
import { writeFileAtomic } from "../os/files.ts";
import { UNPRINTABLE } from "../output.ts";

/** `prev` of the first record. */
export const ZERO_HASH = "0".repeat(64);

export interface AuditRecord {
  readonly v: 1;
  /** 1 for the first record, then +1: in a sound log, seq is the line number. */
  readonly seq: number;
  /** ISO 8601, UTC. */
  readonly time: string;
  readonly event: string;
  readonly data: Readonly<Record<string, unknown>>;
  readonly prev: string;
  readonly hash: string;
}

export interface AuditLogOptions {
  /** @default () => new Date() */
  readonly clock?: () => Date;
  /** Mode of the log and its head file. @default 0o640 */
  readonly mode?: number;
  /** Group (gid) that may read the log and its head, e.g. the approvers; unset keeps the writer's. */
  readonly group?: number;
}

export type VerifyResult =
  | { readonly ok: true; readonly records: number; readonly head: string }
  | {
      readonly ok: false;
      /** Sound records read before the problem. */
      readonly records: number;
      /** 1-based line of the log where the problem shows; 0 when no line is at fault (a missing file). */
      readonly line: number;
      readonly problem: string;
    };

const VERSION = 1 as const;
const EVENT = /^[A-Za-z][A-Za-z0-9_.:-]{0,99}$/;
const HASH = /^[0-9a-f]{64}$/;
const FIELDS = ["v", "seq", "time", "event", "data", "prev", "hash"] as const;
/** A guard only: the log cannot know what a secret is, but these names never belong in it. */
const SECRET_KEYS = new Set(["password", "token", "secret", "plaintext"]);
const MAX_DATA_BYTES = 1 << 20;
const TAIL_CHUNK = 64 * 1024;

interface Head {
  readonly seq: number;
  readonly hash: string;
}

/** The last sound record's place in the chain (seq 0: an empty log). */
interface ChainEnd {
  readonly seq: number;
  readonly hash: string;
  readonly prev: string;
}

const EMPTY_END: ChainEnd = { seq: 0, hash: ZERO_HASH, prev: ZERO_HASH };

interface OpenLog {
  readonly handle: FileHandle;
  readonly dir: FileHandle;
  seq: number;
  hash: string;
  /** Bytes of the log as this process last left it. */
  size: number;
}

interface Repair {
  readonly afterSeq: number;
  readonly bytes: number;
  readonly sha256: string;
}

export class AuditLog {
  readonly file: string;
  readonly headFile: string;
  readonly #clock: () => Date;
  readonly #mode: number;
  readonly #group: number | undefined;
  #log: OpenLog | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  /** A torn line was cut off; the `audit.repaired` record is still to be written. */
  #repair: Repair | undefined;

  constructor(file: string, options: AuditLogOptions = {}) {
    this.file = file;
    this.headFile = `${file}.head`;
    this.#clock = options.clock ?? (() => new Date());
    this.#mode = options.mode ?? 0o640;
    this.#group = options.group;
  }

  /**
   * Append one record and resolve once it is on disk (log fsynced, head
   * updated). Appends from one process land in call order.
   *
   * Never pass a secret: the log is readable by the approvers group and kept
   * forever. As a guard, data holding a key named `password`, `token`,
   * `secret` or `plaintext` (at any depth, any case) is refused.
   *
   * The log is opened on the first append; an open that finds the log and
   * its head disagreeing (records removed or the chain rewritten) refuses,
   * and so does every later append: a gate must not keep approving into a
   * log that was tampered with.
   */
  async append(event: string, data: Record<string, unknown>): Promise<AuditRecord> {
    const clean = prepare(event, data);
    const job = this.#queue.then(() => this.#write(event, clean));
    this.#queue = job.then(
      () => undefined,
      () => undefined,
    );
    return job;
  }

  /** Wait for pending appends, then release the file. A later append opens it again. */
  async close(): Promise<void> {
    await this.#queue;
    await this.#release();
  }

  async #write(event: string, data: Record<string, unknown>): Promise<AuditRecord> {
    const log = await this.#ready();
    if (this.#repair) {
      const repair = this.#repair;
      await this.#commit(log, "audit.repaired", {
        reason: "the last line was incomplete (an interrupted append) and was cut off",
        afterSeq: repair.afterSeq,
        bytes: repair.bytes,
        sha256: repair.sha256,
      });
      this.#repair = undefined;
    }
    return this.#commit(log, event, data);
  }

  async #ready(): Promise<OpenLog> {
    if (this.#log) {
      // Someone else wrote, cut or replaced the file since our last append: read it again.
      const [own, named] = await Promise.all([
        this.#log.handle.stat(),
        stat(this.file).catch(() => undefined),
      ]);
      if (named?.ino === own.ino && named.dev === own.dev && own.size === this.#log.size) {
        return this.#log;
      }
      await this.#release();
    }
    this.#log = await this.#open();
    return this.#log;
  }

  async #open(): Promise<OpenLog> {
    const dirPath = path.dirname(this.file);
    await mkdir(dirPath, { recursive: true, mode: 0o755 });
    const dir = await open(dirPath, constants.O_RDONLY | constants.O_DIRECTORY);
    let handle: FileHandle | undefined;
    try {
      const flags = constants.O_RDWR | constants.O_APPEND | constants.O_NOFOLLOW;
      let created = false;
      try {
        handle = await open(this.file, flags | constants.O_CREAT | constants.O_EXCL, this.#mode);
        created = true;
      } catch (error) {
        if (errorCode(error) !== "EEXIST") throw error;
        handle = await open(this.file, flags);
      }
      if (created) {
        await handle.chmod(this.#mode); // the umask may have narrowed it
        if (this.#group !== undefined) await handle.chown(-1, this.#group);
        await handle.sync();
        await dir.sync();
      }
      const found = await this.#load(handle);
      return { handle, dir, ...found };
    } catch (error) {
      await handle?.close();
      await dir.close();
      throw error;
    }
  }

  /** Find where the chain ends, check it against the head, cut off a torn last line. */
  async #load(handle: FileHandle): Promise<{ seq: number; hash: string; size: number }> {
    const { size } = await handle.stat();
    const head = await readHead(this.headFile);
    if (typeof head === "string") throw this.#refuse(head);
    const tail = await readTail(handle, size, 1);
    let end = EMPTY_END;
    const lastLine = tail.lines.at(-1);
    if (lastLine !== undefined) {
      const record = checkRecord(lastLine);
      if (typeof record === "string") throw this.#refuse(`its last record is damaged: ${record}`);
      end = record;
    }
    const mismatch = headMismatch(this.headFile, head, end);
    if (mismatch) throw this.#refuse(mismatch.problem);
    if (tail.torn.length > 0) {
      await handle.truncate(tail.tornStart);
      await handle.sync();
      this.#repair = {
        afterSeq: end.seq,
        bytes: tail.torn.length,
        sha256: createHash("sha256").update(tail.torn).digest("hex"),
      };
    }
    return { seq: end.seq, hash: end.hash, size: tail.tornStart };
  }

  #refuse(problem: string): RefusedError {
    return new RefusedError(
      `audit log ${this.file}: ${problem}; refusing to append (run \`nuketown audit verify\`)`,
    );
  }

  async #commit(log: OpenLog, event: string, data: Record<string, unknown>): Promise<AuditRecord> {
    const fields = { v: VERSION, seq: log.seq + 1, time: this.#clock().toISOString(), event, data };
    const record: AuditRecord = { ...fields, prev: log.hash, hash: chainHash(log.hash, fields) };
    const bytes = Buffer.from(`${serializeRecord(record)}\n`);
    let headWritten = false;
    try {
      // One write of the whole line: O_APPEND puts it at the end even if the file grew.
      const { bytesWritten } = await log.handle.write(bytes, 0, bytes.length);
      if (bytesWritten !== bytes.length) {
        throw new Error(`${this.file}: short write (${bytesWritten} of ${bytes.length} bytes)`);
      }
      await log.handle.sync();
      await writeFileAtomic(this.headFile, headText(record), {
        mode: this.#mode,
        ...(this.#group !== undefined && { uid: process.geteuid?.() ?? 0, gid: this.#group }),
      });
      headWritten = true;
      // The rename must be durable too, or a power loss could bring back an older head.
      await log.dir.sync();
    } catch (error) {
      await this.#rollback(log, headWritten);
      throw error;
    }
    log.seq = record.seq;
    log.hash = record.hash;
    log.size += bytes.length;
    return record;
  }

  /**
   * A failed append leaves no record behind (unless its head already names
   * it), so a rejected append means "not logged". The next append reopens
   * and reads what is really on disk.
   */
  async #rollback(log: OpenLog, headWritten: boolean): Promise<void> {
    if (!headWritten) {
      try {
        await log.handle.truncate(log.size);
        await log.handle.sync();
      } catch {
        // The reopen finds the record (the head lags by one, which is allowed) or not.
      }
    }
    await this.#release();
  }

  async #release(): Promise<void> {
    const log = this.#log;
    this.#log = undefined;
    if (!log) return;
    await log.handle.close().catch(() => undefined);
    await log.dir.close().catch(() => undefined);
  }
}

/**
 * Check the whole log and its head: every line a well-formed record whose
 * hash matches its content, seq counting up from 1, each `prev` the hash of
 * the line before, and the end of the chain matching `<file>.head`. A log
 * that does not exist is reported as a problem (line 0).
 */
export async function verifyAudit(file: string): Promise<VerifyResult> {
  const headFile = `${file}.head`;
  const head = await readHead(headFile);
  if (typeof head === "string") return { ok: false, records: 0, line: 0, problem: head };

  const decoder = new TextDecoder("utf-8", { fatal: true });
  let records = 0;
  let line = 0;
  let end = EMPTY_END;
  const check = (bytes: Buffer): string | undefined => {
    if (bytes.length === 0) return "empty line";
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      return "not valid UTF-8";
    }
    const record = checkRecord(text);
    if (typeof record === "string") return record;
    const expected = end.seq + 1;
    if (record.seq > expected) {
      const missing =
        record.seq === expected + 1
          ? `record ${expected} is missing`
          : `records ${expected}-${record.seq - 1} are missing`;
      return `expected seq ${expected}, found seq ${record.seq}: ${missing} (deleted or moved)`;
    }
    if (record.seq < expected) {
      return `expected seq ${expected}, found seq ${record.seq}: records are out of order or repeated`;
    }
    if (record.prev !== end.hash) {
      return line === 1
        ? `the first record must have prev ${ZERO_HASH.slice(0, 12)}…, found ${record.prev.slice(0, 12)}…: records before it were removed`
        : `prev ${record.prev.slice(0, 12)}… is not the hash of line ${line - 1} (${end.hash.slice(0, 12)}…): the chain is broken`;
    }
    end = record;
    records++;
    return undefined;
  };

  let rest: Buffer = Buffer.alloc(0);
  try {
    for await (const chunk of createReadStream(file)) {
      const buf: Buffer = rest.length > 0 ? Buffer.concat([rest, chunk as Buffer]) : chunk;
      let start = 0;
      for (let nl = buf.indexOf(0x0a); nl !== -1; nl = buf.indexOf(0x0a, start)) {
        line++;
        const problem = check(buf.subarray(start, nl));
        if (problem) return { ok: false, records, line, problem };
        start = nl + 1;
      }
      rest = Buffer.from(buf.subarray(start));
    }
  } catch (error) {
    if (errorCode(error) !== "ENOENT") throw error;
    const problem = head
      ? `the log ${file} is missing but ${headFile} records seq ${head.seq}: it was deleted`
      : `no audit log at ${file} (nothing was recorded yet, or it was deleted)`;
    return { ok: false, records: 0, line: 0, problem };
  }
  if (rest.length > 0) {
    return {
      ok: false,
      records,
      line: line + 1,
      problem: `incomplete last line (${rest.length} bytes, no newline): an append was interrupted; the next append cuts it off and records audit.repaired`,
    };
  }
  const mismatch = headMismatch(headFile, head, end);
  if (mismatch) return { ok: false, records, ...mismatch };
  return { ok: true, records, head: end.hash };
}

/**
 * The last `count` complete records, oldest first (a torn last line is
 * skipped). Reads only the end of the file; hashes are not checked (that is
 * `verifyAudit`'s job). A log that does not exist has no records.
 */
export async function tailAudit(file: string, count: number): Promise<AuditRecord[]> {
  const want = Math.floor(count);
  if (!(want > 0)) return [];
  let handle: FileHandle;
  try {
    handle = await open(file, constants.O_RDONLY);
  } catch (error) {
    if (errorCode(error) === "ENOENT") return [];
    throw error;
  }
  try {
    const { size } = await handle.stat();
    const { lines } = await readTail(handle, size, want);
    return lines.slice(-want).map((text) => {
      const record = parseRecord(text);
      if (typeof record === "string") {
        throw new RefusedError(
          `audit log ${file}: a record near the end is malformed (${record}); run \`nuketown audit verify\``,
        );
      }
      return record;
    });
  } finally {
    await handle.close();
  }
}

/**
 * One line for people: time, seq, event, every top-level data field as
 * key=value (long values cut), and the short hash. Control characters are
 * escaped, so a tampered log cannot drive the terminal.
 */
export function formatRecord(r: AuditRecord): string {
  const fields = Object.entries(r.data).map(
    ([key, value]) => `${token(key)}=${formatValue(value)}`,
  );
  return [r.time, `#${r.seq}`, token(r.event), ...fields, `[${r.hash.slice(0, 12)}]`].join(" ");
}

/** JSON with object keys sorted (by UTF-16 code units) at every depth; no whitespace. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) {
    return `[${value.map((item) => (item === undefined ? "null" : canonicalJson(item))).join(",")}]`;
  }
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    const entries = Object.keys(record)
      .sort()
      .filter((key) => record[key] !== undefined)
      .map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`);
    return `{${entries.join(",")}}`;
  }
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`${typeof value} has no JSON form`);
  return text;
}

function chainHash(
  prev: string,
  fields: { v: number; seq: number; time: string; event: string; data: unknown },
): string {
  return createHash("sha256").update(prev).update(canonicalJson(fields)).digest("hex");
}

/** The line as written: fixed field order for reading, canonical data for hashing. */
function serializeRecord(r: AuditRecord): string {
  return `{"v":${r.v},"seq":${r.seq},"time":${JSON.stringify(r.time)},"event":${JSON.stringify(r.event)},"data":${canonicalJson(r.data)},"prev":"${r.prev}","hash":"${r.hash}"}`;
}

function headText(r: AuditRecord): string {
  return `${JSON.stringify({ v: VERSION, seq: r.seq, hash: r.hash })}\n`;
}

/** Validate and normalise what a caller wants to log (before it joins the queue). */
function prepare(event: string, data: Record<string, unknown>): Record<string, unknown> {
  if (typeof event !== "string" || !EVENT.test(event)) {
    throw new TypeError(
      `audit event ${JSON.stringify(event)} is not a valid name (a letter, then letters, digits, _ . : -)`,
    );
  }
  if (!isPlainObject(data)) throw new TypeError(`audit data for ${event} must be a plain object`);
  let text: string;
  try {
    text = JSON.stringify(data);
  } catch (error) {
    throw new TypeError(`audit data for ${event} is not JSON: ${(error as Error).message}`);
  }
  const clean: unknown = JSON.parse(text);
  if (!isPlainObject(clean)) throw new TypeError(`audit data for ${event} must be a plain object`);
  const secret = findSecretKey(clean, "data");
  if (secret) {
    throw new RefusedError(
      `refusing to write ${secret} to the audit log (event ${event}): the audit log never holds secrets`,
    );
  }
  if (Buffer.byteLength(text) > MAX_DATA_BYTES) {
    throw new RangeError(`audit data for ${event} is over ${MAX_DATA_BYTES} bytes`);
  }
  // Keys in the order they are written, so the record returned is the record read back.
  return JSON.parse(canonicalJson(clean)) as Record<string, unknown>;
}

function findSecretKey(value: unknown, at: string): string | undefined {
  if (Array.isArray(value)) {
    for (const [i, item] of value.entries()) {
      const found = findSecretKey(item, `${at}[${i}]`);
      if (found) return found;
    }
  } else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) {
      const here = `${at}.${key}`;
      if (SECRET_KEYS.has(key.toLowerCase())) return here;
      const found = findSecretKey(item, here);
      if (found) return found;
    }
  }
  return undefined;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** A record's shape, or what is wrong with it. Does not check the hash. */
function parseRecord(text: string): AuditRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return `not valid JSON (${(error as Error).message})`;
  }
  if (!isPlainObject(value)) return "not a JSON object";
  const extra = Object.keys(value).find((key) => !(FIELDS as readonly string[]).includes(key));
  if (extra !== undefined) return `unexpected field ${JSON.stringify(extra)}`;
  const missing = FIELDS.find((key) => !(key in value));
  if (missing !== undefined) return `missing field "${missing}"`;
  const { v, seq, time, event, data, prev, hash } = value;
  if (v !== VERSION) return `unknown version ${JSON.stringify(v)} (expected ${VERSION})`;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) {
    return `seq ${JSON.stringify(seq)} is not a positive integer`;
  }
  if (typeof time !== "string" || Number.isNaN(Date.parse(time))) {
    return `time ${JSON.stringify(time)} is not a date`;
  }
  if (typeof event !== "string" || !EVENT.test(event)) {
    return `event ${JSON.stringify(event)} is not a valid name`;
  }
  if (!isPlainObject(data)) return "data is not an object";
  if (typeof prev !== "string" || !HASH.test(prev)) return "prev is not a sha256 hex digest";
  if (typeof hash !== "string" || !HASH.test(hash)) return "hash is not a sha256 hex digest";
  return { v, seq, time, event, data, prev, hash };
}

/** A record whose hash matches its content and whose line is exactly as written. */
function checkRecord(text: string): AuditRecord | string {
  const record = parseRecord(text);
  if (typeof record === "string") return record;
  const { v, seq, time, event, data } = record;
  const computed = chainHash(record.prev, { v, seq, time, event, data });
  if (computed !== record.hash) {
    return `hash mismatch: the record was edited (stored ${record.hash.slice(0, 12)}…, content hashes to ${computed.slice(0, 12)}…)`;
  }
  if (serializeRecord(record) !== text) {
    return "the line is not in the form it was written in (reformatted or a duplicated key)";
  }
  return record;
}

/** The head file: null when absent, a problem text when unreadable. */
async function readHead(file: string): Promise<Head | null | string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if (errorCode(error) === "ENOENT") return null;
    throw error;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return `${file} is not valid JSON`;
  }
  if (!isPlainObject(value)) return `${file} is not a JSON object`;
  const { v, seq, hash } = value;
  if (v !== VERSION || typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 0) {
    return `${file} does not hold a version ${VERSION} head with a seq`;
  }
  if (typeof hash !== "string" || !HASH.test(hash)) return `${file} does not hold a sha256 hash`;
  return { seq, hash };
}

/**
 * Does the end of the chain agree with the head? It may also be one record
 * ahead: a crash between the log's fsync and the head's rename. Lines are
 * seq numbers, which they are in a chain that checked out.
 */
function headMismatch(
  headFile: string,
  found: Head | null,
  end: ChainEnd,
): { line: number; problem: string } | undefined {
  const head = found ?? { seq: 0, hash: ZERO_HASH };
  if (head.seq === end.seq && head.hash === end.hash) return undefined;
  if (head.seq === end.seq - 1 && head.hash === end.prev) return undefined;
  const short = (h: string) => `${h.slice(0, 12)}…`;
  if (!found) {
    return {
      line: end.seq,
      problem: `${headFile} is missing but the log holds ${end.seq} records: the head was deleted`,
    };
  }
  if (head.seq > end.seq) {
    const lost = head.seq - end.seq;
    return {
      line: end.seq + 1,
      problem: `truncated: ${headFile} records seq ${head.seq} but the log ends at seq ${end.seq}: the last ${lost === 1 ? "record was" : `${lost} records were`} removed`,
    };
  }
  if (head.seq >= end.seq - 1) {
    const hash = head.seq === end.seq ? end.hash : end.prev;
    return {
      line: head.seq,
      problem: `the hash chain does not match ${headFile}: record ${head.seq} hashes to ${short(hash)} but the head records ${short(head.hash)}: records were rewritten and the chain rebuilt`,
    };
  }
  return {
    line: end.seq,
    problem: `${headFile} is stale: it records seq ${head.seq} but the log ends at seq ${end.seq}: the head was replaced by an older copy, or another process wrote the log`,
  };
}

/**
 * The last complete lines of a file (at least `want` of them, or all there
 * are), plus a final line without its newline (`torn`) and where it starts.
 * Reads backwards in growing chunks, so only the end of a long log is read.
 */
async function readTail(
  handle: FileHandle,
  size: number,
  want: number,
): Promise<{ lines: string[]; torn: Buffer; tornStart: number }> {
  for (let chunk = TAIL_CHUNK; ; chunk *= 2) {
    const start = Math.max(0, size - chunk);
    const buf = Buffer.alloc(size - start);
    for (let done = 0; done < buf.length; ) {
      const { bytesRead } = await handle.read(buf, done, buf.length - done, start + done);
      if (bytesRead === 0) throw new Error(`file shrank while reading its end (${size} bytes)`);
      done += bytesRead;
    }
    const lastNewline = buf.lastIndexOf(0x0a);
    if (lastNewline === -1 && start > 0) continue;
    const torn = Buffer.from(buf.subarray(lastNewline + 1));
    const tornStart = start + lastNewline + 1;
    if (lastNewline === -1) return { lines: [], torn, tornStart };
    const lines = buf.subarray(0, lastNewline).toString("utf8").split("\n");
    // The first piece may begin mid-line unless the chunk reached the start of the file.
    if (start > 0) lines.shift();
    if (lines.length >= want || start === 0) return { lines, torn, tornStart };
  }
}

const PLAIN_TOKEN = /^[A-Za-z0-9_.,:@/+%-]+$/;
// What printable() escapes for a terminal (after JSON has escaped C0), plus the line and
// paragraph separators, which JSON leaves as they are.
const UNSAFE_CHARS = new RegExp(`${UNPRINTABLE.source}|[\u2028\u2029]`, "gu");
const MAX_VALUE_CHARS = 80;

function escapeUnsafe(text: string): string {
  return text.replace(UNSAFE_CHARS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function cut(text: string): string {
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}

/** A string as is when it is plainly one word, else quoted with escapes. */
function token(text: string): string {
  return PLAIN_TOKEN.test(text) ? text : escapeUnsafe(JSON.stringify(text));
}

function formatValue(value: unknown): string {
  if (typeof value === "string") return token(cut(value));
  if (value !== null && typeof value === "object") return escapeUnsafe(cut(canonicalJson(value)));
  return String(value);
}

function errorCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}
