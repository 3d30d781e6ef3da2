/**
 * Rules that span several fields: uniqueness, ranges, references between
 * parts of the declaration, and values whose meaning depends on their key.
 * Pure: the host-dependent checks (a uid owned by a foreign account) belong
 * to the host planner.
 */
import { formatPath, type PathPart, type Problem } from "./problems.ts";
import type { TownParsed } from "./schema.ts";
import type { CloudTier, ResolvedAgent, ResolvedHuman, ResolvedTown } from "./types.ts";

const TIERS: readonly CloudTier[] = ["small", "standard", "large", "gpu"];
export const tierRank = (tier: CloudTier): number => TIERS.indexOf(tier);

export function isWithin(parent: string, child: string): boolean {
  return child === parent || child.startsWith(`${parent}/`);
}

/** Accounts every Debian-like system has, plus our own group's prefix. */
const RESERVED_NAMES = new Set([
  "root",
  "daemon",
  "bin",
  "sys",
  "sync",
  "games",
  "man",
  "lp",
  "mail",
  "news",
  "uucp",
  "proxy",
  "www-data",
  "backup",
  "list",
  "irc",
  "gnats",
  "nobody",
  "nogroup",
  "sshd",
  "messagebus",
  "polkitd",
  "_apt",
  "adm",
  "wheel",
  "sudo",
  "users",
  "staff",
  "plugdev",
  "dialout",
  "video",
  "audio",
  "input",
  "render",
  "kvm",
  "disk",
  "tty",
  "utmp",
  "shadow",
  "systemd-network",
  "systemd-resolve",
  "systemd-timesync",
  "systemd-journal",
]);

/** Where the agent's runtime API key is decrypted to, 0600: the runtimes read it through a key command. */
export const RUNTIME_KEY_FILE = ".config/nuketown/runtime-key";

/** Where the agent's chat credential (Matrix token, XMPP password) is decrypted to, 0600. */
export const CHAT_SECRET_FILE = ".config/nuketown/chat-secret";

/** Home files nuketown writes itself; a declared file there would be overwritten. */
export function generatedHomeFiles(agent: Pick<ResolvedAgent, "name" | "role">): string[] {
  return [
    ".config/nuketown/identity.toml",
    "AGENTS.md",
    `.claude/agents/${agent.name}-${agent.role}.md`,
    ".config/git/config",
    ".config/git/allowed_signers",
    ".ssh/config",
    ".claude/settings.json",
    ".claude.json",
    ".codex/AGENTS.md",
    ".codex/config.toml",
    RUNTIME_KEY_FILE,
  ];
}

