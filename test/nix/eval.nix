# Evaluates nix/module.nix with a town, the real nixpkgs library and the
# stand-ins beside this file, and returns what the tests compare: the options
# the module set, plain (no derivations), and the manifest derivation.
#
#   nix-instantiate --eval --strict --json test/nix/eval.nix -A result \
#     --arg nixpkgsLib ../shared/nixpkgs-lib --arg root ./. --arg town test/nix/town.nix
{
  nixpkgsLib,
  root,
  town,
  # Passed to the town file: where its secrets are (absolute, as resolution makes them).
  examples ? "${toString root}/examples",
  hostName ? "signi",
}:
let
  lib = import (nixpkgsLib + "/lib");
  townModule = import town { inherit examples; };
  packageNames = [
    "age"
    "btrfs-progs"
    "claude-code"
    "codex"
    "curl"
    "dfu-util"
    "diffutils"
    "findutils"
    "gcc-arm-embedded"
    "gcc-arm-none-eabi"
    "git"
    "gnupg"
    "gnutar"
    "jq"
    "nix"
    "nixos-rebuild"
    "openssh"
    "perl"
    "ripgrep"
    "sops"
    "stm32flash"
    "tree"
    "util-linux"
    "zenity"
  ];
  pkgs = import ./stand-in-pkgs.nix {
    inherit lib packageNames;
    root = toString root;
  };
  evaluated = lib.evalModules {
    modules = [
      ./nixos-stand-ins.nix
      (root + "/nix/module.nix")
      townModule
      {
        networking.hostName = hostName;
        _module.args.pkgs = pkgs;
      }
    ];
  };
  inherit (evaluated) config;
  unit = s: {
    inherit (s)
      description
      after
      before
      wants
      wantedBy
      partOf
      environment
      restartIfChanged
      serviceConfig
      ;
    path = map (p: p.name) s.path;
  };
in
{
  result = {
    failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
    users = lib.mapAttrs (_: u: {
      inherit (u)
        uid
        group
        home
        isNormalUser
        createHome
        linger
        ;
      packages = map (p: p.name) u.packages;
    }) config.users.users;
    groups = lib.mapAttrs (_: g: { inherit (g) gid members; }) config.users.groups;
    udev = config.services.udev.extraRules;
    sudo = {
      rules = config.security.sudo.extraRules;
      inherit (config.security.sudo) extraConfig;
    };
    services = lib.mapAttrs (_: unit) config.systemd.services;
    tmpfiles = config.systemd.tmpfiles.rules;
    fileSystems = config.fileSystems;
    etc = lib.attrNames config.environment.etc;
    extraInit = config.environment.extraInit;
    declaration = config.nuketown.nixos.declaration;
    # What `nix eval --json .#nixosConfigurations.<host>.config.nuketown` prints.
    nuketown = config.nuketown;
  };
  manifest = config.nuketown.nixos.manifest;
}
