/**
 * The agent's instructions: a runtime-agnostic `AGENTS.md` and the Claude
 * Code agent file that wraps the same body in front matter. Every section is
 * derived from the resolved agent, the same way for every agent.
 */
import { stringify } from "yaml";
import { isWithin } from "../../town/rules.ts";
import type { ResolvedAgent, ResolvedDevice, ResolvedTown } from "../../town/types.ts";
import { bullets, escapeText, inlineCode, joinWords } from "./markdown.ts";

/** Claude Code tools a resident agent gets: files, shell, search and the web. */
const CLAUDE_TOOLS = ["Read", "Edit", "Write", "Bash", "Glob", "Grep", "WebFetch", "WebSearch"];

/** Longest front matter description: Claude Code reads it to pick an agent, not to learn it. */
const MAX_SUMMARY = 200;

/**
 * Render `AGENTS.md`: the agent's instructions in plain markdown, for any runtime.
 * `presentPackages` are the declared packages the host was seen to have; without
 * it (rendered without a host) the packages are said to be declared, not installed.
 */
export function renderInstructions(
  town: ResolvedTown,
  agent: ResolvedAgent,
  presentPackages?: readonly string[],
): string {
  const sections = [
    identitySection(town, agent),
    aboutSection(agent),
    environmentSection(agent, presentPackages),
    collaborationSection(town, agent),
    sudoSection(town, agent),
    changeSection(town),
    hardwareSection(agent),
    extraSection(town, agent),
  ].filter((section) => section !== undefined);
  const title = `# ${escapeText(agent.git.name)} (${agent.role})`;
  const intro =
    `You are ${escapeText(agent.git.name)}, an AI agent living as the Unix user ` +
    `${inlineCode(agent.name)} in the nuketown town ${inlineCode(town.name)}. ` +
    "These instructions are generated from the town's declaration.";
  return `${[title, intro, ...sections].join("\n\n")}\n`;
}

/**
 * Render `~/.claude/agents/<name>-<role>.md`: YAML front matter (name,
 * one-line description, tools) followed by the body of `AGENTS.md`.
 */
export function renderClaudeAgent(
  town: ResolvedTown,
  agent: ResolvedAgent,
  presentPackages?: readonly string[],
): string {
  const frontMatter = stringify(
    {
      name: `${agent.name}-${agent.role}`,
      description: summary(town, agent),
      tools: CLAUDE_TOOLS.join(", "),
    },
    // Never fold the description onto several lines.
    { lineWidth: 0 },
  );
  return `---\n${frontMatter}---\n\n${renderInstructions(town, agent, presentPackages)}`;
}

/** One line saying who the agent is: the first paragraph of its description, shortened. */
function summary(town: ResolvedTown, agent: ResolvedAgent): string {
  const who = `${agent.git.name}, the ${agent.role} agent of the town ${town.name}`;
  const about = (agent.description.trim().split(/\n\s*\n/)[0] ?? "").replace(/\s+/g, " ").trim();
  if (about === "") return `${who}.`;
  if (about.length <= MAX_SUMMARY) return `${who}: ${about}`;
  const cut = about.slice(0, MAX_SUMMARY);
  return `${who}: ${cut.slice(0, Math.max(cut.lastIndexOf(" "), 1))}…`;
}

function section(title: string, ...blocks: readonly string[]): string {
  return [`## ${title}`, ...blocks].join("\n\n");
}

/** The mayor's text as written, minus blank lines around it (indentation is kept). */
const trimBlankLines = (text: string) => text.replace(/^(\s*\n)+/, "").trimEnd();

/** `~/path` for a path relative to the home, as inline code. */
const homePath = (relative: string) => inlineCode(`~/${relative}`);

function identitySection(town: ResolvedTown, agent: ResolvedAgent): string {
  return section(
    "Identity",
    bullets([
      `Name: ${escapeText(agent.git.name)}`,
      `Role: ${agent.role}`,
      `Unix user: ${inlineCode(agent.name)} (uid ${agent.uid}, group ${inlineCode(agent.group)})`,
      `Email: ${inlineCode(agent.git.email)}`,
      `Domain: ${inlineCode(town.domain)}`,
      `Home: ${inlineCode(agent.home)}`,
      `Commits and tags: ${signingText(agent)}`,
      `Machine-readable identity: ${homePath(".config/nuketown/identity.toml")}`,
    ]),
  );
}

function signingText(agent: ResolvedAgent): string {
  const { format, key } = agent.git.signing;
  if (format === "ssh") {
    return `signed with your SSH key${key === undefined ? "" : ` (${inlineCode(key)})`}`;
  }
  if (format === "openpgp") {
    return key === undefined
      ? "signed with your OpenPGP key (picked by your email)"
      : `signed with your OpenPGP key ${inlineCode(key)}`;
  }
  return "not signed (no signing key is configured)";
}

function aboutSection(agent: ResolvedAgent): string | undefined {
  const about = trimBlankLines(agent.description);
  return about === "" ? undefined : section("About you", about);
}

