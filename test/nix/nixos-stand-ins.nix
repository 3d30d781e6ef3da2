# Stand-ins for the NixOS options nix/module.nix sets, typed like NixOS's own
# (nixos/modules/config/users-groups.nix, services/hardware/udev.nix,
# security/sudo.nix, system/boot/systemd.nix, tasks/filesystems.nix,
# system/etc/etc.nix, misc/assertions.nix), so the module is evaluated with the
# real module system of ../shared/nixpkgs-lib without all of nixpkgs. A value
# of the wrong type, or an option the module sets that NixOS lacks, fails here
# as it would on NixOS. Test data only: not a NixOS.
{ lib, ... }:
let
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  unitOptions = {
    description = opt types.str "";
    after = opt (types.listOf types.str) [ ];
    before = opt (types.listOf types.str) [ ];
    wants = opt (types.listOf types.str) [ ];
    requires = opt (types.listOf types.str) [ ];
    wantedBy = opt (types.listOf types.str) [ ];
    partOf = opt (types.listOf types.str) [ ];
    path = opt (types.listOf (types.either types.package types.str)) [ ];
    environment = opt (types.attrsOf (types.nullOr types.str)) { };
    serviceConfig = opt (types.attrsOf (
      types.oneOf [
        types.bool
        types.int
        types.str
        (types.listOf types.str)
      ]
    )) { };
    unitConfig = opt (types.attrsOf types.anything) { };
    restartTriggers = opt (types.listOf types.unspecified) [ ];
    restartIfChanged = opt types.bool true;
    script = opt types.lines "";
  };
in
{
  options = {
    networking.hostName = opt types.str "nixos";
    assertions = opt (types.listOf (
      types.submodule {
        options.assertion = mkOption { type = types.bool; };
        options.message = mkOption { type = types.str; };
      }
    )) [ ];
    warnings = opt (types.listOf types.str) [ ];
    users.users = opt (types.attrsOf (
      types.submodule {
        options = {
          uid = opt (types.nullOr types.int) null;
          group = opt types.str "";
          isNormalUser = opt types.bool false;
          isSystemUser = opt types.bool false;
          home = opt types.path "/var/empty";
          createHome = opt types.bool false;
          description = opt types.str "";
          packages = opt (types.listOf types.package) [ ];
          linger = opt (types.nullOr types.bool) null;
          extraGroups = opt (types.listOf types.str) [ ];
        };
      }
    )) { };
    users.groups = opt (types.attrsOf (
      types.submodule {
        options.gid = opt (types.nullOr types.int) null;
        options.members = opt (types.listOf types.str) [ ];
      }
    )) { };
    services.udev.extraRules = opt types.lines "";
    security.wrapperDir = opt types.path "/run/wrappers/bin";
    security.sudo.extraRules = opt (types.listOf (
      types.submodule {
        options = {
          users = opt (types.listOf types.str) [ ];
          groups = opt (types.listOf types.str) [ ];
          host = opt types.str "ALL";
          runAs = opt types.str "ALL:ALL";
          commands = opt (types.listOf (
            types.either types.str (
              types.submodule {
                options.command = mkOption { type = types.str; };
                options.options = opt (types.listOf (
                  types.enum [
                    "NOPASSWD"
                    "PASSWD"
                    "NOEXEC"
                    "EXEC"
                    "SETENV"
                    "NOSETENV"
                    "LOG_INPUT"
                    "NOLOG_INPUT"
                    "LOG_OUTPUT"
                    "NOLOG_OUTPUT"
                  ]
                )) [ ];
              }
            )
          )) [ ];
        };
      }
    )) [ ];
    security.sudo.extraConfig = opt types.lines "";
    environment.extraInit = opt types.lines "";
    environment.etc = opt (types.attrsOf (
      types.submodule {
        options.source = opt (types.nullOr types.path) null;
        options.text = opt (types.nullOr types.lines) null;
        options.mode = opt types.str "symlink";
      }
    )) { };
    systemd.services = opt (types.attrsOf (types.submodule { options = unitOptions; })) { };
    systemd.tmpfiles.rules = opt (types.listOf types.str) [ ];
    fileSystems = opt (types.attrsOf (
      types.submodule {
        options.device = opt (types.nullOr types.str) null;
        options.fsType = opt types.str "auto";
        options.options = opt (types.listOf types.str) [ "defaults" ];
      }
    )) { };
  };
}
