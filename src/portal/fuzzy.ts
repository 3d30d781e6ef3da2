/**
 * Fuzzy matching for the pickers, in the spirit of fzf: every query
 * character appears in order; consecutive runs and word starts score higher;
 * space-separated terms must all match. Smart case: a query with an upper-case
 * letter matches case-sensitively. Pure.
 */

// fzf's weights: a gap costs 3 to open and 1 per further character.
const MATCH_SCORE = 16;
const WORD_START_BONUS = 8;
const CONSECUTIVE_BONUS = 8;
const GAP_START = 3;
const GAP_EXTENSION = 1;
const SEPARATORS = new Set(["/", "-", "_", ".", " ", ":"]);

/** Score of `candidate` for one term (no spaces), or undefined when it does not match. */
function termScore(term: string, candidate: string): number | undefined {
  const caseSensitive = term !== term.toLowerCase();
  const text = caseSensitive ? candidate : candidate.toLowerCase();
  const needle = caseSensitive ? term : term.toLowerCase();
  const n = needle.length;
  const m = text.length;
  if (n === 0) return 0;
  if (n > m) return undefined;
  const NONE = Number.NEGATIVE_INFINITY;
  const bonus = (j: number) =>
    MATCH_SCORE + (j === 0 || SEPARATORS.has(candidate[j - 1] ?? "") ? WORD_START_BONUS : 0);
  // best[j]: the best alignment of needle[0..i] with needle[i] on text[j].
  let best: number[] = Array.from({ length: m }, (_, j) =>
    text[j] === needle[0] ? bonus(j) : NONE,
  );
  for (let i = 1; i < n; i++) {
    const next: number[] = new Array(m).fill(NONE);
    // gapped: the best previous match at least two positions back, minus its gap.
    let gapped = NONE;
    for (let j = 1; j < m; j++) {
      if (j >= 2) gapped = Math.max(gapped - GAP_EXTENSION, (best[j - 2] ?? NONE) - GAP_START);
      if (text[j] !== needle[i]) continue;
      const adjacent = (best[j - 1] ?? NONE) + CONSECUTIVE_BONUS;
      const base = Math.max(adjacent, gapped);
      if (base !== NONE) next[j] = base + bonus(j);
    }
    best = next;
  }
  const top = Math.max(...best);
  return top === NONE ? undefined : top;
}

/** Score of `candidate` for a whole query, or undefined when some term does not match. */
export function fuzzyScore(query: string, candidate: string): number | undefined {
  const terms = query.split(/\s+/).filter((t) => t !== "");
  let total = 0;
  for (const term of terms) {
    const score = termScore(term, candidate);
    if (score === undefined) return undefined;
    total += score;
  }
  return total;
}

/**
 * The items matching `query`, best first; ties go to the shorter label, then
 * to the original order. An empty query keeps every item in order.
 */
export function fuzzyFilter<T>(
  query: string,
  items: readonly T[],
  label: (item: T) => string,
): T[] {
  if (query.trim() === "") return [...items];
  return items
    .map((item, index) => ({ item, index, text: label(item) }))
    .map((entry) => ({ ...entry, score: fuzzyScore(query, entry.text) }))
    .filter((entry): entry is typeof entry & { score: number } => entry.score !== undefined)
    .sort((a, b) => b.score - a.score || a.text.length - b.text.length || a.index - b.index)
    .map((entry) => entry.item);
}
