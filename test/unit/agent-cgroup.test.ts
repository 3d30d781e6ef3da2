/**
 * cgroup v2 read from text: where the unified hierarchy is (never assumed at
 * /sys/fs/cgroup), which cgroup a process is in, what cgroup.events and
 * cgroup.procs say, a task's marker in an environment, and the shell lines
 * that join a cgroup before exec.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import {
  environHas,
  GATED_EXEC_SCRIPT,
  joinCgroupScript,
  locateCgroup,
  parseCgroupEvents,
  parsePids,
  taskCgroupName,
  unifiedCgroupPath,
} from "../../src/agent/cgroup.ts";

/** A hybrid host (systemd's v1 controllers plus the unified tree), as on the CI machine. */
const HYBRID = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;
const UNIFIED = `24 1 0:22 / / rw - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

describe("locating a process's cgroup v2", () => {
  it("reads the 0:: line of /proc/<pid>/cgroup, ignoring the v1 hierarchies", () => {
    const text =
      "9:name=systemd:/\n4:memory:/process_api/1e66\n0::/system.slice/nuketown-agent-ada.service\n";
    assert.equal(unifiedCgroupPath(text), "/system.slice/nuketown-agent-ada.service");
  });

  it("has no path on a v1-only host, or when the cgroup was removed", () => {
    assert.equal(unifiedCgroupPath("4:memory:/\n1:cpu:/\n"), undefined);
    assert.equal(unifiedCgroupPath("0::/gone (deleted)\n"), undefined);
  });

  it("finds the unified tree where a hybrid host mounts it", () => {
    assert.deepEqual(locateCgroup(HYBRID, "1:cpu:/\n0::/\n"), {
      ok: true,
      mount: "/sys/fs/cgroup/unified",
      dir: "/sys/fs/cgroup/unified",
    });
    assert.deepEqual(locateCgroup(HYBRID, "0::/nuketown/town/ada\n"), {
      ok: true,
      mount: "/sys/fs/cgroup/unified",
      dir: "/sys/fs/cgroup/unified/nuketown/town/ada",
    });
  });

  it("finds it at /sys/fs/cgroup on a unified host", () => {
    const located = locateCgroup(UNIFIED, "0::/system.slice/nuketown-agent-ada.service\n");
    assert.ok(located.ok);
    assert.equal(located.dir, "/sys/fs/cgroup/system.slice/nuketown-agent-ada.service");
  });

  it("joins a mount of a subtree (a container's) at its root", () => {
    const mountinfo = "50 40 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
    const located = locateCgroup(mountinfo, "0::/docker/abc/nuketown/t/ada\n");
    assert.ok(located.ok);
    assert.equal(located.dir, "/sys/fs/cgroup/nuketown/t/ada");
    const outside = locateCgroup(mountinfo, "0::/elsewhere\n");
    assert.ok(!outside.ok);
    assert.match(outside.reason, /no cgroup2 mount shows \/elsewhere/);
  });

  it("says why when there is no cgroup2 at all", () => {
    const none = locateCgroup(HYBRID.replace(/cgroup2/g, "tmpfs"), "0::/\n");
    assert.ok(!none.ok);
    assert.match(none.reason, /no cgroup2 file system is mounted/);
    const v1 = locateCgroup(HYBRID, "1:cpu:/\n");
    assert.ok(!v1.ok);
    assert.match(v1.reason, /no 0:: line/);
  });

  it("reads this machine's own files without throwing", () => {
    let mountinfo = "";
    let cgroup = "";
    try {
      mountinfo = readFileSync("/proc/self/mountinfo", "utf8");
      cgroup = readFileSync("/proc/self/cgroup", "utf8");
    } catch {
      return;
    }
    const located = locateCgroup(mountinfo, cgroup);
    if (located.ok) assert.ok(located.dir.startsWith(located.mount));
    else assert.ok(located.reason.length > 0);
  });
});

describe("cgroup files", () => {
  it("reads populated and frozen from cgroup.events", () => {
    assert.deepEqual(parseCgroupEvents("populated 1\nfrozen 0\n"), {
      populated: true,
      frozen: false,
    });
    assert.deepEqual(parseCgroupEvents("populated 0\nfrozen 1\n"), {
      populated: false,
      frozen: true,
    });
    assert.deepEqual(parseCgroupEvents(""), { populated: false, frozen: false });
  });

  it("reads pids from cgroup.procs, one a line", () => {
    assert.deepEqual(parsePids("12\n3456\n\n"), [12, 3456]);
    assert.deepEqual(parsePids(""), []);
    assert.deepEqual(parsePids("0\nx\n-4\n7\n"), [7]);
  });

  it("names a task's cgroup after the task", () => {
    assert.equal(taskCgroupName("0a1b2c3d"), "task-0a1b2c3d");
  });
});

describe("a task's marker in /proc/<pid>/environ", () => {
  const environ = "HOME=/agents/ada\0NUKETOWN_TASK_ID=0a1b2c3d\0PATH=/usr/bin\0";

  it("is an exact entry", () => {
    assert.equal(environHas(environ, "NUKETOWN_TASK_ID", "0a1b2c3d"), true);
    assert.equal(environHas(environ, "NUKETOWN_TASK_ID", "0a1b2c3"), false);
    assert.equal(environHas(environ, "NUKETOWN_TASK_ID", "0a1b2c3d0"), false);
    assert.equal(
      environHas("X=NUKETOWN_TASK_ID=0a1b2c3d\0", "NUKETOWN_TASK_ID", "0a1b2c3d"),
      false,
    );
    assert.equal(environHas("", "NUKETOWN_TASK_ID", "0a1b2c3d"), false);
  });
});

describe("the shell lines that join a cgroup before exec", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nt-cgroup-script-"));
  const sh = (script: string, args: string[], input?: string) =>
    spawnSync("/bin/sh", ["-c", script, "nuketown-task", ...args], {
      encoding: "utf8",
      input,
      env: { ...process.env, NUKETOWN_TASK_FILE: path.join(dir, "task.json") },
    });

  it("writes the shell's pid to the file, then runs the command as that same process", () => {
    const procs = path.join(dir, "cgroup.procs");
    const result = sh(joinCgroupScript(), [procs, "sh", "-c", 'echo "$$ $0 $1"', "x", "y"]);
    assert.equal(result.status, 0, result.stderr);
    const pid = readFileSync(procs, "utf8").trim();
    assert.equal(result.stdout.trim(), `${pid} x y`);
  });

  it("refuses to run the command when it cannot join, unless joining is optional", () => {
    const missing = path.join(dir, "no-such-dir", "cgroup.procs");
    const refused = sh(joinCgroupScript(), [missing, "echo", "ran"]);
    assert.equal(refused.status, 125);
    assert.equal(refused.stdout, "");
    assert.match(refused.stderr, /cannot join the task's cgroup/);
    const optional = sh(joinCgroupScript({ optional: true }), [missing, "echo", "ran"]);
    assert.equal(optional.status, 0);
    assert.equal(optional.stdout.trim(), "ran");
  });

  it("feeds the command the task file when told to", () => {
    writeFileSync(path.join(dir, "task.json"), '{"id":"x"}');
    const result = sh(joinCgroupScript({ stdinFile: true }), [path.join(dir, "p2"), "cat"]);
    assert.equal(result.stdout, '{"id":"x"}');
  });

  it("waits for its go on stdin before exec, and never runs the command without it", () => {
    const ran = sh(GATED_EXEC_SCRIPT, ["echo", "ran"], "go\n");
    assert.equal(ran.stdout.trim(), "ran");
    const never = sh(GATED_EXEC_SCRIPT, ["echo", "ran"], "");
    assert.equal(never.status, 1);
    assert.equal(never.stdout, "");
    rmSync(dir, { recursive: true, force: true });
  });
});
