# examples/town.toml, declared in Nix: the same town, so both resolve to the
# same ResolvedTown. `examples` is the absolute path of examples/ (the TOML
# file's relative secret paths resolve there).
{ examples }:
{
  nuketown = {
    enable = true;
    name = "signi";
    domain = "signi.local";
    homes = {
      backend = "image";
      image.size = "20G";
    };
    secrets = {
      sopsFile = "${examples}/secrets/agents.yaml";
      ageKeyFile = "${examples}/demo-age.key";
    };
    humans.josh = {
      displayName = "Josh";
      email = "josh@signi.local";
      matrix = "@josh:signi.local";
      approver = true;
    };
    agents.ada = {
      uid = 1100;
      role = "software";
      description = ''
        Software collaborator. Thinks before acting.
        Works on embedded systems and NixOS configuration.'';
      packages = [
        "gcc-arm-none-eabi"
        "stm32flash"
        "dfu-util"
      ];
      persist = [
        "projects"
        ".config/claude"
      ];
      secrets.sshKey = "ada/ssh-key";
      secrets.gpgKey = "ada/gpg-key";
      portal.enable = true;
      runtime.kind = "claude-code";
      runtime.extraPrompt = ''
        ## Flight controller
        Build with `make`, flash over DFU with `dfu-util`; ask before flashing.'';
      repos = [ "https://github.com/rotorflight/rotorflight-firmware.git" ];
      sudo = {
        enable = true;
        policy.default = "ask";
        policy.rules = [
          {
            action = "allow";
            argv = [
              "systemctl"
              "status"
              "**"
            ];
          }
          {
            action = "deny";
            argv = [
              "rm"
              "-rf"
              "/"
            ];
            reason = "never";
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
        {
          subsystem = "usb";
          attrs.product = "STM32  BOOTLOADER";
          description = "STM32 DFU bootloader (re-enumerates from the serial device)";
        }
      ];
    };
    agents.vox = {
      uid = 1101;
      role = "research";
      description = "Research agent. Reads widely, cites sources, writes summaries.";
      persist = [ "notes" ];
      secrets.sshKey = "vox/ssh-key";
      runtime.kind = "codex";
    };
  };
}
