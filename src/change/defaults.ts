/**
 * What each step of a change runs when the declaration does not say: the
 * NixOS way (build without switching, activate with `test`, then make it the
 * boot default with `switch`, return to the recorded generation), and the
 * nix-darwin way. Pure.
 */

export type Argv = readonly string[];
export type HostKind = "nixos" | "darwin" | "command";

export interface HostSteps {
  readonly build: readonly Argv[];
  readonly test: readonly Argv[];
  readonly switch: readonly Argv[];
  readonly generation: readonly Argv[];
  readonly rollback: readonly Argv[];
}

const SYSTEM_PROFILE = "/nix/var/nix/profiles/system";

export const DEFAULT_STEPS: Readonly<Record<HostKind, HostSteps>> = {
  nixos: {
    build: [["nixos-rebuild", "build", "--flake", ".#{attr}"]],
    test: [["{result}/bin/switch-to-configuration", "test"]],
    switch: [
      ["nix-env", "-p", SYSTEM_PROFILE, "--set", "{result}"],
      ["{result}/bin/switch-to-configuration", "switch"],
    ],
    generation: [["readlink", "-f", SYSTEM_PROFILE]],
    rollback: [
      ["nix-env", "-p", SYSTEM_PROFILE, "--set", "{generation}"],
      ["{generation}/bin/switch-to-configuration", "switch"],
    ],
  },
  darwin: {
    build: [["darwin-rebuild", "build", "--flake", ".#{attr}"]],
    test: [],
    switch: [["darwin-rebuild", "switch", "--flake", ".#{attr}"]],
    generation: [["readlink", "-f", "/run/current-system"]],
    rollback: [["{generation}/activate"]],
  },
  command: { build: [], test: [], switch: [], generation: [], rollback: [] },
};

export interface Placeholders {
  readonly host: string;
  readonly attr: string;
  readonly repo: string;
  readonly commit: string;
  readonly result?: string;
  readonly generation?: string;
}

/** Fills `{name}` in every argument; an unknown or unset placeholder is an error, never an empty string. */
export function fillArgv(argv: Argv, values: Placeholders): string[] {
  return argv.map((arg) =>
    arg.replace(/\{([a-z]+)\}/g, (_whole, name: string) => {
      const value = (values as unknown as Record<string, string | undefined>)[name];
      if (value === undefined)
        throw new Error(`${JSON.stringify(arg)}: {${name}} has no value at this step`);
      return value;
    }),
  );
}
