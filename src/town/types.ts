/**
 * The resolved town: every default filled, every derived path computed,
 * validated, frozen. Everything downstream of `loadTown` takes this, never the
 * raw declaration.
 */

export type CloudTier = "small" | "standard" | "large" | "gpu";
export type PolicyAction = "allow" | "ask" | "deny";

export interface ResolvedSecret {
  readonly format: "sops" | "age";
  /** Absolute path of the encrypted file. */
  readonly file: string;
  /** Key inside a sops file; absent for a whole-file age secret. */
  readonly key?: string;
}

export interface ResolvedHuman {
  readonly name: string;
  readonly unixUser: string;
  readonly displayName: string;
  readonly email?: string;
  readonly matrix?: string;
  readonly xmpp?: string;
  readonly approver: boolean;
}

export interface PersistedPath {
  /** Relative to the home, without a trailing slash. */
  readonly path: string;
  readonly type: "directory" | "file";
  /** `<persistDir>/agents/<name>/<path>`: where the data really lives. */
  readonly source: string;
  /** `<home>/<path>`: where it is bind-mounted. */
  readonly target: string;
  /** Added by nuketown itself (the agent's state dir), not declared. */
  readonly implicit: boolean;
}

export interface ResolvedDevice {
  readonly subsystem: string;
  /** Sorted by attribute name. */
  readonly attrs: readonly (readonly [string, string])[];
  readonly action: string;
  readonly permission: string;
  readonly description?: string;
}

export interface PolicyRule {
  readonly action: PolicyAction;
  readonly argv: readonly string[];
  readonly runAs?: string;
  readonly reason?: string;
}

export interface ResolvedAgent {
  readonly name: string;
  readonly uid: number;
  /** Each agent has its own group, gid = uid. */
  readonly group: string;
  readonly gid: number;
  readonly role: string;
  readonly description: string;
  readonly home: string;
  /** `<persistDir>/agents/<name>`. */
  readonly persistRoot: string;
  /** `<home>/.local/state/nuketown`: chat sync tokens, sessions, history (persisted). */
  readonly stateDir: string;
  /** `<runtimeDir>/agents/<name>`: the agent's own (0711), holds its daemon's socket. */
  readonly runtimeDir: string;
  /** `<runtimeDir>/agents/<name>/agent.sock`: the agent daemon's API (owner + the mayor, by ACL). */
  readonly socket: string;
  readonly git: {
    readonly name: string;
    readonly email: string;
    readonly defaultBranch: string;
    readonly signing: {
      readonly format: "ssh" | "openpgp" | "none";
      /** OpenPGP key id, or path of the SSH public key. */
      readonly key?: string;
      readonly publicKey?: string;
    };
  };
  /** basePackages then the agent's own, without duplicates. */
  readonly packages: readonly string[];
  readonly files: readonly {
    readonly path: string;
    readonly text: string;
    readonly mode: string;
  }[];
  readonly persist: readonly PersistedPath[];
  readonly secrets: {
    readonly sshKey?: ResolvedSecret;
    readonly gpgKey?: ResolvedSecret;
    readonly extra: readonly {
      readonly name: string;
      readonly source: ResolvedSecret;
      /** Relative to the home. */
      readonly target: string;
      readonly mode: string;
    }[];
    /** Decrypted only on `nuketown unlock`, after a human's yes, onto tmpfs for `ttl` seconds. */
    readonly unlockable: readonly {
      readonly name: string;
      readonly source: ResolvedSecret;
      readonly ttl: number;
    }[];
  };
  readonly devices: readonly ResolvedDevice[];
  readonly sudo: {
    readonly enable: boolean;
    readonly policy: { readonly default: PolicyAction; readonly rules: readonly PolicyRule[] };
    readonly timeout: number;
  };
  readonly portal: {
    readonly enable: boolean;
    readonly command: string;
    readonly layout: { readonly agent: number; readonly human: number };
  };
  readonly runtime: {
    readonly kind: "claude-code" | "codex" | "command";
    readonly command: string;
    readonly args: readonly string[];
    readonly env: Readonly<Record<string, string>>;
    readonly extraPrompt: string;
    readonly settings: Readonly<Record<string, unknown>>;
    readonly timeout: number;
    readonly maxParallel: number;
    /** The vendor key, decrypted to `~/.config/nuketown/runtime-key` every round. */
    readonly apiKey?: ResolvedSecret;
    readonly baseUrl?: string;
    readonly model?: string;
    /** claude-code: only these tools run (dontAsk mode); undefined: every tool. */
    readonly allowedTools?: readonly string[];
    /** codex's own sandbox mode. */
    readonly sandbox: "danger-full-access" | "workspace-write" | "read-only";
  };
  readonly chat: {
    readonly enable: boolean;
    readonly matrix?: { readonly userId: string; readonly tokenSecret: ResolvedSecret };
    readonly xmpp?: { readonly jid: string; readonly passwordSecret: ResolvedSecret };
    readonly rooms: readonly string[];
    /** Where chat messages are worked on; undefined when the agent declares no project. */
    readonly project?: string;
    readonly respondTo: "mentions" | "all";
    readonly allow: readonly string[];
  };
  readonly repos: readonly {
    readonly url: string;
    readonly path: string;
    readonly branch?: string;
  }[];
  readonly cloud: {
    readonly enable: boolean;
    readonly resources: CloudTier;
    readonly scaling: { readonly maxResources: CloudTier; readonly idleTimeout: number };
    readonly identity: {
      readonly gcpServiceAccount?: string;
      readonly awsRoleArn?: string;
      readonly azureClientId?: string;
      readonly awsPodIdentity: boolean;
    };
    /** Allowed egress CIDRs; undefined: anywhere. */
    readonly egress?: readonly string[];
    /** One entry per persisted path. */
    readonly storage: readonly { readonly path: string; readonly size: string }[];
    readonly image?: string;
  };
  /** Empty means every host of the town. */
  readonly hosts: readonly string[];
}

