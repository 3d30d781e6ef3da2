# Generated from src/town/schema.ts by `npm run generate`. Do not edit by hand.
# The options under `nuketown`: names, defaults and descriptions are the TOML keys'
# (docs/reference.md); nix/module.nix adds the NixOS-only ones under `nuketown.nixos`.
{ lib }:
let
  inherit (lib) mkOption types literalMD;
in
{
  enable = lib.mkEnableOption "nuketown: the town declared in nuketown.*";
  name = mkOption {
    type = types.nullOr types.str;
    default = null;
    defaultText = literalMD "the host name";
    description = "The town's name.";
  };
  domain = mkOption {
    type = types.nullOr types.str;
    default = null;
    defaultText = literalMD "\"<hostname>.local\"";
    description = "Domain of agents' email addresses.";
  };
  agentsDir = mkOption {
    type = types.str;
    default = "/agents";
    description = "Where agent homes live.";
  };
  persistDir = mkOption {
    type = types.str;
    default = "/persist";
    description = "Where persisted data lives.";
  };
  stateDir = mkOption {
    type = types.str;
    default = "/var/lib/nuketown";
    description = "What apply manages, audit log, home image.";
  };
  runtimeDir = mkOption {
    type = types.str;
    default = "/run/nuketown";
    description = "Sockets.";
  };
  etcDir = mkOption {
    type = types.str;
    default = "/etc";
    description = "Where system configuration is installed (udev rules, sudoers, units, the manifest); change only to stage or test.";
  };
  uidRange = mkOption {
    type = types.submodule {
      options = {
        min = mkOption {
          type = types.ints.between 1000 65533;
          default = 1100;
          description = "Lowest uid an agent may have.";
        };
        max = mkOption {
          type = types.ints.between 1000 65533;
          default = 1999;
          description = "Highest uid an agent may have.";
        };
      };
    };
    default = { };
    description = "Agents' uids must fall inside this range.";
  };
  btrfsDevice = mkOption {
    type = types.nullOr types.str;
    default = null;
    description = "Deprecated: use homes.device.";
  };
  sopsFile = mkOption {
    type = types.nullOr types.str;
    default = null;
    description = "Deprecated: use secrets.sopsFile.";
  };
  homes = mkOption {
    type = types.submodule {
      options = {
        backend = mkOption {
          type = types.nullOr (types.enum [ "btrfs" "image" "directory" ]);
          default = null;
          defaultText = literalMD "\"btrfs\" when device is set, else \"image\"";
          description = "How homes are rolled back.";
        };
        device = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "A btrfs block device (path or UUID=...) or an existing btrfs mount point.";
        };
        image = mkOption {
          type = types.submodule {
            options = {
              path = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "\"<stateDir>/homes.img\"";
                description = "The btrfs image file.";
              };
              size = mkOption {
                type = types.str;
                default = "20G";
                description = "Size of the image file (sparse: disk is used as homes fill).";
              };
            };
          };
          default = { };
        };
      };
    };
    default = { };
  };
  humans = mkOption {
    type = types.attrsOf (types.submodule {
      options = {
        unixUser = mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = literalMD "the entry's name";
          description = "The person's Unix account.";
        };
        displayName = mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = literalMD "the entry's name";
          description = "Name used in instructions and co-author trailers.";
        };
        email = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Used in co-author trailers of agents' commits.";
        };
        matrix = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The person's Matrix id: messages and approvals from it are theirs.";
        };
        xmpp = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The person's XMPP address.";
        };
        approver = mkOption {
          type = types.bool;
          default = false;
          description = "May approve agents' sudo requests and changes.";
        };
      };
    });
    default = { };
    description = "The mayor and other people.";
  };
  mayor = mkOption {
    type = types.nullOr types.str;
    default = null;
    defaultText = literalMD "the first approver, else the first human";
    description = "The human agents work for.";
  };
  basePackages = mkOption {
    type = types.listOf types.str;
    default = [ "git" "ripgrep" "jq" "curl" "tree" ];
    description = "Packages every agent gets, named as the host's package manager names them (apt-get, dnf, pacman; on NixOS, Nix). On a host that is not NixOS, `apply` installs the missing ones.";
  };
  projectDirs = mkOption {
    type = types.listOf types.str;
    default = [ "~/dev" ];
    description = "Where the portal picker looks for projects.";
  };
  approval = mkOption {
    type = types.submodule {
      options = {
        group = mkOption {
          type = types.str;
          default = "nuketown-approvers";
          description = "Unix group of the humans who may approve; it owns the control socket.";
        };
        timeout = mkOption {
          type = types.ints.between 1 604800;
          default = 300;
          description = "Seconds before an unanswered request is denied (at most a week).";
        };
        channels = mkOption {
          type = types.listOf (types.enum [ "terminal" "desktop" "chat" "web" ]);
          default = [ "terminal" "desktop" "chat" "web" ];
          description = "Where requests are shown.";
        };
        askLimit = mkOption {
          type = types.submodule {
            options = {
              requests = mkOption {
                type = types.ints.between 1 10000;
                default = 60;
                description = "Requests one agent may put to the humans within `minutes`.";
              };
              minutes = mkOption {
                type = types.ints.between 1 1440;
                default = 10;
                description = "The window the requests are counted in.";
              };
            };
          };
          default = { };
          description = "How often one agent may ask a human. Every request that reaches a human notifies the approvers and is audited, even one its agent cancels at once; past the limit the agent's requests are denied at once (exit 17) and folded into one audit record per burst, until older ones leave the window.";
        };
      };
    };
    default = { };
  };
  dashboard = mkOption {
    type = types.submodule {
      options = {
        address = mkOption {
          type = types.str;
          default = "127.0.0.1";
          description = "Where the dashboard listens. Anything but loopback serves the town's sign-in over plain HTTP beyond this machine: put TLS in front.";
        };
        port = mkOption {
          type = types.nullOr (types.ints.between 1 65535);
          default = null;
          defaultText = literalMD "7377, or a free one when another town's dashboard holds it (the URL is in <runtimeDir>/dashboard.json)";
          description = "Its port.";
        };
      };
    };
    default = { };
  };
  chat = mkOption {
    type = types.submodule {
      options = {
        transport = mkOption {
          type = types.nullOr (types.enum [ "local" "matrix" "xmpp" ]);
          default = null;
          defaultText = literalMD "\"matrix\" or \"xmpp\" when configured, else \"local\" (the dashboard)";
          description = "Chat transport.";
        };
        matrix = mkOption {
          type = types.nullOr (types.submodule {
            options = {
              homeserver = mkOption {
                type = types.str;
                description = "Client-server API URL of the homeserver.";
              };
              bot = mkOption {
                type = types.nullOr (types.submodule {
                  options = {
                    userId = mkOption {
                      type = types.str;
                      description = "Matrix user id of the account.";
                    };
                    tokenSecret = mkOption {
                      type = types.either types.str (types.submodule {
                        options = {
                          file = mkOption {
                            type = types.str;
                            description = "Encrypted file; relative paths are taken from the declaration's folder.";
                          };
                          key = mkOption {
                            type = types.nullOr types.str;
                            default = null;
                            description = "Key inside a sops file (dotted for nesting).";
                          };
                          format = mkOption {
                            type = types.nullOr (types.enum [ "sops" "age" ]);
                            default = null;
                            defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                            description = "How `file` is encrypted.";
                          };
                        };
                      });
                      description = "Access token of the account.";
                    };
                  };
                });
                default = null;
                description = "The town bot that posts approval requests.";
              };
            };
          });
          default = null;
          description = "The Matrix homeserver the town chats on.";
        };
        xmpp = mkOption {
          type = types.nullOr (types.submodule {
            options = {
              service = mkOption {
                type = types.str;
                description = "Where to connect.";
              };
              domain = mkOption {
                type = types.str;
                description = "The XMPP domain of the town's accounts.";
              };
              bot = mkOption {
                type = types.nullOr (types.submodule {
                  options = {
                    jid = mkOption {
                      type = types.str;
                      description = "XMPP address of the account.";
                    };
                    passwordSecret = mkOption {
                      type = types.either types.str (types.submodule {
                        options = {
                          file = mkOption {
                            type = types.str;
                            description = "Encrypted file; relative paths are taken from the declaration's folder.";
                          };
                          key = mkOption {
                            type = types.nullOr types.str;
                            default = null;
                            description = "Key inside a sops file (dotted for nesting).";
                          };
                          format = mkOption {
                            type = types.nullOr (types.enum [ "sops" "age" ]);
                            default = null;
                            defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                            description = "How `file` is encrypted.";
                          };
                        };
                      });
                      description = "Password of the account.";
                    };
                  };
                });
                default = null;
                description = "The town bot that posts approval requests.";
              };
            };
          });
          default = null;
          description = "The XMPP server the town chats on.";
        };
        approvalRoom = mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = literalMD "a direct chat with each approver";
          description = "Where the town bot posts approval requests (a Matrix room id or alias, a MUC address).";
        };
      };
    };
    default = { };
  };
  secrets = mkOption {
    type = types.submodule {
      options = {
        sopsFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Default sops file for agents' secrets.";
        };
        ageKeyFile = mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = literalMD "\"<stateDir>/age/keys.txt\"";
          description = "The host's age identity; relative paths are taken from the declaration's folder.";
        };
      };
    };
    default = { };
  };
  hosts = mkOption {
    type = types.attrsOf (types.submodule {
      options = {
        address = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "How to reach the host (name or address).";
        };
        description = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "What the host is for.";
        };
      };
    });
    default = { };
    description = "Machines of a multi-host town.";
  };
  cloud = mkOption {
    type = types.submodule {
      options = {
        namespace = mkOption {
          type = types.str;
          default = "nuketown";
          description = "Namespace of rendered Kubernetes objects.";
        };
        namespaces = mkOption {
          type = types.enum [ "per-agent" "shared" ];
          default = "per-agent";
          description = "per-agent: each agent in its own namespace \"<namespace>-<agent>\" with its own quota; shared: all in `namespace`.";
        };
        image = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Default container image for cloud agents.";
        };
        storageClass = mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = literalMD "the cluster's default";
          description = "StorageClass of persisted paths' volumes.";
        };
        secretName = mkOption {
          type = types.str;
          default = "secrets";
          description = "Each agent's Secret (`<agent>-<secretName>`), created out of band: keys ssh-key, gpg-key, runtime-key, chat-secret and the names of extraSecrets.";
        };
      };
    };
    default = { };
  };
  install = mkOption {
    type = types.submodule {
      options = {
        prefix = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Where nuketown is installed (`nuketown install`): `<prefix>/lib/nuketown/<version>`, `<prefix>/bin/nuketown`, the gate and shim under `<prefix>/libexec/nuketown`. Default: the prefix of the nuketown that reads the declaration when it is an installed one (`/usr` for the Debian package), else `/usr/local`.";
        };
        bin = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The nuketown command. Default: `<prefix>/bin/nuketown`.";
        };
        gate = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The approval gate (the only NOPASSWD command); must be root-owned. Default: `<prefix>/libexec/nuketown/sudo-gate`.";
        };
        shimDir = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Holds the sudo shim put first in sudo-enabled agents' PATH. Default: `<prefix>/libexec/nuketown/shim`.";
        };
        sudoWrapper = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "A `sudo` early on every user's default PATH, installed by `apply` only while the town has sudo-enabled agents: it sends those agents (by uid) to the approval gate, so `sudo` reaches a human even where the shim is not on their PATH (`runuser -u agent -- sudo …`, a caller's PATH), and runs `/usr/bin/sudo` unchanged for everyone else. A file there that nuketown did not install is a conflict. Default: `/usr/local/bin/sudo` (`usr/local/bin/sudo` beside the directory that holds `etcDir`).";
        };
        setfacl = mkOption {
          type = types.str;
          default = "/usr/bin/setfacl";
          description = "setfacl, run by udev rules.";
        };
      };
    };
    default = { };
    description = "Where nuketown's programs are installed (set by packaging).";
  };
  change = mkOption {
    type = types.submodule {
      options = {
        repo = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The git work tree of the system configuration (`/etc/nixos`).";
        };
        dir = mkOption {
          type = types.nullOr types.str;
          default = null;
          defaultText = literalMD "\"<stateDir>/change\"";
          description = "Proposals, their logs and the change audit log.";
        };
        branch = mkOption {
          type = types.str;
          default = "main";
          description = "The branch that is the applied configuration; apply moves it to the change.";
        };
        onApply = mkOption {
          type = types.enum [ "merge" "tag" "none" ];
          default = "merge";
          description = "What apply does in the repo: fast-forward `branch` to the change (merge), tag it nuketown/change/<id> (tag), or nothing.";
        };
        hosts = mkOption {
          type = types.attrsOf (types.submodule {
            options = {
              kind = mkOption {
                type = types.enum [ "nixos" "darwin" "command" ];
                default = "nixos";
                description = "Which defaults the steps take: nixos (nixos-rebuild, switch-to-configuration, the system profile), darwin (darwin-rebuild), command (no defaults: declare build and switch).";
              };
              attr = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "the entry's name";
                description = "The flake attribute of the machine (`.#<attr>`).";
              };
              build = mkOption {
                type = types.nullOr (types.listOf (types.listOf types.str));
                default = null;
                defaultText = literalMD "nixos: `nixos-rebuild build --flake .#{attr}`; darwin: `darwin-rebuild build --flake .#{attr}`";
                description = "Builds without switching, in a checkout of the proposal; leaves `result`.";
              };
              test = mkOption {
                type = types.nullOr (types.listOf (types.listOf types.str));
                default = null;
                defaultText = literalMD "nixos: `{result}/bin/switch-to-configuration test`; darwin: none";
                description = "Activates the build without making it the boot default.";
              };
              switch = mkOption {
                type = types.nullOr (types.listOf (types.listOf types.str));
                default = null;
                defaultText = literalMD "nixos: `nix-env -p /nix/var/nix/profiles/system --set {result}` then `{result}/bin/switch-to-configuration switch`; darwin: `darwin-rebuild switch --flake .#{attr}`";
                description = "Makes the build the system.";
              };
              generation = mkOption {
                type = types.nullOr (types.listOf (types.listOf types.str));
                default = null;
                defaultText = literalMD "`readlink -f /nix/var/nix/profiles/system` (darwin: `/run/current-system`)";
                description = "Prints the current generation (what rollback returns to), recorded before apply.";
              };
              rollback = mkOption {
                type = types.nullOr (types.listOf (types.listOf types.str));
                default = null;
                defaultText = literalMD "nixos: `nix-env -p /nix/var/nix/profiles/system --set {generation}` then `{generation}/bin/switch-to-configuration switch`; darwin: `{generation}/activate`";
                description = "Returns to {generation}.";
              };
              health = mkOption {
                type = types.listOf (types.listOf types.str);
                default = [ ];
                description = "Run after the test activation, retried until they succeed within healthTimeout; a failure rolls back.";
              };
              healthTimeout = mkOption {
                type = types.ints.between 1 3600;
                default = 60;
                description = "Seconds the health check has to succeed.";
              };
              current = mkOption {
                type = types.str;
                default = "/run/current-system";
                description = "The running system, compared with the build for the closure diff.";
              };
            };
          });
          default = { };
          description = "Machines whose configuration lives in the repo.";
        };
        rules = mkOption {
          type = types.listOf (types.submodule {
            options = {
              risk = mkOption {
                type = types.enum [ "high" "low" ];
                description = "The risk of what the rule matches.";
              };
              paths = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Globs on the changed file's path in the repo (`machines/*/secrets/**`).";
              };
              match = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "A regular expression on a changed line or on the Nix option it sets (`services.openssh.enable`).";
              };
              reason = mkOption {
                type = types.str;
                description = "Shown with the change: why this risk.";
              };
            };
          });
          default = [ ];
          description = "Risk rules checked before the built-in ones (users, sudo, ssh, firewall, boot, secrets, exposed services: high; packages, editor and tooling: low; anything else: high).";
        };
        autoApprove = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Agents whose low-risk changes pass by policy without a human; a high-risk change always asks.";
        };
      };
    };
    default = { };
    description = "Change control of a system configuration repo (docs/change.md).";
  };
  agents = mkOption {
    type = types.attrsOf (types.submodule {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = "Whether this agent exists on the host.";
        };
        uid = mkOption {
          type = types.ints.between 1 65533;
          description = "Unix uid (and gid of the agent's own group), inside uidRange.";
        };
        role = mkOption {
          type = types.str;
          default = "assistant";
          description = "Short role; names the Claude Code agent file `<name>-<role>.md`.";
        };
        description = mkOption {
          type = types.str;
          default = "";
          description = "The agent's self-knowledge (About you).";
        };
        git = mkOption {
          type = types.submodule {
            options = {
              name = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "the agent name, capitalised";
                description = "Commit author name.";
              };
              email = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "\"<name>@<domain>\"";
                description = "Commit author email.";
              };
              defaultBranch = mkOption {
                type = types.str;
                default = "main";
                description = "init.defaultBranch of new repositories.";
              };
              signing = mkOption {
                type = types.submodule {
                  options = {
                    format = mkOption {
                      type = types.nullOr (types.enum [ "ssh" "openpgp" "none" ]);
                      default = null;
                      defaultText = literalMD "\"ssh\" with secrets.sshKey, else \"openpgp\" with secrets.gpgKey, else \"none\"";
                      description = "How commits are signed.";
                    };
                    key = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      defaultText = literalMD "the agent's key";
                      description = "Signing key (OpenPGP key id, or SSH public key path).";
                    };
                    publicKey = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "The SSH public key, for the allowed-signers file (else taken from the secret at apply time).";
                    };
                  };
                };
                default = { };
              };
            };
          };
          default = { };
        };
        packages = mkOption {
          type = types.listOf types.str;
          default = [ ];
          description = "Extra packages on top of basePackages; `apply` installs the missing ones with the host's package manager.";
        };
        files = mkOption {
          type = types.attrsOf (types.submodule {
            options = {
              text = mkOption {
                type = types.str;
                description = "File content.";
              };
              mode = mkOption {
                type = types.str;
                default = "0644";
                description = "Octal file mode.";
              };
            };
          });
          default = { };
          description = "Extra files placed in the home every round.";
        };
        persist = mkOption {
          type = types.listOf (types.coercedTo types.str (path: { inherit path; }) (types.submodule {
            options = {
              path = mkOption {
                type = types.str;
                description = "Relative to the agent's home.";
              };
              type = mkOption {
                type = types.enum [ "directory" "file" ];
                default = "directory";
                description = "Bind-mount a directory or one file.";
              };
            };
          }));
          default = [ ];
          description = "Paths relative to home that survive a reset (directories unless { type = \"file\" }).";
        };
        secrets = mkOption {
          type = types.submodule {
            options = {
              sshKey = mkOption {
                type = types.nullOr (types.either types.str (types.submodule {
                  options = {
                    file = mkOption {
                      type = types.str;
                      description = "Encrypted file; relative paths are taken from the declaration's folder.";
                    };
                    key = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "Key inside a sops file (dotted for nesting).";
                    };
                    format = mkOption {
                      type = types.nullOr (types.enum [ "sops" "age" ]);
                      default = null;
                      defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                      description = "How `file` is encrypted.";
                    };
                  };
                }));
                default = null;
                description = "SSH private key → ~/.ssh/id_ed25519.";
              };
              gpgKey = mkOption {
                type = types.nullOr (types.either types.str (types.submodule {
                  options = {
                    file = mkOption {
                      type = types.str;
                      description = "Encrypted file; relative paths are taken from the declaration's folder.";
                    };
                    key = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "Key inside a sops file (dotted for nesting).";
                    };
                    format = mkOption {
                      type = types.nullOr (types.enum [ "sops" "age" ]);
                      default = null;
                      defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                      description = "How `file` is encrypted.";
                    };
                  };
                }));
                default = null;
                description = "Armored OpenPGP secret key, imported into the agent's keyring.";
              };
              extraSecrets = mkOption {
                type = types.attrsOf (types.submodule {
                  options = {
                    file = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      defaultText = literalMD "the town's secrets.sopsFile";
                      description = "Encrypted file.";
                    };
                    key = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      defaultText = literalMD "the entry's name";
                      description = "Key inside a sops file.";
                    };
                    format = mkOption {
                      type = types.nullOr (types.enum [ "sops" "age" ]);
                      default = null;
                      defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                      description = "How `file` is encrypted.";
                    };
                    target = mkOption {
                      type = types.str;
                      description = "Where the plaintext lands, relative to home.";
                    };
                    mode = mkOption {
                      type = types.str;
                      default = "0600";
                      description = "Octal mode of the plaintext file.";
                    };
                  };
                });
                default = { };
                description = "More secrets, by name, each decrypted to a file in the home.";
              };
              unlockable = mkOption {
                type = types.attrsOf (types.submodule {
                  options = {
                    file = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      defaultText = literalMD "the town's secrets.sopsFile";
                      description = "Encrypted file.";
                    };
                    key = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      defaultText = literalMD "the entry's name";
                      description = "Key inside a sops file.";
                    };
                    format = mkOption {
                      type = types.nullOr (types.enum [ "sops" "age" ]);
                      default = null;
                      defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                      description = "How `file` is encrypted.";
                    };
                    ttl = mkOption {
                      type = types.ints.between 1 86400;
                      default = 900;
                      description = "Seconds the plaintext stays before it is removed (or until `nuketown lock`).";
                    };
                  };
                });
                default = { };
                description = "Secrets never placed in the home: the agent asks with `nuketown unlock NAME`, a human approves, and the plaintext lands on tmpfs for `ttl` seconds.";
              };
            };
          };
          default = { };
        };
        devices = mkOption {
          type = types.listOf (types.submodule {
            options = {
              subsystem = mkOption {
                type = types.str;
                description = "Kernel subsystem: `tty` matches with ATTRS{} (walks up the USB tree), others with ATTR{}.";
              };
              attrs = mkOption {
                type = types.attrsOf types.str;
                description = "sysfs attributes to match, e.g. { idVendor = \"0483\", idProduct = \"5740\" }. udev glob patterns (* ? [ ]) are allowed.";
              };
              action = mkOption {
                type = types.str;
                default = "add|bind";
                description = "udev actions the rule fires on; bind catches devices that re-enumerate.";
              };
              permission = mkOption {
                type = types.str;
                default = "rw";
                description = "ACL granted to this agent alone on the device node.";
              };
              description = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "What the device is, for the agent's instructions.";
              };
            };
          });
          default = [ ];
          description = "Devices granted to this agent through udev ACLs.";
        };
        sudo = mkOption {
          type = types.submodule {
            options = {
              enable = mkOption {
                type = types.bool;
                default = false;
                description = "Let the agent ask for root through the approval gate.";
              };
              policy = mkOption {
                type = types.submodule {
                  options = {
                    default = mkOption {
                      type = types.enum [ "allow" "ask" "deny" ];
                      default = "ask";
                      description = "Decision when no rule matches.";
                    };
                    rules = mkOption {
                      type = types.listOf (types.submodule {
                        options = {
                          action = mkOption {
                            type = types.enum [ "allow" "ask" "deny" ];
                            description = "What happens when the rule matches.";
                          };
                          argv = mkOption {
                            type = types.listOf types.str;
                            description = "Patterns matched element by element against the command (`*` and `?` globs); a final \"**\" matches any remaining arguments (in an allow rule, none that is an option: write the options an allow rule accepts).";
                          };
                          runAs = mkOption {
                            type = types.nullOr types.str;
                            default = null;
                            defaultText = literalMD "root for an allow rule; any user for ask and deny";
                            description = "Only match when running as this user, compared by uid: every name of that uid is the same target (a rule about root covers `toor`; an allow rule without runAs approves uid 0 only).";
                          };
                          reason = mkOption {
                            type = types.nullOr types.str;
                            default = null;
                            description = "Shown to the agent and written to the audit log.";
                          };
                        };
                      });
                      default = [ ];
                      description = "Ordered rules; the first match wins.";
                    };
                  };
                };
                default = { };
              };
              timeout = mkOption {
                type = types.nullOr (types.ints.between 1 604800);
                default = null;
                defaultText = literalMD "the town's approval.timeout";
                description = "Seconds to wait for a human before denying (at most a week).";
              };
            };
          };
          default = { };
        };
        portal = mkOption {
          type = types.submodule {
            options = {
              enable = mkOption {
                type = types.bool;
                default = false;
                description = "Offer `nuketown portal` for this agent.";
              };
              command = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "the runtime's command";
                description = "Command run in the agent's pane.";
              };
              layout = mkOption {
                type = types.str;
                default = "75/25";
                description = "Agent pane / human pane, in percent.";
              };
            };
          };
          default = { };
        };
        runtime = mkOption {
          type = types.submodule {
            options = {
              kind = mkOption {
                type = types.enum [ "claude-code" "codex" "command" ];
                default = "claude-code";
                description = "The coding-agent runtime that does the agent's work.";
              };
              command = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "\"claude\" or \"codex\" by kind";
                description = "Executable to run (required for kind = \"command\").";
              };
              args = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Extra arguments for the runtime.";
              };
              env = mkOption {
                type = types.attrsOf types.str;
                default = { };
                description = "Environment for the runtime (set in the agent's service).";
              };
              extraPrompt = mkOption {
                type = types.str;
                default = "";
                description = "Appended to the agent's instructions as the Extra section.";
              };
              settings = mkOption {
                type = types.attrsOf types.anything;
                default = { };
                description = "Runtime settings merged over the ones nuketown renders: for claude-code `~/.claude/settings.json`, for codex `~/.codex/config.toml` (tables merged key by key).";
              };
              apiKey = mkOption {
                type = types.nullOr (types.either types.str (types.submodule {
                  options = {
                    file = mkOption {
                      type = types.str;
                      description = "Encrypted file; relative paths are taken from the declaration's folder.";
                    };
                    key = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "Key inside a sops file (dotted for nesting).";
                    };
                    format = mkOption {
                      type = types.nullOr (types.enum [ "sops" "age" ]);
                      default = null;
                      defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                      description = "How `file` is encrypted.";
                    };
                  };
                }));
                default = null;
                description = "The vendor API key (Anthropic for claude-code; OpenAI, or the provider at baseUrl, for codex). Decrypted to `~/.config/nuketown/runtime-key` (0600) every round and read by the runtime through its key command: never in the manifest, a unit file or an environment.";
              };
              baseUrl = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "The vendor API's base URL (a gateway or proxy), e.g. https://llm.example/v1.";
              };
              model = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "The model the runtime uses.";
              };
              allowedTools = mkOption {
                type = types.nullOr (types.listOf types.str);
                default = null;
                description = "claude-code only: narrow the agent to these tools (claude permission rules such as `Bash(git *)`, `Edit`, `Read`); anything else is refused, and a task whose tool calls were refused fails. Unset: every tool, inside the agent's own account.";
              };
              sandbox = mkOption {
                type = types.nullOr (types.enum [ "danger-full-access" "workspace-write" "read-only" ]);
                default = null;
                defaultText = literalMD "\"danger-full-access\"";
                description = "codex only: codex's own sandbox on top of the agent's account. The account is the sandbox, so the default adds none.";
              };
              timeout = mkOption {
                type = types.ints.between 1 604800;
                default = 3600;
                description = "Seconds a task may run before it is failed (at most a week).";
              };
              maxParallel = mkOption {
                type = types.ints.between 1 32;
                default = 2;
                description = "Tasks in different projects that may run at the same time (one at a time per project).";
              };
            };
          };
          default = { };
        };
        chat = mkOption {
          type = types.submodule {
            options = {
              enable = mkOption {
                type = types.bool;
                default = false;
                description = "Run the agent's chat presence.";
              };
              matrix = mkOption {
                type = types.nullOr (types.submodule {
                  options = {
                    userId = mkOption {
                      type = types.str;
                      description = "Matrix user id of the account.";
                    };
                    tokenSecret = mkOption {
                      type = types.either types.str (types.submodule {
                        options = {
                          file = mkOption {
                            type = types.str;
                            description = "Encrypted file; relative paths are taken from the declaration's folder.";
                          };
                          key = mkOption {
                            type = types.nullOr types.str;
                            default = null;
                            description = "Key inside a sops file (dotted for nesting).";
                          };
                          format = mkOption {
                            type = types.nullOr (types.enum [ "sops" "age" ]);
                            default = null;
                            defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                            description = "How `file` is encrypted.";
                          };
                        };
                      });
                      description = "Access token of the account.";
                    };
                  };
                });
                default = null;
                description = "The agent's Matrix account.";
              };
              xmpp = mkOption {
                type = types.nullOr (types.submodule {
                  options = {
                    jid = mkOption {
                      type = types.str;
                      description = "XMPP address of the account.";
                    };
                    passwordSecret = mkOption {
                      type = types.either types.str (types.submodule {
                        options = {
                          file = mkOption {
                            type = types.str;
                            description = "Encrypted file; relative paths are taken from the declaration's folder.";
                          };
                          key = mkOption {
                            type = types.nullOr types.str;
                            default = null;
                            description = "Key inside a sops file (dotted for nesting).";
                          };
                          format = mkOption {
                            type = types.nullOr (types.enum [ "sops" "age" ]);
                            default = null;
                            defaultText = literalMD "\"age\" when the file ends in .age, else \"sops\"";
                            description = "How `file` is encrypted.";
                          };
                        };
                      });
                      description = "Password of the account.";
                    };
                  };
                });
                default = null;
                description = "The agent's XMPP account.";
              };
              rooms = mkOption {
                type = types.listOf types.str;
                default = [ ];
                description = "Rooms to join (Matrix ids or aliases, MUC addresses).";
              };
              project = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "the first declared repo under projects/";
                description = "The project chat messages are worked on in (a directory under ~/projects).";
              };
              respondTo = mkOption {
                type = types.enum [ "mentions" "all" ];
                default = "mentions";
                description = "In rooms, answer only when mentioned, or every message.";
              };
              allow = mkOption {
                type = types.nullOr (types.listOf types.str);
                default = null;
                defaultText = literalMD "every declared human";
                description = "Humans and agents (by name) whose messages the agent acts on.";
              };
            };
          };
          default = { };
        };
        repos = mkOption {
          type = types.listOf (types.coercedTo types.str (url: { inherit url; }) (types.submodule {
            options = {
              url = mkOption {
                type = types.str;
                description = "Git remote URL.";
              };
              path = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "\"projects/<repo name>\"";
                description = "Where to clone, relative to home.";
              };
              branch = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "the remote's default";
                description = "Branch to check out.";
              };
            };
          }));
          default = [ ];
          description = "Git remotes cloned into the home every round.";
        };
        cloud = mkOption {
          type = types.submodule {
            options = {
              enable = mkOption {
                type = types.bool;
                default = false;
                description = "Render this agent into Kubernetes manifests.";
              };
              resources = mkOption {
                type = types.enum [ "small" "standard" "large" "gpu" ];
                default = "standard";
                description = "Resource tier: small, standard, large or gpu.";
              };
              scaling = mkOption {
                type = types.submodule {
                  options = {
                    maxResources = mkOption {
                      type = types.nullOr (types.enum [ "small" "standard" "large" "gpu" ]);
                      default = null;
                      defaultText = literalMD "resources";
                      description = "Largest tier the agent may be scaled to.";
                    };
                    idleTimeout = mkOption {
                      type = types.ints.unsigned;
                      default = 3600;
                      description = "Seconds idle before scaling down.";
                    };
                  };
                };
                default = { };
              };
              identity = mkOption {
                type = types.submodule {
                  options = {
                    gcpServiceAccount = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "GKE workload identity: GCP service account.";
                    };
                    awsRoleArn = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "EKS IRSA: IAM role ARN.";
                    };
                    azureClientId = mkOption {
                      type = types.nullOr types.str;
                      default = null;
                      description = "AKS workload identity: client id.";
                    };
                    awsPodIdentity = mkOption {
                      type = types.bool;
                      default = false;
                      description = "EKS Pod Identity instead of IRSA: the role is bound by a pod identity association, not an annotation.";
                    };
                  };
                };
                default = { };
              };
              egress = mkOption {
                type = types.nullOr (types.listOf types.str);
                default = null;
                defaultText = literalMD "anywhere";
                description = "Where the agent may connect (CIDRs); DNS and the cloud metadata endpoints stay allowed.";
              };
              storage = mkOption {
                type = types.attrsOf types.str;
                default = { };
                defaultText = literalMD "1Gi each";
                description = "Volume size per persisted path.";
              };
              image = mkOption {
                type = types.nullOr types.str;
                default = null;
                defaultText = literalMD "the town's cloud.image";
                description = "Container image.";
              };
            };
          };
          default = { };
        };
        hosts = mkOption {
          type = types.listOf types.str;
          default = [ ];
          defaultText = literalMD "every host";
          description = "Hosts (names in `hosts`) this agent lives on.";
        };
      };
    });
    default = { };
    description = "The residents.";
  };
}