function environmentSection(agent: ResolvedAgent, presentPackages?: readonly string[]): string {
  const persisted = agent.persist.map((p) => {
    const kind = p.type === "file" ? " (file)" : "";
    const note = p.implicit
      ? ": kept by nuketown for your chat sync state and session history; do not keep work there"
      : "";
    return `${homePath(p.path)}${kind}${note}`;
  });
  const items = [
    `Your home is ${inlineCode(agent.home)}. It is reset to blank at the start of every round ` +
      "(at boot, or when a human resets you); nuketown then puts back your identity, keys and configuration.",
    `These paths survive a reset:\n${bullets(persisted, "  ")}`,
    "Everything else in your home is lost at the next reset: clones, caches, tools you installed, " +
      "unpushed commits. Keep work in a persisted path and push it.",
    packagesText(agent, presentPackages),
    ...secretsItem(agent),
    `Runtime: ${runtimeText(agent)}.`,
  ];
  return section("Environment", bullets(items));
}

/** Only what the host was seen to have is called installed. */
function packagesText(agent: ResolvedAgent, presentPackages?: readonly string[]): string {
  const names = (list: readonly string[]) => list.map(inlineCode).join(", ");
  if (agent.packages.length === 0)
    return "No packages are declared for you; if you need one for good, ask for it to be added to your declaration.";
  const more = "If you need another one for good, ask for it to be added to your declaration.";
  if (presentPackages === undefined) {
    return (
      `Packages declared for you: ${names(agent.packages)} ` +
      `(rendered without checking which of them this host has). ${more}`
    );
  }
  const present = new Set(presentPackages);
  const installed = agent.packages.filter((p) => present.has(p));
  const missing = agent.packages.filter((p) => !present.has(p));
  return [
    ...(installed.length > 0 ? [`Packages installed for you: ${names(installed)}.`] : []),
    ...(missing.length > 0
      ? [
          `${installed.length > 0 ? "Declared" : "Packages declared for you"} but missing on this host: ${names(missing)}.`,
        ]
      : []),
    more,
  ].join(" ");
}

function secretsItem(agent: ResolvedAgent): string[] {
  const secrets = [
    ...(agent.secrets.sshKey ? [`your SSH key at ${homePath(".ssh/id_ed25519")}`] : []),
    ...(agent.secrets.gpgKey ? ["your OpenPGP key in your GnuPG keyring"] : []),
    ...agent.secrets.extra.map((s) => `${inlineCode(s.name)} at ${homePath(s.target)}`),
  ];
  if (secrets.length === 0) return [];
  return [
    `Secrets installed every round: ${joinWords(secrets)}. Never print, copy or commit them.`,
  ];
}

function runtimeText(agent: ResolvedAgent): string {
  const argv = inlineCode([agent.runtime.command, ...agent.runtime.args].join(" "));
  if (agent.runtime.kind === "claude-code") return `Claude Code (${argv})`;
  if (agent.runtime.kind === "codex") return `Codex (${argv})`;
  return `the command ${argv}`;
}

function collaborationSection(town: ResolvedTown, agent: ResolvedAgent): string {
  const mayor = town.mayor;
  const workDirs = cloneDirs(agent);
  const items = [
    mayor
      ? `You work for ${escapeText(mayor.displayName)}, who reviews your branches and merges what is good.`
      : "The humans of the town review your branches and merge what they accept.",
    workDirs.length > 0
      ? "Never work in someone else's checkout: clone repositories into your home, under a " +
        `persisted directory (${joinWords(workDirs.map(homePath), "or")}) so they survive a reset.`
      : "Never work in someone else's checkout: clone repositories into your home. None of your " +
        "directories persist, so a clone lasts only for this round: push early.",
    ...(agent.portal.enable
      ? [
          "When a human opens a portal to you in one of their projects, you work there, beside them, " +
            "and still commit on your own branch.",
        ]
      : []),
    `Push your work to branches named ${inlineCode(`${agent.name}/<topic>`)}. Never push to the ` +
      `default branch (such as ${inlineCode(agent.git.defaultBranch)}), and never rewrite branches that are not yours.`,
    agent.git.signing.format === "none"
      ? "Your commits are not signed: no signing key is configured."
      : "Your commits and tags are signed automatically; never turn signing off.",
    ...(mayor?.email
      ? [
          "End each commit message with this trailer: " +
            inlineCode(`Co-authored-by: ${mayor.displayName} <${mayor.email}>`),
        ]
      : []),
  ];
  const blocks = [bullets(items)];
  if (agent.repos.length > 0) {
    const repos = agent.repos.map((repo) => {
      const branch = repo.branch === undefined ? "" : `, branch ${inlineCode(repo.branch)}`;
      const kept = persistedDirs(agent).some((dir) => isWithin(dir, repo.path));
      const note = kept ? "" : " (not persisted: push before the round ends)";
      return `${inlineCode(repo.url)} in ${homePath(repo.path)}${branch}${note}`;
    });
    blocks.push(`Repositories cloned for you every round:\n\n${bullets(repos)}`);
  }
  return section("Collaboration", ...blocks);
}

