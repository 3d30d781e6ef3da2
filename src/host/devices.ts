/**
 * The devices layer: udev rules take effect on the next plug, so apply also
 * reloads udev and grants the ACL on matching devices that are already
 * plugged in, by running the very command the rule would run. Matching follows
 * udev's own semantics (ATTRS walks up the parents, ATTR looks at the device
 * alone, glob patterns with `|` alternatives), so a device gets its ACL now
 * exactly when the rule would grant it on the next plug.
 */

import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { MissingToolError } from "../errors.ts";
import { fnmatch } from "../glob.ts";
import { CommandError, type Runner } from "../os/process.ts";
import type { ResolvedDevice, ResolvedTown } from "../town/types.ts";
import type { RevokedGrant } from "./plan.ts";

// ---------------------------------------------------------------------------
// sysfs devices

/** A device of the running kernel as udev sees it, with the attributes read from sysfs. */
export interface SysDevice {
  /** Real directory of the device (symlinks resolved), e.g. `/sys/devices/.../tty/ttyACM0`. */
  readonly syspath: string;
  readonly subsystem: string;
  /** Absolute path of the device node (`<devRoot>/<DEVNAME>`), when the device has one. */
  readonly devnode?: string;
  /** Attribute values, trailing newlines removed as sd-device reads them. */
  readonly attrs: Readonly<Record<string, string>>;
  /** Parent devices, nearest first (only directories that are devices: they hold a `uevent`). */
  readonly parents: readonly SysParent[];
}

export interface SysParent {
  readonly syspath: string;
  readonly attrs: Readonly<Record<string, string>>;
}

export interface ReadSysDevicesOptions {
  /**
   * Where device nodes live.
   * @default "/dev"
   */
  readonly devRoot?: string;
  /**
   * Attribute names to read on each device and its parents.
   * @default every readable attribute file, as `udevadm info --attribute-walk` shows them
   */
  readonly attributes?: readonly string[];
}

/** sysfs shows these as symlinks; udev's ATTR{} gives the name they point to. */
const LINK_ATTRIBUTES = new Set(["driver", "subsystem", "module"]);
const SAFE_NAME = /^[A-Za-z0-9_.:-]+$/;

/**
 * The devices of a subsystem present on this machine: the entries of
 * `<sysRoot>/class/<subsystem>` or, for a bus, `<sysRoot>/bus/<subsystem>/devices`,
 * each with its device node, its attributes and its parents' attributes.
 * Sorted by syspath; an unknown subsystem has no devices.
 */
export async function readSysDevices(
  subsystem: string,
  sysRoot = "/sys",
  options: ReadSysDevicesOptions = {},
): Promise<SysDevice[]> {
  if (!isSafeName(subsystem)) throw new Error(`not a subsystem name: ${JSON.stringify(subsystem)}`);
  const devRoot = options.devRoot ?? "/dev";
  const root = await realpath(sysRoot);
  const devicesDir = path.join(root, "devices");
  const entries = await firstListing([
    path.join(root, "class", subsystem),
    path.join(root, "bus", subsystem, "devices"),
  ]);

  const syspaths = new Set<string>();
  for (const entry of entries) {
    const real = await realpath(entry).catch(() => undefined);
    if (real?.startsWith(`${devicesDir}${path.sep}`)) syspaths.add(real);
  }

  const devices: SysDevice[] = [];
  for (const syspath of [...syspaths].sort()) {
    const uevent = parseUevent(await readText(path.join(syspath, "uevent")));
    const devname = uevent.get("DEVNAME");
    const parents: SysParent[] = [];
    for (
      let dir = path.dirname(syspath);
      dir.startsWith(`${devicesDir}${path.sep}`);
      dir = path.dirname(dir)
    ) {
      if ((await readText(path.join(dir, "uevent"))) !== undefined) {
        parents.push({ syspath: dir, attrs: await readAttributes(dir, options.attributes) });
      }
    }
    const devnode = devname === undefined ? undefined : nodePath(devRoot, devname);
    devices.push({
      syspath,
      subsystem: (await linkName(path.join(syspath, "subsystem"))) ?? subsystem,
      ...(devnode === undefined ? {} : { devnode }),
      attrs: await readAttributes(syspath, options.attributes),
      parents,
    });
  }
  return devices;
}