/**
 * What another system makes on this host instead of nuketown (NixOS: the
 * packages, the accounts, the manifest, sudoers and the gate, the udev rules
 * and the units). nuketown still owns homes, persisted paths, rounds, secrets
 * and the ACLs of devices already plugged in.
 */
export type ManagedLayer =
  | "packages"
  | "accounts"
  | "manifest"
  | "sudoers"
  | "udev-rules"
  | "units";
export const NIXOS_LAYERS: readonly ManagedLayer[] = [
  "packages",
  "accounts",
  "manifest",
  "sudoers",
  "udev-rules",
  "units",
];

export interface ResolvedChangeHost {
  readonly name: string;
  readonly kind: "nixos" | "darwin" | "command";
  readonly attr: string;
  /** Each step: commands in order, each an argv with {placeholders}. */
  readonly build: readonly (readonly string[])[];
  readonly test: readonly (readonly string[])[];
  readonly switch: readonly (readonly string[])[];
  readonly generation: readonly (readonly string[])[];
  readonly rollback: readonly (readonly string[])[];
  readonly health: readonly (readonly string[])[];
  readonly healthTimeout: number;
  readonly current: string;
}

export interface ResolvedChange {
  readonly repo?: string;
  readonly dir: string;
  readonly branch: string;
  readonly onApply: "merge" | "tag" | "none";
  /** Sorted by name. */
  readonly hosts: readonly ResolvedChangeHost[];
  readonly rules: readonly {
    readonly risk: "high" | "low";
    readonly paths: readonly string[];
    readonly match?: string;
    readonly reason: string;
  }[];
  readonly autoApprove: readonly string[];
}

export interface ResolvedTown {
  /** Set in a manifest written for another system (`check --managed-by nixos`). */
  readonly managed?: { readonly by: "nixos"; readonly layers: readonly ManagedLayer[] };
  readonly name: string;
  readonly domain: string;
  readonly agentsDir: string;
  readonly persistDir: string;
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly uidRange: { readonly min: number; readonly max: number };
  readonly homes: {
    readonly backend: "btrfs" | "image" | "directory";
    readonly device?: string;
    readonly image: { readonly path: string; readonly size: string };
  };
  /** Sorted by name. */
  readonly humans: readonly ResolvedHuman[];
  readonly mayor?: ResolvedHuman;
  readonly basePackages: readonly string[];
  readonly projectDirs: readonly string[];
  /**
   * Where `nuketown dashboard` listens; without a port, 7377 or a free one.
   * Absent in a manifest an older nuketown wrote: loopback then.
   */
  readonly dashboard?: { readonly address: string; readonly port?: number };
  readonly approval: {
    readonly timeout: number;
    readonly channels: readonly ("terminal" | "desktop" | "chat" | "web")[];
    /** Unix group of the humans who may approve; owns the control socket. */
    readonly approversGroup: string;
    /**
     * Requests one agent may put to the humans within `minutes`. Absent in a
     * manifest an older nuketown wrote: the schema's default then.
     */
    readonly askLimit?: { readonly requests: number; readonly minutes: number };
  };
  readonly chat: {
    readonly transport: "local" | "matrix" | "xmpp";
    readonly matrix?: {
      readonly homeserver: string;
      readonly bot?: { readonly userId: string; readonly tokenSecret: ResolvedSecret };
    };
    readonly xmpp?: {
      readonly service: string;
      readonly domain: string;
      readonly bot?: { readonly jid: string; readonly passwordSecret: ResolvedSecret };
    };
    /** Where the town bot posts approval requests; undefined: a direct chat with each approver. */
    readonly approvalRoom?: string;
  };
  readonly secrets: { readonly sopsFile?: string; readonly ageKeyFile: string };
  readonly hosts: readonly {
    readonly name: string;
    readonly address?: string;
    readonly description?: string;
  }[];
  readonly cloud: {
    readonly namespace: string;
    readonly namespaces: "per-agent" | "shared";
    readonly image?: string;
    readonly storageClass?: string;
    readonly secretName: string;
  };
  readonly install: {
    /** Everything below is derived from it unless declared (see src/install/layout.ts). */
    readonly prefix: string;
    /** The `current` link of the installed versions: what the gate, shim and writer run. */
    readonly programDir: string;
    readonly bin: string;
    readonly gate: string;
    readonly shimDir: string;
    /** `sudo` early on the default PATH: agents to the gate, everyone else to the real sudo. */
    readonly sudoWrapper: string;
    readonly setfacl: string;
  };
  /** Well-known files and sockets, all derived from the dirs above. */
  readonly paths: {
    readonly manifest: string;
    readonly udevRules: string;
    readonly sudoers: string;
    /** Puts the sudo shim first on the PATH of sudo-enabled agents' login sessions. */
    readonly profile: string;
    readonly unitDir: string;
    readonly auditLog: string;
    readonly modeFile: string;
    readonly requestSocket: string;
    readonly controlSocket: string;
    /** tmpfs where unlocked secrets land, one 0700 directory per agent. */
    readonly unlockedSecrets: string;
  };
  /** Change control of the system configuration repo. */
  readonly change: ResolvedChange;
  /** Enabled agents, sorted by name. */
  readonly agents: readonly ResolvedAgent[];
  /** Declared with enable = false: not on the host, but their uids stay reserved. */
  readonly disabledAgents: readonly string[];
}
