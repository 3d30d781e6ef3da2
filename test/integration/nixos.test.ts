/**
 * The NixOS module, evaluated with Debian's nix-bin and the real nixpkgs
 * library (../shared/nixpkgs-lib) against typed stand-ins of the NixOS
 * options it sets (test/nix): one town, two emitters. The example town in
 * Nix (test/nix/town.nix) must give the accounts, udev rules, sudo grant and
 * units that the TypeScript renderers give for examples/town.toml, resolve to
 * the same town, and build a manifest that `nuketown check --manifest`
 * accepts; hostile values must fail evaluation or the build, with the option
 * path. No network: nothing is fetched, the only builds are /bin/sh ones.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { renderSudoers } from "../../src/host/render/sudoers.ts";
import { renderUdevRules } from "../../src/host/render/udev.ts";
import { renderUnits } from "../../src/host/render/units.ts";
import type { ResolvedTown } from "../../src/town/types.ts";
import { REPO_ROOT } from "../support/fixtures.ts";
import { hermeticNix, type Nix } from "../support/nix.ts";

const BIN = path.join(REPO_ROOT, "bin", "nuketown");
const TOWN_NIX = path.join(REPO_ROOT, "test", "nix", "town.nix");
const EXAMPLES = path.join(REPO_ROOT, "examples");

interface Unit {
  description: string;
  after: string[];
  before: string[];
  wants: string[];
  wantedBy: string[];
  partOf: string[];
  environment: Record<string, string>;
  restartIfChanged: boolean;
  serviceConfig: Record<string, string | number | boolean>;
  path: string[];
}

interface Evaluated {
  failedAssertions: string[];
  users: Record<string, { uid: number; group: string; home: string; packages: string[] }>;
  groups: Record<string, { gid: number | null; members: string[] }>;
  udev: string;
  sudo: {
    rules: {
      users: string[];
      runAs: string;
      commands: { command: string; options: string[] }[];
    }[];
    extraConfig: string;
  };
  services: Record<string, Unit>;
  tmpfiles: string[];
  etc: string[];
  declaration: Record<string, unknown>;
  nuketown: Record<string, unknown>;
}

function nuketown(args: string[], input?: string) {
  const result = spawnSync(BIN, args, { encoding: "utf8", input, cwd: REPO_ROOT });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function resolvedTown(args: string[], input?: string): ResolvedTown {
  const { code, stdout, stderr } = nuketown(
    ["check", "--json", "--hostname", "signi", ...args],
    input,
  );
  assert.equal(code, 0, stderr || stdout);
  return (JSON.parse(stdout) as { town: ResolvedTown }).town;
}

/** The directives of a rendered unit file, by section, comments dropped. */
function unitDirectives(content: string): Record<string, Record<string, string>> {
  const sections: Record<string, Record<string, string>> = {};
  let current: Record<string, string> = {};
  for (const line of content.split("\n")) {
    const header = /^\[(\w+)\]$/.exec(line);
    if (header?.[1]) {
      current = {};
      sections[header[1]] = current;
    } else if (line !== "" && !line.startsWith("#")) {
      const eq = line.indexOf("=");
      current[line.slice(0, eq)] = line.slice(eq + 1);
    }
  }
  return sections;
}

const words = (value: string | undefined) => (value ? value.split(" ").filter(Boolean) : []);
const systemdValue = (value: string | number | boolean) =>
  value === true ? "yes" : value === false ? "no" : String(value);

