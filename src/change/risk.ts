/**
 * The risk of a change to a system configuration, from its diff: every
 * changed line is judged by the Nix option it sets (tracked through nested
 * attribute sets and lists, so `enable = true;` inside
 * `services.openssh = { … }` is `services.openssh.enable`) and by its text.
 * Users and groups, sudo and security, ssh, firewall and networking, boot and
 * the kernel, secrets, services exposed to the network, flake inputs and the
 * cloud folder are high; packages and editor/tooling configuration are low; a
 * line nothing recognises is high. Declared rules are checked first and may
 * say otherwise. Pure: the diff is computed here from both versions of each
 * file, which the caller reads from git.
 */
import { diffLines } from "diff";
import { fnmatch } from "../glob.ts";

export type Risk = "high" | "low";

export interface RiskRule {
  readonly risk: Risk;
  /** Globs on the file's path in the repo; `*` spans `/`. */
  readonly paths: readonly string[];
  /** A regular expression on the changed line or the option it sets. */
  readonly match?: string;
  readonly reason: string;
}

export interface ChangedFile {
  readonly path: string;
  /** Absent: the file is new. */
  readonly before?: string;
  /** Absent: the file was removed. */
  readonly after?: string;
  /** Not text: judged by its path only. */
  readonly binary?: boolean;
}

export interface Finding {
  readonly file: string;
  /** 1-based, in the version the line is from (after for added lines, before for removed). */
  readonly line?: number;
  readonly change: "+" | "-" | "file";
  readonly text: string;
  readonly option?: string;
  readonly risk: Risk;
  readonly reason: string;
  /** Which rule decided: a declared one (its index), a built-in one, or none matched. */
  readonly rule:
    | { readonly kind: "declared"; readonly index: number }
    | { readonly kind: "builtin" | "unknown" };
}

export interface Assessment {
  readonly risk: Risk;
  readonly findings: readonly Finding[];
  /** The Nix options the change sets or removes, sorted. */
  readonly options: readonly string[];
  readonly files: readonly {
    readonly path: string;
    readonly added: number;
    readonly removed: number;
  }[];
  /** `git diff --stat`-like, one line per file and a total. */
  readonly diffstat: string;
}

const UNKNOWN_REASON = "not recognised as low risk";

/**
 * The built-in rules; declared rules come first. Order within a risk does not
 * matter. Here paths and match are alternatives (a declared rule with both
 * needs both): each is split in two below.
 */
const BUILTIN: readonly RiskRule[] = [
  {
    risk: "high",
    paths: [],
    match:
      "(^|\\.)users\\.(users|groups|extraUsers|extraGroups|mutableUsers)\\b|extraGroups|hashedPassword|initialPassword|isNormalUser|isSystemUser|knownUsers|knownGroups",
    reason: "users and groups",
  },
  {
    risk: "high",
    paths: ["security/*", "*/security/*"],
    match:
      "(^|\\.)security\\.|\\bsudo|doas|polkit|\\bwheel\\b|(^|\\.)pam\\.|setuid|capabilit|AmbientCapabilities",
    reason: "sudo and security",
  },
  {
    risk: "high",
    paths: [],
    match: "openssh|sshd|authorizedKeys|programs\\.ssh\\b|knownHosts",
    reason: "ssh",
  },
  {
    risk: "high",
    paths: [],
    match:
      "(^|\\.)networking\\.|firewall|allowedTCPPorts|allowedUDPPorts|allowedTCPPortRanges|wireguard|tailscale|nftables|iptables|(^|\\.)nat\\.",
    reason: "firewall and networking",
  },
  {
    risk: "high",
    paths: [],
    match:
      "(^|\\.)boot\\.|kernel|initrd|(^|\\.)fileSystems\\b|swapDevices|(^|\\.)hardware\\.|(^|\\.)environment\\.persistence|system\\.stateVersion",
    reason: "boot, kernel and storage",
  },
  {
    risk: "high",
    paths: ["*/secrets/*", "secrets/*", "*.age", ".sops.yaml", "*/.sops.yaml"],
    match:
      "(^|\\.)sops\\.|(^|\\.)age\\.|(^|\\.)secrets\\.|password|passwordFile|token|privateKey|apiKey|credentials",
    reason: "secrets",
  },
  {
    risk: "high",
    paths: [],
    match:
      "openFirewall|listenAddress|0\\.0\\.0\\.0|services\\.(nginx|caddy|httpd|traefik|haproxy|soft-serve)\\b|virtualHosts|proxyPass|streamConfig|(^|\\.)ports?\\b",
    reason: "services exposed to the network",
  },
  {
    risk: "high",
    paths: ["flake.lock"],
    match: "(^|\\.)inputs\\.|\\.url\\s*=",
    reason: "flake inputs (everything built from them changes)",
  },
  {
    risk: "high",
    paths: ["cloud/*", "*.tf", "*.tfvars", "*.tfvars.json"],
    reason: "cloud infrastructure",
  },
  {
    risk: "low",
    paths: ["programs/*", "machines/*/programs/*"],
    match:
      "(^|\\.)(environment\\.systemPackages|home\\.packages|fonts\\.packages|programs\\.(neovim|vim|helix|emacs|vscode|git|zsh|bash|fish|tmux|starship|direnv|fzf|bat|eza|zoxide|atuin|lazygit|gh|alacritty|kitty|wezterm|foot|htop|btop|less|man|nix-index|ripgrep|jq|yazi))\\b",
    reason: "packages and editor/tooling configuration",
  },
];

