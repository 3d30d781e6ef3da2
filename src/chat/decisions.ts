/**
 * What a human's chat answer to an approval request means: a reaction or a
 * reply. Pure, so every spelling people use is tested directly.
 */

export interface ChatDecision {
  readonly approve: boolean;
  readonly reason?: string;
  /** The request named in the text (`approve 3f2a…`), when it names one. */
  readonly request?: string;
}

const APPROVE_KEYS = new Set(["👍", "✅", "✔", "☑", "👌"]);
const DENY_KEYS = new Set(["👎", "❌", "✖", "🚫", "⛔"]);

/**
 * A reaction as one base emoji: variation selectors (U+FE0E/FE0F), skin
 * tones (U+1F3FB–1F3FF) and a zero-width joiner tail removed, so 👍🏽 and ✔️
 * count like 👍 and ✔.
 */
export function normalizeReaction(key: string): string {
  return key
    .trim()
    .replace(/[\u{FE0E}\u{FE0F}\u{1F3FB}-\u{1F3FF}]/gu, "")
    .replace(/\u{200D}.*$/u, "");
}

/** A reaction's decision, or undefined for any other reaction. */
export function reactionDecision(key: string): ChatDecision | undefined {
  const base = normalizeReaction(key);
  if (APPROVE_KEYS.has(base)) return { approve: true };
  if (DENY_KEYS.has(base)) return { approve: false };
  return undefined;
}

const REQUEST_ID = /^[0-9a-f]{6,32}$/;
const APPROVE_WORDS = new Set(["approve", "approved", "yes", "y", "ok", "lgtm", "allow"]);
const DECISION =
  /^(approve|approved|yes|y|ok|lgtm|allow|deny|denied|no|n|reject)(?![\w'-])[.!:,]?\s*(.*)$/i;

/**
 * A reply's decision: `approve`, `yes`, `ok`, `lgtm`, `deny`, `no`,
 * `deny <reason>`, optionally naming the request id after the word
 * (`approve 3f2a9c`, `deny 3f2a9c not now`), optionally addressed to the bot
 * by one of `addressees` (`townbot: approve`). Anything else is not a
 * decision (a question, a chat).
 */
export function replyDecision(
  text: string,
  addressees: readonly string[] = [],
): ChatDecision | undefined {
  const line = text.trim().split("\n")[0]?.trim() ?? "";
  // "deny: reason" is a decision; "bot: deny" one addressed to the bot (by one of its names).
  const prefix = /^@?([\w.:@-]+)[:,]\s+/.exec(line);
  const addressed =
    prefix && addressees.some((name) => name.toLowerCase() === (prefix[1] ?? "").toLowerCase())
      ? line.slice(prefix[0].length)
      : undefined;
  const match = DECISION.exec(line) ?? (addressed === undefined ? null : DECISION.exec(addressed));
  if (!match) return undefined;
  const word = (match[1] ?? "").toLowerCase();
  let rest = (match[2] ?? "").trim();
  const approve = APPROVE_WORDS.has(word);
  let request: string | undefined;
  const first = (rest.split(/\s+/)[0] ?? "").replace(/^#/, "");
  if (REQUEST_ID.test(first)) {
    request = first;
    rest = rest.replace(/^#?\S+\s*/, "");
  }
  // An approval carries no reason: "approve, but…" is still an approval, said as such.
  const reason = approve ? "" : rest.replace(/^(because|:|-)\s*/i, "").trim();
  return {
    approve,
    ...(reason !== "" && { reason: reason.slice(0, 500) }),
    ...(request !== undefined && { request }),
  };
}
