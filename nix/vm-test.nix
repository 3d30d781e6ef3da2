# A NixOS VM test (pkgs.testers.runNixOSTest): a town of one agent on a real
# NixOS, checking what the module makes and what nuketown then does there:
# the account, the manifest, the first round, a reset that levels the home
# but keeps persisted data, sudo through the approval gate (test mode), and
# the portal opening a tmux window as the agent. Needs KVM and a binary cache;
# it has not been run where nuketown is developed (see docs/nixos.md).
{ self }:
{
  name = "nuketown";
  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      virtualisation.memorySize = 2048;
      virtualisation.diskSize = 4096;
      boot.supportedFilesystems = [ "btrfs" ];
      environment.systemPackages = [ pkgs.tmux ];
      users.users.josh.isNormalUser = true;
      nuketown = {
        enable = true;
        humans.josh.approver = true;
        homes.image.size = "1G";
        agents.ada = {
          uid = 1100;
          persist = [ "keep" ];
          sudo.enable = true;
          runtime = {
            kind = "command";
            command = "cat";
          };
          portal = {
            enable = true;
            command = "bash";
          };
        };
      };
    };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("NixOS made the account and the manifest, nuketown the home"):
        machine.succeed("test $(id -u ada) = 1100 && test $(id -g ada) = 1100")
        machine.succeed("getent group nuketown-approvers | grep -q josh")
        machine.succeed("nuketown check --manifest /etc/nuketown/town.json")
        machine.wait_for_unit("nuketown-apply.service")
        machine.succeed("test -f /agents/ada/.config/nuketown/identity.toml")
        machine.wait_for_unit("nuketown-agent-ada.service")

    with subtest("plan on NixOS shows the split and nothing left to do"):
        out = machine.succeed("nuketown plan")
        assert "NixOS owns packages, accounts" in out, out
        assert "no changes" in out, out

    with subtest("reset levels the home and keeps what persists"):
        machine.succeed("su - ada -c 'touch ~/scratch ~/keep/kept'")
        machine.succeed("nuketown reset ada")
        machine.fail("test -e /agents/ada/scratch")
        machine.succeed("test -e /agents/ada/keep/kept")

    with subtest("sudo goes through the approval gate"):
        machine.succeed("nuketown approval-mode auto-deny")
        machine.fail("su - ada -c 'sudo true'")
        machine.succeed("nuketown approval-mode auto-approve")
        machine.succeed("su - ada -c 'sudo true'")
        machine.succeed("nuketown audit verify")

    with subtest("the portal opens the agent's window"):
        machine.succeed("mkdir -p /tmp/proj && chmod 755 /tmp/proj")
        machine.succeed("nuketown portal ada /tmp/proj --tmux-socket /tmp/nt-tmux </dev/null >&2 &")
        machine.wait_until_succeeds("tmux -S /tmp/nt-tmux list-windows | grep -q 'ada:proj'")
  '';
}