export function checkRules(decl: TownParsed, town: ResolvedTown): Problem[] {
  const problems: Problem[] = [];
  const at = (parts: PathPart[], message: string) =>
    problems.push({ path: formatPath(parts), message });

  const { min, max } = town.uidRange;
  if (min > max) at(["uidRange"], `min ${min} is above max ${max}`);

  // Names: agents, humans' Unix accounts and our own group share one namespace.
  const owners = new Map<string, string>();
  const claim = (name: string, where: PathPart[]) => {
    const previous = owners.get(name);
    if (previous !== undefined) at(where, `name "${name}" is already taken by ${previous}`);
    else owners.set(name, formatPath(where));
  };
  for (const name of Object.keys(decl.agents)) {
    if (RESERVED_NAMES.has(name) || name.startsWith("nuketown") || name.startsWith("systemd-")) {
      at(["agents", name], `"${name}" is a system or nuketown account name; choose another`);
    }
    claim(name, ["agents", name]);
  }
  claim(town.approval.approversGroup, ["approval", "group"]);
  for (const human of town.humans) {
    claim(human.unixUser, [
      "humans",
      human.name,
      ...(human.unixUser === human.name ? [] : ["unixUser"]),
    ]);
  }

  problems.push(
    ...uidProblems(
      Object.entries(decl.agents).map(([name, a]) => [name, a.uid]),
      town.uidRange,
    ),
  );

  if (decl.mayor !== undefined && !town.humans.some((h) => h.name === decl.mayor)) {
    at(["mayor"], `"${decl.mayor}" is not declared in humans`);
  }
  if (town.homes.backend === "btrfs" && town.homes.device === undefined) {
    at(["homes", "device"], 'backend "btrfs" needs a device (a block device or a mounted btrfs)');
  }
  if (town.chat.transport === "matrix" && !town.chat.matrix) {
    at(["chat", "matrix"], 'transport "matrix" needs chat.matrix.homeserver');
  }
  if (town.chat.transport === "xmpp" && !town.chat.xmpp) {
    at(["chat", "xmpp"], 'transport "xmpp" needs chat.xmpp.service and domain');
  }
  checkSecretFiles(decl, town, at);
  checkChange(decl, town, at);

  const approvers = town.humans.filter((h) => h.approver);
  const hostNames = new Set(town.hosts.map((h) => h.name));
  const names = new Set([...Object.keys(decl.agents), ...town.humans.map((h) => h.name)]);

  for (const agent of town.agents) {
    const here = (...parts: PathPart[]) => ["agents", agent.name, ...parts];

    if (agent.secrets.unlockable.length > 0 && approvers.length === 0) {
      at(here("secrets", "unlockable"), "unlocking needs at least one human with approver = true");
    }
    if (agent.sudo.enable && approvers.length === 0) {
      at(here("sudo", "enable"), "sudo needs at least one human with approver = true");
    }
    const runtime = decl.agents[agent.name]?.runtime;
    if (runtime?.allowedTools !== undefined && agent.runtime.kind !== "claude-code") {
      at(
        here("runtime", "allowedTools"),
        `only claude-code takes a list of tools; for ${agent.runtime.kind} ${agent.runtime.kind === "codex" ? "use runtime.sandbox" : "narrow the command itself"}`,
      );
    }
    if (runtime?.sandbox !== undefined && agent.runtime.kind !== "codex") {
      at(
        here("runtime", "sandbox"),
        `only codex has a sandbox mode; ${agent.runtime.kind === "claude-code" ? "narrow claude-code with runtime.allowedTools" : "the command runtime has none"}`,
      );
    }
    if (
      agent.runtime.kind === "command" &&
      (runtime?.apiKey !== undefined ||
        runtime?.baseUrl !== undefined ||
        runtime?.model !== undefined)
    ) {
      at(
        here("runtime"),
        "apiKey, baseUrl and model configure the claude-code and codex CLIs; a command runtime reads its own configuration",
      );
    }

    const declared = agent.persist.filter((p) => !p.implicit);
    declared.forEach((p, i) => {
      if (declared.slice(0, i).some((q) => q.path === p.path)) {
        at(here("persist", i), `"${p.path}" is listed twice`);
      }
      const outer = declared.find((q) => q.path !== p.path && isWithin(q.path, p.path));
      if (outer) at(here("persist", i), `"${p.path}" is inside persisted "${outer.path}"`);
    });

    const reserved = new Set([
      ...generatedHomeFiles(agent),
      ".ssh/id_ed25519",
      ".ssh/id_ed25519.pub",
      CHAT_SECRET_FILE,
    ]);
    for (const file of agent.files) {
      if (reserved.has(file.path)) at(here("files", file.path), "is written by nuketown itself");
    }
    const declaredFiles = new Set(agent.files.map((f) => f.path));
    for (const secret of agent.secrets.extra) {
      const where = here("secrets", "extraSecrets", secret.name, "target");
      if (reserved.has(secret.target)) at(where, "is written by nuketown itself");
      else if (declaredFiles.has(secret.target)) at(where, `is also declared in files`);
    }
    // A file nuketown writes cannot also be a bind-mounted persisted file (the write would fail
    // with EBUSY every round), and nothing may be persisted inside the state dir nuketown binds itself.
    const written = new Set([
      ...reserved,
      ...declaredFiles,
      ...agent.secrets.extra.map((x) => x.target),
    ]);
    declared.forEach((p, i) => {
      if (p.type === "file" && written.has(p.path)) {
        at(
          here("persist", i),
          `"${p.path}" is a file nuketown writes every round; it cannot also be persisted`,
        );
      }
      const implicit = agent.persist.find((q) => q.implicit);
      if (implicit && p.path !== implicit.path && isWithin(implicit.path, p.path)) {
        at(
          here("persist", i),
          `"${p.path}" is inside "${implicit.path}", which nuketown always persists`,
        );
      }
    });

    const { signing } = agent.git;
    if (signing.format === "ssh" && !agent.secrets.sshKey && signing.key === undefined) {
      at(here("git", "signing", "format"), "ssh signing needs secrets.sshKey or git.signing.key");
    }
    if (signing.format === "openpgp" && !agent.secrets.gpgKey && signing.key === undefined) {
      at(
        here("git", "signing", "format"),
        "openpgp signing needs secrets.gpgKey or git.signing.key",
      );
    }

    if (agent.runtime.kind === "command" && agent.runtime.command === "") {
      at(here("runtime", "command"), 'required when runtime.kind = "command"');
    }
    const { layout } = agent.portal;
    if (layout.agent + layout.human !== 100 || layout.agent < 10 || layout.human < 10) {
      at(
        here("portal", "layout"),
        `"${layout.agent}/${layout.human}" must be two parts of at least 10 adding up to 100`,
      );
    }

    if (agent.chat.enable) {
      if (town.chat.transport === "matrix" && !agent.chat.matrix) {
        at(
          here("chat", "matrix"),
          "the town chats over Matrix: the agent needs chat.matrix.userId and tokenSecret",
        );
      }
      if (town.chat.transport === "xmpp" && !agent.chat.xmpp) {
        at(
          here("chat", "xmpp"),
          "the town chats over XMPP: the agent needs chat.xmpp.jid and passwordSecret",
        );
      }
      if (town.chat.transport !== "local" && agent.chat.project === undefined) {
        at(
          here("chat", "project"),
          "chat messages need a project to be worked on: set chat.project or declare a repo under projects/",
        );
      }
    }
    agent.chat.allow.forEach((who, i) => {
      if (!names.has(who))
        at(here("chat", "allow", i), `"${who}" is neither a declared human nor an agent`);
    });

    const repoPaths = new Map<string, number>();
    agent.repos.forEach((repo, i) => {
      if (repo.url.startsWith("-")) at(here("repos", i), "a git URL must not start with -");
      if (/\s/.test(repo.url)) at(here("repos", i), "a git URL must not contain whitespace");
      const first = repoPaths.get(repo.path);
      if (first !== undefined)
        at(here("repos", i), `clones into "${repo.path}" like repos[${first}]`);
      else repoPaths.set(repo.path, i);
    });

    const { cloud } = agent;
    if (tierRank(cloud.scaling.maxResources) < tierRank(cloud.resources)) {
      at(
        here("cloud", "scaling", "maxResources"),
        `"${cloud.scaling.maxResources}" is below resources "${cloud.resources}"`,
      );
    }
    const persisted = new Set(agent.persist.map((p) => p.path));
    for (const key of Object.keys(decl.agents[agent.name]?.cloud.storage ?? {})) {
      if (!persisted.has(key.replace(/\/+$/, "")))
        at(here("cloud", "storage", key), "is not a persisted path");
    }
    if (cloud.enable) checkCloudAgent(decl, town, agent, here, at);

    agent.hosts.forEach((host, i) => {
      if (!hostNames.has(host)) at(here("hosts", i), `"${host}" is not declared in hosts`);
    });
  }
  return problems;
}