describe("the NixOS module (nix-bin, nixpkgs lib, stand-ins)", () => {
  let nix: Nix;
  let evaluated: Evaluated;
  let nixTown: ResolvedTown;

  before(async () => {
    nix = await hermeticNix();
    const result = nix.evalTown(TOWN_NIX);
    assert.equal(result.code, 0, result.stderr);
    evaluated = JSON.parse(result.stdout) as Evaluated;
    const file = path.join(nix.dir, "town.nix.json");
    await writeFile(file, JSON.stringify(evaluated.nuketown));
    nixTown = resolvedTown([file]);
  });
  after(async () => {
    await nix?.cleanup();
  });

  it("parses every .nix file of the repository", () => {
    const files = [
      ...["flake.nix"],
      ...readdirSync(path.join(REPO_ROOT, "nix")).map((f) => path.join("nix", f)),
      ...readdirSync(path.join(REPO_ROOT, "test", "nix")).map((f) => path.join("test", "nix", f)),
    ].filter((f) => f.endsWith(".nix"));
    assert.ok(files.length >= 8, `found only ${files.join(", ")}`);
    for (const file of files) {
      const result = nix.run("nix-instantiate", ["--parse", path.join(REPO_ROOT, file)]);
      assert.equal(result.code, 0, `${file}: ${result.stderr}`);
    }
  });

  it("makes the agents' users and groups with uid = gid, and the approvers group, with no failed assertion", () => {
    assert.deepEqual(evaluated.failedAssertions, []);
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(evaluated.users).map(([n, u]) => [
          n,
          { uid: u.uid, group: u.group, home: u.home },
        ]),
      ),
      {
        ada: { uid: 1100, group: "ada", home: "/agents/ada" },
        vox: { uid: 1101, group: "vox", home: "/agents/vox" },
      },
    );
    assert.deepEqual(evaluated.groups, {
      ada: { gid: 1100, members: [] },
      vox: { gid: 1101, members: [] },
      "nuketown-approvers": { gid: null, members: ["josh"] },
    });
    // basePackages then the agent's own, each resolved in pkgs by its name.
    assert.deepEqual(evaluated.users.ada?.packages, [
      "git",
      "ripgrep",
      "jq",
      "curl",
      "tree",
      "gcc-arm-none-eabi",
      "stm32flash",
      "dfu-util",
    ]);
  });

  it("writes the same udev rules as the TypeScript renderer (and the golden file)", () => {
    const tomlTown = resolvedTown([path.join(EXAMPLES, "town.toml")]);
    assert.equal(evaluated.udev, renderUdevRules(tomlTown));
    assert.equal(evaluated.udev, renderUdevRules(nixTown));
    assert.equal(
      evaluated.udev,
      readFileSync(path.join(REPO_ROOT, "test", "golden", "udev", "70-nuketown.rules"), "utf8"),
    );
  });

  it("grants the gate, and only the gate, to the same agents as the TypeScript sudoers", () => {
    // The TypeScript fragment, its aliases expanded: who may run what as whom, with which tags.
    const text = renderSudoers(nixTown);
    const alias = (kind: string) =>
      new Map(
        [...text.matchAll(new RegExp(`^${kind} (\\w+) = (.+)$`, "gm"))].map((m) => [m[1], m[2]]),
      );
    const commands = alias("Cmnd_Alias");
    const users = alias("User_Alias");
    const grant = /^(\w+) ALL = \((\w+)\) ([A-Z:]+): (\w+)$/m.exec(text);
    assert.ok(grant, text);
    const [, userAlias = "", runAs, tags = "", command = ""] = grant;
    const defaults = /^Defaults!(\w+) (.+)$/m.exec(text);
    assert.deepEqual(evaluated.sudo.rules, [
      {
        users: (users.get(userAlias) ?? "").split(", "),
        groups: [],
        host: "ALL",
        runAs,
        commands: [{ command: commands.get(command), options: tags.split(":").filter(Boolean) }],
      },
    ]);
    assert.equal(
      evaluated.sudo.extraConfig,
      `Defaults!${commands.get(defaults?.[1] ?? "")} ${defaults?.[2]}\n`,
    );
    assert.match(nixTown.install.gate, /-nuketown-sudo-gate$/);
  });

  it("declares the units TypeScript renders, ordered the same: reset and apply before every agent", () => {
    const rendered = renderUnits(nixTown);
    const names = Object.keys(evaluated.services).map((n) => `${n}.service`);
    assert.deepEqual(names.sort(), [
      "nuketown-agent-ada.service",
      "nuketown-agent-vox.service",
      "nuketown-apply.service",
      "nuketown-approvald.service",
      "nuketown-dashboard.service",
      "nuketown-reset.service",
    ]);
    assert.deepEqual(
      rendered.map((u) => u.name),
      names.filter((n) => n !== "nuketown-apply.service").sort(),
    );
    for (const unit of rendered) {
      const nixUnit = evaluated.services[unit.name.replace(/\.service$/, "")];
      assert.ok(nixUnit, unit.name);
      const ts = unitDirectives(unit.content);
      const onNixos = (list: string[]) => list.filter((u) => u !== "nuketown-apply.service");
      assert.deepEqual(onNixos(nixUnit.after), words(ts.Unit?.After), `${unit.name} After`);
      assert.deepEqual(onNixos(nixUnit.before), words(ts.Unit?.Before), `${unit.name} Before`);
      assert.deepEqual(nixUnit.wants, words(ts.Unit?.Wants), `${unit.name} Wants`);
      assert.deepEqual(nixUnit.partOf, words(ts.Unit?.PartOf), `${unit.name} PartOf`);
      assert.deepEqual(nixUnit.wantedBy, words(ts.Install?.WantedBy), `${unit.name} WantedBy`);
      // Every [Service] directive alike, except the environment: on NixOS PATH is the
      // agent's profile, not /usr/bin.
      const { Environment: _env, ...service } = ts.Service ?? {};
      assert.deepEqual(
        Object.fromEntries(
          Object.entries(nixUnit.serviceConfig).map(([k, v]) => [k, systemdValue(v)]),
        ),
        service,
        `${unit.name} [Service]`,
      );
    }
    const reset = evaluated.services["nuketown-reset"];
    assert.equal(reset?.restartIfChanged, false, "a switch must not reset every agent");
    const apply = evaluated.services["nuketown-apply"];
    assert.deepEqual(
      apply?.serviceConfig.ExecStart,
      `${nixTown.install.bin} apply --manifest /etc/nuketown/town.json`,
    );
    assert.ok(apply?.before.includes("nuketown-agent-ada.service"));
    assert.equal(
      evaluated.services["nuketown-agent-ada"]?.environment.PATH?.split(":")[0],
      nixTown.install.shimDir,
      "the sudo shim comes first for a sudo-enabled agent",
    );
  });

  it("resolves to the same town as examples/town.toml (nix eval --json → check --format nix)", () => {
    const tomlTown = resolvedTown([path.join(EXAMPLES, "town.toml")]);
    // Only where the programs are differs: Nix points install.* at the package and the gate it writes.
    const { install: nixInstall, ...nixRest } = nixTown;
    const { install: _tomlInstall, ...tomlRest } = tomlTown;
    assert.deepEqual(nixRest, tomlRest);
    assert.equal(nixInstall.bin, `${REPO_ROOT}/bin/nuketown`);
    assert.equal(nixInstall.setfacl, "/usr/bin/setfacl");
    // The module's own declaration (what the manifest derivation reads) resolves the same.
    const fromDeclaration = resolvedTown(
      ["--format", "nix", "-"],
      JSON.stringify(evaluated.declaration),
    );
    assert.deepEqual(fromDeclaration, nixTown);
  });

  it("builds /etc/nuketown/town.json in a derivation that runs nuketown check, and the result passes check --manifest", () => {
    assert.ok(evaluated.etc.includes("nuketown/town.json"));
    const built = nix.buildManifest(TOWN_NIX);
    assert.equal(built.code, 0, built.stderr);
    assert.match(
      built.stderr,
      /nixos owns packages, accounts, manifest, sudoers, udev-rules, units/,
    );
    const file = built.stdout.trim();
    const { version, town } = JSON.parse(readFileSync(file, "utf8")) as {
      version: number;
      town: ResolvedTown;
    };
    assert.equal(version, 1);
    const { managed, ...rest } = town;
    assert.deepEqual(managed, {
      by: "nixos",
      layers: ["packages", "accounts", "manifest", "sudoers", "udev-rules", "units"],
    });
    assert.deepEqual(rest, nixTown);
    const checked = nuketown(["check", "--manifest", file]);
    assert.equal(checked.code, 0, checked.stderr);
  });

  it("evaluates the configuration.nix example of docs/nixos.md (nix/example.nix) with every assertion holding", () => {
    const result = nix.evalTown(path.join(REPO_ROOT, "nix", "example.nix"));
    assert.equal(result.code, 0, result.stderr);
    const example = JSON.parse(result.stdout) as Evaluated;
    assert.deepEqual(example.failedAssertions, []);
    assert.equal(example.users.ada?.uid, 1100);
    assert.ok(example.users.ada?.packages.includes("claude-code"));
  });

  describe("hostile values", () => {
    const hostile = async (name: string, nuketownAttrs: string, extra = "") => {
      const file = path.join(nix.dir, `${name}.nix`);
      await writeFile(
        file,
        `{ examples }: {\n  ${extra}\n  nuketown = { enable = true; name = "hostile";\n${nuketownAttrs}\n  };\n}\n`,
      );
      return file;
    };

    it("fail assertions that start with the option path and name the offenders", async () => {
      const file = await hostile(
        "assertions",
        `agents.ada = { uid = 1100; sudo.enable = true; };
         agents.bob = { uid = 1100; };
         agents.eve = { uid = 5000; packages = [ "no-such-package" ]; };
         humans.josh.approver = false;`,
        `users.users.alice.uid = 1100;`,
      );
      const result = nix.evalTown(file);
      assert.equal(result.code, 0, result.stderr);
      const failed = (JSON.parse(result.stdout) as Evaluated).failedAssertions;
      assert.deepEqual(failed, [
        "nuketown.agents.<name>.uid: taken by other users of this system: alice (uid 1100)",
        "nuketown.agents.<name>.uid: shared by several agents: 1100",
        "nuketown.agents.<name>.uid: outside nuketown.uidRange (1100-1999): eve (5000)",
        "nuketown.agents.<name>.sudo.enable: no human may approve (set nuketown.humans.<name>.approver = true) for: ada",
        "nuketown.basePackages, nuketown.agents.<name>.packages: not in pkgs: no-such-package",
      ]);
    });

    it("fail the module's types at evaluation, naming the option", async () => {
      const file = await hostile(
        "types",
        `agents.ada = { uid = "1100"; }; humans.josh.approver = true;`,
      );
      const result = nix.evalTown(file);
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /nuketown\.agents\.ada\.uid/);
    });

    it("fail the manifest's build with nuketown's messages and paths", async () => {
      const file = await hostile(
        "values",
        `humans.josh.approver = true;
         agents.ada = {
           uid = 1100;
           persist = [ "../../etc" ];
           devices = [ { subsystem = "tty"; attrs.idVendor = "04838"; attrs.product = "x\\", RUN+=\\"/bin/sh"; } ];
           runtime.env."A=B" = "c";
         };`,
      );
      const result = nix.buildManifest(file);
      assert.notEqual(result.code, 0, "the build must fail");
      for (const expected of [
        // The shorthand was coerced to { path }, so the path names the field.
        /agents\.ada\.persist\[0\]\.path: must not climb out of the home with \.\., got "\.\.\/\.\.\/etc"/,
        /agents\.ada\.devices\[0\]\.attrs\.idVendor: expected 4 lowercase hex digits, got "04838"/,
        /agents\.ada\.devices\[0\]\.attrs\.product: must not contain "\\"" \(it would escape the udev rule\)/,
        /agents\.ada\.runtime\.env\["A=B"\]: invalid name/,
      ])
        assert.match(result.stderr, expected);
    });
  });
});
