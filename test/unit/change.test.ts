/**
 * Change control's pure parts: the risk classifier over real diffs of a
 * flake-shaped config repo, proposal transitions, the change policy, and
 * the step defaults' placeholders.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseFrame } from "../../src/approval/protocol.ts";
import { parseDiffBrief } from "../../src/change/closure.ts";
import { DEFAULT_STEPS, fillArgv } from "../../src/change/defaults.ts";
import { canRun, changePolicy, type Proposal } from "../../src/change/proposal.ts";
import { ChangeFrameSchema, changeHint } from "../../src/change/protocol.ts";
import { assessChange, optionsByLine } from "../../src/change/risk.ts";

const CONFIG = `{ config, lib, ... }:
{
  imports = [ ./hardware.nix ];

  environment.systemPackages = [
    "git"
    "ripgrep"
  ];

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
  };

  networking.firewall.allowedTCPPorts = [ 22 ];
}
`;

const edit = (from: string, to: string) => {
  assert.ok(CONFIG.includes(from), `the fixture holds ${JSON.stringify(from)}`);
  return CONFIG.replace(from, to);
};

const nix = (after: string, path = "machines/tom/configuration.nix") => [
  { path, before: CONFIG, after },
];

describe("the risk of a change", () => {
  const table: {
    name: string;
    files: Parameters<typeof assessChange>[0];
    risk: "high" | "low";
    reason?: RegExp;
    option?: string;
  }[] = [
    {
      name: "adding a package is low",
      files: nix(edit('"ripgrep"\n', '"ripgrep"\n    "htop"\n')),
      risk: "low",
      reason: /packages/,
      option: "environment.systemPackages",
    },
    {
      name: "a nested ssh option is high, found through its attribute set",
      files: nix(
        edit("settings.PasswordAuthentication = false;", "settings.PasswordAuthentication = true;"),
      ),
      risk: "high",
      reason: /ssh/,
      option: "services.openssh.settings.PasswordAuthentication",
    },
    {
      name: "a sudo rule is high",
      files: nix(
        edit(
          "  networking.firewall",
          '  security.sudo.extraRules = [ { users = [ "ada" ]; commands = [ "ALL" ]; } ];\n  networking.firewall',
        ),
      ),
      risk: "high",
      reason: /sudo and security/,
      option: "security.sudo.extraRules",
    },
    {
      name: "opening a port is high",
      files: nix(edit("[ 22 ]", "[ 22 8080 ]")),
      risk: "high",
      reason: /firewall/,
    },
    {
      name: "a new user is high",
      files: nix(
        edit(
          "  networking.firewall",
          "  users.users.bob.isNormalUser = true;\n  networking.firewall",
        ),
      ),
      risk: "high",
      reason: /users and groups/,
    },
    {
      name: "a boot option is high",
      files: nix(
        edit(
          "  networking.firewall",
          "  boot.kernelPackages = pkgs.linuxPackages_latest;\n  networking.firewall",
        ),
      ),
      risk: "high",
      reason: /boot/,
    },
    {
      name: "anything under secrets/ is high",
      files: [{ path: "machines/tom/secrets/vault.yaml", before: "a: 1\n", after: "a: 2\n" }],
      risk: "high",
      reason: /secrets/,
    },
    {
      name: "the cloud folder is high",
      files: [{ path: "cloud/proxy.tf", before: "", after: 'resource "x" "y" {}\n' }],
      risk: "high",
      reason: /cloud/,
    },
    {
      name: "an option nothing knows is high",
      files: nix(
        edit(
          "  networking.firewall",
          "  services.frobnicate.enable = true;\n  networking.firewall",
        ),
      ),
      risk: "high",
      reason: /not recognised/,
    },
    {
      name: "editor configuration under programs/ is low",
      files: [
        {
          path: "programs/neovim.nix",
          before: "{ programs.neovim.enable = true; }\n",
          after: "{ programs.neovim.enable = true;\n  programs.neovim.viAlias = true; }\n",
        },
      ],
      risk: "low",
      reason: /editor/,
    },
    {
      name: "comments and blank lines alone say nothing, the file's path decides",
      files: nix(edit("  imports", "  # tools\n\n  imports")),
      risk: "high",
      reason: /not recognised/,
    },
    {
      name: "a package added next to a firewall change is still high",
      files: nix(edit('"ripgrep"\n', '"ripgrep"\n    "nmap"\n').replace("[ 22 ]", "[ 22 443 ]")),
      risk: "high",
    },
  ];
  for (const row of table) {
    it(row.name, () => {
      const a = assessChange(row.files);
      assert.equal(a.risk, row.risk, JSON.stringify(a.findings, null, 2));
      if (row.reason)
        assert.ok(
          a.findings.some((f) => row.reason?.test(f.reason)),
          JSON.stringify(a.findings),
        );
      if (row.option) assert.ok(a.options.includes(row.option), a.options.join(", "));
    });
  }

  it("takes declared rules first: a rule may call a known-safe option low", () => {
    const files = nix(
      edit("  networking.firewall", "  services.frobnicate.enable = true;\n  networking.firewall"),
    );
    const a = assessChange(files, [
      { risk: "low", paths: [], match: "^services\\.frobnicate\\.", reason: "our own toy" },
    ]);
    assert.equal(a.risk, "low");
    assert.deepEqual(a.findings[0]?.rule, { kind: "declared", index: 0 });
  });

  it("counts lines per file in a diffstat", () => {
    const a = assessChange(nix(edit('"ripgrep"\n', '"ripgrep"\n    "htop"\n')));
    assert.equal(a.diffstat, "machines/tom/configuration.nix | +1 -0\n1 file changed, +1 -0");
  });

  it("tracks option paths through sets and lists", () => {
    const options = optionsByLine(CONFIG);
    assert.equal(options[5], "environment.systemPackages");
    assert.equal(options[10], "services.openssh.enable");
    assert.equal(options[14], "networking.firewall.allowedTCPPorts");
  });
});

const proposal = (over: Partial<Proposal>): Proposal => ({
  v: 1,
  id: "20260101-abcdef",
  agent: "ada",
  host: "tom",
  explanation: "add htop",
  created: "2026-01-01T00:00:00.000Z",
  base: "a".repeat(40),
  commit: "b".repeat(40),
  branch: "refs/heads/ada/htop",
  source: "branch",
  risk: "low",
  riskReasons: [],
  options: [],
  diffstat: "",
  state: "proposed",
  ...over,
});

describe("a proposal's lifecycle", () => {
  const verified = { ok: true, time: "", commit: "b".repeat(40), log: "", seconds: 1 };
  const approval = {
    id: "1",
    decision: "approved" as const,
    by: { kind: "human", id: "josh" },
    reason: "",
    commit: "b".repeat(40),
    hash: "",
    time: "",
  };
  it("is verified before it is approved, approved before it is applied", () => {
    assert.equal(canRun(proposal({}), "approve").ok, false);
    assert.equal(canRun(proposal({}), "apply").ok, false);
    assert.equal(canRun(proposal({ state: "verified", verify: verified }), "approve").ok, true);
    assert.equal(canRun(proposal({ state: "approved", approval }), "apply").ok, true);
  });
  it("refuses an approval or a verify that was for another commit", () => {
    const other = "c".repeat(40);
    assert.equal(
      canRun(proposal({ state: "verified", verify: { ...verified, commit: other } }), "approve").ok,
      false,
    );
    assert.equal(
      canRun(proposal({ state: "approved", approval: { ...approval, commit: other } }), "apply").ok,
      false,
    );
  });
  it("rolls back only what was applied", () => {
    assert.equal(canRun(proposal({ state: "approved", approval }), "rollback").ok, false);
    const applied = {
      time: "",
      commit: "b".repeat(40),
      previousGeneration: "/gen/1",
      steps: [],
      ok: true,
    };
    assert.equal(canRun(proposal({ state: "applied", apply: applied }), "rollback").ok, true);
  });
});

describe("the change policy", () => {
  it("lets a listed agent's low-risk change pass, asks for everything else", () => {
    assert.equal(changePolicy(["ada"], "ada", "low").action, "allow");
    assert.equal(changePolicy(["ada"], "ada", "high").action, "ask");
    assert.equal(changePolicy(["ada"], "bob", "low").action, "ask");
    assert.equal(changePolicy([], "ada", "low").action, "ask");
  });
});

describe("the steps' placeholders", () => {
  it("fills the NixOS defaults and refuses a placeholder with no value", () => {
    const values = {
      host: "tom",
      attr: "tom",
      repo: "/etc/nixos",
      commit: "c",
      result: "/r",
      generation: "/g",
    };
    assert.deepEqual(fillArgv(DEFAULT_STEPS.nixos.build[0] as string[], values), [
      "nixos-rebuild",
      "build",
      "--flake",
      ".#tom",
    ]);
    assert.deepEqual(fillArgv(DEFAULT_STEPS.nixos.rollback[1] as string[], values), [
      "/g/bin/switch-to-configuration",
      "switch",
    ]);
    const { generation: _, ...noGeneration } = values;
    assert.throws(
      () => fillArgv(["{generation}/activate"], noGeneration),
      /\{generation\} has no value/,
    );
  });
});

describe("the runtimes' configuration", () => {
  it("registers the town's MCP server for claude-code and codex", async () => {
    const { renderClaudeState, renderCodexConfig } = await import(
      "../../src/host/render/runtime-config.ts"
    );
    const { exampleTown } = await import("../support/fixtures.ts");
    const agent = exampleTown().agents[0];
    assert.ok(agent);
    const mcp = {
      command: "/usr/bin/nuketown",
      args: ["mcp", "--manifest", "/etc/nuketown/town.json"],
    };
    const claude = JSON.parse(renderClaudeState(agent, mcp));
    assert.deepEqual(claude.mcpServers.nuketown, { type: "stdio", ...mcp, env: {} });
    const codex = renderCodexConfig(agent, mcp);
    assert.match(
      codex,
      /\[mcp_servers\.nuketown\]\ncommand = "\/usr\/bin\/nuketown"\nargs = \[ "mcp", "--manifest", "\/etc\/nuketown\/town\.json" \]/,
    );
  });
});

describe("the change socket's frames", () => {
  it("takes a proposal without any word of who asks, and refuses one that claims an agent", () => {
    const ok = parseFrame(
      JSON.stringify({
        v: 1,
        type: "propose",
        host: "tom",
        explanation: "htop",
        branch: "ada/htop",
      }),
      ChangeFrameSchema,
    );
    assert.equal(ok.ok, true);
    const forged = parseFrame(
      JSON.stringify({
        v: 1,
        type: "propose",
        host: "tom",
        explanation: "htop",
        branch: "ada/htop",
        agent: "bob",
      }),
      ChangeFrameSchema,
    );
    assert.equal(forged.ok, false);
    assert.match(forged.ok ? "" : forged.error, /agent|unrecognized/i);
  });

  it("offers no approve or apply", () => {
    for (const type of ["approve", "apply", "rollback"]) {
      const parsed = parseFrame(
        JSON.stringify({ v: 1, type, id: "20260101-a1b2c3" }),
        ChangeFrameSchema,
      );
      assert.equal(parsed.ok, false, type);
    }
  });

  it("hints what an agent can do about each refusal", () => {
    assert.match(changeHint("propose", "change.repo is not declared"), /no change\.repo declared/);
    assert.match(
      changeHint("propose", "branch ada/x not found in /agents/ada/nixos"),
      /name the clone/,
    );
    assert.match(changeHint("connect", ""), /approvald is not running/);
    assert.match(changeHint("frame", "malformed frame: agent: unrecognized"), /malformed/);
    assert.doesNotMatch(changeHint("frame", "frame too large"), /not running/);
    assert.match(
      changeHint("propose", "refs/heads/x is not based on main (0123): rebase it first"),
      /rebase/,
    );
    assert.match(changeHint("verify", "exited 1"), /fix the configuration/);
  });
});

describe("the changed-paths closure summary (diff -rq)", () => {
  const old = "/nix/var/system/generations/1";
  const now = "/run/nuketown/change-builds/20260101-a1b2c3/result";
  it("names each path relative to the trees: added, removed, changed, a kind that changed", () => {
    const output = [
      `Files ${old}/config.json and ${now}/config.json differ`,
      `Only in ${now}/sw: htop`,
      `Only in ${old}/sw: nano`,
      `Symbolic links ${old}/etc/motd and ${now}/etc/motd differ`,
      `File ${old}/bin is a directory while file ${now}/bin is a regular file`,
      `Files ${old}/a and b and ${now}/a and b differ`,
      "diff: something unexpected",
    ].join("\n");
    assert.equal(
      parseDiffBrief(output, old, now),
      ["~ a and b", "~ bin", "~ config.json", "~ etc/motd", "+ sw/htop", "- sw/nano"].join("\n"),
    );
  });

  it("says so when nothing differs, and cuts a long list", () => {
    assert.equal(parseDiffBrief("", old, now), "no difference");
    const many = Array.from({ length: 5 }, (_, i) => `Only in ${now}: f${i}`).join("\n");
    assert.equal(parseDiffBrief(many, old, now, 3), "+ f0\n+ f1\n+ f2\n… and 2 more");
  });
});
