/**
 * Declaration → ResolvedTown, in three pure steps: parse with the schema,
 * normalize (fill derived defaults, compute paths), then check the rules that
 * span several fields. Every problem is collected; nothing stops at the first.
 */
import path from "node:path";
import { DEFAULT_STEPS } from "../change/defaults.ts";
import { DEFAULT_PREFIX, DEFAULT_SUDO_WRAPPER, installLayout } from "../install/layout.ts";
import { manifestPath } from "./manifest.ts";
import { formatPath, type Problem, problemsFromIssues } from "./problems.ts";
import { checkRules, isWithin, uidProblems } from "./rules.ts";
import { type AgentParsed, type SecretRefInput, type TownParsed, TownSchema } from "./schema.ts";
import type {
  PersistedPath,
  ResolvedAgent,
  ResolvedHuman,
  ResolvedSecret,
  ResolvedTown,
} from "./types.ts";

export interface ResolveContext {
  /** The host's name: the default town name and domain (`<hostname>.local`). */
  readonly hostname: string;
  /** Folder of the declaration file: relative secret paths are taken from here. */
  readonly baseDir: string;
  /** Install prefix when the declaration names none (the running installation's). */
  readonly installPrefix?: string;
}

export interface ResolveResult {
  readonly town?: ResolvedTown;
  readonly errors: readonly Problem[];
  readonly warnings: readonly Problem[];
}

export function resolveTown(raw: unknown, context: ResolveContext): ResolveResult {
  const parsed = TownSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    return {
      errors: [...problemsFromIssues(parsed.error.issues), ...rawUidProblems(raw)],
      warnings: [],
    };
  }
  const warnings: Problem[] = [];
  const errors: Problem[] = [];
  const town = normalize(parsed.data, context, warnings, errors);
  errors.push(...checkRules(parsed.data, town));
  warnings.push(...lintTown(town));
  if (errors.length > 0) return { errors, warnings };
  return { town: deepFreeze(town), errors, warnings };
}

