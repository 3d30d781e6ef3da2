/**
 * The host planner: what must change so the host matches the town, layer by
 * layer. Pure: it takes what was observed and returns actions, which can be
 * printed, diffed and tested without root. apply.ts carries them out.
 */

import { createHash } from "node:crypto";
import { SUDO_WRAPPER_MARK } from "../approval/wrappers.ts";
import type { GroupEntry, MountEntry, PasswdEntry } from "../os/tables.ts";
import { plural } from "../output.ts";
import { formatPath, formatProblem, type Problem } from "../town/problems.ts";
import { missingHumanAccounts } from "../town/rules.ts";
import type { ManagedLayer, ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { type FileAccess, keyFileProblem } from "./key-file.ts";
import type { Artifact } from "./render/artifact.ts";
import { renderArtifacts } from "./render/index.ts";
import { renderUdevRules } from "./render/udev.ts";
import type { DeviceGrant, GrantedDevice, HostState, SecretRecord } from "./state.ts";

export type Layer =
  | "packages"
  | "accounts"
  | "homes"
  | "files"
  | "devices"
  | "services"
  | "rounds"
  | "removal";
/** In the order apply runs them: packages first, so a refused install changes nothing else. */
export const LAYERS: readonly Layer[] = [
  "packages",
  "accounts",
  "homes",
  "files",
  "devices",
  "services",
  "rounds",
  "removal",
];

/** The package managers nuketown installs with (on NixOS, packages come from Nix). */
export type PackageManager = "apt-get" | "dnf" | "pacman";

/** What the host says of the declared packages. */
export type ObservedPackages =
  | {
      readonly kind: "managed";
      readonly manager: PackageManager;
      /** The declared packages the manager reports installed. */
      readonly present: readonly string[];
    }
  /** /etc/NIXOS: packages come from Nix, the packages layer is skipped. */
  | { readonly kind: "nixos" }
  /** No apt-get, dnf or pacman: the packages can be neither checked nor installed. */
  | { readonly kind: "unsupported" }
  /** Not looked at: no packages declared, or a rendered tree (`--root`). */
  | { readonly kind: "unobserved" };

/**
 * Which of `names` the host has, for the agent's instructions; undefined when
 * that was not checked (they are then said to be declared, not installed).
 */
export function presentPackages(
  observed: ObservedPackages,
  names: readonly string[],
): readonly string[] | undefined {
  if (observed.kind !== "managed") return undefined;
  const present = new Set(observed.present);
  return names.filter((name) => present.has(name));
}

export type Action =
  | {
      readonly layer: "packages";
      readonly kind: "install-package";
      readonly name: string;
      readonly manager: PackageManager;
      /** The agents that declare it (directly or through basePackages). */
      readonly agents: readonly string[];
    }
  | {
      readonly layer: "accounts";
      readonly kind: "create-group";
      readonly name: string;
      readonly gid?: number;
    }
  | {
      readonly layer: "accounts";
      readonly kind: "create-user";
      readonly name: string;
      readonly uid: number;
      readonly group: string;
      readonly home: string;
    }
  | {
      readonly layer: "accounts";
      readonly kind: "add-member" | "remove-member";
      readonly group: string;
      readonly user: string;
    }
  | { readonly layer: "accounts"; readonly kind: "enable-linger"; readonly name: string }
  /** An account NixOS made for the agent: recorded, so rounds and removal know it. */
  | {
      readonly layer: "accounts";
      readonly kind: "adopt-account";
      readonly name: string;
      readonly uid: number;
    }
  | {
      readonly layer: "homes";
      readonly kind: "create-image";
      readonly path: string;
      readonly size: string;
    }
  | {
      readonly layer: "homes";
      readonly kind: "mount-homes";
      readonly source: string;
      readonly at: string;
    }
  | {
      readonly layer: "homes";
      readonly kind: "create-home";
      readonly agent: string;
      readonly home: string;
    }
  | {
      readonly layer: "files";
      readonly kind: "write-file";
      readonly artifact: Artifact;
      readonly change: "create" | "update";
    }
  | { readonly layer: "files"; readonly kind: "remove-file"; readonly path: string }
  /** Take ACLs back from devices whose grant is gone (before apply-acls: it may grant anew). */
  | {
      readonly layer: "devices";
      readonly kind: "revoke-acls";
      readonly grants: readonly RevokedGrant[];
    }
  | {
      readonly layer: "devices";
      readonly kind: "reload-udev";
      /** sha256 of the rules file udev is to load; undefined when there is none any more. */
      readonly rules: string | undefined;
    }
  | { readonly layer: "devices"; readonly kind: "apply-acls" }
  | {
      readonly layer: "services";
      readonly kind: "reload-systemd";
      /** Unit files changed: systemctl daemon-reload. */
      readonly reload: boolean;
      readonly enable: readonly string[];
      readonly disable: readonly string[];
    }
  | {
      readonly layer: "rounds";
      readonly kind: "reset-agent";
      readonly agent: string;
      readonly reason: string;
    }
  | {
      readonly layer: "removal";
      readonly kind: "remove-agent";
      readonly agent: string;
      readonly uid: number;
      readonly home: string;
      readonly purge: boolean;
      /** The account and units are another system's (NixOS): only the home goes. */
      readonly keepAccount?: boolean;
    };

/** What the reconciler saw on the host before planning. */
export interface ObservedHost {
  readonly users: readonly PasswdEntry[];
  readonly groups: readonly GroupEntry[];
  readonly mounts: readonly MountEntry[];
  readonly state: HostState;
  /** Current content of every system file the plan may write or remove (null: absent). */
  readonly files: Readonly<
    Record<string, { readonly content: string; readonly mode: string } | null>
  >;
  /** Agents whose home exists (a subvolume, or a directory for that backend). */
  readonly homes: readonly string[];
  readonly imageExists: boolean;
  /** Round digests the town would place now, by agent (agents that had a round). */
  readonly roundDigests: Readonly<Record<string, string>>;
  /** The agents' secrets as they are now (observeSecrets), by agent. */
  readonly secrets?: Readonly<Record<string, Readonly<Record<string, SecretRecord>>>>;
  /** systemd runs as PID 1: units can be enabled and lingering set. */
  readonly systemd: boolean;
  /**
   * Where systemd runs: each unit's UnitFileState (`enabled`, `disabled`, ""
   * when it has no file), for the units the town renders and those nuketown enabled.
   */
  readonly units?: Readonly<Record<string, string>>;
  /** Where systemd runs: the accounts with a linger file (/var/lib/systemd/linger/<name>). */
  readonly linger?: readonly string[];
  /** The declared packages, as the host's package manager sees them. */
  readonly packages: ObservedPackages;
  /** The town's age key and its directory, when the town decrypts secrets (null: no such file). */
  readonly ageKey?: {
    readonly key: FileAccess;
    readonly dir: { readonly path: string } & FileAccess;
  } | null;
}

export interface PlanOptions {
  /** Delete removed agents' persisted data too. */
  readonly purge?: boolean;
  /** Plan only the files layer (`--root DIR`: a rendered tree, no accounts or mounts). */
  readonly filesOnly?: boolean;
  /** Plan the gate, shim and login profile too (they run the installed nuketown). */
  readonly programs?: boolean;
}

export interface HostPlan {
  readonly actions: readonly Action[];
  /**
   * Not a change: secrets records to bring up to date for agents that get no
   * round (a shared file changed, their values did not), so the next plan
   * need not decrypt them again.
   */
  readonly records?: Readonly<Record<string, Readonly<Record<string, SecretRecord>>>>;
  /** Conflicts that stop the plan: nothing may be applied while there are any. */
  readonly errors: readonly Problem[];
  /** Facts worth saying that change nothing (no systemd, a human without an account). */
  readonly notes: readonly string[];
}

export function planHost(
  town: ResolvedTown,
  observed: ObservedHost,
  options: PlanOptions = {},
): HostPlan {
  if (options.filesOnly) {
    return {
      actions: planFiles(systemArtifacts(town, options.programs), observed),
      errors: [],
      notes: [
        "--root: only files are planned; packages, accounts, homes, devices, services and rounds need the live host",
      ],
    };
  }
  const actions: Action[] = [];
  const errors: Problem[] = [];
  const notes: string[] = [];
  const owned = new Set(town.managed?.layers ?? []);
  if (town.managed) notes.push(managedNote(town.managed.by, owned));
  const ours = observed.state.agents;
  const userByName = new Map(observed.users.map((u) => [u.name, u]));
  const userByUid = new Map(observed.users.map((u) => [u.uid, u]));
  const groupByName = new Map(observed.groups.map((g) => [g.name, g]));
  const groupByGid = new Map(observed.groups.map((g) => [g.gid, g]));

  // packages: first, so a package manager that refuses leaves everything else untouched.
  const packages = planPackages(
    town,
    owned.has("packages") ? { kind: "unobserved" } : observed.packages,
  );
  actions.push(...packages.actions);
  errors.push(...packages.errors);
  notes.push(...packages.notes);

  // secrets: a key others can read gives every agent every other agent's secrets.
  if (observed.ageKey) {
    const problem = keyFileProblem(
      town.secrets.ageKeyFile,
      observed.ageKey.key,
      observed.ageKey.dir,
    );
    if (problem) errors.push({ path: "secrets.ageKeyFile", message: problem });
  }

  // accounts: refuse anything that would touch an account nuketown did not create.
  if (owned.has("accounts")) {
    const adopted = adoptAccounts(town, observed);
    actions.push(...adopted.actions);
    errors.push(...adopted.errors);
  }
  for (const agent of owned.has("accounts") ? [] : town.agents) {
    const at = formatPath(["agents", agent.name]);
    const record = ours[agent.name];
    const user = userByName.get(agent.name);
    const uidOwner = userByUid.get(agent.uid);
    const group = groupByName.get(agent.group);
    const gidOwner = groupByGid.get(agent.gid);
    if (user && !record) {
      errors.push({
        path: at,
        message: `a user "${agent.name}" (uid ${user.uid}) exists and was not created by nuketown`,
      });
      continue;
    }
    if (uidOwner && uidOwner.name !== agent.name) {
      errors.push({
        path: `${at}.uid`,
        message: `uid ${agent.uid} belongs to the existing user "${uidOwner.name}"`,
      });
      continue;
    }
    if (record && record.uid !== agent.uid) {
      errors.push({
        path: `${at}.uid`,
        message: `was ${record.uid} when nuketown created the account; changing a uid is not supported (remove the agent, apply, add it back)`,
      });
      continue;
    }
    if (group && !record) {
      errors.push({
        path: at,
        message: `a group "${agent.group}" exists and was not created by nuketown`,
      });
      continue;
    }
    if (gidOwner && gidOwner.name !== agent.group) {
      errors.push({
        path: `${at}.uid`,
        message: `gid ${agent.gid} belongs to the existing group "${gidOwner.name}"`,
      });
      continue;
    }
    if (!group)
      actions.push({ layer: "accounts", kind: "create-group", name: agent.group, gid: agent.gid });
    if (!user) {
      actions.push({
        layer: "accounts",
        kind: "create-user",
        name: agent.name,
        uid: agent.uid,
        group: agent.group,
        home: agent.home,
      });
    }
  }

  const approvers = town.approval.approversGroup;
  const approversGroup = groupByName.get(approvers);
  if (owned.has("accounts")) {
    // The approvers group and its members are NixOS's too.
  } else if (approversGroup && observed.state.approversGroup !== approvers) {
    errors.push({
      path: "approval",
      message: `a group "${approvers}" exists and was not created by nuketown`,
    });
  } else {
    if (!approversGroup) actions.push({ layer: "accounts", kind: "create-group", name: approvers });
    const members = new Set(approversGroup?.members ?? []);
    const wanted = new Set<string>();
    for (const human of town.humans.filter((h) => h.approver)) {
      if (!userByName.has(human.unixUser)) continue;
      wanted.add(human.unixUser);
      if (!members.has(human.unixUser))
        actions.push({
          layer: "accounts",
          kind: "add-member",
          group: approvers,
          user: human.unixUser,
        });
    }
    for (const member of members) {
      if (!wanted.has(member))
        actions.push({ layer: "accounts", kind: "remove-member", group: approvers, user: member });
    }
  }
  // Said plainly here rather than as setfacl's or the socket's error later.
  for (const problem of missingHumanAccounts(town, (name) => userByName.has(name)))
    notes.push(formatProblem(problem));
  if (observed.systemd && !owned.has("accounts")) {
    // Observed, not inferred from a new account: an apply cut short after useradd still gets it.
    const lingering = new Set(observed.linger ?? []);
    for (const agent of town.agents) {
      if (!lingering.has(agent.name))
        actions.push({ layer: "accounts", kind: "enable-linger", name: agent.name });
    }
  }

  // homes: the filesystem that holds them, then one home per agent.
  if (town.homes.backend === "image" && !observed.imageExists) {
    actions.push({
      layer: "homes",
      kind: "create-image",
      path: town.homes.image.path,
      size: town.homes.image.size,
    });
  }
  const mounted = observed.mounts.some((m) => m.mountPoint === town.agentsDir);
  if (town.homes.backend === "image" && !mounted) {
    actions.push({
      layer: "homes",
      kind: "mount-homes",
      source: town.homes.image.path,
      at: town.agentsDir,
    });
  } else if (
    town.homes.backend === "btrfs" &&
    !mounted &&
    town.homes.device &&
    isDeviceSpec(town.homes.device)
  ) {
    actions.push({
      layer: "homes",
      kind: "mount-homes",
      source: town.homes.device,
      at: town.agentsDir,
    });
  }
  const homes = new Set(observed.homes);
  for (const agent of town.agents) {
    if (!homes.has(agent.name))
      actions.push({ layer: "homes", kind: "create-home", agent: agent.name, home: agent.home });
  }

  // files: install what differs, remove what nuketown installed and no longer renders.
  const artifacts = systemArtifacts(town, options.programs).filter(
    (a) => !owned.has(ARTIFACT_OWNER[a.layer] ?? "manifest"),
  );
  actions.push(...planFiles(artifacts, observed));
  // The sudo wrapper shadows the real sudo for everyone: never over a file nuketown did not put there.
  const wrapper = artifacts.find((a) => a.path === town.install.sudoWrapper);
  const there = wrapper && observed.files[wrapper.path];
  if (
    wrapper &&
    there &&
    !observed.state.files.includes(wrapper.path) &&
    !there.content.startsWith(`#!/bin/sh\n${SUDO_WRAPPER_MARK}`)
  ) {
    errors.push({
      path: "install.sudoWrapper",
      message: `${wrapper.path} exists and was not installed by nuketown; move it away or set install.sudoWrapper to another path`,
    });
  }
  const wantedPaths = new Set(artifacts.map((a) => a.path));
  const touched = (p: string) =>
    actions.some(
      (a) =>
        (a.kind === "write-file" && a.artifact.path === p) ||
        (a.kind === "remove-file" && a.path === p),
    );

  // devices: what udev has loaded and which ACLs were granted are recorded when done, so an
  // apply cut short after writing the rules file finishes the job the next time.
  const grants = deviceGrants(town);
  const legacyGrants =
    owned.has("udev-rules") && observed.state.deviceRules === renderUdevRules(town) ? grants : {};
  const recorded = observed.state.deviceGrants ?? legacyGrants;
  const revoked = revokedGrants(recorded, grants);
  if (revoked.length > 0) actions.push({ layer: "devices", kind: "revoke-acls", grants: revoked });
  if (!owned.has("udev-rules")) {
    // The rules are NixOS's otherwise, reloaded by its switch.
    const rules = artifacts.find((a) => a.path === town.paths.udevRules);
    const wanted = rules === undefined ? undefined : sha256(rules.content);
    if (observed.state.udevReloaded !== wanted)
      actions.push({ layer: "devices", kind: "reload-udev", rules: wanted });
  }
  if (Object.keys(grants).length > 0 && !sameGrants(recorded, grants))
    actions.push({ layer: "devices", kind: "apply-acls" });

  // services: units only take effect through systemd, which is asked what it has enabled.
  const unitName = (p: string) =>
    p.startsWith(`${town.paths.unitDir}/`) ? p.slice(town.paths.unitDir.length + 1) : undefined;
  const wantedUnits = [...wantedPaths].flatMap((p) => unitName(p) ?? []);
  if (observed.systemd && !owned.has("units")) {
    const unitState = observed.units ?? {};
    const reload = [...wantedPaths, ...observed.state.files].some(
      (p) => unitName(p) !== undefined && touched(p),
    );
    const enable = wantedUnits.filter((u) => unitState[u] !== "enabled");
    const enabledBefore = new Set([
      ...(observed.state.units ?? []),
      // Before units were recorded: the unit files nuketown installed.
      ...observed.state.files.flatMap((p) => unitName(p) ?? []),
    ]);
    const disable = [...enabledBefore]
      .filter((u) => !wantedUnits.includes(u))
      .filter(
        (u) =>
          (observed.state.units ?? []).includes(u) ||
          touched(`${town.paths.unitDir}/${u}`) ||
          unitState[u] === "enabled",
      )
      .sort();
    if (reload || enable.length > 0 || disable.length > 0)
      actions.push({ layer: "services", kind: "reload-systemd", reload, enable, disable });
  }
  if (!observed.systemd && !owned.has("units")) {
    notes.push(
      "systemd is not PID 1 here: units are installed but not enabled or started; run the daemons by hand",
    );
  }

  // rounds: an agent whose home contents would differ gets a fresh round.
  const records: Record<string, Readonly<Record<string, SecretRecord>>> = {};
  const installing = (agent: ResolvedAgent) =>
    packages.actions.filter((a) => a.agents.includes(agent.name)).map((a) => a.name);
  for (const agent of town.agents) {
    // Installed packages change the instructions, which a round places.
    const newPackages = installing(agent);
    const reason =
      roundReason(agent, observed, homes) ??
      (newPackages.length > 0 ? `packages installed: ${newPackages.join(", ")}` : undefined);
    if (reason) actions.push({ layer: "rounds", kind: "reset-agent", agent: agent.name, reason });
    else {
      const now = observed.secrets?.[agent.name];
      if (now && JSON.stringify(now) !== JSON.stringify(ours[agent.name]?.secrets ?? {}))
        records[agent.name] = now;
    }
  }

  // removal: agents nuketown created that the town no longer declares.
  const declared = new Set(town.agents.map((a) => a.name));
  for (const [name, record] of Object.entries(ours)) {
    if (declared.has(name)) continue;
    actions.push({
      layer: "removal",
      kind: "remove-agent",
      agent: name,
      uid: record.uid,
      home: `${town.agentsDir}/${name}`,
      purge: options.purge === true,
      ...(owned.has("accounts") && { keepAccount: true }),
    });
  }

  return { actions, errors, notes, ...(Object.keys(records).length > 0 && { records }) };
}

/** Each agent's device rules as far as ACLs go, for agents that have any: what apply records. */
export function deviceGrants(town: ResolvedTown): Record<string, DeviceGrant> {
  const grants: Record<string, DeviceGrant> = {};
  for (const agent of town.agents) {
    if (agent.devices.length === 0) continue;
    grants[agent.name] = {
      uid: agent.uid,
      devices: agent.devices.map((d) => ({
        subsystem: d.subsystem,
        attrs: d.attrs.map(([key, value]) => [key, value] as const),
        permission: d.permission,
      })),
    };
  }
  return grants;
}

/** A grant no longer declared: the agent (gone, or still there) and the rules it lost. */
export interface RevokedGrant {
  readonly agent: string;
  readonly uid: number;
  readonly devices: readonly GrantedDevice[];
}

const sameDevice = (a: GrantedDevice, b: GrantedDevice) =>
  a.subsystem === b.subsystem &&
  a.permission === b.permission &&
  JSON.stringify(a.attrs) === JSON.stringify(b.attrs);

/** What `recorded` granted that `wanted` no longer does (pure). */
export function revokedGrants(
  recorded: Readonly<Record<string, DeviceGrant>>,
  wanted: Readonly<Record<string, DeviceGrant>>,
): RevokedGrant[] {
  const revoked: RevokedGrant[] = [];
  for (const [agent, grant] of Object.entries(recorded).sort(([a], [b]) => (a < b ? -1 : 1))) {
    const now = wanted[agent];
    const kept = now?.uid === grant.uid ? now.devices : [];
    const lost = grant.devices.filter((d) => !kept.some((k) => sameDevice(k, d)));
    if (lost.length > 0) revoked.push({ agent, uid: grant.uid, devices: lost });
  }
  return revoked;
}

function sameGrants(
  a: Readonly<Record<string, DeviceGrant>>,
  b: Readonly<Record<string, DeviceGrant>>,
): boolean {
  const keys = Object.keys(a).sort();
  if (JSON.stringify(keys) !== JSON.stringify(Object.keys(b).sort())) return false;
  return keys.every(
    (k) =>
      a[k]?.uid === b[k]?.uid && JSON.stringify(a[k]?.devices) === JSON.stringify(b[k]?.devices),
  );
}

export const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** The layer of `town.managed` that owns each kind of system file. */
const ARTIFACT_OWNER: Readonly<Partial<Record<Artifact["layer"], ManagedLayer>>> = {
  manifest: "manifest",
  privileges: "sudoers",
  devices: "udev-rules",
  services: "units",
};

function managedNote(by: string, owned: ReadonlySet<ManagedLayer>): string {
  const system = by === "nixos" ? "NixOS" : by;
  return `${system} owns ${[...owned].join(", ")} (nixos-rebuild switch); nuketown owns homes, persisted paths, rounds, secrets and ACLs on plugged-in devices`;
}

/** On NixOS the accounts exist before nuketown runs: check them and record them as the agents'. */
function adoptAccounts(
  town: ResolvedTown,
  observed: ObservedHost,
): { actions: Action[]; errors: Problem[] } {
  const actions: Action[] = [];
  const errors: Problem[] = [];
  for (const agent of town.agents) {
    const at = formatPath(["agents", agent.name]);
    const user = observed.users.find((u) => u.name === agent.name);
    if (!user) {
      errors.push({
        path: at,
        message: `no account "${agent.name}" on this host: NixOS creates it (nixos-rebuild switch)`,
      });
    } else if (user.uid !== agent.uid) {
      errors.push({
        path: `${at}.uid`,
        message: `the account "${agent.name}" has uid ${user.uid}, the town says ${agent.uid}`,
      });
    } else if (observed.state.agents[agent.name]?.uid !== agent.uid) {
      actions.push({ layer: "accounts", kind: "adopt-account", name: agent.name, uid: agent.uid });
    }
  }
  return { actions, errors };
}

function planPackages(
  town: ResolvedTown,
  observed: ObservedPackages,
): {
  actions: Extract<Action, { kind: "install-package" }>[];
  errors: Problem[];
  notes: string[];
} {
  const wanted = new Map<string, string[]>();
  for (const agent of town.agents)
    for (const name of agent.packages) wanted.set(name, [...(wanted.get(name) ?? []), agent.name]);
  const none = { actions: [], errors: [], notes: [] };
  if (wanted.size === 0) return none;
  switch (observed.kind) {
    case "unobserved":
      return none;
    case "nixos":
      return { ...none, notes: ["NixOS: packages come from Nix; the packages layer is skipped"] };
    case "unsupported": {
      // One problem where each package is declared, so it points at the line to change.
      const sources = [
        { path: "basePackages", names: town.basePackages },
        ...town.agents.map((a) => ({
          path: formatPath(["agents", a.name, "packages"]),
          names: a.packages.filter((p) => !town.basePackages.includes(p)),
        })),
      ].filter((source) => source.names.length > 0);
      return {
        ...none,
        errors: sources.map(({ path, names }) => ({
          path,
          message: `no apt-get, dnf or pacman on this host, so ${names.join(", ")} can be neither checked nor installed: install them yourself and remove them from the declaration`,
        })),
      };
    }
    case "managed": {
      const present = new Set(observed.present);
      return {
        ...none,
        actions: [...wanted]
          .filter(([name]) => !present.has(name))
          .map(([name, agents]) => ({
            layer: "packages" as const,
            kind: "install-package" as const,
            name,
            manager: observed.manager,
            agents,
          })),
      };
    }
  }
}

/** Files outside homes; home files are placed by rounds, as the agent. */
const systemArtifacts = (town: ResolvedTown, programs?: boolean) =>
  renderArtifacts(town, programs).filter((a) => a.layer !== "identity");

function planFiles(artifacts: readonly Artifact[], observed: ObservedHost): Action[] {
  const actions: Action[] = [];
  const wanted = new Set(artifacts.map((a) => a.path));
  for (const artifact of artifacts) {
    const current = observed.files[artifact.path];
    if (!current) actions.push({ layer: "files", kind: "write-file", artifact, change: "create" });
    else if (current.content !== artifact.content || current.mode !== artifact.mode) {
      actions.push({ layer: "files", kind: "write-file", artifact, change: "update" });
    }
  }
  for (const file of observed.state.files) {
    if (!wanted.has(file) && observed.files[file])
      actions.push({ layer: "files", kind: "remove-file", path: file });
  }
  return actions;
}

function roundReason(
  agent: ResolvedAgent,
  observed: ObservedHost,
  homes: ReadonlySet<string>,
): string | undefined {
  const record = observed.state.agents[agent.name];
  if (!homes.has(agent.name) || !record?.lastReset) return "first round";
  if (record.roundDigest !== observed.roundDigests[agent.name])
    return "identity, persisted paths, repos, secrets or installed packages changed";
  return undefined;
}

/** A block device or a UUID=/LABEL= spec (else `homes.device` names an existing btrfs mount). */
export const isDeviceSpec = (device: string) =>
  /^(\/dev\/|UUID=|LABEL=|PARTUUID=|PARTLABEL=)/.test(device);

/** One line per action, for `nuketown plan`. */
export function describeAction(action: Action): string {
  switch (action.kind) {
    case "install-package":
      return `+ ${action.name} for ${action.agents.join(", ")} (${action.manager})`;
    case "create-group":
      return `+ group ${action.name}${action.gid === undefined ? " (system)" : ` (gid ${action.gid})`}`;
    case "create-user":
      return `+ user ${action.name} (uid ${action.uid}, group ${action.group}, home ${action.home})`;
    case "add-member":
      return `+ ${action.user} joins ${action.group}`;
    case "remove-member":
      return `- ${action.user} leaves ${action.group}`;
    case "enable-linger":
      return `+ lingering for ${action.name}`;
    case "adopt-account":
      return `= user ${action.name} (uid ${action.uid}), made by NixOS`;
    case "create-image":
      return `+ btrfs image ${action.path} (${action.size}, sparse)`;
    case "mount-homes":
      return `+ mount ${action.source} at ${action.at}`;
    case "create-home":
      return `+ home ${action.home} with its blank snapshot`;
    case "write-file":
      return `${action.change === "create" ? "+" : "~"} ${action.artifact.path} (${action.artifact.mode})`;
    case "remove-file":
      return `- ${action.path}`;
    case "revoke-acls":
      return `- ACLs no longer granted: ${action.grants
        .map((g) => `${g.agent} (${plural(g.devices.length, "device rule")})`)
        .join(", ")}`;
    case "reload-udev":
      return action.rules === undefined ? "~ reload udev (rules removed)" : "~ reload udev rules";
    case "apply-acls":
      return "~ grant ACLs on devices already plugged in";
    case "reload-systemd":
      return `~ systemd${action.reload ? " daemon-reload" : ""}${action.enable.length ? `; enable ${action.enable.join(", ")}` : ""}${
        action.disable.length ? `; disable ${action.disable.join(", ")}` : ""
      }`;
    case "reset-agent":
      return `~ reset ${action.agent} (${action.reason})`;
    case "remove-agent":
      return `- agent ${action.agent}: ${action.keepAccount ? "home (its account and units leave with NixOS's)" : "account, home and services"}${action.purge ? ", and its persisted data" : " (persisted data kept)"}`;
  }
}