/**
 * Uids of every declared agent, enabled or not (a disabled agent keeps its
 * uid), must sit in the range and be unique. Also run on the raw declaration
 * when the schema fails, so these problems are reported in the same pass.
 */
export function uidProblems(
  entries: readonly (readonly [string, number])[],
  range: { readonly min: number; readonly max: number },
): Problem[] {
  const problems: Problem[] = [];
  const owners = new Map<number, string>();
  for (const [name, uid] of entries) {
    const path = formatPath(["agents", name, "uid"]);
    if (uid < range.min || uid > range.max) {
      problems.push({ path, message: `${uid} is outside uidRange ${range.min}–${range.max}` });
    }
    const previous = owners.get(uid);
    if (previous !== undefined)
      problems.push({ path, message: `${uid} is already used by agents.${previous}` });
    else owners.set(uid, name);
  }
  return problems;
}

type At = (parts: PathPart[], message: string) => void;

/** What a pod cannot do that a host agent can, and cloud settings that contradict each other. */
function checkCloudAgent(
  decl: TownParsed,
  town: ResolvedTown,
  agent: ResolvedAgent,
  here: (...parts: PathPart[]) => PathPart[],
  at: At,
): void {
  const { cloud } = agent;
  if (cloud.image === undefined)
    at(
      here("cloud", "image"),
      "a cloud agent needs an image: set it here or in the town's cloud.image",
    );
  if (agent.devices.length > 0)
    at(
      here("devices"),
      "a cloud agent cannot reach this host's devices; remove them or cloud.enable",
    );
  if (agent.sudo.enable)
    at(
      here("sudo", "enable"),
      "a cloud agent runs without privilege escalation; sudo is for host agents",
    );
  (decl.agents[agent.name]?.persist ?? []).forEach((entry, i) => {
    if (typeof entry !== "string" && entry.type === "file")
      at(here("persist", i), "a cloud agent persists directories only (one volume per path)");
  });
  const { identity } = cloud;
  const providers = [identity.gcpServiceAccount, identity.awsRoleArn, identity.azureClientId];
  if (providers.filter((p) => p !== undefined).length > 1)
    at(
      here("cloud", "identity"),
      "a ServiceAccount maps to one cloud's workload identity: keep one of gcpServiceAccount, awsRoleArn, azureClientId",
    );
  if (identity.awsPodIdentity && identity.awsRoleArn === undefined)
    at(
      here("cloud", "identity", "awsPodIdentity"),
      "needs awsRoleArn (the role the association binds)",
    );
  if (
    town.cloud.namespaces === "per-agent" &&
    town.cloud.namespace.length + agent.name.length + 1 > 63
  )
    at(
      here(),
      `its namespace "${town.cloud.namespace}-${agent.name}" is longer than 63 characters`,
    );
}