function normalize(
  decl: TownParsed,
  context: ResolveContext,
  warnings: Problem[],
  errors: Problem[],
): ResolvedTown {
  const hostShort = hostLabel(context.hostname);
  const domain = decl.domain ?? `${hostShort}.local`;

  if (decl.btrfsDevice !== undefined) {
    warnings.push({ path: "btrfsDevice", message: "deprecated: use homes.device" });
    if (decl.homes.device !== undefined) {
      errors.push({
        path: "btrfsDevice",
        message: "set either btrfsDevice or homes.device, not both",
      });
    }
  }
  if (decl.sopsFile !== undefined) {
    warnings.push({ path: "sopsFile", message: "deprecated: use secrets.sopsFile" });
    if (decl.secrets.sopsFile !== undefined) {
      errors.push({
        path: "sopsFile",
        message: "set either sopsFile or secrets.sopsFile, not both",
      });
    }
  }
  const device = decl.homes.device ?? decl.btrfsDevice;
  const sopsFileDecl = decl.secrets.sopsFile ?? decl.sopsFile;
  const sopsFile =
    sopsFileDecl === undefined ? undefined : path.resolve(context.baseDir, sopsFileDecl);

  const humans: ResolvedHuman[] = Object.entries(decl.humans)
    .map(([name, h]) => ({
      name,
      unixUser: h.unixUser ?? name,
      displayName: h.displayName ?? name,
      ...(h.email !== undefined && { email: h.email }),
      ...(h.matrix !== undefined && { matrix: h.matrix }),
      ...(h.xmpp !== undefined && { xmpp: h.xmpp }),
      approver: h.approver,
    }))
    .sort(byName);

  // Declaration order decides the default mayor, so look at it unsorted.
  const declaredHumans = Object.keys(decl.humans);
  const mayorName =
    decl.mayor ?? declaredHumans.find((name) => decl.humans[name]?.approver) ?? declaredHumans[0];
  const mayor = humans.find((h) => h.name === mayorName);

  const secretOf = (ref: SecretRefInput): ResolvedSecret =>
    resolveSecret(ref, sopsFile, context.baseDir);

  const agents = Object.entries(decl.agents)
    .filter(([, a]) => a.enable)
    .map(([name, a]) => normalizeAgent(name, a, decl, domain, humans, secretOf))
    .sort(byName);

  const stateDir = decl.stateDir;
  const chatTransport =
    decl.chat.transport ?? (decl.chat.matrix ? "matrix" : decl.chat.xmpp ? "xmpp" : "local");

  return {
    name: decl.name ?? hostShort,
    domain,
    agentsDir: decl.agentsDir,
    persistDir: decl.persistDir,
    stateDir,
    runtimeDir: decl.runtimeDir,
    uidRange: { ...decl.uidRange },
    homes: {
      backend: decl.homes.backend ?? (device !== undefined ? "btrfs" : "image"),
      ...(device !== undefined && { device }),
      image: {
        path: decl.homes.image.path ?? `${stateDir}/homes.img`,
        size: decl.homes.image.size,
      },
    },
    humans,
    ...(mayor !== undefined && { mayor }),
    basePackages: [...decl.basePackages],
    projectDirs: [...decl.projectDirs],
    dashboard: {
      address: decl.dashboard.address,
      ...(decl.dashboard.port !== undefined && { port: decl.dashboard.port }),
    },
    approval: {
      timeout: decl.approval.timeout,
      channels: [...decl.approval.channels],
      approversGroup: decl.approval.group,
      askLimit: { ...decl.approval.askLimit },
    },
    chat: {
      transport: chatTransport,
      ...(decl.chat.matrix && {
        matrix: {
          homeserver: decl.chat.matrix.homeserver,
          ...(decl.chat.matrix.bot && {
            bot: {
              userId: decl.chat.matrix.bot.userId,
              tokenSecret: secretOf(decl.chat.matrix.bot.tokenSecret),
            },
          }),
        },
      }),
      ...(decl.chat.xmpp && {
        xmpp: {
          service: decl.chat.xmpp.service,
          domain: decl.chat.xmpp.domain,
          ...(decl.chat.xmpp.bot && {
            bot: {
              jid: decl.chat.xmpp.bot.jid,
              passwordSecret: secretOf(decl.chat.xmpp.bot.passwordSecret),
            },
          }),
        },
      }),
      ...(decl.chat.approvalRoom !== undefined && { approvalRoom: decl.chat.approvalRoom }),
    },
    secrets: {
      ...(sopsFile !== undefined && { sopsFile }),
      ageKeyFile:
        decl.secrets.ageKeyFile === undefined
          ? `${stateDir}/age/keys.txt`
          : path.resolve(context.baseDir, decl.secrets.ageKeyFile),
    },
    hosts: Object.entries(decl.hosts)
      .map(([name, h]) => ({ name, ...h }))
      .sort(byName),
    cloud: { ...decl.cloud },
    change: {
      ...(decl.change.repo !== undefined && { repo: decl.change.repo }),
      dir: decl.change.dir ?? `${stateDir}/change`,
      branch: decl.change.branch,
      onApply: decl.change.onApply,
      hosts: Object.entries(decl.change.hosts)
        .map(([name, h]) => {
          const steps = DEFAULT_STEPS[h.kind];
          return {
            name,
            kind: h.kind,
            attr: h.attr ?? name,
            build: h.build ?? steps.build,
            test: h.test ?? steps.test,
            switch: h.switch ?? steps.switch,
            generation: h.generation ?? steps.generation,
            rollback: h.rollback ?? steps.rollback,
            health: h.health,
            healthTimeout: h.healthTimeout,
            current: h.current,
          };
        })
        .sort(byName),
      rules: decl.change.rules.map((r) => ({ ...r, paths: [...r.paths] })),
      autoApprove: [...decl.change.autoApprove].sort(),
    },
    install: resolveInstall(decl.install, context.installPrefix, decl.etcDir),
    paths: {
      manifest: manifestPath(decl.etcDir),
      udevRules: `${decl.etcDir}/udev/rules.d/70-nuketown.rules`,
      sudoers: `${decl.etcDir}/sudoers.d/nuketown`,
      profile: `${decl.etcDir}/profile.d/nuketown.sh`,
      unitDir: `${decl.etcDir}/systemd/system`,
      auditLog: `${stateDir}/audit.jsonl`,
      modeFile: `${stateDir}/approval-mode`,
      requestSocket: `${decl.runtimeDir}/approval/request.sock`,
      controlSocket: `${decl.runtimeDir}/control.sock`,
      unlockedSecrets: `${decl.runtimeDir}/secrets`,
    },
    agents,
    disabledAgents: Object.entries(decl.agents)
      .filter(([, a]) => !a.enable)
      .map(([name]) => name)
      .sort(),
  };
}

