import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  describeAction,
  deviceGrants,
  type ObservedHost,
  planHost,
  presentPackages,
  sha256,
} from "../../src/host/plan.ts";
import { renderArtifacts } from "../../src/host/render/index.ts";
import { renderUnits } from "../../src/host/render/units.ts";
import { EMPTY_STATE, type HostState } from "../../src/host/state.ts";
import { mountsBelow, parseGroup, parseMountinfo, parsePasswd } from "../../src/os/tables.ts";
import type { ResolvedTown } from "../../src/town/types.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

function town(): ResolvedTown {
  const decl = minimalDeclaration() as Record<string, any>;
  decl.agents.bob = {
    uid: 1101,
    sudo: { enable: true },
    devices: [{ subsystem: "tty", attrs: { idVendor: "0483", idProduct: "5740" } }],
  };
  return resolveOrThrow(decl);
}

function minimalTown(): ResolvedTown {
  return resolveOrThrow(minimalDeclaration());
}

const empty: ObservedHost = {
  users: [],
  groups: [],
  mounts: [],
  state: EMPTY_STATE,
  files: {},
  homes: [],
  imageExists: false,
  roundDigests: {},
  systemd: false,
  packages: { kind: "managed", manager: "apt-get", present: [] },
};

/** What the host looks like right after a successful apply of `t`. */
function converged(t: ResolvedTown): ObservedHost {
  const systemFiles = renderArtifacts(t).filter((a) => a.layer !== "identity");
  const rules = systemFiles.find((a) => a.path === t.paths.udevRules);
  const state: HostState = {
    version: 1,
    approversGroup: t.approval.approversGroup,
    files: systemFiles.map((a) => a.path),
    deviceGrants: deviceGrants(t),
    ...(rules && { udevReloaded: sha256(rules.content) }),
    agents: Object.fromEntries(
      t.agents.map((a) => [
        a.name,
        { uid: a.uid, roundDigest: `d-${a.name}`, lastReset: "2026-01-01T00:00:00Z" },
      ]),
    ),
  };
  return {
    users: [
      ...t.agents.map((a) => ({
        name: a.name,
        uid: a.uid,
        gid: a.gid,
        gecos: "",
        home: a.home,
        shell: "/bin/bash",
      })),
      { name: "mayor", uid: 1000, gid: 1000, gecos: "", home: "/home/mayor", shell: "/bin/bash" },
    ],
    groups: [
      ...t.agents.map((a) => ({ name: a.group, gid: a.gid, members: [] })),
      { name: t.approval.approversGroup, gid: 999, members: ["mayor"] },
    ],
    mounts: [{ mountPoint: t.agentsDir, root: "/", fsType: "btrfs", source: "/dev/loop0" }],
    state,
    files: Object.fromEntries(
      systemFiles.map((a) => [a.path, { content: a.content, mode: a.mode }]),
    ),
    homes: t.agents.map((a) => a.name),
    imageExists: true,
    roundDigests: Object.fromEntries(t.agents.map((a) => [a.name, `d-${a.name}`])),
    systemd: false,
    packages: {
      kind: "managed",
      manager: "apt-get",
      present: [...new Set(t.agents.flatMap((a) => a.packages))],
    },
  };
}

