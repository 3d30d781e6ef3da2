/**
 * Chat commands an agent understands besides plain requests. Pure.
 */

export type ChatCommand =
  | { readonly name: "status" }
  | { readonly name: "cancel" }
  | { readonly name: "reset" }
  | { readonly name: "help" }
  | { readonly name: "unknown"; readonly word: string };

export const CHAT_HELP = [
  "Write to me and I work on it; in rooms, mention me.",
  "!status — what I am doing and what waits",
  "!cancel — stop what I am doing for this conversation",
  "!reset — start a new round: my home goes back to blank (a human approves it first)",
  "!help — this",
].join("\n");

/** `!word …` at the start of the text (after a mention of the agent), else undefined. */
export function parseCommand(text: string): ChatCommand | undefined {
  const match = /^!([a-z]+)\b/i.exec(text.trim());
  if (!match) return undefined;
  const word = (match[1] ?? "").toLowerCase();
  switch (word) {
    case "status":
    case "cancel":
    case "reset":
    case "help":
      return { name: word };
    default:
      return { name: "unknown", word };
  }
}

/**
 * The request without the agent's name in front ("ada: fix the tests",
 * "@ada:town.local fix…"), so the runtime sees what was asked.
 */
export function stripMention(text: string, names: readonly string[]): string {
  let rest = text.trim();
  for (const name of names) {
    if (!name) continue;
    const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    const pattern = new RegExp(`^@?${escaped}\\b[:,]?\\s*`, "i");
    if (pattern.test(rest)) {
      rest = rest.replace(pattern, "");
      break;
    }
  }
  return rest.trim();
}
