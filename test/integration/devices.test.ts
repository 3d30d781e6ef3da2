/**
 * The devices layer against the real machine: the rendered rules checked by
 * udevadm test on a device present here (our matcher and udev must agree),
 * and ACLs granted on real device nodes for a real user, through a
 * sysfs-shaped tree of real files.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, statSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import {
  applyDeviceAcls,
  matchesDevice,
  readSysDevices,
  reloadUdev,
  type SysDevice,
  type UdevTestResult,
  udevTest,
} from "../../src/host/devices.ts";
import { renderUdevRules } from "../../src/host/render/udev.ts";
import { systemRunner } from "../../src/os/process.ts";
import type { ResolvedTown } from "../../src/town/types.ts";
import { resolveOrThrow } from "../support/fixtures.ts";
import { uidsOf } from "../support/uids.ts";

const CI = process.env.CI === "true";

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), "nt-test-"));
}

function town(
  agents: Record<string, Record<string, unknown>>,
  uidRange = { min: 1100, max: 1999 },
): ResolvedTown {
  return resolveOrThrow({ name: "devtown", domain: "test.local", uidRange, agents });
}

/** udevadm test may be impossible on some hosts: say why; in CI that is a failure. */
function udevResult(
  t: TestContext,
  result: UdevTestResult,
): result is Exclude<UdevTestResult, { skipped: string }> {
  if (!("skipped" in result)) return true;
  t.diagnostic(`udevadm test could not run: ${result.skipped}`);
  if (CI) assert.fail(`udevadm test must run in CI: ${result.skipped}`);
  t.skip(result.skipped);
  return false;
}

// ---------------------------------------------------------------------------
// (a) udevadm test on a device of this machine

/** Values that mean the same to udev and to our matcher without quoting: plain words. */
const PLAIN_VALUE = /^[A-Za-z0-9][A-Za-z0-9:._-]*$/;
const LINK_ATTRIBUTES = new Set(["driver", "subsystem", "module"]);

interface Target {
  readonly device: SysDevice;
  /** An attribute of a parent (tty) or of the device itself (other subsystems). */
  readonly key: string;
  readonly value: string;
  /** An attribute of the node itself that its parent does not share, for a split rule. */
  readonly own?: readonly [string, string];
}

function plainAttrs(attrs: Readonly<Record<string, string>>): [string, string][] {
  return Object.entries(attrs).filter(
    ([key, value]) =>
      !LINK_ATTRIBUTES.has(key) &&
      PLAIN_VALUE.test(value) &&
      // The schema wants USB ids as 4 hex digits.
      (!["idVendor", "idProduct"].includes(key) || /^[0-9a-f]{4}$/.test(value)),
  );
}

/** A device here with a node and a plain attribute: on a parent for tty (ATTRS walks up). */
async function pickTarget(): Promise<Target | undefined> {
  const tty = (await readSysDevices("tty")).filter((d) => d.devnode && existsSync(d.devnode));
  for (const device of tty) {
    for (const parent of device.parents) {
      // Not also on the node with the same value, so the split rule below stays split.
      const attr = plainAttrs(parent.attrs).find(([k, v]) => device.attrs[k] !== v);
      if (!attr) continue;
      const own = plainAttrs(device.attrs).find(([k, v]) => parent.attrs[k] !== v);
      return { device, key: attr[0], value: attr[1], ...(own ? { own } : {}) };
    }
  }
  for (const subsystem of ["tty", "mem", "misc"]) {
    for (const device of await readSysDevices(subsystem)) {
      if (!device.devnode || !existsSync(device.devnode)) continue;
      const [attr] = plainAttrs(device.attrs);
      if (attr) return { device, key: attr[0], value: attr[1] };
    }
  }
  return undefined;
}

/** Rules that must match (true) or not (false), derived from the target's real value. */
function variations(target: Target): [attrs: Record<string, string>, expected: boolean][] {
  const { key, value } = target;
  const first = value[0] as string;
  const rest = value.slice(1);
  const cases: [Record<string, string>, boolean][] = [
    [{ [key]: value }, true],
    [{ [key]: `${value.slice(0, -1)}*` }, true],
    [{ [key]: `?${rest}` }, true],
    [{ [key]: `[${first}]${rest}` }, true],
    [{ [key]: `nuketown-nope|${value}` }, true],
    [{ [key]: `${value}x` }, false],
    [{ [key]: `[!${first}]${rest}` }, false],
    [{ [key]: "nuketown-nope|nope*" }, false],
  ];
  if (target.own) {
    const [ownKey, ownValue] = target.own;
    cases.push([{ [ownKey]: ownValue }, true]);
    // Each matches somewhere, never on one device: ATTRS refuses.
    if (ownKey !== key) cases.push([{ [key]: value, [ownKey]: ownValue }, false]);
  }
  return cases;
}

