/**
 * The parts of a round that keep an agent from outliving it, or remembering
 * across it, that run without root: reading /proc's status lines, the doctor's
 * hidepid check, the private TMPDIR in every place the agent starts, the
 * writer that places home files through descriptors, the sweep of temp dirs,
 * and `up` waiting for a round's lock. The real thing, as the agent against a
 * town run by `up`, is test/integration/reset-containment.test.ts.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { renderLoginProfile } from "../../src/approval/wrappers.ts";
import { hidepidCheck } from "../../src/commands/doctor.ts";
import { agentServiceEnv } from "../../src/commands/up.ts";
import { placeAsRoot } from "../../src/host/agent-files.ts";
import {
  ipcrmArgs,
  keysOwnedBy,
  removeSpooledJobs,
  SYSV_TABLES,
  type SysvKind,
  sweepTempDirs,
  sysvObjectsOf,
} from "../../src/host/leftovers.ts";
import { fstabPath } from "../../src/host/persist.ts";
import { agentTmpDir } from "../../src/host/render/units.ts";
import { scanProcesses } from "../../src/host/stop.ts";
import { parseMountinfo, parseProcStatus, runsAs } from "../../src/os/tables.ts";
import type { ResolvedTown } from "../../src/town/types.ts";
import { Supervisor } from "../../src/up/supervisor.ts";
import { exampleTown } from "../support/fixtures.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "nt-reset-containment-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };

const status = (state: string, uids: string) =>
  `Name:\tsleep\nUmask:\t0022\nState:\t${state} (x)\nTgid:\t7\nPid:\t7\nPPid:\t1\nUid:\t${uids}\nGid:\t0\t0\t0\t0\n`;

describe("processes of an agent, from /proc/<pid>/status", () => {
  it("counts a live process by its real, effective or saved uid, and never a zombie", () => {
    const of = (state: string, uids: string) => {
      const parsed = parseProcStatus(7, status(state, uids));
      assert.ok(parsed);
      return runsAs(parsed, 1100);
    };
    assert.equal(of("S", "1100\t1100\t1100\t1100"), true);
    assert.equal(of("R", "1100\t0\t0\t0"), true, "a setuid program the agent started");
    assert.equal(of("S", "0\t0\t1100\t0"), true, "saved uid");
    assert.equal(of("D", "0\t1100\t0\t1100"), true, "effective uid only");
    assert.equal(of("S", "1101\t1101\t1101\t1101"), false);
    assert.equal(of("Z", "1100\t1100\t1100\t1100"), false, "a zombie is gone already");
    assert.equal(of("X", "1100\t1100\t1100\t1100"), false);
    assert.equal(parseProcStatus(7, "Name:\tx\n"), undefined);
    assert.deepEqual(parseProcStatus(7, status("S", "1\t2\t3\t4"))?.uids, [1, 2, 3, 4]);
    assert.equal(parseProcStatus(7, status("S", "1\t2\t3\t4"))?.name, "sleep");
  });

  it("says when a listed process was gone before it was read: a scan that proves nothing", () => {
    const proc = path.join(dir, "proc");
    const add = (pid: string, text?: string) => {
      mkdirSync(path.join(proc, pid), { recursive: true });
      if (text !== undefined) writeFileSync(path.join(proc, pid, "status"), text);
    };
    add("100", status("S", "1100\t1100\t1100\t1100"));
    add("101", status("Z", "1100\t1100\t1100\t1100"));
    add("102", status("S", "1101\t1101\t1101\t1101"));
    add("self");
    let scan = scanProcesses(1100, proc);
    assert.deepEqual(
      scan.found.map((p) => p.pid),
      [100],
    );
    assert.equal(scan.vanished, false);
    add("103");
    scan = scanProcesses(1100, proc);
    assert.equal(scan.vanished, true, "103 was listed and had no status to read");
  });
});

describe("doctor on /proc's hidepid", () => {
  const mounts = (options: string) =>
    parseMountinfo(
      `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc ${options}\n`,
    );

  it("is satisfied by hidepid=invisible or hidepid=2", () => {
    for (const options of ["rw,hidepid=invisible", "rw,hidepid=2,gid=27"]) {
      const check = hidepidCheck(mounts(options));
      assert.equal(check.ok, true, options);
      assert.match(check.detail, /agents see only their own processes/);
    }
  });

  it("warns (never fails) without it, with the command and the fstab line", () => {
    for (const options of ["rw", "rw,hidepid=1", "rw,hidepid=noaccess"]) {
      const check = hidepidCheck(mounts(options));
      assert.equal(check.ok, false, options);
      assert.equal(check.optional, true, "a warning, not a failure");
      assert.match(check.detail, /can read the others' command lines/);
      assert.match(check.fix ?? "", /mount -o remount,hidepid=invisible \/proc/);
      assert.match(check.fix ?? "", /proc \/proc proc defaults,hidepid=invisible 0 0/);
    }
    assert.equal(hidepidCheck([]).ok, false);
  });
});

describe("the agent's private TMPDIR", () => {
  const town = exampleTown();

  it("is set for every agent in its login shells", () => {
    const profile = renderLoginProfile(town) ?? "";
    for (const agent of town.agents) {
      assert.match(
        profile,
        new RegExp(
          `if \\[ -d '${agentTmpDir(agent)}' \\]; then TMPDIR='${agentTmpDir(agent)}'; export TMPDIR; fi`,
        ),
      );
    }
    assert.equal(agentTmpDir(town.agents[0]!), `${town.agents[0]!.runtimeDir}/tmp`);
    const noAgents: ResolvedTown = { ...town, agents: [] };
    assert.equal(renderLoginProfile(noAgents), undefined);
  });

  it("is in the environment `up` gives the daemons, unless one is declared", () => {
    const agent = town.agents[0]!;
    assert.equal(agentServiceEnv(town, agent).TMPDIR, agentTmpDir(agent));
    const declared = { ...agent, runtime: { ...agent.runtime, env: { TMPDIR: "/scratch" } } };
    assert.equal(agentServiceEnv(town, declared).TMPDIR, "/scratch");
  });
});

describe("placing home files through descriptors", () => {
  const owner = (home: string) => ({ name: "ada", home, uid: me.uid, gid: me.gid });
  const file = (p: string, text: string, mode = 0o644) => ({
    path: p,
    mode,
    content: Buffer.from(text),
  });

  it("writes each file with its mode, makes missing dirs 0700, and replaces a planted symlink instead of following it", () => {
    const home = path.join(dir, "home-1");
    mkdirSync(home, { mode: 0o700 });
    const outside = path.join(dir, "outside-1");
    writeFileSync(outside, "someone else's\n");
    mkdirSync(path.join(home, ".ssh"));
    symlinkSync(outside, path.join(home, ".ssh", "config"));
    const rest = placeAsRoot(owner(home), [
      file(path.join(home, ".config", "nuketown", "identity.toml"), "name = 'ada'\n"),
      file(path.join(home, ".ssh", "config"), "Host *\n", 0o600),
      { path: path.join(home, ".claude", "projects"), link: path.join(home, ".state", "p") },
    ]);
    assert.deepEqual(rest, []);
    assert.equal(readFileSync(outside, "utf8"), "someone else's\n", "the link was not followed");
    const ssh = lstatSync(path.join(home, ".ssh", "config"));
    assert.ok(ssh.isFile());
    assert.equal(ssh.mode & 0o777, 0o600);
    assert.equal(readFileSync(path.join(home, ".ssh", "config"), "utf8"), "Host *\n");
    assert.equal(lstatSync(path.join(home, ".config")).mode & 0o777, 0o700);
    assert.equal(
      readlinkSync(path.join(home, ".claude", "projects")),
      path.join(home, ".state", "p"),
    );
    assert.ok(lstatSync(path.join(home, ".state", "p")).isDirectory(), "the link's target made");
  });

  it("leaves an entry behind a symlinked directory to the as-agent writer, writing nothing there", () => {
    const home = path.join(dir, "home-2");
    mkdirSync(home, { mode: 0o700 });
    const elsewhere = path.join(dir, "elsewhere-2");
    mkdirSync(elsewhere);
    symlinkSync(elsewhere, path.join(home, ".config"));
    const entry = file(path.join(home, ".config", "git", "config"), "[user]\n");
    const kept = file(path.join(home, "AGENTS.md"), "# ada\n");
    assert.deepEqual(placeAsRoot(owner(home), [entry, kept]), [entry]);
    assert.ok(!existsSync(path.join(elsewhere, "git")), "nothing made through the link");
    assert.equal(readFileSync(path.join(home, "AGENTS.md"), "utf8"), "# ada\n");
  });
});

describe("sweeping the agent's files out of shared temp dirs", () => {
  it("removes its files at any depth and its emptied dirs, follows no symlink, keeps the town's trees and dirs only others write", () => {
    const tmp = path.join(dir, "tmp");
    mkdirSync(path.join(tmp, "mine", "a", "b"), { recursive: true, mode: 0o700 });
    writeFileSync(path.join(tmp, "mine", "a", "b", "deep"), "x");
    writeFileSync(path.join(tmp, "file"), "x");
    const target = path.join(dir, "kept-target");
    writeFileSync(target, "kept\n");
    symlinkSync(target, path.join(tmp, "link"));
    const town = path.join(tmp, "town");
    mkdirSync(town);
    writeFileSync(path.join(town, "persisted"), "x");
    const report = sweepTempDirs({
      uid: me.uid,
      roots: [tmp, path.join(dir, "absent")],
      skip: [town],
    });
    assert.ok(!existsSync(path.join(tmp, "mine")), "nested dirs of the agent are gone");
    assert.ok(!existsSync(path.join(tmp, "file")));
    assert.throws(() => lstatSync(path.join(tmp, "link")), "the link itself is removed");
    assert.equal(readFileSync(target, "utf8"), "kept\n", "its target is not touched");
    assert.ok(existsSync(path.join(town, "persisted")), "the town's own tree is not entered");
    assert.ok(report.removed >= 6, String(report.removed));
    assert.ok(existsSync(tmp), "the temp dir itself stays");
  });

  it("clears the agent's crontab by name and its at jobs by owner", () => {
    const crontabs = path.join(dir, "crontabs");
    const at = path.join(dir, "atjobs");
    mkdirSync(crontabs);
    mkdirSync(at);
    writeFileSync(path.join(crontabs, "ada"), "* * * * * true\n");
    writeFileSync(path.join(crontabs, "bob"), "* * * * * true\n");
    writeFileSync(path.join(at, "a0001"), "#!/bin/sh\n");
    assert.equal(
      removeSpooledJobs({ name: "ada", uid: me.uid }, { crontabs: [crontabs], at: [at] }),
      2,
    );
    assert.ok(!existsSync(path.join(crontabs, "ada")));
    assert.ok(existsSync(path.join(crontabs, "bob")));
    assert.ok(!existsSync(path.join(at, "a0001")));
  });
});

describe("System V IPC and keyrings a round clears", () => {
  // The kernel's own header for each table (the real objects are test/integration's).
  const header = (kind: SysvKind) => readFileSync(SYSV_TABLES[kind], "utf8").split("\n")[0] ?? "";
  /** A row with these values under the header's names, every other column 0. */
  const row = (kind: SysvKind, values: Record<string, number>) =>
    header(kind)
      .trim()
      .split(/\s+/)
      .map((column) => String(values[column] ?? 0).padStart(10))
      .join(" ");

  it("finds the objects the uid owns or created, by the kernel's column names", () => {
    for (const [kind, idColumn] of [
      ["shm", "shmid"],
      ["sem", "semid"],
      ["msg", "msqid"],
    ] as const) {
      const table = [
        header(kind),
        row(kind, { [idColumn]: 7, uid: 60430, cuid: 60430 }),
        row(kind, { [idColumn]: 8, uid: 60431, cuid: 60430 }),
        row(kind, { [idColumn]: 9, uid: 60430, cuid: 0 }),
        row(kind, { [idColumn]: 10, uid: 60431, cuid: 60431 }),
        "",
      ].join("\n");
      assert.deepEqual(
        sysvObjectsOf(kind, table, 60430).map((o) => o.id),
        [7, 8, 9],
        kind,
      );
      assert.deepEqual(sysvObjectsOf(kind, header(kind), 60430), [], `${kind}: none`);
    }
    assert.deepEqual(sysvObjectsOf("shm", "", 60430), [], "no table");
    assert.deepEqual(
      ipcrmArgs([
        { kind: "shm", id: 7 },
        { kind: "sem", id: 0 },
        { kind: "msg", id: 3 },
      ]),
      ["-m", "7", "-s", "0", "-q", "3"],
    );
  });

  it("counts the keys a uid owns from /proc/key-users", () => {
    const keyUsers = [
      "    0:    93 92/92 87/1000000 2385/25000000",
      "60430:     4 4/4 4/200 57/20000",
      "604301:     9 9/9 9/200 57/20000",
    ].join("\n");
    assert.equal(keysOwnedBy(keyUsers, 60430), 4);
    assert.equal(keysOwnedBy(keyUsers, 0), 92);
    assert.equal(keysOwnedBy(keyUsers, 60431), 0);
  });
});

