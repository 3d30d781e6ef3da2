/**
 * A reset cannot be outlived, and the fresh agent keeps no memory outside its
 * home. A town on a btrfs image run by `nuketown up` (systemd is not PID 1
 * here): as the agent, a process that keeps changing pid (fork, exit, fork),
 * a double-forked daemon outside the daemon's tree, a process in the agent
 * daemon's own cgroup, and one whose root parent never reaps it; files in
 * /tmp, /var/tmp, /dev/shm (nested too), in its TMPDIR, a crontab, an `at`
 * job, System V IPC objects and a key in its user keyring. Three resets in a
 * row: each leaves none of them, rolls the home back (a new subvolume), keeps
 * root's and another uid's files and IPC, and `up` starts the agent's daemon
 * again only once the reset is over. The round is
 * slowed by a `git` that sleeps (the agent has a declared repo), so a
 * supervisor that restarted the daemon after its usual 1 s would do it in
 * the middle of the reset.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import {
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { locateCgroup } from "../../src/agent/cgroup.ts";
import { parseProcStatus, runsAs } from "../../src/os/tables.ts";
import { seededRepo } from "../support/git-repo.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-rc-ada";
const UID = 60430;
/** Another uid (no account needed): its files beside the agent's must stay. */
const OTHER_UID = 60431;
const TAG = `nt-rc-${process.pid}`;
const AS_AGENT = ["setpriv", `--reuid=${UID}`, `--regid=${UID}`, "--clear-groups"];
const CRONTABS = "/var/spool/cron/crontabs";
const ATJOBS = "/var/spool/cron/atjobs";

/** add_key(2) and keyctl(2), which Perl calls by number (perl-base has no syscall.ph). */
const ADD_KEY = process.arch === "arm64" ? 217 : 248;
const KEYCTL = process.arch === "arm64" ? 219 : 250;

/** `ipcs -i` names a System V object that exists (it says "not found" on stderr otherwise). */
function ipcExists(flag: "-m" | "-q" | "-s", id: string): boolean {
  const shown = run("ipcs", [flag, "-i", id]);
  return !/not found/.test(shown.stderr) && shown.stdout.trim() !== "";
}

/** As the agent: KEYCTL_SEARCH of its user keyring for the planted key. */
function keyFound(): boolean {
  const found = run(AS_AGENT[0]!, [
    ...AS_AGENT.slice(1),
    "perl",
    "-e",
    `my ($t, $d) = ("user", "${TAG}-key"); print syscall(${KEYCTL}, 10, -4, $t, $d, 0) > 0 ? "yes" : "no"`,
  ]);
  return found.stdout.trim() === "yes";
}

interface UpState {
  services: { name: string; pid?: number; restarts: number; since?: string }[];
}

/** Live processes of the agent whose command line has `marker`. */
function live(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(name)) continue;
    try {
      const status = parseProcStatus(Number(name), readFileSync(`/proc/${name}/status`, "latin1"));
      if (!status || !runsAs(status, UID)) continue;
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "latin1").replaceAll("\0", " ");
      if (cmdline.includes(marker)) found.push(Number(name));
    } catch {}
  }
  return found;
}

/** prctl's system call number, for perl's syscall(). */
const PRCTL = process.arch === "x64" ? 157 : process.arch === "arm64" ? 167 : -1;

/** Perl's single-quoted strings, for an argv list. */
const quoted = (args: readonly string[]) =>
  args.map((a) => `'${a.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`).join(", ");

const subvolumeId = (dir: string) => mustRun("btrfs", ["inspect-internal", "rootid", dir]).trim();