describe("host planner", () => {
  it("plans every layer on an empty host, in layer order", () => {
    const plan = planHost(town(), empty);
    assert.deepEqual(plan.errors, []);
    const layers = plan.actions.map((a) => a.layer);
    assert.deepEqual(
      [...new Set(layers)],
      ["packages", "accounts", "homes", "files", "devices", "rounds"],
    );
    const summary = plan.actions.map(describeAction);
    assert.ok(summary.includes("+ ripgrep for ada, bob (apt-get)"));
    assert.ok(summary.includes("+ group ada (gid 1100)"));
    assert.ok(summary.includes("+ user ada (uid 1100, group ada, home /agents/ada)"));
    assert.ok(summary.includes("+ group nuketown-approvers (system)"));
    assert.ok(summary.includes("+ btrfs image /var/lib/nuketown/homes.img (20G, sparse)"));
    assert.ok(summary.includes("+ mount /var/lib/nuketown/homes.img at /agents"));
    assert.ok(summary.includes("~ reset bob (first round)"));
    assert.match(plan.notes.join("\n"), /humans\.mayor: no Unix account "mayor"/);
    assert.match(plan.notes.join("\n"), /systemd is not PID 1/);
  });

  it("plans nothing on a converged host", () => {
    assert.deepEqual(planHost(town(), converged(town())).actions, []);
  });

  it("refuses a user or group of the same name that nuketown did not create", () => {
    const observed = {
      ...empty,
      users: [{ name: "ada", uid: 1100, gid: 1100, gecos: "", home: "/home/ada", shell: "" }],
    };
    const plan = planHost(town(), observed);
    assert.deepEqual(
      plan.errors.map((e) => `${e.path}: ${e.message}`),
      ['agents.ada: a user "ada" (uid 1100) exists and was not created by nuketown'],
    );
    const groups = planHost(town(), {
      ...empty,
      groups: [{ name: "bob", gid: 5000, members: [] }],
    });
    assert.match(
      groups.errors.map((e) => e.message).join(),
      /a group "bob" exists and was not created by nuketown/,
    );
  });

  it("refuses a uid or gid held by another account", () => {
    const plan = planHost(town(), {
      ...empty,
      users: [{ name: "carol", uid: 1101, gid: 1101, gecos: "", home: "/", shell: "" }],
    });
    assert.match(
      plan.errors.map((e) => `${e.path}: ${e.message}`).join(),
      /agents\.bob\.uid: uid 1101 belongs to the existing user "carol"/,
    );
    const gid = planHost(town(), {
      ...empty,
      groups: [{ name: "staff2", gid: 1100, members: [] }],
    });
    assert.match(
      gid.errors.map((e) => e.message).join(),
      /gid 1100 belongs to the existing group "staff2"/,
    );
  });

  it("refuses to change the uid of an agent it created", () => {
    const observed = converged(town());
    const moved = resolveOrThrow({
      ...minimalDeclaration(),
      agents: { ada: { uid: 1150, secrets: { sshKey: { file: "k.age" } } }, bob: { uid: 1101 } },
    });
    const plan = planHost(moved, observed);
    assert.match(plan.errors.map((e) => e.message).join(), /changing a uid is not supported/);
  });

  it("repairs an apply killed between recording an account and creating it", () => {
    const observed = converged(town());
    const withoutUser = { ...observed, users: observed.users.filter((u) => u.name !== "bob") };
    const plan = planHost(town(), withoutUser);
    assert.deepEqual(plan.errors, []);
    assert.deepEqual(plan.actions.map(describeAction), [
      "+ user bob (uid 1101, group bob, home /agents/bob)",
    ]);
  });

  it("rewrites a system file someone edited, showing it as an update", () => {
    const observed = converged(town());
    const sudoers = "/etc/sudoers.d/nuketown";
    const edited = {
      ...observed,
      files: {
        ...observed.files,
        [sudoers]: { content: "ALL ALL=(ALL) NOPASSWD: ALL\n", mode: "0440" },
      },
    };
    assert.deepEqual(planHost(town(), edited).actions.map(describeAction), [
      "~ /etc/sudoers.d/nuketown (0440)",
    ]);
    const chmodded = {
      ...observed,
      files: { ...observed.files, [sudoers]: { ...observed.files[sudoers]!, mode: "0666" } },
    };
    assert.equal(planHost(town(), chmodded).actions.length, 1);
  });

  it("resets an agent whose round inputs changed, and only that agent", () => {
    const observed = converged(town());
    const changed = { ...observed, roundDigests: { ...observed.roundDigests, bob: "new" } };
    assert.deepEqual(planHost(town(), changed).actions.map(describeAction), [
      "~ reset bob (identity, persisted paths, repos, secrets or installed packages changed)",
    ]);
  });

  it("revokes the ACLs of a removed device grant and drops the rules file and sudoers with their last user", () => {
    const observed = converged(town());
    const decl = minimalDeclaration() as Record<string, any>;
    decl.agents.bob = { uid: 1101 };
    const summary = planHost(resolveOrThrow(decl), observed).actions.map(describeAction);
    assert.deepEqual(summary, [
      "~ /etc/nuketown/town.json (0644)",
      "~ /etc/systemd/system/nuketown-agent-bob.service (0644)",
      "- /etc/sudoers.d/nuketown",
      "- /etc/udev/rules.d/70-nuketown.rules",
      "- ACLs no longer granted: bob (1 device rule)",
      "~ reload udev (rules removed)",
    ]);
    const revoke = planHost(resolveOrThrow(decl), observed).actions.find(
      (a) => a.kind === "revoke-acls",
    );
    assert.deepEqual(revoke?.kind === "revoke-acls" && revoke.grants, [
      {
        agent: "bob",
        uid: 1101,
        devices: [
          {
            subsystem: "tty",
            attrs: [
              ["idProduct", "5740"],
              ["idVendor", "0483"],
            ],
            permission: "rw",
          },
        ],
      },
    ]);
    // A removed agent loses what it was granted, by uid.
    const gone = planHost(minimalTown(), observed).actions.find((a) => a.kind === "revoke-acls");
    assert.equal(gone?.kind === "revoke-acls" && gone.grants[0]?.uid, 1101);
  });

  it("finishes the devices layer of an apply cut short after the rules file was written", () => {
    const observed = converged(town());
    const { udevReloaded: _r, deviceGrants: _g, ...cut } = observed.state;
    assert.deepEqual(planHost(town(), { ...observed, state: cut }).actions.map(describeAction), [
      "~ reload udev rules",
      "~ grant ACLs on devices already plugged in",
    ]);
  });

  it("asks systemd what is enabled and lingering, and repairs what is not", () => {
    const t = town();
    const base = converged(t);
    const units = renderUnits(t).map((u) => u.name);
    const enabled = Object.fromEntries(units.map((u) => [u, "enabled"]));
    const systemdHost = {
      ...base,
      systemd: true,
      units: enabled,
      linger: t.agents.map((a) => a.name),
      state: { ...base.state, units },
    };
    assert.deepEqual(planHost(t, systemdHost).actions, []);
    const cut = {
      ...systemdHost,
      units: { ...enabled, "nuketown-agent-bob.service": "disabled" },
      linger: ["ada"],
      state: { ...systemdHost.state, units: [...units, "nuketown-agent-old.service"] },
    };
    assert.deepEqual(planHost(t, cut).actions.map(describeAction), [
      "+ lingering for bob",
      "~ systemd; enable nuketown-agent-bob.service; disable nuketown-agent-old.service",
    ]);
  });

  it("keeps secret records up to date without a change when the values stayed the same", () => {
    const observed = converged(town());
    const record = { file: "/s/agents.yaml", key: "a", fileHash: "new", valueHash: "v" };
    const plan = planHost(town(), { ...observed, secrets: { ada: { ".config/t": record } } });
    assert.deepEqual(plan.actions, []);
    assert.deepEqual(plan.records, { ada: { ".config/t": record } });
  });

  it("removes an agent dropped from the town, keeping persisted data unless purged", () => {
    const observed = converged(town());
    const smaller = resolveOrThrow(minimalDeclaration());
    const actions = planHost(smaller, observed).actions;
    assert.ok(
      actions
        .map(describeAction)
        .includes("- agent bob: account, home and services (persisted data kept)"),
    );
    const purge = planHost(smaller, observed, { purge: true }).actions.map(describeAction);
    assert.ok(purge.includes("- agent bob: account, home and services, and its persisted data"));
    assert.ok(purge.includes("- /etc/systemd/system/nuketown-agent-bob.service"));
  });

  it("adds approvers to the approvers group and drops those no longer declared", () => {
    const observed = converged(town());
    const groups = observed.groups.map((g) =>
      g.name === "nuketown-approvers" ? { ...g, members: ["eve"] } : g,
    );
    const summary = planHost(town(), { ...observed, groups }).actions.map(describeAction);
    assert.deepEqual(summary, [
      "+ mayor joins nuketown-approvers",
      "- eve leaves nuketown-approvers",
    ]);
  });

  it("GIVEN declared packages the host lacks THEN it installs each once, naming who wants it, and resets those agents", () => {
    const decl = minimalDeclaration() as Record<string, any>;
    decl.basePackages = ["git"];
    decl.agents.ada.packages = ["sl", "hello"];
    decl.agents.bob = { uid: 1101, packages: ["hello"] };
    const t = resolveOrThrow(decl);
    const observed: ObservedHost = {
      ...converged(t),
      packages: { kind: "managed", manager: "apt-get", present: ["git", "sl"] },
    };
    const plan = planHost(t, observed);
    assert.deepEqual(plan.errors, []);
    // The instructions will list what gets installed: a new round places them.
    assert.deepEqual(plan.actions.map(describeAction), [
      "+ hello for ada, bob (apt-get)",
      "~ reset ada (packages installed: hello)",
      "~ reset bob (packages installed: hello)",
    ]);
    assert.deepEqual(
      planHost(t, {
        ...observed,
        packages: { kind: "managed", manager: "apt-get", present: ["git", "sl", "hello"] },
      }).actions,
      [],
    );
    const dnf = planHost(t, {
      ...observed,
      packages: { kind: "managed", manager: "dnf", present: [] },
    }).actions.filter((a) => a.layer === "packages");
    assert.deepEqual(dnf.map(describeAction), [
      "+ git for ada, bob (dnf)",
      "+ sl for ada (dnf)",
      "+ hello for ada, bob (dnf)",
    ]);
  });

  it("GIVEN NixOS THEN the packages layer is skipped with a note", () => {
    const plan = planHost(town(), { ...converged(town()), packages: { kind: "nixos" } });
    assert.deepEqual(plan.actions, []);
    assert.deepEqual(plan.errors, []);
    assert.match(plan.notes.join("\n"), /NixOS: packages come from Nix/);
  });

  it("GIVEN no supported package manager THEN the plan refuses, pointing at each declaration", () => {
    const decl = minimalDeclaration() as Record<string, any>;
    decl.basePackages = ["git", "jq"];
    decl.agents.ada.packages = ["sl", "git"];
    decl.agents.bob = {
      uid: 1101,
      sudo: { enable: true },
      devices: [{ subsystem: "tty", attrs: { idVendor: "0483", idProduct: "5740" } }],
    };
    const t = resolveOrThrow(decl);
    const plan = planHost(t, { ...converged(t), packages: { kind: "unsupported" } });
    assert.deepEqual(plan.actions, []);
    assert.deepEqual(
      plan.errors.map((e) => `${e.path}: ${e.message}`),
      [
        "basePackages: no apt-get, dnf or pacman on this host, so git, jq can be neither checked nor installed: install them yourself and remove them from the declaration",
        "agents.ada.packages: no apt-get, dnf or pacman on this host, so sl can be neither checked nor installed: install them yourself and remove them from the declaration",
      ],
    );
    // Nothing declared, nothing to refuse.
    const bare = resolveOrThrow({ ...minimalDeclaration(), basePackages: [] });
    assert.deepEqual(
      planHost(bare, { ...converged(bare), packages: { kind: "unsupported" } }).errors,
      [],
    );
  });

  it("says installed only of the packages the host was seen to have", () => {
    const managed = { kind: "managed", manager: "pacman", present: ["git", "jq"] } as const;
    assert.deepEqual(presentPackages(managed, ["jq", "sl", "git"]), ["jq", "git"]);
    assert.equal(presentPackages({ kind: "nixos" }, ["git"]), undefined);
    assert.equal(presentPackages({ kind: "unsupported" }, ["git"]), undefined);
  });

  it("GIVEN an agent's chat unit from an older nuketown THEN systemd stops, disables and forgets it", () => {
    const t = town();
    const legacy = `${t.paths.unitDir}/nuketown-chat-ada.service`;
    const host = converged(t);
    const units = renderUnits(t).map((u) => u.name);
    const observed: ObservedHost = {
      ...host,
      systemd: true,
      units: Object.fromEntries([...units, "nuketown-chat-ada.service"].map((u) => [u, "enabled"])),
      linger: t.agents.map((a) => a.name),
      state: {
        ...host.state,
        files: [...host.state.files, legacy],
        units: [...units, "nuketown-chat-ada.service"],
      },
      files: { ...host.files, [legacy]: { content: "[Service]\n", mode: "0644" } },
    };
    const plan = planHost(t, observed);
    assert.deepEqual(plan.actions.map(describeAction), [
      `- ${legacy}`,
      "~ systemd daemon-reload; disable nuketown-chat-ada.service",
    ]);
    assert.deepEqual(plan.actions[0], { layer: "files", kind: "remove-file", path: legacy });
  });

  it("plans only files with --root", () => {
    const plan = planHost(town(), empty, { filesOnly: true });
    assert.ok(plan.actions.every((a) => a.layer === "files"));
    assert.ok(plan.actions.length > 0);
  });
});

