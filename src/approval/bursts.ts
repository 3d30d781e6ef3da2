/**
 * Denials an agent can cause at will (a deny rule, sudo it may not use, the
 * waiting cap, test mode's auto-deny) are audited once per burst, so a loop
 * of denied sudos cannot grow the audit log without bound. The first denial
 * of an agent is recorded in full (request and decision) and opens a burst of
 * `windowMs`; later denials of that agent inside it are only counted. The
 * burst ends when its window is over, when a record about that agent is about
 * to be written (its own requests stay in order), or when the daemon stops;
 * then one `denials.suppressed` record says how many there were, when, why
 * and a few of their argvs. At most three records per agent per window.
 * Decisions a human makes are never folded in.
 */

/** What one `denials.suppressed` record holds. */
export interface DenialSummary {
  readonly agent: string;
  /** Denials counted in the burst and not recorded one by one. */
  readonly count: number;
  readonly first: string;
  readonly last: string;
  /**
   * How often each reason came, the most frequent first; at most MAX_REASONS
   * (then `other`). A list, not an object: a reason is no key of the record.
   */
  readonly reasons: readonly { readonly reason: string; readonly count: number }[];
  /** The first few distinct argvs. */
  readonly samples: readonly (readonly string[])[];
  readonly windowMs: number;
}

/** @default one minute */
export const DENIAL_WINDOW_MS = 60_000;
const MAX_REASONS = 8;
const MAX_SAMPLES = 3;
/** A sample is cut to this many arguments, each to this many characters. */
const SAMPLE_ARGS = 16;
const SAMPLE_CHARS = 200;

interface Burst {
  readonly opened: number;
  count: number;
  first: string;
  last: string;
  readonly reasons: Map<string, number>;
  readonly samples: string[][];
  readonly timer: { cancel(): void };
}

export interface DenialBurstsOptions {
  /** Writes a summary (to the audit log). */
  readonly record: (summary: DenialSummary) => Promise<void>;
  readonly clock?: () => Date;
  readonly windowMs?: number;
  /** Calls `fire` after `ms`; the default is an unref'd setTimeout. */
  readonly schedule?: (ms: number, fire: () => void) => { cancel(): void };
  /** A summary that could not be written. */
  readonly onError?: (error: Error) => void;
}

export class DenialBursts {
  readonly #record: DenialBurstsOptions["record"];
  readonly #clock: () => Date;
  readonly #windowMs: number;
  readonly #schedule: NonNullable<DenialBurstsOptions["schedule"]>;
  readonly #onError: (error: Error) => void;
  readonly #open = new Map<string, Burst>();

  constructor(options: DenialBurstsOptions) {
    this.#record = options.record;
    this.#clock = options.clock ?? (() => new Date());
    this.#windowMs = options.windowMs ?? DENIAL_WINDOW_MS;
    this.#schedule =
      options.schedule ??
      ((ms, fire) => {
        const timer = setTimeout(fire, ms);
        timer.unref();
        return { cancel: () => clearTimeout(timer) };
      });
    this.#onError = options.onError ?? (() => {});
  }

  /**
   * A denial of `agent`'s request that no human made. True: it was counted
   * into the agent's burst and must not be recorded; false: record it in
   * full (a burst opens; one that was over is summarised first).
   */
  async denied(agent: string, argv: readonly string[], reason: string): Promise<boolean> {
    const now = this.#clock();
    const open = this.#open.get(agent);
    if (open && now.getTime() - open.opened < this.#windowMs) {
      open.count++;
      open.first ||= now.toISOString();
      open.last = now.toISOString();
      const key = open.reasons.has(reason) || open.reasons.size < MAX_REASONS ? reason : "other";
      open.reasons.set(key, (open.reasons.get(key) ?? 0) + 1);
      const sample = argv.slice(0, SAMPLE_ARGS).map((a) => a.slice(0, SAMPLE_CHARS));
      const seen = open.samples.some((s) => JSON.stringify(s) === JSON.stringify(sample));
      if (!seen && open.samples.length < MAX_SAMPLES) open.samples.push(sample);
      return true;
    }
    // Taken out and replaced before anything is awaited: a denial arriving meanwhile joins the new burst.
    const over = this.#take(agent);
    const timer = this.#schedule(this.#windowMs, () => {
      this.end(agent).catch((error: Error) => this.#onError(error));
    });
    this.#open.set(agent, {
      opened: now.getTime(),
      count: 0,
      first: "",
      last: "",
      reasons: new Map(),
      samples: [],
      timer,
    });
    if (over) await this.#summarise(agent, over);
    return false;
  }

  /** End `agent`'s burst, writing its summary if it counted any. */
  async end(agent: string): Promise<void> {
    const burst = this.#take(agent);
    if (burst) await this.#summarise(agent, burst);
  }

  #take(agent: string): Burst | undefined {
    const burst = this.#open.get(agent);
    if (!burst) return undefined;
    this.#open.delete(agent);
    burst.timer.cancel();
    return burst;
  }

  async #summarise(agent: string, burst: Burst): Promise<void> {
    if (burst.count === 0) return;
    await this.#record({
      agent,
      count: burst.count,
      first: burst.first,
      last: burst.last,
      reasons: [...burst.reasons]
        .sort((a, b) => b[1] - a[1])
        .map(([reason, count]) => ({ reason, count })),
      samples: burst.samples,
      windowMs: this.#windowMs,
    });
  }

  /** End every burst (the daemon stops). */
  async endAll(): Promise<void> {
    for (const agent of [...this.#open.keys()]) await this.end(agent);
  }
}