/** A secret named only by key needs the town's default sops file. */
function checkSecretFiles(decl: TownParsed, town: ResolvedTown, at: At): void {
  if (town.secrets.sopsFile !== undefined) return;
  const needsDefault = (ref: unknown) => typeof ref === "string";
  const message = "names a key in the town sops file, but secrets.sopsFile is not set";
  for (const [name, agent] of Object.entries(decl.agents)) {
    if (!agent.enable) continue;
    if (needsDefault(agent.secrets.sshKey)) at(["agents", name, "secrets", "sshKey"], message);
    if (needsDefault(agent.secrets.gpgKey)) at(["agents", name, "secrets", "gpgKey"], message);
    for (const [secret, s] of Object.entries(agent.secrets.extraSecrets)) {
      if (s.file === undefined)
        at(
          ["agents", name, "secrets", "extraSecrets", secret, "file"],
          "required when secrets.sopsFile is not set",
        );
    }
    for (const [secret, s] of Object.entries(agent.secrets.unlockable)) {
      if (s.file === undefined)
        at(
          ["agents", name, "secrets", "unlockable", secret, "file"],
          "required when secrets.sopsFile is not set",
        );
    }
    if (needsDefault(agent.chat.matrix?.tokenSecret))
      at(["agents", name, "chat", "matrix", "tokenSecret"], message);
    if (needsDefault(agent.chat.xmpp?.passwordSecret))
      at(["agents", name, "chat", "xmpp", "passwordSecret"], message);
  }
  if (needsDefault(decl.chat.matrix?.bot?.tokenSecret))
    at(["chat", "matrix", "bot", "tokenSecret"], message);
  if (needsDefault(decl.chat.xmpp?.bot?.passwordSecret))
    at(["chat", "xmpp", "bot", "passwordSecret"], message);
}

