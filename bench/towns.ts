/**
 * Large, valid town declarations for benchmarks and tests. Deterministic: the
 * same `n` always gives the same town, so timings compare across runs.
 */

const NAMES = ["ada", "vox", "kit", "rex", "liv", "oto", "zed", "ivy", "max", "pia"];
const ROLES = ["software", "research", "ops", "writer", "assistant"];
const TIERS = ["small", "standard", "large", "gpu"] as const;
const HOSTS = ["signi", "nimbus", "rack-1"];
const HUMANS = ["josh", "mara", "theo"];

// Leaves room for one uid per agent below the schema's ceiling of 65533.
const UID_BASE = 20000;

/**
 * A town of `n` agents exercising most of the schema: devices, persisted paths,
 * sudo with policy rules, repos, chat over Matrix, cloud settings, extra files
 * and secrets, several hosts. Every agent differs from its neighbours.
 */
export function generateTown(n: number): Record<string, unknown> {
  if (!Number.isInteger(n) || n < 1 || UID_BASE + n - 1 > 65533) {
    throw new RangeError(
      `agent count must be an integer from 1 to ${65533 - UID_BASE + 1}, got ${n}`,
    );
  }
  const agents: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) agents[agentName(i)] = generateAgent(i, n);
  return {
    name: "bigtown",
    domain: "bigtown.example.org",
    uidRange: { min: UID_BASE, max: UID_BASE + n - 1 },
    homes: { backend: "image", image: { size: "200G" } },
    secrets: { sopsFile: "secrets/agents.yaml" },
    humans: Object.fromEntries(
      HUMANS.map((h, i) => [
        h,
        {
          displayName: h.charAt(0).toUpperCase() + h.slice(1),
          email: `${h}@bigtown.example.org`,
          matrix: `@${h}:bigtown.example.org`,
          approver: i < 2,
        },
      ]),
    ),
    mayor: "josh",
    chat: {
      matrix: {
        homeserver: "https://matrix.bigtown.example.org",
        bot: { userId: "@town:bigtown.example.org", tokenSecret: "town/matrix-token" },
      },
    },
    hosts: Object.fromEntries(HOSTS.map((h) => [h, { address: `${h}.bigtown.example.org` }])),
    cloud: { namespace: "bigtown", image: "ghcr.io/example/nuketown-agent:1" },
    agents,
  };
}

function agentName(i: number): string {
  return `${NAMES[i % NAMES.length]}-${String(i).padStart(5, "0")}`;
}

function generateAgent(i: number, n: number): Record<string, unknown> {
  const name = agentName(i);
  const persist: unknown[] = ["projects", ".config/claude"];
  if (i % 3 === 0) persist.push({ path: ".bash_history", type: "file" });
  if (i % 4 === 0) persist.push(`data/set-${i % 7}`);

  const agent: Record<string, unknown> = {
    uid: UID_BASE + i,
    role: ROLES[i % ROLES.length],
    description: `Agent number ${i}.\nWorks on project ${i % 17} and reports to the mayor.`,
    packages: ["gcc", "make", `tool-${i % 13}`],
    persist,
    // Alternate SSH and OpenPGP signing, with both secret-reference forms.
    secrets:
      i % 2 === 0
        ? {
            sshKey: `${name}/ssh-key`,
            extraSecrets: { "api-token": { target: ".config/api/token", mode: "0400" } },
          }
        : { gpgKey: { file: `keys/${name}.age` } },
    files: { [`.config/notes/${name}.md`]: { text: `# ${name}\n` } },
    repos: [
      `https://git.example.org/bigtown/project-${i % 17}.git`,
      { url: `git@git.example.org:bigtown/${name}-scratch.git`, path: "scratch", branch: "main" },
    ],
    runtime:
      i % 5 === 4
        ? {
            kind: "command",
            command: "/usr/bin/aider",
            args: ["--yes"],
            env: { AIDER_MODEL: "local" },
          }
        : {
            kind: i % 2 === 0 ? "claude-code" : "codex",
            extraPrompt: `Focus on project ${i % 17}.`,
          },
    hosts: [HOSTS[i % HOSTS.length]],
  };

  if (i % 2 === 0) {
    agent.devices = [
      {
        subsystem: "tty",
        attrs: { idVendor: "0483", idProduct: (0x5740 + (i % 16)).toString(16) },
        description: "STM32 serial",
      },
      {
        subsystem: "usb",
        attrs: { product: "STM32  BOOTLOADER" },
        action: "add|bind|change",
        permission: "rw",
      },
    ];
  }
  if (i % 3 !== 2) {
    agent.sudo = {
      enable: true,
      policy: {
        default: i % 2 === 0 ? "ask" : "deny",
        rules: [
          { action: "allow", argv: ["systemctl", "status", "**"] },
          { action: "allow", argv: ["journalctl", "-u", `${name}*`, "**"], reason: "own logs" },
          { action: "deny", argv: ["rm", "-rf", "/"], reason: "never" },
          { action: "ask", argv: ["apt-get", "install", "**"], runAs: "root" },
        ],
      },
      ...(i % 6 === 0 && { timeout: 120 }),
    };
  }
  if (i % 5 !== 1) {
    agent.chat = {
      enable: true,
      matrix: {
        userId: `@${name}:bigtown.example.org`,
        tokenSecret: { file: "secrets/chat.yaml", key: name },
      },
      rooms: ["#general:bigtown.example.org", `#project-${i % 17}:bigtown.example.org`],
      respondTo: i % 2 === 0 ? "mentions" : "all",
      allow: ["josh", "mara", agentName((i + 1) % n)],
    };
  }
  // A pod has no host devices, no sudo and persists directories only (cloud rules).
  if (!agent.devices && !agent.sudo && i % 3 !== 0) {
    const tier = i % TIERS.length;
    agent.cloud = {
      enable: true,
      resources: TIERS[tier],
      scaling: { maxResources: TIERS[Math.min(tier + 1, TIERS.length - 1)], idleTimeout: 600 + i },
      identity: { gcpServiceAccount: `${name}@bigtown.iam.gserviceaccount.com` },
      storage: { projects: "20Gi", ".config/claude": "1Gi" },
    };
  }
  if (i % 7 === 0) agent.portal = { enable: true, layout: i % 2 === 0 ? "75/25" : "60/40" };
  return agent;
}
