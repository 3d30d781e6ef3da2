/**
 * Git and SSH configuration placed in an agent's home: its commit identity,
 * commit signing, and how it reaches remotes.
 */
import type { ResolvedAgent, ResolvedTown } from "../../town/types.ts";

interface GitSection {
  readonly name: string;
  readonly entries: readonly (readonly [key: string, value: string | boolean])[];
  /** Lines written above the section, for settings whose reason is not obvious. */
  readonly comment?: readonly string[];
}

/**
 * Render `~/.config/git/config`: user identity, signing (SSH or OpenPGP),
 * default branch, and push/pull defaults. Every value is escaped per
 * git-config(1), so names with quotes, `;` or `#` read back exactly.
 */
export function renderGitConfig(town: ResolvedTown, agent: ResolvedAgent): string {
  const { signing } = agent.git;
  const signs = signing.format !== "none";
  const sections: GitSection[] = [
    {
      name: "user",
      entries: [
        ["name", agent.git.name],
        ["email", agent.git.email],
        ...(signs && signing.key !== undefined ? [["signingkey", signing.key] as const] : []),
      ],
    },
    { name: "init", entries: [["defaultBranch", agent.git.defaultBranch]] },
  ];
  if (signs) {
    sections.push(
      { name: "commit", entries: [["gpgsign", true]] },
      { name: "tag", entries: [["gpgsign", true]] },
      { name: "gpg", entries: [["format", signing.format]] },
    );
  }
  if (signing.format === "ssh") {
    sections.push({
      name: 'gpg "ssh"',
      entries: [["allowedSignersFile", `${agent.home}/.config/git/allowed_signers`]],
    });
  }
  sections.push(
    { name: "push", entries: [["autoSetupRemote", true]] },
    {
      name: "pull",
      entries: [["ff", "only"]],
      comment: ["A pull never merges or rebases on its own: when branches diverge it stops."],
    },
    {
      name: "safe",
      entries: [["directory", "*"]],
      comment: [
        "Agents work in their own clones, and the portal deliberately runs them in a",
        "human's checkout, which git's ownership check would otherwise refuse.",
      ],
    },
  );

  const rendered = sections.map((section) => {
    const comment = (section.comment ?? []).map((line) => `# ${line}`);
    const entries = section.entries.map(([key, value]) => `\t${key} = ${gitValue(value)}`);
    return [...comment, `[${section.name}]`, ...entries].join("\n");
  });
  return `${header(town, agent, "git config")}\n${rendered.join("\n")}\n`;
}

/**
 * Render `~/.config/git/allowed_signers`, so `git log --show-signature`
 * verifies the agent's own SSH-signed commits. Uses `publicKey` (one key per
 * line) when given, else `agent.git.signing.publicKey`. Undefined when the
 * agent does not sign with SSH or no public key is known yet (the host layer
 * then derives it from the secret at apply time).
 */
export function renderAllowedSigners(agent: ResolvedAgent, publicKey?: string): string | undefined {
  if (agent.git.signing.format !== "ssh") return undefined;
  const keys = (publicKey ?? agent.git.signing.publicKey ?? "")
    .split("\n")
    .map((key) => key.trim())
    .filter((key) => key !== "");
  if (keys.length === 0) return undefined;
  return keys.map((key) => `${agent.git.email} namespaces="git" ${key}\n`).join("");
}

/**
 * Render `~/.ssh/config`: only the agent's own key (when it has one), and
 * host keys accepted on first use.
 */
export function renderSshConfig(town: ResolvedTown, agent: ResolvedAgent): string {
  const options = [
    ...(agent.secrets.sshKey !== undefined
      ? ["IdentityFile ~/.ssh/id_ed25519", "IdentitiesOnly yes"]
      : []),
    "# known_hosts is wiped with the home every round and no one is there to answer",
    "# the prompt, so new hosts are trusted on first use; changed keys still fail.",
    "StrictHostKeyChecking accept-new",
  ];
  return `${header(town, agent, "SSH config")}\nHost *\n${options.map((o) => `  ${o}`).join("\n")}\n`;
}

function header(town: ResolvedTown, agent: ResolvedAgent, what: string): string {
  return `# ${agent.name}'s ${what}, written by nuketown (town ${town.name}) every round: edits are lost at the next reset.`;
}

/**
 * A value as git-config(1) reads it back exactly: quoted when it has edge
 * whitespace or a comment character, with `\`, `"` and control characters escaped.
 */
function gitValue(value: string | boolean): string {
  if (typeof value === "boolean") return String(value);
  const escaped = value
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/\n/g, "\\n")
    .replace(/\t/g, "\\t");
  const needsQuotes = escaped !== value || value === "" || /^\s|\s$|[;#]/.test(value);
  return needsQuotes ? `"${escaped}"` : value;
}