function checkChange(
  decl: TownParsed,
  town: ResolvedTown,
  at: (path: PathPart[], message: string) => void,
): void {
  const { change } = town;
  if (change.hosts.length > 0 && change.repo === undefined)
    at(["change", "repo"], "change.hosts needs the config repo (change.repo)");
  for (const host of change.hosts) {
    const declared = decl.change.hosts[host.name];
    if (host.kind !== "command") continue;
    for (const step of ["build", "switch"] as const) {
      if (declared?.[step] === undefined)
        at(
          ["change", "hosts", host.name, step],
          `kind "command" has no default ${step}: declare it`,
        );
    }
  }
  change.rules.forEach((rule, i) => {
    if (rule.paths.length === 0 && rule.match === undefined)
      at(["change", "rules", i], "a rule needs paths, match or both");
    if (rule.match !== undefined) {
      try {
        new RegExp(rule.match);
      } catch (error) {
        at(
          ["change", "rules", i, "match"],
          `not a regular expression: ${(error as Error).message}`,
        );
      }
    }
  });
  change.autoApprove.forEach((name, i) => {
    if (!town.agents.some((a) => a.name === name))
      at(["change", "autoApprove", i], `"${name}" is not an enabled agent`);
  });
  if (change.autoApprove.length > 0 && !town.humans.some((h) => h.approver))
    at(["change", "autoApprove"], "change control needs at least one human with approver = true");
}

/** How a human can reach the town's approvals on this host. */
export interface ApproverReach {
  readonly human: ResolvedHuman;
  /** Where they can answer: their Unix account's channels, and the chat network. */
  readonly via: readonly string[];
}

/** The chat network the approval bot speaks on, with the human's id there, if any. */
function chatReach(town: ResolvedTown, human: ResolvedHuman): string | undefined {
  if (!town.approval.channels.includes("chat")) return undefined;
  if (town.chat.transport === "matrix" && town.chat.matrix?.bot && human.matrix)
    return `Matrix as ${human.matrix}`;
  if (town.chat.transport === "xmpp" && town.chat.xmpp?.bot && human.xmpp)
    return `XMPP as ${human.xmpp}`;
  return undefined;
}

/**
 * Each approver and how they can answer here: with a Unix account of their
 * `unixUser` (in the approvers group: `nuketown approvals`, the desktop
 * dialog, the dashboard), and through the town's chat bot with their chat id.
 * An approver with neither is listed with no ways (pure: `hasAccount` says
 * which accounts the host has).
 */
export function approverReach(
  town: ResolvedTown,
  hasAccount: (name: string) => boolean,
): ApproverReach[] {
  return town.humans
    .filter((h) => h.approver)
    .map((human) => {
      const via: string[] = [];
      if (hasAccount(human.unixUser)) {
        const channels = ["nuketown approvals"];
        if (town.approval.channels.includes("desktop") && town.mayor?.name === human.name)
          channels.push("the desktop dialog");
        if (town.approval.channels.includes("web")) channels.push("the dashboard");
        via.push(`Unix account ${human.unixUser} (${channels.join(", ")})`);
      }
      const chat = chatReach(town, human);
      if (chat) via.push(chat);
      return { human, via };
    });
}

/**
 * The mayor and approvers this host has no Unix account for, each said
 * plainly: who, which account is missing, what they cannot do without it,
 * and the two ways to fix it. Warnings, not errors: a declaration may be
 * checked on another machine than the one it is applied to.
 */
export function missingHumanAccounts(
  town: ResolvedTown,
  hasAccount: (name: string) => boolean,
): Problem[] {
  const problems: Problem[] = [];
  for (const human of town.humans) {
    const mayor = town.mayor?.name === human.name;
    if (!(mayor || human.approver) || hasAccount(human.unixUser)) continue;
    const cannot = [
      ...(human.approver ? ["approve from a terminal, the desktop or the dashboard"] : []),
      ...(mayor ? ["reach the agents' sockets (talk, portal)"] : []),
    ].join(" nor ");
    const where = formatPath(["humans", human.name, "unixUser"]);
    problems.push({
      path: formatPath(["humans", human.name]),
      message: `no Unix account "${human.unixUser}" on this host, so ${human.name}${mayor ? " (the mayor)" : ""} cannot ${cannot} here: create it (useradd --create-home ${human.unixUser}) or set ${where} to the account ${human.name} logs in with`,
    });
  }
  return problems;
}
