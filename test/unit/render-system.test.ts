import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderSudoers } from "../../src/host/render/sudoers.ts";
import { renderUdevRules } from "../../src/host/render/udev.ts";
import {
  agentUnitName,
  chatUnitName,
  renderUnits,
  type UnitFile,
} from "../../src/host/render/units.ts";
import type { ResolvedTown } from "../../src/town/types.ts";
import {
  exampleDeclaration,
  exampleTown,
  minimalDeclaration,
  resolveOrThrow,
} from "../support/fixtures.ts";
import { assertGolden } from "../support/golden.ts";

type Decl = Record<string, unknown>;

/** The minimal town with agent `ada` merged with `overrides`, plus extra agents and top-level keys. */
function townWith(
  overrides: Decl,
  extraAgents: Record<string, Decl> = {},
  top: Decl = {},
): ResolvedTown {
  const decl = minimalDeclaration();
  const agents = decl.agents as Record<string, Decl>;
  agents.ada = { ...agents.ada, ...overrides };
  Object.assign(agents, extraAgents);
  return resolveOrThrow({ ...decl, ...top });
}

/** A mutable deep copy, to smuggle in values the schema would refuse. */
function tampered(town: ResolvedTown): ResolvedTown {
  return structuredClone(town) as ResolvedTown;
}

function unit(town: ResolvedTown, name: string): string {
  const found = renderUnits(town).find((u) => u.name === name);
  assert.ok(found, `no unit ${name}`);
  return found.content;
}

