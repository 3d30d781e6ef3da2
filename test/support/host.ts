/**
 * Test towns on the real host: reserved names (nt-test-*), uids in
 * 60100–60999, everything under one temp dir, and a cleanup that undoes
 * whatever a test (or a crashed earlier run) left: processes, cgroups, mounts, loop
 * devices, accounts, files. It touches nothing else.
 */
import { type ChildProcess, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { locateCgroup, parseCgroupEvents } from "../../src/agent/cgroup.ts";
import { parseGroup, parseMountinfo, parsePasswd } from "../../src/os/tables.ts";

export const TEST_PREFIX = "nt-test-";
export const TEST_UID_MIN = 60100;
export const TEST_UID_MAX = 60999;

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export function run(program: string, args: string[], input?: string) {
  const result = spawnSync(program, args, { encoding: "utf8", input });
  if (result.error) throw result.error;
  return { code: result.status ?? 1, stdout: result.stdout, stderr: result.stderr };
}

export function mustRun(program: string, args: string[], input?: string): string {
  const result = run(program, args, input);
  if (result.code !== 0)
    throw new Error(`${program} ${args.join(" ")} exited ${result.code}: ${result.stderr}`);
  return result.stdout;
}

export function makeTempRoot(label: string): string {
  // Not under a tmpfs-only path requirement: btrfs lives in an image file inside.
  const dir = mkdtempSync(path.join("/tmp", `${TEST_PREFIX}${label}-`));
  // Agents must be able to walk down to their homes, like from / on a real host.
  chmodSync(dir, 0o755);
  return dir;
}

const isTestUid = (uid: number) => uid >= TEST_UID_MIN && uid <= TEST_UID_MAX;

/**
 * Remove every trace of a test town below `root`: processes, mounts, loop
 * devices, the accounts whose home is below `root`, and the other test
 * accounts and groups named in `extra`. Other test files run at the same
 * time with their own nt-test-* accounts, so nothing is removed by prefix.
 */
export function cleanupHost(root: string, extra: readonly string[] = []): void {
  const users = parsePasswd(readFileSync("/etc/passwd", "utf8")).filter(
    (u) =>
      u.name.startsWith(TEST_PREFIX) &&
      isTestUid(u.uid) &&
      (u.home.startsWith(`${root}/`) || extra.includes(u.name)),
  );
  for (const user of users) run("pkill", ["-KILL", "-u", String(user.uid)]);
  removeAgentCgroups(new Set(users.map((u) => u.uid)));
  const mounts = parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"))
    .filter((m) => m.mountPoint === root || m.mountPoint.startsWith(`${root}/`))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  for (const mount of mounts) {
    if (run("umount", [mount.mountPoint]).code !== 0) run("umount", ["--lazy", mount.mountPoint]);
  }
  // Loop devices still backed by an image of ours (autoclear normally detaches them).
  for (const line of run("losetup", [
    "--list",
    "--noheadings",
    "--output",
    "NAME,BACK-FILE",
  ]).stdout.split("\n")) {
    const [device, file] = line.trim().split(/\s+/);
    if (device && file?.startsWith(`${root}/`)) run("losetup", ["--detach", device]);
  }
  for (const user of users) run("userdel", [user.name]);
  const groups = new Set([...users.map((u) => u.name), ...extra]);
  for (const group of parseGroup(readFileSync("/etc/group", "utf8"))) {
    if (group.name.startsWith(TEST_PREFIX) && groups.has(group.name)) run("groupdel", [group.name]);
  }
  rmSync(root, { recursive: true, force: true });
}

/**
 * The cgroups `nuketown up` (run by a test, in the test's own cgroup) made
 * for these agents, `nuketown/<town>/<agent>`, if a crashed run left them:
 * emptied with cgroup.kill, removed depth first, then the town's and
 * nuketown's directories if nothing else is in them.
 */
function removeAgentCgroups(uids: ReadonlySet<number>): void {
  if (uids.size === 0) return;
  let located: ReturnType<typeof locateCgroup>;
  try {
    located = locateCgroup(
      readFileSync("/proc/self/mountinfo", "utf8"),
      readFileSync("/proc/self/cgroup", "utf8"),
    );
  } catch {
    return;
  }
  if (!located.ok) return;
  const base = path.join(located.dir, "nuketown");
  if (!existsSync(base)) return;
  const subdirs = (dir: string) =>
    readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => path.join(dir, e.name));
  const tree = (dir: string): string[] => [...subdirs(dir).flatMap(tree), dir];
  for (const town of subdirs(base)) {
    for (const agent of subdirs(town)) {
      if (!uids.has(statSync(agent).uid)) continue;
      try {
        writeFileSync(path.join(agent, "cgroup.kill"), "1");
      } catch {}
      for (let i = 0; i < 100; i++) {
        const events = readFileSync(path.join(agent, "cgroup.events"), "utf8");
        if (!parseCgroupEvents(events).populated) break;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
      }
      for (const dir of tree(agent)) {
        try {
          rmdirSync(dir);
        } catch {}
      }
    }
    try {
      rmdirSync(town);
    } catch {}
  }
  try {
    rmdirSync(base);
  } catch {}
}

export function testUser(name: string): { uid: number; gid: number } | undefined {
  const user = parsePasswd(readFileSync("/etc/passwd", "utf8")).find((u) => u.name === name);
  return user && { uid: user.uid, gid: user.gid };
}

export function testGroup(name: string) {
  return parseGroup(readFileSync("/etc/group", "utf8")).find((g) => g.name === name);
}

export function mountPoints(): string[] {
  return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8")).map((m) => m.mountPoint);
}

/** Stop a child the test started: SIGTERM, then SIGKILL after `graceMs` if it is still there. */
export async function stopChild(child: ChildProcess | undefined, graceMs = 10_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, graceMs))]);
  child.kill("SIGKILL");
}