describe("udevadm test accepts the rendered rules for a device of this machine", () => {
  let dir = "";
  let target: Target | undefined;

  before(async () => {
    dir = await tempDir();
    target = await pickTarget();
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("runs our setfacl for the device, and our matcher agrees with udev on every variation", async (t) => {
    if (!target) {
      t.diagnostic("no device with a node and a plain attribute under /sys here (tty, mem, misc)");
      if (CI) assert.fail("no device to test the rules against");
      t.skip("no device to test against");
      return;
    }
    const { device } = target;
    const devnode = device.devnode as string;
    t.diagnostic(
      `device ${device.syspath} (${device.subsystem}, ${devnode}), ${target.key}=${JSON.stringify(target.value)}`,
    );
    const cases = variations(target);
    const agents = Object.fromEntries(
      cases.map(([attrs], i) => [
        `a${String(i).padStart(2, "0")}`,
        { uid: 1100 + i, devices: [{ subsystem: device.subsystem, attrs }] },
      ]),
    );
    const resolved = town(agents);
    const file = path.join(dir, "70-nuketown.rules");
    await writeFile(file, renderUdevRules(resolved));

    const before = statSync(devnode);
    const hadRunUdev = existsSync("/run/udev");
    const hadDevChar = existsSync("/dev/char");
    const result = await udevTest(file, device.syspath, systemRunner);
    if (!udevResult(t, result)) return;
    assert.ok(result.ok, result.output);

    const fired = new Set(result.run);
    for (const [i, [attrs, expected]] of cases.entries()) {
      const agent = resolved.agents[i]!;
      const command = `${resolved.install.setfacl} -m u:${agent.name}:rw ${devnode}`;
      const label = `${agent.name} ${JSON.stringify(attrs)}`;
      assert.equal(fired.has(command), expected, `udev on ${label}:\n${result.output}`);
      assert.equal(matchesDevice(agent.devices[0]!, device), expected, `matchesDevice on ${label}`);
    }
    assert.equal(result.run.length, cases.filter(([, expected]) => expected).length);

    // udevadm test of systemd 252 chmods nodes and writes /run/udev: ours must not.
    const now = statSync(devnode);
    assert.deepEqual(
      [now.mode, now.uid, now.gid, now.ctimeMs],
      [before.mode, before.uid, before.gid, before.ctimeMs],
    );
    assert.equal(existsSync("/run/udev"), hadRunUdev);
    assert.equal(existsSync("/dev/char"), hadDevChar);
  });

  it("reports a broken rule with the file and line", async (t) => {
    const file = path.join(dir, "broken.rules");
    await writeFile(file, '# a comment\nACTION=="add", FOO=="x", RUN+="/bin/true"\n');
    const result = await udevTest(
      file,
      target?.device.syspath ?? "/sys/class/tty/tty0",
      systemRunner,
    );
    if (!udevResult(t, result)) return;
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.deepEqual(result.problems, [`${file}:2 Invalid key 'FOO'`]);
  });
});

describe("udev and sysfs of this machine", () => {
  it("reloads udev, or says plainly that udevd is not running", async (t) => {
    const result = await reloadUdev(systemRunner);
    t.diagnostic(JSON.stringify(result));
    if ("skipped" in result) assert.match(result.skipped, /^udevd is not running/);
    else assert.deepEqual(result, { reloaded: true });
  });

  it("reads the tty devices with their nodes and the same parents udevadm info walks", async (t) => {
    const devices = await readSysDevices("tty");
    const withNode = devices.filter((d) => d.devnode !== undefined);
    t.diagnostic(
      `${devices.length} tty devices, ${withNode.length} with a device node: ${withNode
        .slice(0, 5)
        .map((d) => d.devnode)
        .join(", ")}${withNode.length > 5 ? ", ..." : ""}`,
    );
    if (withNode.length === 0) {
      t.diagnostic("no tty device has a device node on this machine");
      return;
    }
    for (const device of withNode) {
      assert.equal(device.subsystem, "tty");
      assert.match(device.syspath, /^\/sys\/devices\//);
      if (existsSync(device.devnode as string)) {
        assert.ok(lstatSync(device.devnode as string).isCharacterDevice(), device.devnode);
      }
    }
    const deepest = [...withNode].sort((a, b) => b.parents.length - a.parents.length)[0]!;
    const walk = await systemRunner.run("udevadm", [
      "info",
      "--attribute-walk",
      `--path=${deepest.syspath}`,
    ]);
    const parents = [...walk.stdout.matchAll(/looking at parent device '([^']+)'/g)].map(
      (m) => `/sys${m[1]}`,
    );
    assert.deepEqual(
      deepest.parents.map((p) => p.syspath),
      parents,
    );
    const dev = /ATTR\{dev\}=="([^"]*)"/.exec(walk.stdout)?.[1];
    if (dev !== undefined) assert.equal(deepest.attrs.dev, dev);
  });
});