const STATE_DIR = ".local/state/nuketown";

function normalizeAgent(
  name: string,
  a: AgentParsed,
  decl: TownParsed,
  domain: string,
  humans: readonly ResolvedHuman[],
  secretOf: (ref: SecretRefInput) => ResolvedSecret,
): ResolvedAgent {
  const home = `${decl.agentsDir}/${name}`;
  const persistRoot = `${decl.persistDir}/agents/${name}`;
  const persisted = (p: string, type: "directory" | "file", implicit: boolean): PersistedPath => ({
    path: p,
    type,
    source: `${persistRoot}/${p}`,
    target: `${home}/${p}`,
    implicit,
  });
  const persist = a.persist.map((entry) =>
    typeof entry === "string"
      ? persisted(trimSlash(entry), "directory", false)
      : persisted(trimSlash(entry.path), entry.type, false),
  );
  if (!persist.some((p) => p.type === "directory" && isWithin(p.path, STATE_DIR))) {
    persist.push(persisted(STATE_DIR, "directory", true));
  }

  const repos = a.repos.map((r) => {
    const repo = typeof r === "string" ? { url: r } : r;
    return {
      url: repo.url,
      path: trimSlash(repo.path ?? `projects/${repoName(repo.url)}`),
      ...(repo.branch !== undefined && { branch: repo.branch }),
    };
  });
  const chatProject =
    a.chat.project ??
    repos
      .find((r) => r.path.startsWith("projects/"))
      ?.path.slice("projects/".length)
      .split("/")[0];
  const sshKey = a.secrets.sshKey === undefined ? undefined : secretOf(a.secrets.sshKey);
  const gpgKey = a.secrets.gpgKey === undefined ? undefined : secretOf(a.secrets.gpgKey);
  const signingFormat = a.git.signing.format ?? (sshKey ? "ssh" : gpgKey ? "openpgp" : "none");
  const signingKey =
    a.git.signing.key ??
    (signingFormat === "ssh" && sshKey ? `${home}/.ssh/id_ed25519.pub` : undefined);

  // A named secret: its own file, or a key (its name by default) in the town's sops file.
  const namedSecret = (name: string, s: { file?: string; key?: string; format?: "sops" | "age" }) =>
    secretOf({
      file: s.file ?? decl.secrets.sopsFile ?? decl.sopsFile ?? "",
      key: s.key ?? name,
      ...(s.format !== undefined && { format: s.format }),
    });
  const runtimeCommand =
    a.runtime.command ??
    (a.runtime.kind === "claude-code" ? "claude" : a.runtime.kind === "codex" ? "codex" : "");
  const [agentPane = 75, humanPane = 25] = a.portal.layout.split("/").map(Number);
  const resources = a.cloud.resources;

  return {
    name,
    uid: a.uid,
    group: name,
    gid: a.uid,
    role: a.role,
    description: a.description,
    home,
    persistRoot,
    stateDir: `${home}/${STATE_DIR}`,
    runtimeDir: `${decl.runtimeDir}/agents/${name}`,
    socket: `${decl.runtimeDir}/agents/${name}/agent.sock`,
    git: {
      name: a.git.name ?? capitalize(name),
      email: a.git.email ?? `${name}@${domain}`,
      defaultBranch: a.git.defaultBranch,
      signing: {
        format: signingFormat,
        ...(signingKey !== undefined && { key: signingKey }),
        ...(a.git.signing.publicKey !== undefined && { publicKey: a.git.signing.publicKey }),
      },
    },
    packages: [...new Set([...decl.basePackages, ...a.packages])],
    files: Object.entries(a.files)
      .map(([p, f]) => ({ path: trimSlash(p), text: f.text, mode: normalizeMode(f.mode) }))
      .sort((x, y) => compare(x.path, y.path)),
    persist,
    secrets: {
      ...(sshKey && { sshKey }),
      ...(gpgKey && { gpgKey }),
      extra: Object.entries(a.secrets.extraSecrets)
        .map(([secretName, s]) => ({
          name: secretName,
          source: namedSecret(secretName, s),
          target: trimSlash(s.target),
          mode: normalizeMode(s.mode),
        }))
        .sort(byName),
      unlockable: Object.entries(a.secrets.unlockable)
        .map(([secretName, s]) => ({
          name: secretName,
          source: namedSecret(secretName, s),
          ttl: s.ttl,
        }))
        .sort(byName),
    },
    devices: a.devices.map((d) => ({
      subsystem: d.subsystem,
      attrs: Object.entries(d.attrs).sort(([x], [y]) => compare(x, y)),
      action: d.action,
      permission: d.permission,
      ...(d.description !== undefined && { description: d.description }),
    })),
    sudo: {
      enable: a.sudo.enable,
      policy: { default: a.sudo.policy.default, rules: a.sudo.policy.rules.map((r) => ({ ...r })) },
      timeout: a.sudo.timeout ?? decl.approval.timeout,
    },
    portal: {
      enable: a.portal.enable,
      command: a.portal.command ?? runtimeCommand,
      layout: { agent: agentPane, human: humanPane },
    },
    runtime: {
      kind: a.runtime.kind,
      command: runtimeCommand,
      args: [...a.runtime.args],
      env: { ...a.runtime.env },
      extraPrompt: a.runtime.extraPrompt,
      settings: a.runtime.settings,
      timeout: a.runtime.timeout,
      maxParallel: a.runtime.maxParallel,
      ...(a.runtime.apiKey !== undefined && { apiKey: secretOf(a.runtime.apiKey) }),
      ...(a.runtime.baseUrl !== undefined && { baseUrl: a.runtime.baseUrl }),
      ...(a.runtime.model !== undefined && { model: a.runtime.model }),
      ...(a.runtime.allowedTools !== undefined && { allowedTools: [...a.runtime.allowedTools] }),
      sandbox: a.runtime.sandbox ?? "danger-full-access",
    },
    chat: {
      enable: a.chat.enable,
      ...(a.chat.matrix && {
        matrix: { userId: a.chat.matrix.userId, tokenSecret: secretOf(a.chat.matrix.tokenSecret) },
      }),
      ...(a.chat.xmpp && {
        xmpp: { jid: a.chat.xmpp.jid, passwordSecret: secretOf(a.chat.xmpp.passwordSecret) },
      }),
      rooms: [...a.chat.rooms],
      ...(chatProject !== undefined && { project: chatProject }),
      respondTo: a.chat.respondTo,
      allow: a.chat.allow ?? humans.map((h) => h.name),
    },
    repos,
    cloud: {
      enable: a.cloud.enable,
      resources,
      scaling: {
        maxResources: a.cloud.scaling.maxResources ?? resources,
        idleTimeout: a.cloud.scaling.idleTimeout,
      },
      identity: { ...a.cloud.identity },
      ...(a.cloud.egress !== undefined && { egress: [...a.cloud.egress] }),
      storage: persist.map((p) => ({ path: p.path, size: a.cloud.storage[p.path] ?? "1Gi" })),
      ...((a.cloud.image ?? decl.cloud.image) !== undefined && {
        image: a.cloud.image ?? decl.cloud.image,
      }),
    },
    hosts: [...a.hosts],
  };
}