async function firstListing(dirs: readonly string[]): Promise<string[]> {
  for (const dir of dirs) {
    try {
      return (await readdir(dir)).map((name) => path.join(dir, name));
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }
  return [];
}

async function readAttributes(
  dir: string,
  names: readonly string[] | undefined,
): Promise<Record<string, string>> {
  const attrs: Record<string, string> = {};
  const wanted =
    names ??
    (await readdir(dir, { withFileTypes: true }))
      .filter(
        (e) =>
          (e.isFile() && e.name !== "uevent") ||
          (e.isSymbolicLink() && LINK_ATTRIBUTES.has(e.name)),
      )
      .map((e) => e.name)
      .sort();
  for (const name of wanted) {
    if (!isSafeName(name)) continue;
    const value = await readAttribute(path.join(dir, name));
    if (value !== undefined) attrs[name] = value;
  }
  return attrs;
}

async function readAttribute(file: string): Promise<string | undefined> {
  const stat = await lstat(file).catch(() => undefined);
  if (stat === undefined) return undefined;
  if (stat.isSymbolicLink()) {
    return LINK_ATTRIBUTES.has(path.basename(file)) ? linkName(file) : undefined;
  }
  // Write-only attributes (mode 0200) fail on read even for root.
  if (!stat.isFile() || (stat.mode & 0o444) === 0) return undefined;
  const text = await readText(file);
  return text?.replace(/[\n\r]+$/, "");
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch {
    // Missing, or an attribute the driver refuses to show (EIO, EINVAL...).
    return undefined;
  }
}

async function linkName(file: string): Promise<string | undefined> {
  try {
    return path.basename(await readlink(file));
  } catch {
    return undefined;
  }
}

function parseUevent(text: string | undefined): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of (text ?? "").split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) values.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return values;
}

/** DEVNAME is relative to /dev; one that would climb out of devRoot is ignored. */
function nodePath(devRoot: string, devname: string): string | undefined {
  const parts = devname.split("/").filter((p) => p !== "");
  if (parts.length === 0 || parts.some((p) => p === "." || p === "..")) return undefined;
  return path.join(devRoot, ...parts);
}

