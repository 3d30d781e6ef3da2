import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { resolveTown } from "../../src/town/resolve.ts";
import {
  exampleTown,
  FIXED_CONTEXT,
  minimalDeclaration,
  resolveOrThrow,
} from "../support/fixtures.ts";

describe("defaults", () => {
  it("fills the defaults named in the spec", () => {
    const town = resolveOrThrow({ agents: { ada: { uid: 1100 } } });
    assert.equal(town.name, "signi");
    assert.equal(town.domain, "signi.local");
    assert.equal(town.agentsDir, "/agents");
    assert.equal(town.persistDir, "/persist");
    assert.deepEqual(town.uidRange, { min: 1100, max: 1999 });
    assert.equal(town.homes.backend, "image");
    assert.equal(town.homes.image.path, "/var/lib/nuketown/homes.img");
    assert.equal(town.chat.transport, "local");
    const [ada] = town.agents;
    assert.ok(ada);
    assert.equal(ada.home, "/agents/ada");
    assert.equal(ada.git.email, "ada@signi.local");
    assert.equal(ada.git.name, "Ada");
    assert.equal(ada.group, "ada");
    assert.equal(ada.gid, 1100);
    assert.deepEqual(ada.portal.layout, { agent: 75, human: 25 });
    assert.equal(ada.runtime.command, "claude");
    assert.equal(ada.sudo.enable, false);
    assert.equal(ada.sudo.policy.default, "ask");
    assert.equal(ada.sudo.timeout, 300);
  });

  it("takes the domain from the host's short name", () => {
    const result = resolveTown({ agents: {} }, { hostname: "build-01.example.org", baseDir: "/" });
    assert.equal(result.town?.domain, "build-01.local");
  });

  it("defaults a device to action add|bind and permission rw, with attrs sorted", () => {
    const town = exampleTown();
    const ada = town.agents.find((a) => a.name === "ada");
    const [tty] = ada?.devices ?? [];
    assert.equal(tty?.action, "add|bind");
    assert.equal(tty?.permission, "rw");
    assert.deepEqual(tty?.attrs, [
      ["idProduct", "5740"],
      ["idVendor", "0483"],
    ]);
  });

  it("derives persisted sources and targets, and always keeps the agent's state dir", () => {
    const ada = exampleTown().agents.find((a) => a.name === "ada");
    assert.deepEqual(
      ada?.persist.map((p) => [p.path, p.source, p.target, p.implicit]),
      [
        ["projects", "/persist/agents/ada/projects", "/agents/ada/projects", false],
        [
          ".config/claude",
          "/persist/agents/ada/.config/claude",
          "/agents/ada/.config/claude",
          false,
        ],
        [
          ".local/state/nuketown",
          "/persist/agents/ada/.local/state/nuketown",
          "/agents/ada/.local/state/nuketown",
          true,
        ],
      ],
    );
  });

  it("does not add the state dir when a declared path already covers it", () => {
    const decl = minimalDeclaration() as Record<string, any>;
    decl.agents.ada.persist = [".local"];
    const town = resolveOrThrow(decl);
    assert.deepEqual(
      town.agents[0]?.persist.map((p) => p.path),
      [".local"],
    );
  });

  it("chooses the signing format from the keys given", () => {
    const decl = minimalDeclaration() as Record<string, any>;
    decl.agents.gpg = { uid: 1101, secrets: { gpgKey: { file: "k.asc.age" } } };
    decl.agents.none = { uid: 1102 };
    const town = resolveOrThrow(decl);
    const format = (name: string) => town.agents.find((a) => a.name === name)?.git.signing.format;
    assert.equal(format("ada"), "ssh");
    assert.equal(format("gpg"), "openpgp");
    assert.equal(format("none"), "none");
    assert.equal(
      town.agents.find((a) => a.name === "ada")?.git.signing.key,
      "/agents/ada/.ssh/id_ed25519.pub",
    );
  });

  it("resolves secret files against the declaration's folder and infers their format", () => {
    const town = exampleTown();
    const ada = town.agents.find((a) => a.name === "ada");
    assert.deepEqual(ada?.secrets.sshKey, {
      format: "sops",
      file: "/etc/nuketown/secrets/agents.yaml",
      key: "ada/ssh-key",
    });
    const minimal = resolveOrThrow(minimalDeclaration());
    assert.deepEqual(minimal.agents[0]?.secrets.sshKey, {
      format: "age",
      file: "/etc/nuketown/keys/ada.age",
    });
  });

  it("picks the first approver as mayor", () => {
    const town = resolveOrThrow({
      humans: { guest: {}, josh: { approver: true } },
      agents: {},
    });
    assert.equal(town.mayor?.name, "josh");
  });

  it("maps the original module's btrfsDevice and sopsFile, with a deprecation warning", () => {
    const result = resolveTown(
      { btrfsDevice: "UUID=38b243a0", sopsFile: "s.yaml", agents: {} },
      FIXED_CONTEXT,
    );
    assert.equal(result.town?.homes.backend, "btrfs");
    assert.equal(result.town?.homes.device, "UUID=38b243a0");
    assert.equal(result.town?.secrets.sopsFile, "/etc/nuketown/s.yaml");
    assert.deepEqual(
      result.warnings.map((w) => w.path),
      ["btrfsDevice", "sopsFile"],
    );
  });

  it("derives repo clone paths from the URL", () => {
    const ada = exampleTown().agents.find((a) => a.name === "ada");
    assert.deepEqual(ada?.repos, [
      {
        url: "https://github.com/rotorflight/rotorflight-firmware.git",
        path: "projects/rotorflight-firmware",
      },
    ]);
  });
});