describe("system tables", () => {
  it("parse passwd and group lines, skipping comments and blanks", () => {
    assert.deepEqual(
      parsePasswd(
        "root:x:0:0:root:/root:/bin/bash\n\n# c\nada:x:1100:1100:nuketown agent ada:/agents/ada:/bin/bash\n",
      ),
      [
        { name: "root", uid: 0, gid: 0, gecos: "root", home: "/root", shell: "/bin/bash" },
        {
          name: "ada",
          uid: 1100,
          gid: 1100,
          gecos: "nuketown agent ada",
          home: "/agents/ada",
          shell: "/bin/bash",
        },
      ],
    );
    assert.deepEqual(parseGroup("nuketown-approvers:x:998:josh,ann\nada:x:1100:\n"), [
      { name: "nuketown-approvers", gid: 998, members: ["josh", "ann"] },
      { name: "ada", gid: 1100, members: [] },
    ]);
  });

  it("parse mountinfo, decoding escaped spaces, and list mounts below a dir deepest first", () => {
    const text = [
      "36 35 98:0 / /agents rw,noatime shared:1 - btrfs /dev/loop0 rw",
      "37 36 98:0 /persist/agents/ada/projects /agents/ada/projects rw - ext4 /dev/vda rw",
      "38 36 98:0 /x /agents/ada/my\\040dir/deep rw - ext4 /dev/vda rw",
      "39 36 98:0 /y /agents/adam rw - ext4 /dev/vda rw",
    ].join("\n");
    const mounts = parseMountinfo(text);
    assert.equal(mounts[2]?.mountPoint, "/agents/ada/my dir/deep");
    assert.equal(mounts[1]?.root, "/persist/agents/ada/projects");
    assert.deepEqual(
      mountsBelow(mounts, "/agents/ada").map((m) => m.mountPoint),
      ["/agents/ada/my dir/deep", "/agents/ada/projects"],
    );
  });
});