export const BUILTIN_RULES: readonly RiskRule[] = BUILTIN.flatMap((rule) =>
  rule.paths.length > 0 && rule.match !== undefined
    ? [
        { risk: rule.risk, paths: rule.paths, reason: rule.reason },
        { risk: rule.risk, paths: [], match: rule.match, reason: rule.reason },
      ]
    : [rule],
);

/** Judge a change: each changed line by declared rules first, then the built-in ones. */
export function assessChange(
  files: readonly ChangedFile[],
  declared: readonly RiskRule[] = [],
): Assessment {
  const compiledDeclared = declared.map(compile);
  const compiledBuiltin = BUILTIN_RULES.map(compile);
  const findings: Finding[] = [];
  const options = new Set<string>();
  const stats: { path: string; added: number; removed: number }[] = [];

  for (const file of [...files].sort((a, b) => (a.path < b.path ? -1 : 1))) {
    const judge = (change: Finding["change"], text: string, line?: number, option?: string) => {
      const subjects = [text, ...(option ? [option] : [])];
      const own = compiledDeclared.findIndex((r) => r.matches(file.path, subjects));
      if (own !== -1) {
        const rule = declared[own] as RiskRule;
        findings.push({
          file: file.path,
          ...(line !== undefined && { line }),
          change,
          text,
          ...(option && { option }),
          risk: rule.risk,
          reason: rule.reason,
          rule: { kind: "declared", index: own },
        });
        return;
      }
      const matched = BUILTIN_RULES.filter((_, i) =>
        compiledBuiltin[i]?.matches(file.path, subjects),
      );
      const rule = matched.find((r) => r.risk === "high") ?? matched[0];
      findings.push({
        file: file.path,
        ...(line !== undefined && { line }),
        change,
        text,
        ...(option && { option }),
        risk: rule?.risk ?? "high",
        reason: rule?.reason ?? UNKNOWN_REASON,
        rule: { kind: rule ? "builtin" : "unknown" },
      });
    };

    if (file.binary || (file.before === undefined && file.after === undefined)) {
      stats.push({ path: file.path, added: 0, removed: 0 });
      judge("file", file.before === undefined ? "new file" : "changed file");
      continue;
    }
    const isNix = file.path.endsWith(".nix");
    const beforeOptions = isNix ? optionsByLine(file.before ?? "") : [];
    const afterOptions = isNix ? optionsByLine(file.after ?? "") : [];
    let beforeLine = 0;
    let afterLine = 0;
    let added = 0;
    let removed = 0;
    let judgedLines = 0;
    for (const part of diffLines(file.before ?? "", file.after ?? "")) {
      const lines = splitLines(part.value);
      if (!part.added && !part.removed) {
        beforeLine += lines.length;
        afterLine += lines.length;
        continue;
      }
      for (const text of lines) {
        const line = part.added ? ++afterLine : ++beforeLine;
        if (part.added) added++;
        else removed++;
        const option = (part.added ? afterOptions : beforeOptions)[line - 1];
        if (option) options.add(option);
        if (isStructural(text, isNix)) continue;
        judgedLines++;
        judge(part.added ? "+" : "-", text.trim(), line, option);
      }
    }
    stats.push({ path: file.path, added, removed });
    // A rename or a change of nothing but braces is still a change: its path decides.
    if (judgedLines === 0) judge("file", file.after === undefined ? "removed file" : "layout only");
  }

  const risk: Risk = findings.some((f) => f.risk === "high") ? "high" : "low";
  return {
    risk,
    findings,
    options: [...options].sort(),
    files: stats,
    diffstat: formatDiffstat(stats),
  };
}