/** Declared persisted directories, relative to the home (not nuketown's own state dir). */
function persistedDirs(agent: ResolvedAgent): string[] {
  return agent.persist.filter((p) => p.type === "directory" && !p.implicit).map((p) => p.path);
}

/** Where clones belong: the persisted directories that hold declared repos, else all of them. */
function cloneDirs(agent: ResolvedAgent): string[] {
  const dirs = persistedDirs(agent);
  const holding = dirs.filter((dir) => agent.repos.some((repo) => isWithin(dir, repo.path)));
  return holding.length > 0 ? holding : dirs;
}

function sudoSection(town: ResolvedTown, agent: ResolvedAgent): string | undefined {
  if (!agent.sudo.enable) return undefined;
  const approvers = town.humans.filter((h) => h.approver).map((h) => escapeText(h.displayName));
  const who = approvers.length > 0 ? joinWords(approvers) : "a human";
  const { policy } = agent.sudo;
  const command =
    policy.rules.length > 0 ? "every command that no rule below decides" : "every command";
  const otherwise = {
    ask: `${command} goes to ${who} for approval`,
    deny: `${command} is refused without asking anyone`,
    allow: `${command} runs as root without asking anyone; use that trust with care`,
  }[policy.default];
  const items = [
    `You have no password. Run ${inlineCode("sudo <command>")} as usual (flags such as ` +
      `${inlineCode("-u")} work): instead of a password prompt, ${otherwise}.`,
    "Whoever approves sees the exact command line you ran, so keep it short and obvious, " +
      "and say why you need it before you ask when that is not plain.",
    `A request can be denied, and it times out after ${agent.sudo.timeout} seconds without an answer, ` +
      "which counts as denied; sudo then exits non-zero with the reason. Do not retry a denied command " +
      "unchanged: ask, or find another way.",
    "Never try to get around the approval: no hunting for passwords, no setuid tricks, no editing " +
      "sudoers or nuketown's files, no other route to root.",
  ];
  const blocks = [bullets(items)];
  if (policy.rules.length > 0) {
    const rules = policy.rules.map((rule) => {
      const outcome = {
        allow: "runs without asking anyone",
        ask: "always goes to a human",
        deny: "is always refused",
      }[rule.action];
      const runAs = rule.runAs === undefined ? "" : ` when run as ${inlineCode(rule.runAs)}`;
      const reason = rule.reason === undefined ? "" : ` (${rule.reason})`;
      return `${inlineCode(rule.argv.join(" "))}${runAs} ${outcome}${reason}`;
    });
    blocks.push(
      "Rules decide these commands on their own (the first match wins; `*` matches within one " +
        "argument, a final `**` matches any remaining arguments):\n\n" +
        bullets(rules),
    );
  }
  return section("Sudo", ...blocks);
}

function changeSection(town: ResolvedTown): string | undefined {
  const { repo, hosts, branch } = town.change;
  if (repo === undefined) return undefined;
  const machines = joinWords(hosts.map((h) => inlineCode(h.name)));
  const items = [
    `The system configuration of ${machines || "the town's machines"} is the git repository ` +
      `${inlineCode(repo)}. Never change a running system by hand: propose a change.`,
    `Commit it on a branch of your own clone, based on ${inlineCode(branch)}, then use the town's ` +
      `MCP tools ${inlineCode("change_propose")} (host, branch, your clone as ${inlineCode("from")}, ` +
      `and why) and ${inlineCode("change_verify")}, or ${inlineCode("nuketown change propose")} and ` +
      `${inlineCode("nuketown change verify")} in a shell.`,
    "Verify builds your change without switching, as you. A human (or the town's policy, for a " +
      "low-risk change) approves it, and root applies it with a way back.",
  ];
  return section("System configuration", bullets(items));
}

function hardwareSection(agent: ResolvedAgent): string | undefined {
  if (agent.devices.length === 0) return undefined;
  const intro =
    "These devices are granted to you alone. When one is plugged in, udev gives you access to its " +
    "device node under `/dev` through an ACL, again each time it re-enumerates; while it is unplugged " +
    'there is nothing to open. If you get "Permission denied", check the node with `getfacl` and ' +
    "ask a human to replug it rather than changing permissions yourself.";
  return section("Hardware", intro, bullets(agent.devices.map(deviceText)));
}

function deviceText(device: ResolvedDevice): string {
  const attrs = device.attrs.map(([key, value]) => inlineCode(`${key}=${value}`)).join(", ");
  const what = device.description ?? `A ${device.subsystem} device`;
  return `${what}: subsystem ${inlineCode(device.subsystem)}, ${attrs}; ${permissionText(device.permission)}`;
}

function permissionText(permission: string): string {
  const words = { r: "read", w: "write", x: "execute" } as const;
  return joinWords([...permission].map((ch) => words[ch as keyof typeof words] ?? ch));
}

function extraSection(town: ResolvedTown, agent: ResolvedAgent): string | undefined {
  const extra = trimBlankLines(agent.runtime.extraPrompt);
  if (extra === "") return undefined;
  const from = town.mayor ? escapeText(town.mayor.displayName) : "the humans of the town";
  return section("Extra", `More instructions from ${from}:`, extra);
}