// ---------------------------------------------------------------------------
// (b) ACLs on real nodes for a real user

interface Fixture {
  readonly root: string;
  readonly sys: string;
  readonly dev: string;
}

async function write(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text);
}

/** A device directory of the fake sysfs, linked from its class or bus listing. */
async function sysDevice(
  fx: Fixture,
  devpath: string,
  options: {
    uevent?: string;
    attrs?: Record<string, string>;
    /** Where the device is listed: `class/<name>` or `bus/<name>/devices`. */
    listedIn?: string;
  },
): Promise<void> {
  const dir = path.join(fx.sys, "devices", devpath);
  await write(path.join(dir, "uevent"), options.uevent ?? "");
  for (const [name, value] of Object.entries(options.attrs ?? {})) {
    await write(path.join(dir, name), value);
  }
  if (options.listedIn) {
    const listing = path.join(fx.sys, options.listedIn);
    await mkdir(listing, { recursive: true });
    // sysfs points `subsystem` at /sys/class/<name> or /sys/bus/<name>.
    const subsystemDir = options.listedIn.endsWith("/devices") ? path.dirname(listing) : listing;
    await symlink(path.relative(dir, subsystemDir), path.join(dir, "subsystem"));
    await symlink(path.relative(listing, dir), path.join(listing, path.basename(devpath)));
  }
}

async function mknod(file: string, mode: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await systemRunner.run("mknod", ["-m", mode, file, "c", "1", "3"]);
}

async function getfacl(file: string): Promise<string[]> {
  const result = await systemRunner.run("getfacl", ["--omit-header", "--absolute-names", file]);
  return result.stdout.split("\n").filter((line) => line !== "");
}

async function canAccess(file: string, flag: "-r" | "-w", uid: number): Promise<boolean> {
  const result = await systemRunner.run("test", [flag, file], {
    uid,
    gid: uid,
    allowFailure: true,
  });
  return result.code === 0;
}

/** The first of this file's uids (test/support/uids.ts) that no account or group holds. */
async function freeUid(): Promise<number> {
  const uids = uidsOf(import.meta.filename);
  for (const uid of uids.all()) {
    const user = await systemRunner.run("getent", ["passwd", String(uid)], { allowFailure: true });
    const group = await systemRunner.run("getent", ["group", String(uid)], { allowFailure: true });
    if (user.code !== 0 && group.code !== 0) return uid;
  }
  throw new Error(`no free uid in ${uids.describe()} (test/support/uids.ts)`);
}

