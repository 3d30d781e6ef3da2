/**
 * A config repo shaped like a multi-machine flake (machines/<name>/,
 * programs/, cloud/) and the declared steps of its host "tom", for the
 * change-control tests.
 *
 * nixos-rebuild cannot run here (no NixOS, no binary cache, systemd is not
 * PID 1), so the host declares its steps as small scripts standing in for
 * it: build evaluates the configuration for real (Debian's nix-instantiate
 * with the nixpkgs library, typed stand-ins of the options it sets) and
 * writes a "system" (the evaluated config and one file per package) to
 * {result}; test and switch activate it into a temp "system" directory with
 * numbered generations, as switch-to-configuration and the system profile
 * would; generation prints the current one; rollback re-activates a
 * recorded one; health fails when the active system holds the package
 * "nt-test-unhealthy". Every script appends what it ran to ran.log, build
 * with the uid it ran as (verify builds as the agent, apply as root).
 */
import { chmodSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import path from "node:path";
import { mustRun } from "./host.ts";
import { NIXPKGS_LIB } from "./nix.ts";

export const CONFIGURATION = `{ lib, ... }:
{
  imports = [ ../../programs/home.nix ];

  environment.systemPackages = [
    "git"
    "ripgrep"
  ];

  services.openssh = {
    enable = true;
  };

  networking.firewall.allowedTCPPorts = [ 22 ];
}
`;

/** Typed stand-ins of the few NixOS options the test machine sets: types are checked for real. */
const OPTIONS = `{ lib, ... }:
let t = lib.types; in
{
  options = {
    environment.systemPackages = lib.mkOption { type = t.listOf t.str; default = [ ]; };
    services.openssh.enable = lib.mkOption { type = t.bool; default = false; };
    networking.firewall.allowedTCPPorts = lib.mkOption { type = t.listOf t.port; default = [ ]; };
    security.sudo.extraRules = lib.mkOption { type = t.listOf t.attrs; default = [ ]; };
    programs.git.enable = lib.mkOption { type = t.bool; default = false; };
  };
}
`;

export interface ChangeRepo {
  /** The config repo (root's, readable by everyone). */
  readonly repo: string;
  /** The stand-in "system": generations/, current, active, ran.log. */
  readonly system: string;
  /** `change.hosts.tom` of the declaration. */
  readonly host: Record<string, unknown>;
  readonly ranLog: () => string;
  readonly clearRanLog: () => void;
  readonly current: () => string;
}

export const gitIn = (cwd: string, ...args: string[]) =>
  mustRun("git", ["-C", cwd, "-c", "user.name=t", "-c", "user.email=t@test.local", ...args]);

/** The repo, the step scripts and generation 1 (the configuration as it is), below `root`. */
export function makeChangeRepo(root: string): ChangeRepo {
  const repo = path.join(root, "config");
  const system = path.join(root, "system");
  const tools = path.join(root, "tools");
  mkdirSync(tools);
  mkdirSync(path.join(system, "generations"), { recursive: true });

  const files: Record<string, string> = {
    "flake.nix":
      "{\n  outputs = { self, nixpkgs, ... }: {\n    nixosConfigurations.tom = nixpkgs.lib.nixosSystem { modules = [ ./machines/tom/configuration.nix ]; };\n  };\n}\n",
    "machines/tom/configuration.nix": CONFIGURATION,
    "machines/puma/configuration.nix":
      '{ ... }:\n{\n  environment.systemPackages = [ "git" ];\n}\n',
    "programs/home.nix": "{ ... }:\n{\n  programs.git.enable = true;\n}\n",
    "cloud/proxy.tf": 'resource "aws_instance" "proxy" {}\n',
  };
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(repo, file)), { recursive: true });
    writeFileSync(path.join(repo, file), text);
  }
  mustRun("git", ["init", "-q", "-b", "main", repo]);
  gitIn(repo, "add", "-A");
  gitIn(repo, "commit", "-q", "-m", "the machines");

  const nixEnv = path.join(root, "nix");
  writeFileSync(path.join(tools, "options.nix"), OPTIONS);
  writeFileSync(
    path.join(tools, "eval.nix"),
    `{ dir, host }:
let
  lib = import ${NIXPKGS_LIB}/lib;
  evaluated = lib.evalModules {
    modules = [ ./options.nix (dir + "/machines/\${host}/configuration.nix") ];
    specialArgs = { inherit lib; };
  };
in evaluated.config
`,
  );
  const script = (name: string, body: string) => {
    writeFileSync(path.join(tools, name), `#!/bin/bash\nset -euo pipefail\n${body}\n`);
    chmodSync(path.join(tools, name), 0o755);
  };
  // verify builds as the proposing agent, apply as root: a nix state of each uid's own.
  mkdirSync(nixEnv, { mode: 0o1777 });
  chmodSync(nixEnv, 0o1777);
  script(
    "build",
    `echo "build $1 $(id -u)" >> ${system}/ran.log
n=${nixEnv}/$(id -u)
export NIX_STORE_DIR=$n/store NIX_STATE_DIR=$n/state NIX_LOG_DIR=$n/log NIX_CONF_DIR=$n NIX_PATH= HOME=$n
mkdir -p $n
printf 'build-users-group =\\nsandbox = false\\nsubstituters =\\n' > $n/nix.conf
json=$(nix-instantiate --eval --strict --json ${tools}/eval.nix --arg dir "\${3:-$PWD}" --argstr host "$1")
rm -rf "$2"; mkdir -p "$2/sw"
printf '%s\\n' "$json" > "$2/config.json"
for p in $(printf '%s' "$json" | jq -r '.environment.systemPackages[]'); do echo "$p" > "$2/sw/$p"; done`,
  );
  script(
    "activate",
    `echo "$1 $2" >> ${system}/ran.log
case "$1" in
  test) ln -sfn "$(realpath "$2")" ${system}/active ;;
  switch) n=$(ls ${system}/generations | wc -l); cp -r "$(realpath "$2")" ${system}/generations/$((n + 1)); ln -sfn ${system}/generations/$((n + 1)) ${system}/current; ln -sfn ${system}/current ${system}/active ;;
  rollback) ln -sfn "$2" ${system}/current; ln -sfn "$2" ${system}/active ;;
esac`,
  );
  script(
    "health",
    `echo "health" >> ${system}/ran.log
! test -e ${system}/active/sw/nt-test-unhealthy`,
  );
  // Generation 1: the configuration as it is.
  mustRun(path.join(tools, "build"), ["tom", path.join(root, "first"), repo]);
  mustRun("cp", ["-r", path.join(root, "first"), path.join(system, "generations", "1")]);
  mustRun("ln", ["-sfn", path.join(system, "generations", "1"), path.join(system, "current")]);
  const ranLogFile = path.join(system, "ran.log");
  // The agents' builds append to it too.
  const clearRanLog = () => {
    writeFileSync(ranLogFile, "", { mode: 0o666 });
    chmodSync(ranLogFile, 0o666);
  };
  clearRanLog();

  return {
    repo,
    system,
    host: {
      build: [[path.join(tools, "build"), "{host}", "{result}"]],
      test: [[path.join(tools, "activate"), "test", "{result}"]],
      switch: [[path.join(tools, "activate"), "switch", "{result}"]],
      generation: [["readlink", "-f", path.join(system, "current")]],
      rollback: [[path.join(tools, "activate"), "rollback", "{generation}"]],
      health: [[path.join(tools, "health")]],
      healthTimeout: 2,
      current: path.join(system, "current"),
    },
    ranLog: () => readFileSync(ranLogFile, "utf8"),
    clearRanLog,
    current: () => realpathSync(path.join(system, "current")),
  };
}