/** Values of `key=` lines, in order. */
function directive(content: string, key: string): string[] {
  return content
    .split("\n")
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

/** Lines that are neither blank nor comments. */
function statements(content: string): string[] {
  return content.split("\n").filter((line) => line.trim() !== "" && !line.startsWith("#"));
}

const DEVICE_TTY = { subsystem: "tty", attrs: { idVendor: "0483", idProduct: "5740" } };
const DEVICE_USB = { subsystem: "usb", attrs: { product: "STM32  BOOTLOADER" } };

describe("golden files for the example town", () => {
  const town = exampleTown();

  it("renders the udev rules", () => {
    assertGolden("udev/70-nuketown.rules", renderUdevRules(town));
  });

  it("renders the sudoers fragment", () => {
    assertGolden("sudoers/nuketown", renderSudoers(town));
  });

  it("renders every unit", () => {
    const units = renderUnits(town);
    assert.deepEqual(
      units.map((u) => u.name),
      [
        "nuketown-agent-ada.service",
        "nuketown-agent-vox.service",
        "nuketown-approvald.service",
        "nuketown-dashboard.service",
        "nuketown-reset.service",
      ],
    );
    for (const u of units) assertGolden(`units/${u.name}`, u.content);
  });
});

describe("udev rules", () => {
  it("matches tty devices with ATTRS{} (walks up the USB tree) and others with ATTR{}", () => {
    const rules = renderUdevRules(townWith({ devices: [DEVICE_TTY, DEVICE_USB] }));
    const [tty, usb] = statements(rules);
    assert.match(
      tty ?? "",
      /SUBSYSTEM=="tty", ATTRS\{idProduct\}=="5740", ATTRS\{idVendor\}=="0483"/,
    );
    assert.doesNotMatch(tty ?? "", /ATTR\{/);
    assert.match(usb ?? "", /SUBSYSTEM=="usb", ATTR\{product\}=="STM32 {2}BOOTLOADER"/);
    assert.doesNotMatch(usb ?? "", /ATTRS\{/);
  });

  it("writes attributes sorted by name, whatever the declaration order", () => {
    const rules = renderUdevRules(
      townWith({
        devices: [
          { subsystem: "tty", attrs: { serial: "X1", idVendor: "0483", idProduct: "5740" } },
        ],
      }),
    );
    const keys = [...rules.matchAll(/ATTRS\{(\w+)\}/g)].map((m) => m[1]);
    assert.deepEqual(keys, ["idProduct", "idVendor", "serial"]);
  });

  it("grants the ACL to the declaring agent alone, never a group or mode", () => {
    const town = townWith({ devices: [DEVICE_TTY] }, { bob: { uid: 1101, devices: [DEVICE_USB] } });
    const [ada, bob] = statements(renderUdevRules(town));
    assert.match(ada ?? "", /RUN\+="\/usr\/bin\/setfacl -m u:ada:rw \$env\{DEVNAME\}"$/);
    assert.match(bob ?? "", /RUN\+="\/usr\/bin\/setfacl -m u:bob:rw \$env\{DEVNAME\}"$/);
    assert.doesNotMatch(ada ?? "", /bob/);
    assert.doesNotMatch(bob ?? "", /ada/);
    for (const rule of [ada, bob]) {
      assert.doesNotMatch(rule ?? "", /GROUP|MODE|OWNER/);
      assert.equal(
        [...(rule ?? "").matchAll(/-m (\S+)/g)].map((m) => m[1]).join(),
        rule === ada ? "u:ada:rw" : "u:bob:rw",
      );
    }
  });

  it("names the agent and the device in a comment above each rule", () => {
    const rules = renderUdevRules(
      townWith({ devices: [{ ...DEVICE_TTY, description: "Flight controller" }, DEVICE_USB] }),
    );
    const lines = rules.split("\n");
    const tty = lines.findIndex((line) => line.includes('SUBSYSTEM=="tty"'));
    const usb = lines.findIndex((line) => line.includes('SUBSYSTEM=="usb"'));
    assert.equal(lines[tty - 1], "# ada: Flight controller");
    assert.equal(lines[usb - 1], "# ada");
  });

  it("uses the declared action, permission and setfacl path", () => {
    const town = townWith(
      { devices: [{ ...DEVICE_TTY, action: "add", permission: "r" }] },
      {},
      { install: { setfacl: "/run/current-system/sw/bin/setfacl" } },
    );
    const [rule] = statements(renderUdevRules(town));
    assert.match(rule ?? "", /^ACTION=="add", /);
    assert.match(
      rule ?? "",
      /RUN\+="\/run\/current-system\/sw\/bin\/setfacl -m u:ada:r \$env\{DEVNAME\}"/,
    );
  });

  it("renders the header alone for a town without devices", () => {
    const rules = renderUdevRules(resolveOrThrow(minimalDeclaration()));
    assert.deepEqual(statements(rules), []);
    assert.match(rules, /^# Generated by nuketown for town testtown; do not edit\.\n/);
  });

  it("refuses a value that would escape the rule, even if it got past the schema", () => {
    for (const bad of ['05"40', "57%0", "$x", "a\\b", "a\nb"]) {
      const town = tampered(townWith({ devices: [DEVICE_TTY] }));
      (town.agents[0]?.devices[0]?.attrs[0] as [string, string])[1] = bad;
      assert.throws(() => renderUdevRules(town), /refusing/, JSON.stringify(bad));
    }
  });
});

describe("sudoers", () => {
  it("grants nothing when no agent has sudo: comments only, no NOPASSWD", () => {
    const sudoers = renderSudoers(townWith({}, { bob: { uid: 1101 } }));
    assert.deepEqual(statements(sudoers), []);
    assert.doesNotMatch(sudoers, /NOPASSWD/);
  });

  it("lets only sudo-enabled agents run the gate, as root, without SETENV", () => {
    const town = townWith(
      { sudo: { enable: true } },
      { bob: { uid: 1101 }, cy: { uid: 1102, sudo: { enable: true } } },
    );
    const sudoers = renderSudoers(town);
    assert.deepEqual(statements(sudoers), [
      "Cmnd_Alias NUKETOWN_GATE_TESTTOWN = /usr/local/libexec/nuketown/sudo-gate",
      "User_Alias NUKETOWN_AGENTS_TESTTOWN = ada, cy",
      "Defaults!NUKETOWN_GATE_TESTTOWN env_reset, !setenv",
      "NUKETOWN_AGENTS_TESTTOWN ALL = (root) NOPASSWD:NOSETENV: NUKETOWN_GATE_TESTTOWN",
    ]);
  });

  it("never grants SETENV (only NOSETENV) and names no command but the gate", () => {
    const town = exampleTown();
    const sudoers = renderSudoers(town);
    assert.doesNotMatch(sudoers.replaceAll("NOSETENV", ""), /SETENV/);
    assert.doesNotMatch(sudoers.replaceAll("!setenv", ""), /(^|[^!])setenv/m);
    const commands = statements(sudoers)
      .filter((line) => line.startsWith("Cmnd_Alias"))
      .map((line) => line.split("=")[1]?.trim());
    assert.deepEqual(commands, [town.install.gate]);
    const grants = statements(sudoers).filter(
      (line) => !/^(Cmnd_Alias|User_Alias|Defaults)/.test(line),
    );
    assert.deepEqual(grants, [
      "NUKETOWN_AGENTS_SIGNI ALL = (root) NOPASSWD:NOSETENV: NUKETOWN_GATE_SIGNI",
    ]);
  });

  it("refuses a gate path that is not a plain path", () => {
    const town = tampered(townWith({ sudo: { enable: true } }));
    (town.install as { gate: string }).gate = "/bin/sh, ALL";
    assert.throws(() => renderSudoers(town), /refusing/);
  });
});

describe("systemd units", () => {
  it("leaves off setuid- and root-confining protections for a sudo agent, with the reason", () => {
    const town = townWith({ sudo: { enable: true } }, { bob: { uid: 1101 } });
    const ada = unit(town, agentUnitName("ada"));
    for (const key of [
      "NoNewPrivileges",
      "RestrictSUIDSGID",
      "ProtectSystem",
      "ProtectHome",
      "PrivateTmp",
      "PrivateDevices",
    ]) {
      assert.deepEqual(directive(ada, key), [], `${key} in a sudo agent's unit`);
    }
    assert.match(ada, /^# sudo is setuid/m);
    assert.deepEqual(directive(ada, "LockPersonality"), ["yes"]);

    const bob = unit(town, agentUnitName("bob"));
    assert.deepEqual(directive(bob, "NoNewPrivileges"), ["yes"]);
    assert.deepEqual(directive(bob, "RestrictSUIDSGID"), ["yes"]);
    assert.deepEqual(directive(bob, "ProtectSystem"), ["strict"]);
    assert.deepEqual(directive(bob, "ReadWritePaths"), ["/agents/bob /run/nuketown/agents/bob"]);
    assert.deepEqual(directive(bob, "ProtectHome"), ["read-only"]);
    assert.deepEqual(directive(bob, "PrivateTmp"), ["yes"]);
    assert.deepEqual(directive(bob, "PrivateDevices"), ["yes"]);
  });

  it("keeps a device agent's devices visible (no PrivateDevices) but confines it otherwise", () => {
    const content = unit(townWith({ devices: [DEVICE_TTY] }), agentUnitName("ada"));
    assert.deepEqual(directive(content, "PrivateDevices"), []);
    assert.deepEqual(directive(content, "ProtectClock"), []);
    assert.match(content, /^# No PrivateDevices or ProtectClock: /m);
    assert.deepEqual(directive(content, "NoNewPrivileges"), ["yes"]);
    assert.deepEqual(directive(content, "ProtectSystem"), ["strict"]);
  });

  it("runs the agent as itself in its home", () => {
    const content = unit(townWith({}), agentUnitName("ada"));
    assert.deepEqual(directive(content, "User"), ["ada"]);
    assert.deepEqual(directive(content, "Group"), ["ada"]);
    assert.deepEqual(directive(content, "WorkingDirectory"), ["/agents/ada"]);
    assert.deepEqual(directive(content, "ExecStart"), [
      "/usr/local/bin/nuketown agent ada --manifest /etc/nuketown/town.json",
    ]);
    assert.deepEqual(directive(content, "Requires"), []);
    assert.deepEqual(directive(content, "Wants"), ["nuketown-reset.service network-online.target"]);
    assert.match(
      directive(content, "After")[0] ?? "",
      /nuketown-reset\.service nuketown-approvald\.service/,
    );
  });

  it('writes the environment quoted, sorted by key, with % doubled and " and \\ escaped', () => {
    const env = {
      NODE_OPTIONS: "--max-old-space-size=4096",
      FMT: "100%",
      QUOTE: 'say "hi"',
      WIN: "C:\\x",
    };
    const content = unit(townWith({ runtime: { env } }), agentUnitName("ada"));
    assert.deepEqual(directive(content, "Environment"), [
      '"FMT=100%%"',
      '"NODE_OPTIONS=--max-old-space-size=4096"',
      '"QUOTE=say \\"hi\\""',
      '"TMPDIR=/run/nuketown/agents/ada/tmp"',
      '"WIN=C:\\\\x"',
    ]);
  });

  it("puts the sudo shim first in PATH for sudo agents only", () => {
    const town = townWith(
      { sudo: { enable: true }, runtime: { env: { PATH: "/opt/bin:/usr/bin" } } },
      { bob: { uid: 1101 } },
    );
    assert.deepEqual(directive(unit(town, agentUnitName("ada")), "Environment"), [
      '"PATH=/usr/local/libexec/nuketown/shim:/opt/bin:/usr/bin"',
      '"TMPDIR=/run/nuketown/agents/ada/tmp"',
    ]);
    assert.deepEqual(directive(unit(town, agentUnitName("bob")), "Environment"), [
      '"TMPDIR=/run/nuketown/agents/bob/tmp"',
    ]);
    const plainSudo = unit(townWith({ sudo: { enable: true } }), agentUnitName("ada"));
    assert.match(
      directive(plainSudo, "Environment")[0] ?? "",
      /^"PATH=\/usr\/local\/libexec\/nuketown\/shim:\/usr\/local\/sbin:/,
    );
  });

  it("lets approvald reach the network only when chat goes over Matrix or XMPP", () => {
    const families = (town: ResolvedTown) =>
      directive(unit(town, "nuketown-approvald.service"), "RestrictAddressFamilies");
    const local = townWith({});
    assert.deepEqual(families(local), ["AF_UNIX"]);
    assert.deepEqual(directive(unit(local, "nuketown-approvald.service"), "PrivateNetwork"), [
      "yes",
    ]);
    const matrix = townWith(
      {},
      {},
      { chat: { matrix: { homeserver: "https://matrix.test.local" } } },
    );
    assert.deepEqual(families(matrix), ["AF_UNIX AF_INET AF_INET6"]);
    assert.deepEqual(directive(unit(matrix, "nuketown-approvald.service"), "PrivateNetwork"), []);
    const xmpp = townWith(
      {},
      {},
      { chat: { xmpp: { service: "xmpps://xmpp.test.local", domain: "test.local" } } },
    );
    assert.deepEqual(families(xmpp), ["AF_UNIX AF_INET AF_INET6"]);
  });

  it("lets approvald fetch into the config repo and build agents' changes as them when change.repo is declared", () => {
    const town = townWith(
      {},
      {},
      {
        approval: { channels: ["terminal"] },
        change: { repo: "/etc/nixos", hosts: { tom: {} } },
      },
    );
    const content = unit(town, "nuketown-approvald.service");
    assert.deepEqual(directive(content, "CapabilityBoundingSet"), [
      "CAP_CHOWN CAP_FOWNER CAP_SETUID CAP_SETGID CAP_KILL",
    ]);
    assert.deepEqual(directive(content, "ReadWritePaths"), [
      "/var/lib/nuketown /run/nuketown /etc/nixos",
    ]);
    // A build may fetch its flake's inputs.
    assert.deepEqual(directive(content, "PrivateNetwork"), []);
    assert.deepEqual(directive(content, "RestrictAddressFamilies"), ["AF_UNIX AF_INET AF_INET6"]);
    assert.deepEqual(directive(content, "NoNewPrivileges"), ["yes"]);
  });

  it("hardens approvald and leaves only its state and runtime dirs writable", () => {
    const town = townWith({}, {}, { stateDir: "/srv/nuketown", runtimeDir: "/srv/nuketown-run" });
    const content = unit(town, "nuketown-approvald.service");
    assert.deepEqual(directive(content, "ExecStart"), [
      "/usr/local/bin/nuketown approvald --manifest /etc/nuketown/town.json",
    ]);
    assert.deepEqual(directive(content, "ReadWritePaths"), ["/srv/nuketown /srv/nuketown-run"]);
    assert.deepEqual(
      directive(content, "RuntimeDirectory"),
      [],
      "only a dir under /run can be a RuntimeDirectory",
    );
    // The desktop channel (on by default) runs zenity as the mayor: it needs those capabilities and /tmp.
    assert.deepEqual(directive(content, "CapabilityBoundingSet"), [
      "CAP_CHOWN CAP_FOWNER CAP_SETUID CAP_SETGID CAP_SYS_PTRACE CAP_KILL",
    ]);
    assert.deepEqual(directive(content, "PrivateTmp"), []);
    const terminalOnly = unit(
      townWith({}, {}, { approval: { channels: ["terminal"] } }),
      "nuketown-approvald.service",
    );
    assert.deepEqual(directive(terminalOnly, "CapabilityBoundingSet"), ["CAP_CHOWN CAP_FOWNER"]);
    assert.deepEqual(directive(terminalOnly, "PrivateTmp"), ["yes"]);
    assert.deepEqual(directive(content, "NoNewPrivileges"), ["yes"]);
    assert.deepEqual(directive(content, "MemoryDenyWriteExecute"), []);
    assert.deepEqual(directive(content, "User"), []);
  });

  it("resets every home at boot before logins and before any agent starts", () => {
    const town = townWith({}, { bob: { uid: 1101 } });
    const content = unit(town, "nuketown-reset.service");
    assert.deepEqual(directive(content, "Type"), ["oneshot"]);
    assert.deepEqual(directive(content, "RemainAfterExit"), ["yes"]);
    assert.deepEqual(directive(content, "ExecStart"), [
      "/usr/local/bin/nuketown reset --all --manifest /etc/nuketown/town.json",
    ]);
    assert.deepEqual(directive(content, "After"), ["local-fs.target"]);
    assert.deepEqual(directive(content, "Before"), [
      "systemd-user-sessions.service nuketown-agent-ada.service nuketown-agent-bob.service",
    ]);
    assert.deepEqual(directive(content, "WantedBy"), ["multi-user.target"]);
  });

  it("runs an online agent's chat in its daemon's unit: one service, one process per agent", () => {
    const chat = {
      enable: true,
      project: "site",
      matrix: { userId: "@ada:test.local", tokenSecret: { file: "ada-matrix.age" } },
    };
    const online = townWith(
      { chat },
      {},
      { chat: { matrix: { homeserver: "http://127.0.0.1:8008" } } },
    );
    const units = renderUnits(online).map((u) => u.name);
    assert.ok(!units.includes(chatUnitName("ada")), "no chat unit beside the agent's");
    assert.ok(!units.some((u) => u.startsWith("nuketown-chat-")));
    const content = unit(online, agentUnitName("ada"));
    assert.deepEqual(directive(content, "Description"), [
      "nuketown agent ada (software), online on matrix",
    ]);
    assert.deepEqual(directive(content, "User"), ["ada"]);
    assert.match(directive(content, "ExecStart")[0] ?? "", / agent ada --manifest /);
    // It reaches the homeserver and keeps making a cgroup per task.
    assert.deepEqual(directive(content, "RestrictAddressFamilies"), [
      "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ]);
    assert.deepEqual(directive(content, "Delegate"), ["yes"]);
    assert.deepEqual(directive(content, "ProtectControlGroups"), []);
    // No chat network, or chat off: the description says nothing of chat.
    const local = townWith({ chat: { ...chat, matrix: undefined } });
    assert.deepEqual(directive(unit(local, agentUnitName("ada")), "Description"), [
      "nuketown agent ada (software)",
    ]);
  });

  it("runs the dashboard when it is an approval channel or the town's chat, else not", () => {
    const has = (town: Parameters<typeof renderUnits>[0]) =>
      renderUnits(town).some((u) => u.name === "nuketown-dashboard.service");
    assert.ok(has(townWith({})));
    assert.ok(has(townWith({}, {}, { approval: { channels: ["terminal"] } })), "local chat");
    assert.ok(
      !has(
        townWith(
          {},
          {},
          {
            approval: { channels: ["terminal"] },
            chat: { matrix: { homeserver: "http://127.0.0.1:8008" } },
          },
        ),
      ),
    );
  });

  it("returns units sorted by name, one per agent", () => {
    const names = renderUnits(townWith({}, { bob: { uid: 1101 }, aaron: { uid: 1102 } })).map(
      (u) => u.name,
    );
    assert.deepEqual(names, [...names].sort());
    assert.equal(names.filter((n) => n.startsWith("nuketown-agent-")).length, 3);
  });
});

describe("determinism", () => {
  it("renders byte-identical output on every call, from equal towns", () => {
    const render = (town: ResolvedTown): [string, string, UnitFile[]] => [
      renderUdevRules(town),
      renderSudoers(town),
      renderUnits(town),
    ];
    const first = render(exampleTown());
    assert.deepEqual(render(exampleTown()), first);
    assert.deepEqual(render(resolveOrThrow(exampleDeclaration())), first);
  });
});
