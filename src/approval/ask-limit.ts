/**
 * How often one agent may ask a human (`approval.askLimit`). The waiting cap
 * bounds the requests open at once; this bounds how many reach the humans
 * over time: each notifies every approver and costs audit records, even one
 * its agent cancels the moment it is shown, so an agent looping on that
 * could otherwise flood both without end. A sliding window per agent: a
 * request counts from when it was put to the humans, whatever became of it.
 */

export interface AskLimitSettings {
  readonly requests: number;
  readonly minutes: number;
}

/** The schema's default, for a manifest an older nuketown wrote. */
export const DEFAULT_ASK_LIMIT: AskLimitSettings = { requests: 60, minutes: 10 };

export class AskLimit {
  readonly #settings: AskLimitSettings;
  readonly #clock: () => Date;
  /** When each agent's counted requests were put to the humans, oldest first. */
  readonly #asked = new Map<string, number[]>();

  constructor(
    settings: AskLimitSettings = DEFAULT_ASK_LIMIT,
    clock: () => Date = () => new Date(),
  ) {
    this.#settings = settings;
    this.#clock = clock;
  }

  /**
   * Count a request of `agent` that is about to reach the humans; when the
   * window is full, count nothing and say why (with when it may ask again).
   */
  take(agent: string): { readonly ok: true } | { readonly ok: false; readonly reason: string } {
    const now = this.#clock().getTime();
    const windowMs = this.#settings.minutes * 60_000;
    const asked = (this.#asked.get(agent) ?? []).filter((t) => t > now - windowMs);
    if (asked.length >= this.#settings.requests) {
      this.#asked.set(agent, asked);
      const again = new Date((asked[0] ?? now) + windowMs).toISOString();
      return {
        ok: false,
        reason: `${agent} has asked the humans ${asked.length} times in ${this.#settings.minutes} minutes (approval.askLimit): no more until ${again}`,
      };
    }
    asked.push(now);
    this.#asked.set(agent, asked);
    return { ok: true };
  }
}
