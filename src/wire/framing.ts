/**
 * The wire both daemons speak (docs/approval-protocol.md, docs/agent-protocol.md): version 1,
 * one JSON object per line, at most 64 KiB a frame. Kept apart from the
 * zod schemas so clients (the chat service, talk) load no validator: the
 * daemons validate what they are sent.
 */

export const PROTOCOL_VERSION = 1;
/** Longer frames are refused: an argv of this size is not a command a human can review. */
export const MAX_FRAME_BYTES = 64 * 1024;

export type ParsedFrame<T> = { ok: true; frame: T } | { ok: false; error: string };

export const encodeFrame = (frame: object) =>
  `${JSON.stringify({ v: PROTOCOL_VERSION, ...frame })}\n`;

/**
 * Splits a byte stream into lines, refusing to buffer more than the frame
 * limit: a peer that never sends a newline cannot make us hold its data.
 */
export class LineSplitter {
  #buffer = "";
  #overflow = false;
  readonly #onLine: (line: string) => void;
  readonly #onOverflow: () => void;
  constructor(onLine: (line: string) => void, onOverflow: () => void) {
    this.#onLine = onLine;
    this.#onOverflow = onOverflow;
  }

  push(chunk: string): void {
    this.#buffer += chunk;
    let index = this.#buffer.indexOf("\n");
    while (index >= 0) {
      const line = this.#buffer.slice(0, index);
      this.#buffer = this.#buffer.slice(index + 1);
      if (this.#overflow) this.#overflow = false;
      else if (line.trim() !== "") this.#onLine(line);
      index = this.#buffer.indexOf("\n");
    }
    if (Buffer.byteLength(this.#buffer) > MAX_FRAME_BYTES) {
      this.#buffer = "";
      if (!this.#overflow) this.#onOverflow();
      this.#overflow = true;
    }
  }
}