/** The most telling reasons of an assessment, high first, one line each. */
export function summarizeRisk(assessment: Assessment, max = 6): string[] {
  const seen = new Map<string, { risk: Risk; where: string[] }>();
  for (const f of [...assessment.findings].sort((a, b) =>
    a.risk === b.risk ? 0 : a.risk === "high" ? -1 : 1,
  )) {
    const key = `${f.risk}: ${f.reason}`;
    const entry = seen.get(key) ?? { risk: f.risk, where: [] };
    const where = f.option ?? `${f.file}${f.line !== undefined ? `:${f.line}` : ""}`;
    if (!entry.where.includes(where)) entry.where.push(where);
    seen.set(key, entry);
  }
  return [...seen.entries()]
    .slice(0, max)
    .map(
      ([key, { where }]) =>
        `${key} (${where.slice(0, 3).join(", ")}${where.length > 3 ? `, +${where.length - 3}` : ""})`,
    );
}

export function formatDiffstat(
  stats: readonly { readonly path: string; readonly added: number; readonly removed: number }[],
): string {
  const lines = stats.map((s) => `${s.path} | +${s.added} -${s.removed}`);
  const added = stats.reduce((n, s) => n + s.added, 0);
  const removed = stats.reduce((n, s) => n + s.removed, 0);
  lines.push(`${stats.length} file${stats.length === 1 ? "" : "s"} changed, +${added} -${removed}`);
  return lines.join("\n");
}

function compile(rule: RiskRule) {
  const regex = rule.match === undefined ? undefined : new RegExp(rule.match);
  return {
    matches(file: string, subjects: readonly string[]): boolean {
      const pathOk = rule.paths.length === 0 || rule.paths.some((glob) => fnmatch(glob, file));
      // A rule with paths only judges every line of its files; with match only, lines anywhere.
      if (!pathOk) return false;
      if (regex === undefined) return rule.paths.length > 0;
      return subjects.some((s) => regex.test(s));
    },
  };
}

function splitLines(value: string): string[] {
  const lines = value.split("\n");
  if (lines.at(-1) === "") lines.pop();
  return lines;
}

/** Blank lines, comments and lone brackets say nothing by themselves. */
function isStructural(text: string, isNix: boolean): boolean {
  const t = text.trim();
  if (t === "") return true;
  if (isNix && t.startsWith("#")) return true;
  return /^[{}[\]();,]*$/.test(t);
}

const ATTR = /^\s*((?:[A-Za-z_][\w'-]*|"[^"]*")(?:\.(?:[A-Za-z_][\w'-]*|"[^"]*"))*)\s*=(?!=)/;

/**
 * For each line of a Nix file, the option path it is in or sets: names of
 * the attribute sets and lists it is nested in, and the attribute it assigns.
 * A heuristic (no evaluation): function headers and `let` bindings show up as
 * names too, strings and comments are skipped when counting brackets.
 */
export function optionsByLine(source: string): (string | undefined)[] {
  const stack: string[] = [];
  const result: (string | undefined)[] = [];
  for (const raw of source.split("\n")) {
    const code = stripStringsAndComments(raw);
    const attr = ATTR.exec(raw)?.[1]?.replaceAll('"', "");
    const prefix = stack.filter((name) => name !== "");
    const option = attr ? [...prefix, attr].join(".") : prefix.join(".") || undefined;
    result.push(option);
    let named = false;
    for (const c of code) {
      if (c === "{" || c === "[") {
        // The first bracket a line opens belongs to the attribute it assigns.
        stack.push(attr && !named ? attr : "");
        named = true;
      } else if (c === "}" || c === "]") stack.pop();
    }
  }
  return result;
}

function stripStringsAndComments(line: string): string {
  let out = "";
  let inString = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === "#") break;
    if (c === '"') {
      inString = true;
      out += '""';
      continue;
    }
    out += c;
  }
  return out;
}