describe("applyDeviceAcls grants present matching devices to their agent", () => {
  const user = `nt-test-${randomBytes(4).toString("hex")}`;
  let uid = 0;
  let created = false;
  let fx: Fixture | undefined;

  before(async () => {
    uid = await freeUid();
    await systemRunner.run("useradd", [
      "--no-create-home",
      "--uid",
      String(uid),
      "--user-group",
      "--shell",
      "/usr/sbin/nologin",
      user,
    ]);
    created = true;

    const root = await tempDir();
    fx = { root, sys: path.join(root, "sys"), dev: path.join(root, "dev") };
    const usb = "pci0000:00/0000:00:14.0/usb1";
    await sysDevice(fx, "pci0000:00/0000:00:14.0", { attrs: { vendor: "0x8086\n" } });
    await sysDevice(fx, usb, {
      uevent: "DEVNAME=bus/usb/001/001\n",
      attrs: { idVendor: "1d6b\n", idProduct: "0002\n", product: "xHCI Host Controller\n" },
      listedIn: "bus/usb/devices",
    });
    // 1-1: the serial adapter: its tty and its usb node are both granted.
    await sysDevice(fx, `${usb}/1-1`, {
      uevent: "MAJOR=1\nMINOR=3\nDEVNAME=bus/usb/001/002\n",
      attrs: { idVendor: "0483\n", idProduct: "5740\n", product: "STM32 Virtual ComPort  \n" },
      listedIn: "bus/usb/devices",
    });
    await sysDevice(fx, `${usb}/1-1/1-1:1.0`, { attrs: { bInterfaceNumber: "00\n" } });
    await sysDevice(fx, `${usb}/1-1/1-1:1.0/tty/ttyACM0`, {
      uevent: "MAJOR=1\nMINOR=3\nDEVNAME=ttyACM0\n",
      attrs: { dev: "1:3\n" },
      listedIn: "class/tty",
    });
    // 1-2: another product of the same vendor: not granted.
    await sysDevice(fx, `${usb}/1-2`, {
      uevent: "MAJOR=1\nMINOR=3\nDEVNAME=bus/usb/001/003\n",
      attrs: { idVendor: "0483\n", idProduct: "5741\n", product: "Other\n" },
      listedIn: "bus/usb/devices",
    });
    await sysDevice(fx, `${usb}/1-2/1-2:1.0/tty/ttyACM1`, {
      uevent: "MAJOR=1\nMINOR=3\nDEVNAME=ttyACM1\n",
      listedIn: "class/tty",
    });
    // 1-3 matches, but its DEVNAME names a regular file; 1-4 climbs out of /dev.
    await sysDevice(fx, `${usb}/1-3`, { attrs: { idVendor: "0483\n", idProduct: "5740\n" } });
    await sysDevice(fx, `${usb}/1-3/1-3:1.0/tty/ttyACM2`, {
      uevent: "DEVNAME=ttyACM2\n",
      listedIn: "class/tty",
    });
    await sysDevice(fx, `${usb}/1-4`, { attrs: { idVendor: "0483\n", idProduct: "5740\n" } });
    await sysDevice(fx, `${usb}/1-4/1-4:1.0/tty/ttyACM3`, {
      uevent: "DEVNAME=../escape\n",
      listedIn: "class/tty",
    });
    // A tty without a node at all.
    await sysDevice(fx, "virtual/tty/nodeless", { listedIn: "class/tty" });

    await mknod(path.join(fx.dev, "ttyACM0"), "0660");
    await mknod(path.join(fx.dev, "ttyACM1"), "0660");
    await mknod(path.join(fx.dev, "bus/usb/001/001"), "0640");
    await mknod(path.join(fx.dev, "bus/usb/001/002"), "0640");
    await mknod(path.join(fx.dev, "bus/usb/001/003"), "0640");
    await writeFile(path.join(fx.dev, "ttyACM2"), "not a device\n", { mode: 0o660 });
    await writeFile(path.join(root, "escape"), "outside dev\n", { mode: 0o660 });
    // The user must be able to reach the nodes for the access checks.
    for (const d of [root, fx.dev, path.join(fx.dev, "bus"), path.join(fx.dev, "bus/usb")]) {
      await chmod(d, 0o755);
    }
    await chmod(path.join(fx.dev, "bus/usb/001"), 0o755);
  });

  after(async () => {
    if (fx) await rm(fx.root, { recursive: true, force: true });
    if (created) {
      await systemRunner.run("userdel", [user], { allowFailure: true });
      const group = await systemRunner.run("getent", ["group", user], { allowFailure: true });
      if (group.code === 0) await systemRunner.run("groupdel", [user], { allowFailure: true });
    }
  });

  it("adds exactly user:<agent>:<perm> (and the mask POSIX ACLs require) on matching nodes only", async () => {
    const f = fx as Fixture;
    const node = (name: string) => path.join(f.dev, name);
    const nodes = [
      "ttyACM0",
      "ttyACM1",
      "ttyACM2",
      "bus/usb/001/001",
      "bus/usb/001/002",
      "bus/usb/001/003",
    ].map(node);
    const outside = path.join(f.root, "escape");
    const resolved = town(
      {
        [user]: {
          uid,
          devices: [
            { subsystem: "tty", attrs: { idVendor: "0483", idProduct: "5740" } },
            { subsystem: "usb", attrs: { product: "STM32*ComPort" }, permission: "r" },
          ],
        },
      },
      { min: 60100, max: 60999 },
    );

    const facl = async () =>
      Object.fromEntries(
        await Promise.all([...nodes, outside].map(async (n) => [n, await getfacl(n)] as const)),
      );
    const stats = () =>
      [...nodes, outside].map((n) => {
        const s = statSync(n);
        return [n, s.mode, s.uid, s.gid];
      });
    const aclBefore = await facl();
    const statBefore = stats();
    assert.equal(await canAccess(node("ttyACM0"), "-w", uid), false);

    const granted = await applyDeviceAcls(resolved, systemRunner, {
      sysRoot: f.sys,
      devRoot: f.dev,
    });
    assert.deepEqual(granted, [
      { agent: user, devnode: node("ttyACM0") },
      { agent: user, devnode: node("bus/usb/001/002") },
    ]);

    const aclAfter = await facl();
    const expectedAdded: Record<string, string[]> = {
      [node("ttyACM0")]: [`user:${user}:rw-`, "mask::rw-"],
      [node("bus/usb/001/002")]: [`user:${user}:r--`, "mask::r--"],
    };
    for (const n of [...nodes, outside]) {
      const was = aclBefore[n] as string[];
      const is = aclAfter[n] as string[];
      assert.deepEqual(
        was.filter((line) => !is.includes(line)),
        [],
        `${n}: an entry was removed`,
      );
      assert.deepEqual(
        is.filter((line) => !was.includes(line)).sort(),
        (expectedAdded[n] ?? []).sort(),
        `${n}: unexpected entries`,
      );
    }
    // Owner, group and mode bits stay as they were.
    assert.deepEqual(stats(), statBefore);

    // The real user can now use the granted nodes, and only those.
    assert.equal(await canAccess(node("ttyACM0"), "-w", uid), true);
    assert.equal(await canAccess(node("ttyACM0"), "-r", uid), true);
    assert.equal(await canAccess(node("bus/usb/001/002"), "-r", uid), true);
    assert.equal(await canAccess(node("bus/usb/001/002"), "-w", uid), false);
    assert.equal(await canAccess(node("ttyACM1"), "-r", uid), false);

    // Idempotent: a second apply grants the same and changes nothing.
    assert.deepEqual(
      await applyDeviceAcls(resolved, systemRunner, { sysRoot: f.sys, devRoot: f.dev }),
      granted,
    );
    assert.deepEqual(await facl(), aclAfter);
  });

  it("reads the sysfs-shaped tree: nodes, own attributes, parents nearest first", async () => {
    const f = fx as Fixture;
    const tty = await readSysDevices("tty", f.sys, { devRoot: f.dev });
    assert.deepEqual(
      tty.map((d) => [path.basename(d.syspath), d.devnode && path.relative(f.dev, d.devnode)]),
      [
        ["ttyACM0", "ttyACM0"],
        ["ttyACM1", "ttyACM1"],
        ["ttyACM2", "ttyACM2"],
        ["ttyACM3", undefined],
        ["nodeless", undefined],
      ],
    );
    const acm0 = tty[0]!;
    assert.equal(acm0.subsystem, "tty");
    assert.deepEqual(acm0.attrs, { dev: "1:3", subsystem: "tty" });
    assert.deepEqual(
      acm0.parents.map((p) => path.relative(path.join(f.sys, "devices"), p.syspath)),
      [
        "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0",
        "pci0000:00/0000:00:14.0/usb1/1-1",
        "pci0000:00/0000:00:14.0/usb1",
        "pci0000:00/0000:00:14.0",
      ],
    );
    // Only trailing newlines go at read time; trailing blanks are the matcher's business.
    assert.equal(acm0.parents[1]!.attrs.product, "STM32 Virtual ComPort  ");

    const usb = await readSysDevices("usb", f.sys, { devRoot: f.dev, attributes: ["idVendor"] });
    assert.deepEqual(
      usb.map((d) => [path.basename(d.syspath), d.attrs]),
      [
        ["usb1", { idVendor: "1d6b" }],
        ["1-1", { idVendor: "0483" }],
        ["1-2", { idVendor: "0483" }],
      ],
    );
    assert.deepEqual(await readSysDevices("nosuchsubsystem", f.sys), []);
    await assert.rejects(readSysDevices("../tty", f.sys), /not a subsystem name/);
    assert.match(await readFile(path.join(f.root, "escape"), "utf8"), /outside dev/);
  });
});