describe("the persisted binds, made by one mount --all", () => {
  it("escape space, tab, newline and backslash in their fstab as fstab(5) says", () => {
    assert.equal(
      fstabPath("/agents/ada/my dir\tx\\y\nz"),
      "/agents/ada/my\\040dir\\011x\\134y\\012z",
    );
    assert.equal(fstabPath("/plain/path"), "/plain/path");
  });
});

describe("`up` and a round of its agent", () => {
  it("does not start the daemon while the round holds the lock, then starts it at once", async () => {
    const lock = path.join(dir, "ada.lock");
    const stamp = path.join(dir, "ada.round");
    const events: string[] = [];
    const supervisor = new Supervisor(
      [
        {
          name: "agent ada",
          command: "/bin/sleep",
          args: ["30"],
          log: path.join(dir, "agent.log"),
          round: { lock, stamp },
        },
      ],
      // A crash would wait 10 s: what follows is the round's own restart.
      { onEvent: (e) => events.push(e), minDelayMs: 10_000, maxDelayMs: 10_000 },
    );
    const holder = spawn("/bin/sleep", ["30"], { stdio: "ignore" });
    const waitFor = async (check: () => boolean, ms = 5000) => {
      for (let t = 0; t < ms && !check(); t += 20) await new Promise((r) => setTimeout(r, 20));
      return check();
    };
    supervisor.start();
    try {
      assert.ok(await waitFor(() => supervisor.state()[0]?.pid !== undefined), events.join("\n"));
      const first = supervisor.state()[0]!.pid!;
      // A round (another process) takes the lock and stops the daemon.
      const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
      writeFileSync(lock, `${holder.pid} ${boot} reset of ada\n`);
      process.kill(first, "SIGKILL");
      // Once the supervisor has seen the death (on a loaded machine that can take a while), and
      // a while after: still nothing started, the round holds the lock.
      const roundSeen = /by reset of ada \(pid \d+\); starting it again/;
      assert.ok(await waitFor(() => roundSeen.test(events.join("\n"))), events.join("\n"));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(supervisor.state()[0]?.pid, undefined, "not started while the round runs");
      const released = Date.now();
      rmSync(lock);
      assert.ok(await waitFor(() => supervisor.state()[0]?.pid !== undefined, 2000));
      assert.ok(Date.now() - released < 1000, "right after the round, not after the back-off");
      assert.equal(supervisor.state()[0]?.restarts, 1);
    } finally {
      holder.kill("SIGKILL");
      await supervisor.stop();
    }
  });
});