function resolveSecret(
  ref: SecretRefInput,
  sopsFile: string | undefined,
  baseDir: string,
): ResolvedSecret {
  if (typeof ref === "string") return { format: "sops", file: sopsFile ?? "", key: ref };
  const file = ref.file === "" ? (sopsFile ?? "") : path.resolve(baseDir, ref.file);
  const format = ref.format ?? (file.endsWith(".age") ? "age" : "sops");
  return { format, file, ...(ref.key !== undefined && { key: ref.key }) };
}

/** Uid clashes, found on a declaration the schema rejected, when its shape allows. */
function rawUidProblems(raw: unknown): Problem[] {
  if (!isRecord(raw) || !isRecord(raw.agents)) return [];
  const range = isRecord(raw.uidRange) ? raw.uidRange : {};
  const min = Number.isInteger(range.min) ? (range.min as number) : 1100;
  const max = Number.isInteger(range.max) ? (range.max as number) : 1999;
  const entries = Object.entries(raw.agents).flatMap(([name, agent]) =>
    isRecord(agent) && Number.isInteger(agent.uid) ? [[name, agent.uid as number] as const] : [],
  );
  return uidProblems(entries, { min, max });
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

function lintTown(town: ResolvedTown): Problem[] {
  const warnings: Problem[] = [];
  const address = town.dashboard?.address ?? "127.0.0.1";
  if (!/^127\./.test(address) && address !== "::1") {
    warnings.push({
      path: "dashboard.address",
      message: `${address} serves the dashboard's sign-in over plain HTTP beyond this machine: put TLS in front of it, or keep 127.0.0.1`,
    });
  }
  for (const agent of town.agents) {
    if (agent.git.signing.format === "none") {
      warnings.push({
        path: formatPath(["agents", agent.name, "git", "signing"]),
        message: "commits will not be signed (set secrets.sshKey or secrets.gpgKey)",
      });
    }
    agent.repos.forEach((repo, i) => {
      if (!agent.persist.some((p) => p.type === "directory" && isWithin(p.path, repo.path))) {
        warnings.push({
          path: formatPath(["agents", agent.name, "repos", i]),
          message: `clones into "${repo.path}", which is not persisted: unpushed work there is lost at every reset`,
        });
      }
    });
    if (agent.sudo.enable && agent.sudo.policy.default === "allow") {
      warnings.push({
        path: formatPath(["agents", agent.name, "sudo", "policy", "default"]),
        message: "every unmatched command runs as root without asking a human",
      });
    }
    agent.sudo.policy.rules.forEach((rule, i) => {
      if (rule.action !== "allow") return;
      const risky = rule.argv.slice(1).filter((arg) => RISKY_OPTIONS.has(arg.split("=")[0] ?? arg));
      if (risky.length > 0)
        warnings.push({
          path: formatPath(["agents", agent.name, "sudo", "policy", "rules", i, "argv"]),
          message: `allows ${risky.join(", ")}, which make many programs run another program, reach another machine or mount a file as root: allow the exact command instead`,
        });
    });
  }
  return warnings;
}

/** Options that turn common root tools into a way to run, reach or mount anything. */
const RISKY_OPTIONS = new Set([
  "-H",
  "--host",
  "-M",
  "--machine",
  "--image",
  "--root",
  "--directory",
  "-o",
  "--options",
  "--pager",
  "--editor",
  "--exec",
  "-exec",
  "--rsh",
  "-e",
  "--command",
  "--to-command",
  "--checkpoint-action",
  "--use-compress-program",
]);

/** `host.example.org` → `host`; anything not a valid label → "localhost". */
function resolveInstall(
  declared: TownParsed["install"],
  hostPrefix: string | undefined,
  etcDir: string,
): ResolvedTown["install"] {
  const layout = installLayout(declared.prefix ?? hostPrefix ?? DEFAULT_PREFIX);
  return {
    prefix: layout.prefix,
    programDir: layout.current,
    bin: declared.bin ?? layout.bin,
    gate: declared.gate ?? layout.gate,
    shimDir: declared.shimDir ?? layout.shimDir,
    // On the root etcDir sits in: /usr/local/bin/sudo for /etc, inside the tree for a staged or test town.
    sudoWrapper:
      declared.sudoWrapper ?? path.join(path.dirname(etcDir), DEFAULT_SUDO_WRAPPER.slice(1)),
    setfacl: declared.setfacl,
  };
}

function hostLabel(hostname: string): string {
  const label = hostname.split(".")[0]?.toLowerCase() ?? "";
  return /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(label) ? label : "localhost";
}

function repoName(url: string): string {
  const last = url.replace(/\/+$/, "").split(/[/:]/).pop() ?? "repo";
  return last.replace(/\.git$/, "") || "repo";
}

const trimSlash = (p: string) => p.replace(/\/+$/, "");
const normalizeMode = (mode: string) => mode.padStart(4, "0");
const capitalize = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const byName = (a: { name: string }, b: { name: string }) => compare(a.name, b.name);

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}