function isSafeName(name: string): boolean {
  return SAFE_NAME.test(name) && name !== "." && name !== "..";
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

// ---------------------------------------------------------------------------
// Matching, as udev does it (pure)

/**
 * Whether a declared device rule matches a present device, as the rendered
 * udev rule would: for tty every attribute must match on ONE device, the node
 * itself or one of its parents (ATTRS{}); for any other subsystem on the
 * device itself (ATTR{}). Keep in step with the renderer (render/udev.ts).
 */
export function matchesDevice(
  device: Pick<ResolvedDevice, "subsystem" | "attrs">,
  sysfs: SysDevice,
): boolean {
  if (!matchesUdevValue(device.subsystem, sysfs.subsystem)) return false;
  const candidates = device.subsystem === "tty" ? [sysfs, ...sysfs.parents] : [sysfs];
  return candidates.some((candidate) =>
    device.attrs.every(([key, pattern]) => {
      const value = Object.hasOwn(candidate.attrs, key) ? candidate.attrs[key] : undefined;
      return value !== undefined && matchesAttribute(pattern, value);
    }),
  );
}

/**
 * An `ATTR{}`/`ATTRS{}` match: like matchesUdevValue, after udev strips the
 * value's trailing whitespace, which it does unless the pattern itself ends
 * in whitespace.
 */
export function matchesAttribute(pattern: string, value: string): boolean {
  const keepTrailing = /[ \t\n\r\v\f]$/.test(pattern);
  return matchesUdevValue(pattern, keepTrailing ? value : value.replace(/[ \t\n\r]+$/, ""));
}

/**
 * A udev `==` match: the pattern is split on `|` into alternatives, an empty
 * alternative matches an empty value, an empty pattern matches only an empty
 * value; a pattern with `*`, `?` or `[` is a glob (fnmatch without flags),
 * any other is compared as is.
 */
export function matchesUdevValue(pattern: string, value: string): boolean {
  if (pattern === "") return value === "";
  const alternatives = pattern.split("|");
  if (value === "" && alternatives.includes("")) return true;
  const glob = /[*?[]/.test(pattern);
  return alternatives.some((alt) => (glob ? fnmatch(alt, value) : alt === value));
}

export { fnmatch };

// ---------------------------------------------------------------------------
// Effects

/**
 * `udevadm control --reload`, so the next event uses the new rules. Without a
 * running udevd (a container) there is nothing to reload: skipped, with why.
 */
export async function reloadUdev(
  runner: Runner,
): Promise<{ reloaded: true } | { skipped: string }> {
  const args = ["control", "--reload"];
  const result = await runner.run("udevadm", args, { allowFailure: true, timeoutMs: 60_000 });
  if (result.code === 0) return { reloaded: true };
  const message = (result.stderr || result.stdout).trim();
  // udevadm cannot reach /run/udev/control: no udevd listens there.
  if (/No such file or directory|Connection refused/.test(message)) {
    return {
      skipped: `udevd is not running (udevadm control --reload: ${message}); the rules take effect when it starts`,
    };
  }
  throw new CommandError("udevadm", args, result);
}

export interface ApplyDeviceAclsOptions {
  /** @default "/sys" */
  readonly sysRoot?: string;
  /** @default "/dev" */
  readonly devRoot?: string;
}

/**
 * Grant each agent its declared devices that are plugged in right now: every
 * present device matching one of the agent's rules gets
 * `setfacl -m u:<agent>:<permission> <devnode>`, the command the udev rule
 * runs on the next plug. Nothing else is touched: no other device, no group,
 * no mode. Only real device nodes are changed (never a file or a symlink).
 * Returns what was granted, agents in town order, rules in declaration order.
 */
export async function applyDeviceAcls(
  town: ResolvedTown,
  runner: Runner,
  options: ApplyDeviceAclsOptions = {},
): Promise<{ agent: string; devnode: string }[]> {
  const sysRoot = options.sysRoot ?? "/sys";
  const devRoot = options.devRoot ?? "/dev";

  // One sysfs read per subsystem, with every attribute a rule of it needs.
  const wanted = new Map<string, Set<string>>();
  for (const agent of town.agents) {
    for (const device of agent.devices) {
      const names = wanted.get(device.subsystem) ?? new Set<string>();
      for (const [key] of device.attrs) names.add(key);
      wanted.set(device.subsystem, names);
    }
  }
  const present = new Map<string, SysDevice[]>();
  for (const [subsystem, names] of wanted) {
    present.set(
      subsystem,
      await readSysDevices(subsystem, sysRoot, { devRoot, attributes: [...names].sort() }),
    );
  }

  const granted: { agent: string; devnode: string }[] = [];
  const done = new Set<string>();
  for (const agent of town.agents) {
    for (const device of agent.devices) {
      for (const sys of present.get(device.subsystem) ?? []) {
        if (sys.devnode === undefined || !matchesDevice(device, sys)) continue;
        const acl = `u:${agent.name}:${device.permission}`;
        const key = `${acl}\0${sys.devnode}`;
        if (done.has(key) || !(await isDeviceNode(sys.devnode))) continue;
        await runner.run(town.install.setfacl, ["-m", acl, sys.devnode]);
        done.add(key);
        granted.push({ agent: agent.name, devnode: sys.devnode });
      }
    }
  }
  return granted;
}

/**
 * Take back what removed grants gave: on every present device a lost rule
 * matches, `setfacl -x u:<uid>` (by uid: the account may be gone already),
 * unless a rule the agent still has matches the device too (apply-acls then
 * sets its permission). Only the agent's own entry goes; other entries, the
 * owner, group and mode stay. Returns what was revoked.
 */
export async function revokeDeviceAcls(
  town: ResolvedTown,
  revoked: readonly RevokedGrant[],
  runner: Runner,
  options: ApplyDeviceAclsOptions = {},
): Promise<{ agent: string; devnode: string }[]> {
  const sysRoot = options.sysRoot ?? "/sys";
  const devRoot = options.devRoot ?? "/dev";
  const stillGranted = (grant: RevokedGrant) =>
    town.agents.find((a) => a.name === grant.agent && a.uid === grant.uid)?.devices ?? [];

  const wanted = new Map<string, Set<string>>();
  const note = (device: Pick<ResolvedDevice, "subsystem" | "attrs">) => {
    const names = wanted.get(device.subsystem) ?? new Set<string>();
    for (const [key] of device.attrs) names.add(key);
    wanted.set(device.subsystem, names);
  };
  for (const grant of revoked) for (const device of grant.devices) note(device);
  for (const grant of revoked) for (const device of stillGranted(grant)) note(device);
  const present = new Map<string, SysDevice[]>();
  for (const [subsystem, names] of wanted) {
    present.set(
      subsystem,
      await readSysDevices(subsystem, sysRoot, { devRoot, attributes: [...names].sort() }),
    );
  }
  const everyPresent = [...present.values()].flat();

  const done: { agent: string; devnode: string }[] = [];
  const seen = new Set<string>();
  for (const grant of revoked) {
    const kept = stillGranted(grant);
    for (const device of grant.devices) {
      for (const sys of present.get(device.subsystem) ?? []) {
        if (sys.devnode === undefined || !matchesDevice(device, sys)) continue;
        const key = `${grant.uid}\0${sys.devnode}`;
        if (seen.has(key)) continue;
        seen.add(key);
        // The same node may be listed under another subsystem a kept rule names.
        const keptHere = everyPresent.some(
          (other) => other.devnode === sys.devnode && kept.some((k) => matchesDevice(k, other)),
        );
        if (keptHere || !(await isDeviceNode(sys.devnode))) continue;
        await runner.run(town.install.setfacl, ["-x", `u:${grant.uid}`, sys.devnode]);
        done.push({ agent: grant.agent, devnode: sys.devnode });
      }
    }
  }
  return done;
}

async function isDeviceNode(file: string): Promise<boolean> {
  const stat = await lstat(file).catch(() => undefined);
  return stat !== undefined && (stat.isCharacterDevice() || stat.isBlockDevice());
}

export type UdevTestResult =
  | { readonly ok: true; readonly run: readonly string[]; readonly output: string }
  | {
      readonly ok: false;
      /** Complaints about the rules file, with its path and line. */
      readonly problems: readonly string[];
      readonly run: readonly string[];
      readonly output: string;
    }
  | { readonly skipped: string };

export interface UdevTestOptions {
  /** @default "add" */
  readonly action?: string;
}

const RULES_NAME = "70-nuketown.rules";
const READY = "nuketown-udev-test: namespace ready";
const EXIT_NO_UDEVADM = 91;
const EXIT_NO_MOUNT = 92;

/*
 * udevadm test of systemd 252 reads rules only from the standard dirs and is
 * not a dry run: it chmods/chowns the real node, creates /dev/char links and
 * writes /run/udev. So it runs in a private mount namespace where
 * /etc/udev/rules.d shows our file alone, the distribution's rule dirs are
 * empty, and /dev and /run are scratch tmpfs. Data only ever arrives as
 * positional parameters, never inside the script text.
 */
const UDEV_TEST_SCRIPT = `
command -v udevadm >/dev/null 2>&1 || exit ${EXIT_NO_UDEVADM}
[ -d /etc/udev/rules.d ] || exit ${EXIT_NO_UDEVADM}
echo "${READY}" >&2
mount --bind "$1" /etc/udev/rules.d || exit ${EXIT_NO_MOUNT}
for dir in /usr/lib/udev/rules.d /lib/udev/rules.d /usr/local/lib/udev/rules.d; do
  if [ -d "$dir" ]; then mount --bind "$2" "$dir" || exit ${EXIT_NO_MOUNT}; fi
done
mount -t tmpfs -o mode=0755,size=4m nuketown-udev-test /run || exit ${EXIT_NO_MOUNT}
mount -t tmpfs -o mode=0755,size=4m nuketown-udev-test /dev || exit ${EXIT_NO_MOUNT}
exec udevadm test --action="$4" "$3"
`;

/**
 * Run `udevadm test` for `devpath` (e.g. `/sys/class/tty/ttyS0`) with the
 * rules of `rulesFile` alone, without installing them and without touching
 * the device (see above). `run` lists the RUN commands udev would execute,
 * substituted (`$env{DEVNAME}` → the node). Not ok when udevadm fails or
 * complains about a line of the file. Skipped when this host cannot make a
 * private mount namespace (needs root) or has no udevadm.
 */
export async function udevTest(
  rulesFile: string,
  devpath: string,
  runner: Runner,
  options: UdevTestOptions = {},
): Promise<UdevTestResult> {
  const content = await readFile(rulesFile, "utf8");
  const dir = await mkdtemp(path.join(tmpdir(), "nuketown-udev-test-"));
  try {
    const rulesDir = path.join(dir, "rules");
    const emptyDir = path.join(dir, "empty");
    await mkdir(rulesDir);
    await mkdir(emptyDir);
    await writeFile(path.join(rulesDir, RULES_NAME), content, { mode: 0o644 });
    let result: Awaited<ReturnType<Runner["run"]>>;
    try {
      result = await runner.run(
        "unshare",
        [
          "--mount",
          "--propagation",
          "private",
          "sh",
          "-c",
          UDEV_TEST_SCRIPT,
          "nuketown-udev-test",
          rulesDir,
          emptyDir,
          devpath,
          options.action ?? "add",
        ],
        {
          allowFailure: true,
          timeoutMs: 60_000,
          env: { ...process.env, SYSTEMD_LOG_COLOR: "0", SYSTEMD_COLORS: "0", SYSTEMD_PAGER: "" },
        },
      );
    } catch (error) {
      if (error instanceof MissingToolError) {
        return { skipped: "unshare is not installed (apt-get install util-linux)" };
      }
      throw error;
    }

    const tidy = (text: string) =>
      text.replaceAll(`/etc/udev/rules.d/${RULES_NAME}`, rulesFile).replaceAll(dir, "<tmp>");
    const stderr = tidy(result.stderr);
    if (!stderr.includes(READY)) {
      return { skipped: `cannot make a private mount namespace here: ${stderr.trim()}` };
    }
    if (result.code === EXIT_NO_UDEVADM) {
      return { skipped: "udevadm is not installed (apt-get install udev)" };
    }
    if (result.code === EXIT_NO_MOUNT) {
      return { skipped: `cannot mount in a private mount namespace here: ${stderr.trim()}` };
    }
    const run = [...result.stdout.matchAll(/^run: '(.*)'$/gm)].map((m) => m[1] as string);
    // Parse complaints start with the file and line; lines about the event start with the device.
    const problems = stderr.split("\n").filter((line) => line.startsWith(`${rulesFile}:`));
    const output = `${result.stdout}${stderr.replace(`${READY}\n`, "")}`;
    if (result.code !== 0 || problems.length > 0) return { ok: false, problems, run, output };
    return { ok: true, run, output };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