describe("a reset against an agent that tries to outlive it", {
  skip: !isRoot() && "needs root",
}, () => {
  const town = testTown({
    label: "rcontain",
    uids: uidsOf(import.meta.filename),
    install: true,
  });
  let config = "";
  let home = "";
  let up: Daemon | undefined;
  let slowPath = "";
  const reapers: ChildProcess[] = [];
  const madeDirs: string[] = [];
  /** ipcrm's arguments for each System V object planted (a reset that failed leaves them). */
  const ipcMade: string[][] = [];
  const output = () => up?.output() ?? "";
  const upState = () => JSON.parse(readFileSync(town.path("run", "up.json"), "utf8")) as UpState;
  const daemon = () => upState().services.find((s) => s.name === `agent ${AGENT}`);
  const tmpdir = () => town.path("run", "agents", AGENT, "tmp");

  async function waitFor<T>(what: string, probe: () => T | undefined, ms = 30_000): Promise<T> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (up !== undefined && up.child.exitCode !== null)
        throw new Error(`up exited ${up.child.exitCode} while waiting for ${what}:\n${output()}`);
      try {
        const value = probe();
        if (value !== undefined) return value;
      } catch {}
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`timed out waiting for ${what}; up said:\n${output()}`);
  }

  before(async () => {
    const repo = seededRepo(town.root, "site");
    // A git that takes 1.5 s: the round's clone runs through it (the reset's PATH, not up's).
    const slow = town.path("slowbin");
    mkdirSync(slow, { mode: 0o755 });
    writeFileSync(path.join(slow, "git"), '#!/bin/sh\nsleep 1.5\nexec /usr/bin/git "$@"\n', {
      mode: 0o755,
    });
    slowPath = `${slow}:${process.env.PATH}`;
    const runtime = town.path("runtime.sh");
    writeFileSync(runtime, '#!/bin/sh\necho \'{"type":"answer","text":"hello"}\'\n', {
      mode: 0o755,
    });
    town.declare({
      homes: { backend: "image", image: { size: "256M" } },
      basePackages: ["git"],
      agents: {
        [AGENT]: {
          uid: UID,
          persist: ["projects"],
          repos: [repo.bare],
          runtime: { kind: "command", command: runtime },
        },
      },
    });
    config = town.config;
    home = town.home(AGENT);
    for (const dir of [CRONTABS, ATJOBS]) {
      if (existsSync(dir)) continue;
      // Cron and at are not installed here: their spools are made (and removed after) by the test.
      for (let d = dir; !existsSync(d); d = path.dirname(d)) madeDirs.unshift(d);
      mkdirSync(dir, { recursive: true, mode: 0o755 });
    }
    // Before the town's accounts go: the root parents that never reap, and what the test planted.
    town.defer(() => {
      for (const reaper of reapers) reaper.kill("SIGKILL");
      for (const dir of ["/tmp", "/var/tmp", "/dev/shm"])
        for (const name of readdirSync(dir))
          if (name.startsWith(TAG)) rmSync(path.join(dir, name), { recursive: true, force: true });
      rmSync(path.join(CRONTABS, AGENT), { force: true });
      for (const name of existsSync(ATJOBS) ? readdirSync(ATJOBS) : [])
        if (name.startsWith(TAG)) rmSync(path.join(ATJOBS, name), { force: true });
      for (const dir of madeDirs.reverse()) rmSync(dir, { recursive: true, force: true });
      for (const args of ipcMade) run("ipcrm", args);
      run(AS_AGENT[0]!, [
        ...AS_AGENT.slice(1),
        "perl",
        "-e",
        `syscall(${KEYCTL}, 7, -4); syscall(${KEYCTL}, 7, -5)`,
      ]);
    });
    up = town.up();
    await waitFor("the town", () => (output().includes("is up:") ? true : undefined), 120_000);
  });

  /** Everything the agent leaves running and lying around; the names to check after. */
  function plant(round: number): {
    inCgroup: number;
    ipc: { shm: string; msg: string; sem: string; other: string };
  } {
    const running = daemon()?.pid;
    assert.ok(running, "the agent daemon runs");
    // Fork, exit, fork: a new pid every millisecond or so, never more than one alive. Its
    // exited generations are reaped at once by a root subreaper (this host's PID 1 is slow to).
    const churn = `$0 = "${TAG}-churn"; while (1) { exit 0 if fork; select(undef, undef, undef, 0.001); }`;
    reapers.push(
      spawn(
        "perl",
        [
          "-e",
          // prctl(PR_SET_CHILD_SUBREAPER, 1): orphans below come to this process, which reaps them.
          `syscall(${PRCTL}, 36, 1, 0, 0, 0) if ${PRCTL} > 0; if (fork() == 0) { exec(${quoted([...AS_AGENT, "perl", "-e", churn])}); } while (1) { sleep 1 if waitpid(-1, 0) == -1; }`,
        ],
        { stdio: "ignore" },
      ),
    );
    // Double-forked into its own session, outside the daemon's tree and cgroup.
    mustRun(AS_AGENT[0]!, [
      ...AS_AGENT.slice(1),
      "sh",
      "-c",
      `(setsid sh -c 'exec sleep 4242${round}' </dev/null >/dev/null 2>&1 &); exit 0`,
    ]);
    // In the agent daemon's own cgroup (as something the daemon started would be).
    const inCgroup = spawn(AS_AGENT[0]!, [...AS_AGENT.slice(1), "sleep", `4243${round}`], {
      detached: true,
      stdio: "ignore",
    });
    inCgroup.unref();
    const located = locateCgroup(
      readFileSync("/proc/self/mountinfo", "utf8"),
      readFileSync(`/proc/${running}/cgroup`, "utf8"),
    );
    assert.ok(located.ok, "the agent daemon runs in a cgroup v2");
    writeFileSync(path.join(located.dir, "cgroup.procs"), `${inCgroup.pid}\n`);
    // Its parent is root's and never reaps it: killed, it stays a zombie for the whole reset.
    const reaper = spawn(
      "perl",
      [
        "-e",
        `if (fork() == 0) { exec(${quoted([...AS_AGENT, "sleep", `4244${round}`])}); } sleep 600;`,
      ],
      { stdio: "ignore" },
    );
    reapers.push(reaper);

    // Files the agent leaves, as the agent; root's and another uid's beside them.
    const dir = `/tmp/${TAG}-dir`;
    mustRun("runuser", [
      "-u",
      AGENT,
      "--",
      "sh",
      "-c",
      [
        `echo a > /tmp/${TAG}-file`,
        `echo a > /var/tmp/${TAG}-file`,
        `echo a > /dev/shm/${TAG}-file`,
        `mkdir -p ${dir}/a/b/c && echo a > ${dir}/a/b/c/deep && chmod 0777 ${dir}`,
        `ln -sf /etc/passwd /tmp/${TAG}-link`,
        `mkdir -p ${tmpdir()} && echo a > ${tmpdir()}/remember`,
        `echo a > ${home}/planted`,
        `echo a > ${home}/projects/kept`,
      ].join(" && "),
    ]);
    writeFileSync(`/tmp/${TAG}-root`, "root's\n");
    writeFileSync(`/tmp/${TAG}-other`, "another uid's\n");
    chownSync(`/tmp/${TAG}-other`, OTHER_UID, OTHER_UID);
    writeFileSync(`${dir}/other`, "another uid's, in the agent's dir\n");
    chownSync(`${dir}/other`, OTHER_UID, OTHER_UID);
    // Written as cron and at would (neither is installed here).
    writeFileSync(path.join(CRONTABS, AGENT), `* * * * * echo ${TAG} >> /tmp/${TAG}-cron\n`, {
      mode: 0o600,
    });
    chownSync(path.join(CRONTABS, AGENT), UID, 0);
    writeFileSync(path.join(ATJOBS, `${TAG}-a0001`), "#!/bin/sh\necho remembered\n", {
      mode: 0o700,
    });
    chownSync(path.join(ATJOBS, `${TAG}-a0001`), UID, UID);
    // Kernel objects that outlive every process of the uid: System V shared memory, a message
    // queue and a semaphore set, and a key in its user keyring; another uid's segment beside.
    const ipc = mustRun(AS_AGENT[0]!, [
      ...AS_AGENT.slice(1),
      "perl",
      "-e",
      `my ($t, $d, $p) = ("user", "${TAG}-key", "remembered"); syscall(${ADD_KEY}, $t, $d, $p, length $p, -4) > 0 or die "add_key: $!"; print join(" ", shmget(0, 4096, 01600), msgget(0, 01600), semget(0, 1, 01600))`,
    ]);
    const [shm, msg, sem] = ipc.trim().split(" ").map(Number);
    assert.ok(keyFound(), "the key is in the agent's user keyring");
    const otherShm = mustRun("setpriv", [
      `--reuid=${OTHER_UID}`,
      `--regid=${OTHER_UID}`,
      "--clear-groups",
      "perl",
      "-e",
      "print shmget(0, 4096, 01600)",
    ]).trim();
    ipcMade.push(["-m", String(shm)], ["-q", String(msg)], ["-s", String(sem)], ["-m", otherShm]);
    return {
      inCgroup: inCgroup.pid ?? 0,
      ipc: { shm: String(shm), msg: String(msg), sem: String(sem), other: otherShm },
    };
  }

  it("gives the agent's daemon and login shells a private TMPDIR", async () => {
    const running = await waitFor("the agent daemon", () => daemon()?.pid);
    const environ = readFileSync(`/proc/${running}/environ`, "latin1").split("\0");
    assert.ok(environ.includes(`TMPDIR=${tmpdir()}`), environ.join("\n"));
    const info = statSync(tmpdir());
    assert.equal(info.mode & 0o777, 0o700);
    assert.equal(info.uid, UID);
    const profile = town.path("etc", "profile.d", "nuketown.sh");
    const login = run("runuser", ["-u", AGENT, "--", "sh", "-c", `. ${profile}; echo $TMPDIR`]);
    assert.equal(login.stdout.trim(), tmpdir(), login.stderr);
  });

  for (const round of [1, 2, 3]) {
    it(`reset ${round} of 3: nothing survives, the home is rolled back, up waits for the round`, async () => {
      const before = await waitFor("the agent daemon", () => {
        const d = daemon();
        return d?.pid !== undefined && existsSync(`/proc/${d.pid}`) ? d : undefined;
      });
      const planted = plant(round);
      const markers = [`${TAG}-churn`, `4242${round}`, `4243${round}`, `4244${round}`];
      await waitFor("every planted process", () =>
        markers.every((m) => live(m).length > 0) ? true : undefined,
      );
      const subvolume = subvolumeId(home);

      // The reset, while up.json is read every few ms: which daemons did up start meanwhile?
      const started = Date.now();
      const reset = spawn(BIN, ["reset", AGENT, "--config", config], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, PATH: slowPath },
      });
      let said = "";
      reset.stdout?.on("data", (d) => (said += d));
      reset.stderr?.on("data", (d) => (said += d));
      const seen = new Set<number>();
      const watching = setInterval(() => {
        try {
          const pid = daemon()?.pid;
          if (pid !== undefined && pid !== before.pid) seen.add(pid);
        } catch {}
      }, 10);
      let after: UpState["services"][number];
      try {
        const code = await new Promise<number | null>((resolve) => reset.on("exit", resolve));
        assert.equal(code, 0, said);
        for (const marker of markers) assert.deepEqual(live(marker), [], `${marker} survived`);
        after = await waitFor(
          "the daemon again",
          () => {
            const d = daemon();
            return d?.pid !== undefined && d.pid !== before.pid ? d : undefined;
          },
          5000,
        );
      } finally {
        clearInterval(watching);
      }
      // One restart, of a daemon that is still running: a daemon started mid-round would have
      // been killed by the round's end and restarted again. It started after the round's clone
      // (1.5 s of git), and right after the round.
      seen.delete(after.pid!);
      assert.deepEqual([...seen], [], `up started more than one daemon:\n${output()}`);
      assert.equal(after.restarts, before.restarts + 1, output());
      assert.ok(existsSync(`/proc/${after.pid}`), "the restarted daemon runs");
      const since = Date.parse(after.since ?? "");
      assert.ok(since - started >= 1500, `started ${since - started} ms into a 1.5 s round`);
      assert.ok(since - started < Date.now() - started, "started right after the round");

      assert.notEqual(subvolumeId(home), subvolume, "the home is a new subvolume");
      assert.ok(!existsSync(path.join(home, "planted")), "last round's file is gone");
      assert.ok(existsSync(path.join(home, "projects", "kept")), "persisted data stays");

      for (const gone of [
        `/tmp/${TAG}-file`,
        `/var/tmp/${TAG}-file`,
        `/dev/shm/${TAG}-file`,
        `/tmp/${TAG}-link`,
        `/tmp/${TAG}-dir/a`,
        path.join(tmpdir(), "remember"),
        path.join(CRONTABS, AGENT),
        path.join(ATJOBS, `${TAG}-a0001`),
      ])
        assert.throws(() => lstatSync(gone), `${gone} outlived the reset`);
      for (const [flag, id] of [
        ["-m", planted.ipc.shm],
        ["-q", planted.ipc.msg],
        ["-s", planted.ipc.sem],
      ] as const)
        assert.ok(!ipcExists(flag, id), `System V object ${flag} ${id} outlived the reset`);
      assert.ok(ipcExists("-m", planted.ipc.other), "another uid's shared memory stays");
      assert.ok(!keyFound(), "the key in its user keyring outlived the reset");
      for (const stays of [`/tmp/${TAG}-root`, `/tmp/${TAG}-other`, `/tmp/${TAG}-dir/other`])
        assert.ok(existsSync(stays), `${stays} (not the agent's) stays`);
      assert.equal(readFileSync("/etc/passwd", "utf8").length > 0, true);
      assert.match(said, /stays: it is nt-test-rc-ada's but holds other users' files/);
      const tmp = statSync(tmpdir());
      assert.equal(tmp.uid, UID);
      assert.equal(tmp.mode & 0o777, 0o700);
      // Gone for the next round's files: the dir kept for the other uid's file is the agent's.
      rmSync(`/tmp/${TAG}-dir`, { recursive: true, force: true });
    });
  }

  it("fails loudly, naming the survivor, and rolls nothing back when a process outlives SIGKILL", async (t) => {
    // A task frozen by the cgroup v1 freezer takes no signal until thawed: a stand-in for a
    // process stuck in the kernel (state D), which no reset can end.
    const freezer = "/sys/fs/cgroup/freezer";
    if (!existsSync(path.join(freezer, "tasks"))) return t.skip("no cgroup v1 freezer here");
    const frozen = path.join(freezer, `nt-test-rc-${process.pid}`);
    mkdirSync(frozen);
    const stuck = spawn(AS_AGENT[0]!, [...AS_AGENT.slice(1), "sleep", "42450"], {
      stdio: "ignore",
    });
    try {
      // Frozen once it runs as the agent (setpriv is root until it drops to the agent's uid).
      await waitFor("the agent's sleep", () => (live("42450").length > 0 ? true : undefined));
      writeFileSync(path.join(frozen, "cgroup.procs"), `${stuck.pid}\n`);
      writeFileSync(path.join(frozen, "freezer.state"), "FROZEN\n");
      await waitFor("the frozen process", () =>
        readFileSync(path.join(frozen, "freezer.state"), "utf8").trim() === "FROZEN"
          ? true
          : undefined,
      );
      writeFileSync(path.join(home, "planted"), "last round\n");
      const subvolume = subvolumeId(home);
      const reset = run(BIN, ["reset", AGENT, "--config", config]);
      assert.equal(reset.code, 5, reset.stdout + reset.stderr);
      assert.match(
        reset.stderr,
        new RegExp(
          `processes of ${AGENT} \\(uid ${UID}\\) outlive SIGKILL: ${stuck.pid} sleep \\(state [A-Z]\\).*; its home was not rolled back`,
        ),
      );
      assert.equal(subvolumeId(home), subvolume, "the home is the same subvolume");
      assert.equal(readFileSync(path.join(home, "planted"), "utf8"), "last round\n");
    } finally {
      // Thawed, it takes the SIGKILL waiting for it.
      writeFileSync(path.join(frozen, "freezer.state"), "THAWED\n");
      stuck.kill("SIGKILL");
      await new Promise((r) => setTimeout(r, 200));
      rmdirSync(frozen);
    }
  });
});