describe("the resolved town", () => {
  it("is frozen", () => {
    const town = exampleTown();
    assert.ok(Object.isFrozen(town));
    assert.ok(Object.isFrozen(town.agents[0]?.devices));
    assert.throws(() => {
      (town as { name: string }).name = "x";
    }, TypeError);
  });

  it("lists agents sorted by name and leaves disabled agents out", () => {
    const decl = minimalDeclaration() as Record<string, any>;
    decl.agents.zed = { uid: 1102 };
    decl.agents.bea = { uid: 1101, enable: false };
    const town = resolveOrThrow(decl);
    assert.deepEqual(
      town.agents.map((a) => a.name),
      ["ada", "zed"],
    );
    assert.deepEqual(town.disabledAgents, ["bea"]);
  });

  it("warns when an agent's commits will not be signed", () => {
    const result = resolveTown({ agents: { ada: { uid: 1100 } } }, FIXED_CONTEXT);
    assert.match(
      result.warnings.map((w) => `${w.path}: ${w.message}`).join("\n"),
      /agents\.ada\.git\.signing: commits will not be signed/,
    );
  });

  it("warns when an allow rule accepts an option that runs, reaches or mounts anything", () => {
    const result = resolveTown(
      {
        humans: { josh: { approver: true } },
        agents: {
          ada: {
            uid: 1100,
            sudo: {
              enable: true,
              policy: {
                rules: [
                  { action: "allow", argv: ["systemctl", "status", "-H", "**"] },
                  { action: "allow", argv: ["journalctl", "--no-pager"] },
                  { action: "deny", argv: ["mount", "-o", "**"] },
                ],
              },
            },
          },
        },
      },
      FIXED_CONTEXT,
    );
    const said = result.warnings.map((w) => `${w.path}: ${w.message}`);
    assert.ok(
      said.includes(
        "agents.ada.sudo.policy.rules[0].argv: allows -H, which make many programs run another program, reach another machine or mount a file as root: allow the exact command instead",
      ),
      said.join("\n"),
    );
    assert.ok(!said.some((w) => w.startsWith("agents.ada.sudo.policy.rules[1]")));
    assert.ok(!said.some((w) => w.startsWith("agents.ada.sudo.policy.rules[2]")));
  });

  it("listens on loopback by default, and warns about a dashboard served beyond this machine", () => {
    const plain = resolveTown({ agents: { ada: { uid: 1100 } } }, FIXED_CONTEXT);
    assert.deepEqual(plain.town?.dashboard, { address: "127.0.0.1" });
    const wide = resolveTown(
      { dashboard: { address: "0.0.0.0", port: 8080 }, agents: { ada: { uid: 1100 } } },
      FIXED_CONTEXT,
    );
    assert.deepEqual(wide.town?.dashboard, { address: "0.0.0.0", port: 8080 });
    assert.ok(
      wide.warnings.some(
        (w) => w.path === "dashboard.address" && /plain HTTP beyond this machine/.test(w.message),
      ),
    );
    const bad = resolveTown(
      { dashboard: { address: "example.org" }, agents: { ada: { uid: 1100 } } },
      FIXED_CONTEXT,
    );
    assert.ok(
      bad.errors.some((e) => e.path === "dashboard.address"),
      JSON.stringify(bad.errors),
    );
  });

  it("warns when a repo is cloned outside every persisted path", () => {
    const result = resolveTown(
      {
        agents: {
          ada: {
            uid: 1100,
            persist: ["projects"],
            repos: ["https://x/a.git", { url: "https://x/b.git", path: "scratch/b" }],
          },
        },
      },
      FIXED_CONTEXT,
    );
    const repoWarnings = result.warnings.filter((w) => w.path.startsWith("agents.ada.repos"));
    assert.deepEqual(
      repoWarnings.map((w) => w.path),
      ["agents.ada.repos[1]"],
    );
    assert.match(repoWarnings[0]?.message ?? "", /"scratch\/b", which is not persisted/);
  });
});
