# A complete town for a NixOS configuration.nix: the mayor josh approves the
# sudo of ada (software, a flight controller over USB) and vox (research).
# Package names are nixpkgs attribute names. The flake's checks evaluate it.
{ ... }:
{
  users.users.josh = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
  };

  nuketown = {
    enable = true;
    domain = "signi.local";
    # The btrfs device that holds the homes; without one, an image file is used.
    # homes.device = "UUID=38b243a0-c875-4758-8998-cc6c6a4c451e";
    secrets.sopsFile = "/etc/nuketown/secrets/agents.yaml";

    humans.josh = {
      displayName = "Josh";
      email = "josh@signi.local";
      approver = true;
    };

    agents.ada = {
      uid = 1100;
      role = "software";
      description = ''
        Software collaborator. Thinks before acting.
        Works on embedded systems and NixOS configuration.
      '';
      packages = [
        "gcc-arm-embedded"
        "stm32flash"
        "dfu-util"
        "claude-code"
      ];
      persist = [
        "projects"
        ".config/claude"
      ];
      secrets.sshKey = "ada/ssh-key";
      runtime.apiKey = "ada/anthropic-key";
      sudo = {
        enable = true;
        policy.rules = [
          {
            action = "allow";
            argv = [
              "systemctl"
              "status"
              "**"
            ];
          }
        ];
      };
      devices = [
        {
          subsystem = "tty";
          attrs = {
            idVendor = "0483";
            idProduct = "5740";
          };
          description = "STM32 flight controller (serial)";
        }
      ];
      portal.enable = true;
    };

    agents.vox = {
      uid = 1101;
      role = "research";
      packages = [ "codex" ];
      persist = [ "notes" ];
      runtime.kind = "codex";
    };
  };
}
