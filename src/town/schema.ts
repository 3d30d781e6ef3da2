/**
 * The town declaration: the single source of truth for every option.
 * JSON Schema (schema/town.schema.json) and the reference page
 * (docs/reference.md) are generated from this file; `npm test` fails when the
 * committed copies are stale. Defaults that depend on other values (domain,
 * email, signing format...) are filled by resolve.ts and documented here with
 * `x-default`.
 */
import { z } from "zod";
import {
  absolutePath,
  dnsName,
  email,
  fileMode,
  homeRelativePath,
  httpUrl,
  jid,
  line,
  matching,
  matrixUserId,
  packageName,
  text,
  unixName,
} from "./strings.ts";

const derived = (description: string, defaultText: string) => ({
  description,
  "x-default": defaultText,
});

/** Characters udev would treat as syntax inside a match value. */
const UDEV_VALUE_FORBIDDEN = /["%$\\\n]/;

const udevValue = () =>
  line().check((ctx) => {
    const bad = UDEV_VALUE_FORBIDDEN.exec(ctx.value);
    if (bad) {
      ctx.issues.push({
        code: "custom",
        input: ctx.value,
        message: `must not contain ${JSON.stringify(bad[0])} (it would escape the udev rule), got ${JSON.stringify(ctx.value)}`,
      });
    }
  });

const HEX4 = /^[0-9a-f]{4}$/;
const UDEV_ATTR_KEY = /^[A-Za-z0-9_]+$/;
const UDEV_ACTIONS = "add|bind|change|remove|unbind|move|online|offline";

export const SecretRefSchema = z
  .union(
    [
      line()
        .min(1)
        .meta({ description: "A key in the town's default sops file (`secrets.sopsFile`)." }),
      z.strictObject({
        file: line().min(1).meta({
          description: "Encrypted file; relative paths are taken from the declaration's folder.",
        }),
        key: line()
          .min(1)
          .optional()
          .meta({ description: "Key inside a sops file (dotted for nesting)." }),
        format: z
          .enum(["sops", "age"])
          .optional()
          .meta(
            derived("How `file` is encrypted.", '"age" when the file ends in .age, else "sops"'),
          ),
      }),
    ],
    { error: "expected a key in the town sops file, or { file, key?, format? }" },
  )
  .meta({ description: "Where an encrypted secret comes from." });

const DeviceSchema = z.strictObject({
  subsystem: matching(/^[a-z0-9_-]+$/, "a kernel subsystem such as tty or usb").meta({
    description:
      "Kernel subsystem: `tty` matches with ATTRS{} (walks up the USB tree), others with ATTR{}.",
  }),
  attrs: z
    .record(matching(UDEV_ATTR_KEY, "a sysfs attribute name (letters, digits, _)"), udevValue())
    .superRefine(
      (attrs, ctx) => {
        if (Object.keys(attrs).length === 0)
          ctx.addIssue({ code: "custom", message: "needs at least one attribute to match" });
        // sysfs prints USB ids as four lowercase hex digits; anything else never matches.
        for (const key of ["idVendor", "idProduct"]) {
          const value: unknown = attrs[key];
          if (typeof value === "string" && !HEX4.test(value)) {
            ctx.addIssue({
              code: "custom",
              path: [key],
              message: `expected 4 lowercase hex digits, got ${JSON.stringify(value)}`,
            });
          }
        }
      },
      // Run even when another attribute failed, so every problem is reported at once.
      { when: () => true },
    )
    .meta({
      description:
        'sysfs attributes to match, e.g. { idVendor = "0483", idProduct = "5740" }. udev glob patterns (* ? [ ]) are allowed.',
    }),
  action: matching(
    new RegExp(`^(${UDEV_ACTIONS})(\\|(${UDEV_ACTIONS}))*$`),
    `udev actions joined by | (${UDEV_ACTIONS})`,
  )
    .default("add|bind")
    .meta({
      description: "udev actions the rule fires on; bind catches devices that re-enumerate.",
    }),
  permission: matching(/^(r|w|x|rw|rx|wx|rwx)$/, "an ACL permission: some of r, w, x in that order")
    .default("rw")
    .meta({ description: "ACL granted to this agent alone on the device node." }),
  description: line()
    .optional()
    .meta({ description: "What the device is, for the agent's instructions." }),
});

const PersistEntrySchema = z.union(
  [
    homeRelativePath().min(1),
    z.strictObject({
      path: homeRelativePath().min(1).meta({ description: "Relative to the agent's home." }),
      type: z
        .enum(["directory", "file"])
        .default("directory")
        .meta({ description: "Bind-mount a directory or one file." }),
    }),
  ],
  { error: 'expected a path relative to the home, or { path, type = "directory" | "file" }' },
);

const PolicyRuleSchema = z.strictObject({
  action: z
    .enum(["allow", "ask", "deny"])
    .meta({ description: "What happens when the rule matches." }),
  argv: z.array(line().min(1)).min(1).meta({
    description:
      'Patterns matched element by element against the command (`*` and `?` globs); a final "**" matches any remaining arguments (in an allow rule, none that is an option: write the options an allow rule accepts).',
  }),
  runAs: unixName().optional().meta({
    description:
      "Only match when running as this user, compared by uid: every name of that uid is the same target (a rule about root covers `toor`; an allow rule without runAs approves uid 0 only).",
    "x-default": "root for an allow rule; any user for ask and deny",
  }),
  reason: line()
    .optional()
    .meta({ description: "Shown to the agent and written to the audit log." }),
});

const SudoSchema = z.strictObject({
  enable: z
    .boolean()
    .default(false)
    .meta({ description: "Let the agent ask for root through the approval gate." }),
  policy: z
    .strictObject({
      default: z
        .enum(["allow", "ask", "deny"])
        .default("ask")
        .meta({ description: "Decision when no rule matches." }),
      rules: z
        .array(PolicyRuleSchema)
        .default([])
        .meta({ description: "Ordered rules; the first match wins." }),
    })
    .prefault({}),
  timeout: z
    .int()
    .positive()
    .max(604800)
    .optional()
    .meta(
      derived(
        "Seconds to wait for a human before denying (at most a week).",
        "the town's approval.timeout",
      ),
    ),
});

const RuntimeSchema = z.strictObject({
  kind: z.enum(["claude-code", "codex", "command"]).default("claude-code").meta({
    description: "The coding-agent runtime that does the agent's work.",
  }),
  command: line()
    .min(1)
    .optional()
    .meta(
      derived('Executable to run (required for kind = "command").', '"claude" or "codex" by kind'),
    ),
  args: z.array(line()).default([]).meta({ description: "Extra arguments for the runtime." }),
  env: z
    .record(
      matching(
        /^[A-Za-z_][A-Za-z0-9_]*$/,
        "an environment variable name (letters, digits, _; no =)",
      ),
      line(),
    )
    .default({})
    .meta({ description: "Environment for the runtime (set in the agent's service)." }),
  extraPrompt: text()
    .default("")
    .meta({ description: "Appended to the agent's instructions as the Extra section." }),
  settings: z.record(z.string(), z.unknown()).default({}).meta({
    description:
      "Runtime settings merged over the ones nuketown renders: for claude-code `~/.claude/settings.json`, for codex `~/.codex/config.toml` (tables merged key by key).",
  }),
  apiKey: SecretRefSchema.optional().meta({
    description:
      "The vendor API key (Anthropic for claude-code; OpenAI, or the provider at baseUrl, for codex). Decrypted to `~/.config/nuketown/runtime-key` (0600) every round and read by the runtime through its key command: never in the manifest, a unit file or an environment.",
  }),
  baseUrl: httpUrl().optional().meta({
    description: "The vendor API's base URL (a gateway or proxy), e.g. https://llm.example/v1.",
  }),
  model: line().min(1).optional().meta({ description: "The model the runtime uses." }),
  allowedTools: z.array(line().min(1)).optional().meta({
    description:
      "claude-code only: narrow the agent to these tools (claude permission rules such as `Bash(git *)`, `Edit`, `Read`); anything else is refused, and a task whose tool calls were refused fails. Unset: every tool, inside the agent's own account.",
  }),
  sandbox: z
    .enum(["danger-full-access", "workspace-write", "read-only"])
    .optional()
    .meta(
      derived(
        "codex only: codex's own sandbox on top of the agent's account. The account is the sandbox, so the default adds none.",
        '"danger-full-access"',
      ),
    ),
  timeout: z
    .int()
    .positive()
    .max(604800)
    .default(3600)
    .meta({ description: "Seconds a task may run before it is failed (at most a week)." }),
  maxParallel: z.int().positive().max(32).default(2).meta({
    description:
      "Tasks in different projects that may run at the same time (one at a time per project).",
  }),
});

const CloudTier = z.enum(["small", "standard", "large", "gpu"]);

/** nix-snapshotter's `nix:0/nix/store/...` reference, or an OCI reference (registry/repo[:tag][@digest]). */
const cloudImage = () =>
  matching(
    /^(nix:0\/nix\/store\/[0-9a-z]{32}-[A-Za-z0-9+._?=-]+|[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?)$/,
    "a nix-snapshotter reference (nix:0/nix/store/...) or an OCI image reference",
  );

const AgentCloudSchema = z.strictObject({
  enable: z
    .boolean()
    .default(false)
    .meta({ description: "Render this agent into Kubernetes manifests." }),
  resources: CloudTier.default("standard").meta({
    description: "Resource tier: small, standard, large or gpu.",
  }),
  scaling: z
    .strictObject({
      maxResources: CloudTier.optional().meta(
        derived("Largest tier the agent may be scaled to.", "resources"),
      ),
      idleTimeout: z
        .int()
        .nonnegative()
        .default(3600)
        .meta({ description: "Seconds idle before scaling down." }),
    })
    .prefault({}),
  identity: z
    .strictObject({
      gcpServiceAccount: email()
        .optional()
        .meta({ description: "GKE workload identity: GCP service account." }),
      awsRoleArn: matching(
        /^arn:aws[a-z-]*:iam::[0-9]{12}:role\/[A-Za-z0-9+=,.@_/-]+$/,
        "an IAM role ARN",
      )
        .optional()
        .meta({ description: "EKS IRSA: IAM role ARN." }),
      azureClientId: matching(/^[0-9a-fA-F-]{36}$/, "an Azure client id (UUID)")
        .optional()
        .meta({ description: "AKS workload identity: client id." }),
      awsPodIdentity: z.boolean().default(false).meta({
        description:
          "EKS Pod Identity instead of IRSA: the role is bound by a pod identity association, not an annotation.",
      }),
    })
    .prefault({}),
  egress: z
    .array(matching(/^[0-9a-fA-F.:]+\/[0-9]{1,3}$/, "a CIDR such as 10.0.0.0/8"))
    .optional()
    .meta(
      derived(
        "Where the agent may connect (CIDRs); DNS and the cloud metadata endpoints stay allowed.",
        "anywhere",
      ),
    ),
  storage: z
    .record(homeRelativePath(), matching(/^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)$/, "a size such as 10Gi"))
    .default({})
    .meta({ description: "Volume size per persisted path.", "x-default": "1Gi each" }),
  image: cloudImage().optional().meta(derived("Container image.", "the town's cloud.image")),
});

const MatrixAccountSchema = z.strictObject({
  userId: matrixUserId().meta({ description: "Matrix user id of the account." }),
  tokenSecret: SecretRefSchema.meta({ description: "Access token of the account." }),
});

const XmppAccountSchema = z.strictObject({
  jid: jid().meta({ description: "XMPP address of the account." }),
  passwordSecret: SecretRefSchema.meta({ description: "Password of the account." }),
});

const AgentChatSchema = z.strictObject({
  enable: z.boolean().default(false).meta({ description: "Run the agent's chat presence." }),
  matrix: MatrixAccountSchema.optional().meta({ description: "The agent's Matrix account." }),
  xmpp: XmppAccountSchema.optional().meta({ description: "The agent's XMPP account." }),
  rooms: z
    .array(line().min(1))
    .default([])
    .meta({ description: "Rooms to join (Matrix ids or aliases, MUC addresses)." }),
  project: matching(
    /^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$/,
    "a project name (one directory under ~/projects)",
  )
    .optional()
    .meta(
      derived(
        "The project chat messages are worked on in (a directory under ~/projects).",
        "the first declared repo under projects/",
      ),
    ),
  respondTo: z.enum(["mentions", "all"]).default("mentions").meta({
    description: "In rooms, answer only when mentioned, or every message.",
  }),
  allow: z
    .array(unixName())
    .optional()
    .meta(
      derived(
        "Humans and agents (by name) whose messages the agent acts on.",
        "every declared human",
      ),
    ),
});

const RepoSchema = z.union(
  [
    line().min(1),
    z.strictObject({
      url: line().min(1).meta({ description: "Git remote URL." }),
      path: homeRelativePath()
        .optional()
        .meta(derived("Where to clone, relative to home.", '"projects/<repo name>"')),
      branch: line()
        .min(1)
        .optional()
        .meta({ description: "Branch to check out.", "x-default": "the remote's default" }),
    }),
  ],
  { error: "expected a git URL, or { url, path?, branch? }" },
);

const ExtraSecretSchema = z.strictObject({
  file: line().min(1).optional().meta(derived("Encrypted file.", "the town's secrets.sopsFile")),
  key: line().min(1).optional().meta(derived("Key inside a sops file.", "the entry's name")),
  format: z
    .enum(["sops", "age"])
    .optional()
    .meta(derived("How `file` is encrypted.", '"age" when the file ends in .age, else "sops"')),
  target: homeRelativePath().meta({ description: "Where the plaintext lands, relative to home." }),
  mode: fileMode().default("0600").meta({ description: "Octal mode of the plaintext file." }),
});

export const AgentSchema = z.strictObject({
  enable: z.boolean().default(true).meta({ description: "Whether this agent exists on the host." }),
  uid: z
    .int()
    .min(1)
    .max(65533)
    .meta({ description: "Unix uid (and gid of the agent's own group), inside uidRange." }),
  role: matching(/^[a-z][a-z0-9-]{0,31}$/, "a short lowercase role such as software or research")
    .default("assistant")
    .meta({ description: "Short role; names the Claude Code agent file `<name>-<role>.md`." }),
  description: text().default("").meta({ description: "The agent's self-knowledge (About you)." }),
  git: z
    .strictObject({
      name: line()
        .min(1)
        .optional()
        .meta(derived("Commit author name.", "the agent name, capitalised")),
      email: email().optional().meta(derived("Commit author email.", '"<name>@<domain>"')),
      defaultBranch: matching(/^[A-Za-z0-9._/-]+$/, "a branch name")
        .default("main")
        .meta({ description: "init.defaultBranch of new repositories." }),
      signing: z
        .strictObject({
          format: z
            .enum(["ssh", "openpgp", "none"])
            .optional()
            .meta(
              derived(
                "How commits are signed.",
                '"ssh" with secrets.sshKey, else "openpgp" with secrets.gpgKey, else "none"',
              ),
            ),
          key: line()
            .min(1)
            .optional()
            .meta(
              derived("Signing key (OpenPGP key id, or SSH public key path).", "the agent's key"),
            ),
          publicKey: line().min(1).optional().meta({
            description:
              "The SSH public key, for the allowed-signers file (else taken from the secret at apply time).",
          }),
        })
        .prefault({}),
    })
    .prefault({}),
  packages: z.array(packageName()).default([]).meta({
    description:
      "Extra packages on top of basePackages; `apply` installs the missing ones with the host's package manager.",
  }),
  files: z
    .record(
      homeRelativePath(),
      z.strictObject({
        text: text().meta({ description: "File content." }),
        mode: fileMode().default("0644").meta({ description: "Octal file mode." }),
      }),
    )
    .default({})
    .meta({ description: "Extra files placed in the home every round." }),
  persist: z.array(PersistEntrySchema).default([]).meta({
    description:
      'Paths relative to home that survive a reset (directories unless { type = "file" }).',
  }),
  secrets: z
    .strictObject({
      sshKey: SecretRefSchema.optional().meta({
        description: "SSH private key → ~/.ssh/id_ed25519.",
      }),
      gpgKey: SecretRefSchema.optional().meta({
        description: "Armored OpenPGP secret key, imported into the agent's keyring.",
      }),
      extraSecrets: z
        .record(matching(/^[A-Za-z0-9._-]+$/, "a secret name"), ExtraSecretSchema)
        .default({})
        .meta({ description: "More secrets, by name, each decrypted to a file in the home." }),
      unlockable: z
        .record(
          matching(/^[A-Za-z0-9._-]+$/, "a secret name"),
          z.strictObject({
            file: line()
              .min(1)
              .optional()
              .meta(derived("Encrypted file.", "the town's secrets.sopsFile")),
            key: line()
              .min(1)
              .optional()
              .meta(derived("Key inside a sops file.", "the entry's name")),
            format: z
              .enum(["sops", "age"])
              .optional()
              .meta(
                derived(
                  "How `file` is encrypted.",
                  '"age" when the file ends in .age, else "sops"',
                ),
              ),
            ttl: z.int().positive().max(86400).default(900).meta({
              description:
                "Seconds the plaintext stays before it is removed (or until `nuketown lock`).",
            }),
          }),
        )
        .default({})
        .meta({
          description:
            "Secrets never placed in the home: the agent asks with `nuketown unlock NAME`, a human approves, and the plaintext lands on tmpfs for `ttl` seconds.",
        }),
    })
    .prefault({}),
  devices: z
    .array(DeviceSchema)
    .default([])
    .meta({ description: "Devices granted to this agent through udev ACLs." }),
  sudo: SudoSchema.prefault({}),
  portal: z
    .strictObject({
      enable: z
        .boolean()
        .default(false)
        .meta({ description: "Offer `nuketown portal` for this agent." }),
      command: line()
        .min(1)
        .optional()
        .meta(derived("Command run in the agent's pane.", "the runtime's command")),
      layout: matching(/^[0-9]{1,2}\/[0-9]{1,2}$/, 'a split such as "75/25"')
        .default("75/25")
        .meta({ description: "Agent pane / human pane, in percent." }),
    })
    .prefault({}),
  runtime: RuntimeSchema.prefault({}),
  chat: AgentChatSchema.prefault({}),
  repos: z
    .array(RepoSchema)
    .default([])
    .meta({ description: "Git remotes cloned into the home every round." }),
  cloud: AgentCloudSchema.prefault({}),
  hosts: z.array(unixName()).default([]).meta({
    description: "Hosts (names in `hosts`) this agent lives on.",
    "x-default": "every host",
  }),
});

const HumanSchema = z.strictObject({
  unixUser: unixName().optional().meta(derived("The person's Unix account.", "the entry's name")),
  displayName: line()
    .min(1)
    .optional()
    .meta(derived("Name used in instructions and co-author trailers.", "the entry's name")),
  email: email().optional().meta({ description: "Used in co-author trailers of agents' commits." }),
  matrix: matrixUserId()
    .optional()
    .meta({ description: "The person's Matrix id: messages and approvals from it are theirs." }),
  xmpp: jid().optional().meta({ description: "The person's XMPP address." }),
  approver: z
    .boolean()
    .default(false)
    .meta({ description: "May approve agents' sudo requests and changes." }),
});

const ChangeCommandsSchema = z.array(z.array(line()).min(1)).meta({
  description:
    "Commands run in order, each an argv (never a shell). Placeholders: {host}, {attr}, {result} (the build's output link), {generation} (the recorded generation), {repo}, {commit}.",
});

const ChangeHostSchema = z.strictObject({
  kind: z.enum(["nixos", "darwin", "command"]).default("nixos").meta({
    description:
      "Which defaults the steps take: nixos (nixos-rebuild, switch-to-configuration, the system profile), darwin (darwin-rebuild), command (no defaults: declare build and switch).",
  }),
  attr: line()
    .min(1)
    .optional()
    .meta(derived("The flake attribute of the machine (`.#<attr>`).", "the entry's name")),
  build: ChangeCommandsSchema.optional().meta(
    derived(
      "Builds without switching, in a checkout of the proposal; leaves `result`.",
      "nixos: `nixos-rebuild build --flake .#{attr}`; darwin: `darwin-rebuild build --flake .#{attr}`",
    ),
  ),
  test: ChangeCommandsSchema.optional().meta(
    derived(
      "Activates the build without making it the boot default.",
      "nixos: `{result}/bin/switch-to-configuration test`; darwin: none",
    ),
  ),
  switch: ChangeCommandsSchema.optional().meta(
    derived(
      "Makes the build the system.",
      "nixos: `nix-env -p /nix/var/nix/profiles/system --set {result}` then `{result}/bin/switch-to-configuration switch`; darwin: `darwin-rebuild switch --flake .#{attr}`",
    ),
  ),
  generation: ChangeCommandsSchema.optional().meta(
    derived(
      "Prints the current generation (what rollback returns to), recorded before apply.",
      "`readlink -f /nix/var/nix/profiles/system` (darwin: `/run/current-system`)",
    ),
  ),
  rollback: ChangeCommandsSchema.optional().meta(
    derived(
      "Returns to {generation}.",
      "nixos: `nix-env -p /nix/var/nix/profiles/system --set {generation}` then `{generation}/bin/switch-to-configuration switch`; darwin: `{generation}/activate`",
    ),
  ),
  health: ChangeCommandsSchema.default([]).meta({
    description:
      "Run after the test activation, retried until they succeed within healthTimeout; a failure rolls back.",
  }),
  healthTimeout: z
    .int()
    .positive()
    .max(3600)
    .default(60)
    .meta({ description: "Seconds the health check has to succeed." }),
  current: absolutePath()
    .default("/run/current-system")
    .meta({ description: "The running system, compared with the build for the closure diff." }),
});

const ChangeRuleSchema = z.strictObject({
  risk: z.enum(["high", "low"]).meta({ description: "The risk of what the rule matches." }),
  paths: z.array(line().min(1)).default([]).meta({
    description: "Globs on the changed file's path in the repo (`machines/*/secrets/**`).",
  }),
  match: line().min(1).optional().meta({
    description:
      "A regular expression on a changed line or on the Nix option it sets (`services.openssh.enable`).",
  }),
  reason: line().min(1).meta({ description: "Shown with the change: why this risk." }),
});

const ChangeSchema = z.strictObject({
  repo: absolutePath()
    .optional()
    .meta({ description: "The git work tree of the system configuration (`/etc/nixos`)." }),
  dir: absolutePath()
    .optional()
    .meta(derived("Proposals, their logs and the change audit log.", '"<stateDir>/change"')),
  branch: line().min(1).default("main").meta({
    description: "The branch that is the applied configuration; apply moves it to the change.",
  }),
  onApply: z.enum(["merge", "tag", "none"]).default("merge").meta({
    description:
      "What apply does in the repo: fast-forward `branch` to the change (merge), tag it nuketown/change/<id> (tag), or nothing.",
  }),
  hosts: z
    .record(unixName(), ChangeHostSchema)
    .default({})
    .meta({ description: "Machines whose configuration lives in the repo." }),
  rules: z.array(ChangeRuleSchema).default([]).meta({
    description:
      "Risk rules checked before the built-in ones (users, sudo, ssh, firewall, boot, secrets, exposed services: high; packages, editor and tooling: low; anything else: high).",
  }),
  autoApprove: z.array(unixName()).default([]).meta({
    description:
      "Agents whose low-risk changes pass by policy without a human; a high-risk change always asks.",
  }),
});

export const TownSchema = z.strictObject({
  enable: z.boolean().default(true).meta({ description: "Whether nuketown manages this host." }),
  name: unixName().optional().meta(derived("The town's name.", "the host name")),
  domain: dnsName()
    .optional()
    .meta(derived("Domain of agents' email addresses.", '"<hostname>.local"')),
  agentsDir: absolutePath().default("/agents").meta({ description: "Where agent homes live." }),
  persistDir: absolutePath()
    .default("/persist")
    .meta({ description: "Where persisted data lives." }),
  stateDir: absolutePath()
    .default("/var/lib/nuketown")
    .meta({ description: "What apply manages, audit log, home image." }),
  runtimeDir: absolutePath().default("/run/nuketown").meta({ description: "Sockets." }),
  etcDir: absolutePath().default("/etc").meta({
    description:
      "Where system configuration is installed (udev rules, sudoers, units, the manifest); change only to stage or test.",
  }),
  uidRange: z
    .strictObject({
      min: z
        .int()
        .min(1000)
        .max(65533)
        .default(1100)
        .meta({ description: "Lowest uid an agent may have." }),
      max: z
        .int()
        .min(1000)
        .max(65533)
        .default(1999)
        .meta({ description: "Highest uid an agent may have." }),
    })
    .prefault({})
    .meta({ description: "Agents' uids must fall inside this range." }),
  btrfsDevice: line().optional().meta({ description: "Deprecated: use homes.device." }),
  sopsFile: line().optional().meta({ description: "Deprecated: use secrets.sopsFile." }),
  homes: z
    .strictObject({
      backend: z
        .enum(["btrfs", "image", "directory"])
        .optional()
        .meta(derived("How homes are rolled back.", '"btrfs" when device is set, else "image"')),
      device: line().min(1).optional().meta({
        description: "A btrfs block device (path or UUID=...) or an existing btrfs mount point.",
      }),
      image: z
        .strictObject({
          path: absolutePath()
            .optional()
            .meta(derived("The btrfs image file.", '"<stateDir>/homes.img"')),
          size: matching(/^[1-9][0-9]*[KMGT]$/, 'a size such as "20G"')
            .default("20G")
            .meta({ description: "Size of the image file (sparse: disk is used as homes fill)." }),
        })
        .prefault({}),
    })
    .prefault({}),
  humans: z
    .record(unixName(), HumanSchema)
    .default({})
    .meta({ description: "The mayor and other people." }),
  mayor: unixName()
    .optional()
    .meta(derived("The human agents work for.", "the first approver, else the first human")),
  basePackages: z
    .array(packageName())
    // Names that are the same in Debian, Fedora, Arch and Nix (fd is fd-find in Debian).
    .default(["git", "ripgrep", "jq", "curl", "tree"])
    .meta({
      description:
        "Packages every agent gets, named as the host's package manager names them (apt-get, dnf, pacman; on NixOS, Nix). On a host that is not NixOS, `apply` installs the missing ones.",
    }),
  projectDirs: z
    .array(line().min(1))
    .default(["~/dev"])
    .meta({ description: "Where the portal picker looks for projects." }),
  approval: z
    .strictObject({
      group: unixName().default("nuketown-approvers").meta({
        description: "Unix group of the humans who may approve; it owns the control socket.",
      }),
      timeout: z
        .int()
        .positive()
        .max(604800)
        .default(300)
        .meta({ description: "Seconds before an unanswered request is denied (at most a week)." }),
      channels: z
        .array(z.enum(["terminal", "desktop", "chat", "web"]))
        .default(["terminal", "desktop", "chat", "web"])
        .meta({ description: "Where requests are shown." }),
      askLimit: z
        .strictObject({
          requests: z.int().min(1).max(10000).default(60).meta({
            description: "Requests one agent may put to the humans within `minutes`.",
          }),
          minutes: z.int().min(1).max(1440).default(10).meta({
            description: "The window the requests are counted in.",
          }),
        })
        .prefault({})
        .meta({
          description:
            "How often one agent may ask a human. Every request that reaches a human notifies the approvers and is audited, even one its agent cancels at once; past the limit the agent's requests are denied at once (exit 17) and folded into one audit record per burst, until older ones leave the window.",
        }),
    })
    .prefault({}),
  dashboard: z
    .strictObject({
      address: matching(
        /^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$/,
        "an IPv4 or IPv6 address to listen on",
      )
        .default("127.0.0.1")
        .meta({
          description:
            "Where the dashboard listens. Anything but loopback serves the town's sign-in over plain HTTP beyond this machine: put TLS in front.",
        }),
      port: z
        .int()
        .min(1)
        .max(65535)
        .optional()
        .meta(
          derived(
            "Its port.",
            "7377, or a free one when another town's dashboard holds it (the URL is in <runtimeDir>/dashboard.json)",
          ),
        ),
    })
    .prefault({}),
  chat: z
    .strictObject({
      transport: z
        .enum(["local", "matrix", "xmpp"])
        .optional()
        .meta(
          derived(
            "Chat transport.",
            '"matrix" or "xmpp" when configured, else "local" (the dashboard)',
          ),
        ),
      matrix: z
        .strictObject({
          homeserver: matching(/^https?:\/\/[^\s"'<>]+$/, "an http(s) URL").meta({
            description: "Client-server API URL of the homeserver.",
          }),
          bot: MatrixAccountSchema.optional().meta({
            description: "The town bot that posts approval requests.",
          }),
        })
        .optional()
        .meta({ description: "The Matrix homeserver the town chats on." }),
      xmpp: z
        .strictObject({
          service: matching(
            /^(xmpps?|wss?):\/\/[^\s"'<>]+$/,
            "an xmpp://, xmpps:// or ws(s):// URL",
          ).meta({
            description: "Where to connect.",
          }),
          domain: dnsName().meta({ description: "The XMPP domain of the town's accounts." }),
          bot: XmppAccountSchema.optional().meta({
            description: "The town bot that posts approval requests.",
          }),
        })
        .optional()
        .meta({ description: "The XMPP server the town chats on." }),
      approvalRoom: line()
        .min(1)
        .optional()
        .meta(
          derived(
            "Where the town bot posts approval requests (a Matrix room id or alias, a MUC address).",
            "a direct chat with each approver",
          ),
        ),
    })
    .prefault({}),
  secrets: z
    .strictObject({
      sopsFile: line()
        .min(1)
        .optional()
        .meta({ description: "Default sops file for agents' secrets." }),
      ageKeyFile: line()
        .min(1)
        .optional()
        .meta(
          derived(
            "The host's age identity; relative paths are taken from the declaration's folder.",
            '"<stateDir>/age/keys.txt"',
          ),
        ),
    })
    .prefault({}),
  hosts: z
    .record(
      unixName(),
      z.strictObject({
        address: line()
          .min(1)
          .optional()
          .meta({ description: "How to reach the host (name or address)." }),
        description: line().optional().meta({ description: "What the host is for." }),
      }),
    )
    .default({})
    .meta({ description: "Machines of a multi-host town." }),
  cloud: z
    .strictObject({
      namespace: matching(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, "a Kubernetes namespace name")
        .default("nuketown")
        .meta({ description: "Namespace of rendered Kubernetes objects." }),
      namespaces: z.enum(["per-agent", "shared"]).default("per-agent").meta({
        description:
          'per-agent: each agent in its own namespace "<namespace>-<agent>" with its own quota; shared: all in `namespace`.',
      }),
      image: cloudImage()
        .optional()
        .meta({ description: "Default container image for cloud agents." }),
      storageClass: matching(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, "a StorageClass name")
        .optional()
        .meta(derived("StorageClass of persisted paths' volumes.", "the cluster's default")),
      secretName: matching(/^[a-z0-9]([-a-z0-9]{0,52}[a-z0-9])?$/, "a Secret name")
        .default("secrets")
        .meta({
          description:
            "Each agent's Secret (`<agent>-<secretName>`), created out of band: keys ssh-key, gpg-key, runtime-key, chat-secret and the names of extraSecrets.",
        }),
    })
    .prefault({}),
  install: z
    .strictObject({
      prefix: absolutePath().optional().meta({
        description:
          "Where nuketown is installed (`nuketown install`): `<prefix>/lib/nuketown/<version>`, `<prefix>/bin/nuketown`, the gate and shim under `<prefix>/libexec/nuketown`. Default: the prefix of the nuketown that reads the declaration when it is an installed one (`/usr` for the Debian package), else `/usr/local`.",
      }),
      bin: absolutePath()
        .optional()
        .meta({ description: "The nuketown command. Default: `<prefix>/bin/nuketown`." }),
      gate: absolutePath().optional().meta({
        description:
          "The approval gate (the only NOPASSWD command); must be root-owned. Default: `<prefix>/libexec/nuketown/sudo-gate`.",
      }),
      shimDir: absolutePath().optional().meta({
        description:
          "Holds the sudo shim put first in sudo-enabled agents' PATH. Default: `<prefix>/libexec/nuketown/shim`.",
      }),
      sudoWrapper: absolutePath().optional().meta({
        description:
          "A `sudo` early on every user's default PATH, installed by `apply` only while the town has sudo-enabled agents: it sends those agents (by uid) to the approval gate, so `sudo` reaches a human even where the shim is not on their PATH (`runuser -u agent -- sudo …`, a caller's PATH), and runs `/usr/bin/sudo` unchanged for everyone else. A file there that nuketown did not install is a conflict. Default: `/usr/local/bin/sudo` (`usr/local/bin/sudo` beside the directory that holds `etcDir`).",
      }),
      setfacl: absolutePath()
        .default("/usr/bin/setfacl")
        .meta({ description: "setfacl, run by udev rules." }),
    })
    .prefault({})
    .meta({ description: "Where nuketown's programs are installed (set by packaging)." }),
  change: ChangeSchema.prefault({}).meta({
    description: "Change control of a system configuration repo (docs/change.md).",
  }),
  agents: z.record(unixName(), AgentSchema).default({}).meta({ description: "The residents." }),
});

export type TownInput = z.input<typeof TownSchema>;
export type TownParsed = z.output<typeof TownSchema>;
export type AgentParsed = z.output<typeof AgentSchema>;
export type SecretRefInput = z.output<typeof SecretRefSchema>;
