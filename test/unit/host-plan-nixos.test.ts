/**
 * The plan of a town whose manifest NixOS wrote (`managed.by = "nixos"`):
 * NixOS owns the packages, accounts, manifest, sudoers, udev rules and units,
 * so nuketown plans none of them; it adopts the accounts NixOS made, and
 * still owns homes, rounds and the ACLs of plugged-in devices.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeAction, type ObservedHost, planHost } from "../../src/host/plan.ts";
import { renderUdevRules } from "../../src/host/render/udev.ts";
import { EMPTY_STATE, type HostState } from "../../src/host/state.ts";
import { NIXOS_LAYERS, type ResolvedTown } from "../../src/town/types.ts";
import { exampleTown } from "../support/fixtures.ts";

function nixosTown(): ResolvedTown {
  return { managed: { by: "nixos", layers: NIXOS_LAYERS }, ...exampleTown() };
}

/** A NixOS host after nixos-rebuild switch: the accounts exist, nuketown has done nothing yet. */
function freshNixos(t: ResolvedTown, state: HostState = EMPTY_STATE): ObservedHost {
  return {
    users: t.agents.map((a) => ({
      name: a.name,
      uid: a.uid,
      gid: a.gid,
      gecos: "",
      home: a.home,
      shell: "/run/current-system/sw/bin/bash",
    })),
    groups: t.agents.map((a) => ({ name: a.group, gid: a.gid, members: [] })),
    mounts: [],
    state,
    files: {},
    homes: [],
    imageExists: false,
    roundDigests: {},
    systemd: true,
    packages: { kind: "nixos" },
  };
}

describe("plan on NixOS", () => {
  it("GIVEN a fresh NixOS host THEN it adopts the accounts, makes homes and rounds, and writes no system file", () => {
    const t = nixosTown();
    const plan = planHost(t, freshNixos(t), { programs: true });
    assert.deepEqual(plan.errors, []);
    assert.deepEqual(
      plan.actions.map((a) => `${a.layer}: ${describeAction(a)}`),
      [
        "accounts: = user ada (uid 1100), made by NixOS",
        "accounts: = user vox (uid 1101), made by NixOS",
        "homes: + btrfs image /var/lib/nuketown/homes.img (20G, sparse)",
        "homes: + mount /var/lib/nuketown/homes.img at /agents",
        "homes: + home /agents/ada with its blank snapshot",
        "homes: + home /agents/vox with its blank snapshot",
        "devices: ~ grant ACLs on devices already plugged in",
        "rounds: ~ reset ada (first round)",
        "rounds: ~ reset vox (first round)",
      ],
    );
    assert.ok(
      plan.notes.some((n) =>
        n.startsWith(
          "NixOS owns packages, accounts, manifest, sudoers, udev-rules, units (nixos-rebuild switch); nuketown owns homes",
        ),
      ),
      plan.notes.join("\n"),
    );
  });

  it("GIVEN the ACLs granted for these rules THEN nothing more is planned for devices", () => {
    const t = nixosTown();
    const state: HostState = { ...EMPTY_STATE, deviceRules: renderUdevRules(t) };
    const plan = planHost(t, freshNixos(t, state));
    assert.ok(!plan.actions.some((a) => a.layer === "devices"));
  });

  it("GIVEN NixOS has not made an account yet THEN it is a conflict naming the agent, not a useradd", () => {
    const t = nixosTown();
    const host = freshNixos(t);
    const plan = planHost(t, { ...host, users: host.users.filter((u) => u.name !== "vox") });
    assert.deepEqual(plan.errors, [
      {
        path: "agents.vox",
        message: 'no account "vox" on this host: NixOS creates it (nixos-rebuild switch)',
      },
    ]);
    assert.ok(!plan.actions.some((a) => a.kind === "create-user" || a.kind === "create-group"));
  });

  it("GIVEN an agent removed from the town THEN only its home goes; the account leaves with NixOS's", () => {
    const t = nixosTown();
    const state: HostState = { ...EMPTY_STATE, agents: { old: { uid: 1150 } } };
    const removal = planHost(t, freshNixos(t, state)).actions.find(
      (a) => a.kind === "remove-agent",
    );
    assert.ok(removal);
    assert.equal(
      describeAction(removal),
      "- agent old: home (its account and units leave with NixOS's) (persisted data kept)",
    );
  });

  it("GIVEN the same town without managed layers THEN accounts and system files are planned as on any host", () => {
    const t = exampleTown();
    const plan = planHost(t, { ...freshNixos(t), users: [], groups: [] });
    assert.ok(plan.actions.some((a) => a.kind === "create-user"));
    assert.ok(
      plan.actions.some((a) => a.kind === "write-file" && a.artifact.path === t.paths.sudoers),
    );
  });
});
