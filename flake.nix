{
  description = "Nuketown: AI agents as Unix users, one declaration for systemd hosts, NixOS and Kubernetes";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The example town on a minimal NixOS, evaluated (not built) by the checks.
      example =
        system:
        nixpkgs.lib.nixosSystem {
          inherit system;
          modules = [
            self.nixosModules.default
            ./nix/example.nix
            {
              networking.hostName = "signi";
              boot.loader.grub.enable = false;
              fileSystems."/".device = "/dev/vda";
              system.stateVersion = "25.11";
              nixpkgs.config.allowUnfree = true; # claude-code
            }
          ];
        };
    in
    {
      overlays.default = final: _prev: { nuketown = final.callPackage ./nix/package.nix { }; };

      packages = forAllSystems (pkgs: rec {
        nuketown = pkgs.callPackage ./nix/package.nix { };
        default = nuketown;
      });

      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          nuketown.nixos.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nuketown";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.nix
            pkgs.acl
            pkgs.age
            pkgs.sops
            pkgs.btrfs-progs
          ];
        };
      });

      checks = forAllSystems (
        pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
          config = (example system).config;
        in
        {
          # Every assertion holds and the whole system evaluates (toplevel's drvPath, not its build).
          example-evaluates = pkgs.writeText "nuketown-example-evaluates" config.system.build.toplevel.drvPath;
          # The manifest derivation: nuketown resolves and checks the example town.
          example-manifest = config.nuketown.nixos.manifest;
          vm = pkgs.testers.runNixOSTest (import ./nix/vm-test.nix { inherit self; });
        }
      );
    };
}
