/**
 * `nuketown up` on a host without systemd as PID 1 (this one): it applies
 * the town, supervises the approval daemon and the agent daemons, restarts
 * one that dies, and `nuketown status` shows them.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { isRoot } from "../support/host.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const MAYOR = "nt-test-upmayor";

interface UpState {
  pid: number;
  services: { name: string; pid?: number; restarts: number }[];
}

describe("nuketown up", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "up",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60502 },
    install: true,
  });
  let root = "";
  let upProcess: Daemon | undefined;
  const output = () => upProcess?.output() ?? "";
  const upState = () => path.join(root, "run", "up.json");
  const readUp = () => JSON.parse(readFileSync(upState(), "utf8")) as UpState;

  async function waitFor<T>(what: string, probe: () => T | undefined, ms = 20_000): Promise<T> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      try {
        const value = probe();
        if (value !== undefined) return value;
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}; up said:\n${output()}`);
  }

  before(() => {
    root = town.root;
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(runtime, '#!/bin/sh\necho \'{"type":"answer","text":"hello"}\'\n', {
      mode: 0o755,
    });
    town.declare({
      humans: { [MAYOR]: { approver: true } },
      agents: {
        "nt-test-upagent": {
          uid: 60501,
          persist: ["projects"],
          runtime: { kind: "command", command: runtime },
        },
      },
    });
  });

  it("applies the town, starts every daemon, and says where to look", async () => {
    upProcess = town.up();
    await waitFor("the guide", () => (output().includes("is up:") ? true : undefined), 60_000);
    assert.match(output(), /town nt-test-up is up: this process supervises the daemons/);
    assert.match(output(), /nuketown approvals --watch/);
    assert.match(output(), /nuketown talk nt-test-upagent/);
    assert.match(
      output(),
      /who can approve:\n {2}nt-test-upmayor: Unix account nt-test-upmayor \(nuketown approvals, the desktop dialog, the dashboard\)/,
    );
    const state = await waitFor("both daemons", () => {
      const s = readUp();
      return s.services.every((svc) => svc.pid !== undefined) ? s : undefined;
    });
    assert.deepEqual(
      state.services.map((s) => s.name),
      ["approvald", "dashboard", "agent nt-test-upagent"],
    );
    await waitFor("the control socket", () =>
      existsSync(path.join(root, "run", "control.sock")) ? true : undefined,
    );
  });

  it("restarts a daemon that dies", async () => {
    const before = readUp().services.find((s) => s.name === "approvald");
    assert.ok(before?.pid);
    process.kill(before.pid, "SIGKILL");
    const after = await waitFor("a new approvald", () => {
      const s = readUp().services.find((svc) => svc.name === "approvald");
      return s?.pid && s.pid !== before.pid ? s : undefined;
    });
    assert.equal(after.restarts, 1);
  });

  it("runs the installed copy, root-owned, and moves every daemon onto a new version and back with --rollback", async () => {
    const prefix = town.prefix;
    const manifest = path.join(root, "etc", "nuketown", "town.json");
    const lib = path.join(prefix, "lib", "nuketown");
    const versionA = readlinkSync(path.join(lib, "current"));
    const running = (version: string) => {
      const services = readUp().services;
      for (const service of services) {
        if (service.pid === undefined) return undefined;
        const exe = readlinkSync(`/proc/${service.pid}/exe`);
        const argv = readFileSync(`/proc/${service.pid}/cmdline`, "utf8").split("\0");
        if (exe !== path.join(lib, version, "bin", "node")) return undefined;
        // The agent daemon runs with Node flags before the script (the installed launcher).
        if (argv.find((a) => a.endsWith("cli.js")) !== path.join(lib, version, "dist", "cli.js"))
          return undefined;
      }
      return services;
    };
    await waitFor(`the daemons on ${versionA}`, () => running(versionA));
    // Root-owned, nothing writable by group or others, in the whole tree.
    const writable = spawnSync(
      "find",
      [lib, "(", "-perm", "/022", "-o", "!", "-user", "root", ")", "!", "-type", "l"],
      {
        encoding: "utf8",
      },
    );
    assert.equal(writable.stdout, "", "files others could change");
    const before = readUp().services.map((s) => s.pid);

    const installed = spawnSync(
      BIN,
      [
        "install",
        "--prefix",
        prefix,
        "--as-version",
        "0.0.0-b",
        "--any-build",
        "--manifest",
        manifest,
      ],
      {
        encoding: "utf8",
      },
    );
    assert.equal(installed.status, 0, installed.stderr);
    assert.match(installed.stdout, /nuketown 0\.0\.0-b installed .* \(previous: /);
    assert.match(installed.stdout, /asked nuketown up \(pid \d+\) to restart/);
    const onB = await waitFor("the daemons on 0.0.0-b", () => running("0.0.0-b"));
    for (const service of onB)
      assert.ok(!before.includes(service.pid), `${service.name} restarted`);
    assert.equal(readlinkSync(path.join(lib, "previous")), versionA);

    const back = spawnSync(
      BIN,
      ["install", "--rollback", "--prefix", prefix, "--manifest", manifest],
      {
        encoding: "utf8",
      },
    );
    assert.equal(back.status, 0, back.stderr);
    await waitFor(`the daemons back on ${versionA}`, () => running(versionA));
    assert.equal(readlinkSync(path.join(lib, "current")), versionA);
  });

  it("shows the supervised daemons in status", () => {
    const status = spawnSync(
      BIN,
      ["status", "--manifest", path.join(root, "etc", "nuketown", "town.json"), "--json"],
      {
        encoding: "utf8",
      },
    );
    assert.equal(status.status, 0, status.stderr);
    const parsed = JSON.parse(status.stdout);
    assert.equal(parsed.supervisor.pid, readUp().pid);
    assert.match(parsed.agents[0].service, /^up \(pid \d+/);
  });

  it("stops every daemon when it is stopped", async () => {
    const pids = readUp()
      .services.map((s) => s.pid)
      .filter((p): p is number => p !== undefined);
    const exited = new Promise((resolve) => upProcess?.child.once("exit", resolve));
    upProcess?.child.kill("SIGTERM");
    await exited;
    for (const pid of pids) {
      assert.throws(() => process.kill(pid, 0), "a supervised daemon outlived up");
    }
    assert.ok(!existsSync(upState()), "up removes its record");
  });
});

describe("nuketown up with nobody to approve", { skip: !isRoot() && "needs root" }, () => {
  const AGENT = "nt-test-hh-up";
  const GHOST = "nt-test-hh-ghost";
  const town = testTown({ label: "upnobody", uids: uidsOf(import.meta.filename), install: true });
  let root = "";
  let upProcess: Daemon | undefined;
  const output = () => upProcess?.output() ?? "";

  before(() => {
    root = town.root;
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(runtime, '#!/bin/sh\necho \'{"type":"answer","text":"hi"}\'\n', { mode: 0o755 });
    town.declare({
      name: "nt-test-hh-nobody",
      install: { sudoWrapper: path.join(root, "bin", "sudo") },
      basePackages: [],
      // The mayor and only approver has no account on this host.
      humans: { [GHOST]: { approver: true } },
      agents: {
        [AGENT]: {
          uid: 60465,
          sudo: { enable: true },
          runtime: { kind: "command", command: runtime },
        },
      },
    });
  });

  it("says who is missing and how to fix it, and starts no approvald nobody can reach", async () => {
    const check = spawnSync(BIN, ["check", path.join(root, "town.toml")], { encoding: "utf8" });
    assert.equal(check.status, 0);
    assert.match(
      check.stderr,
      new RegExp(
        `warning: humans\\.${GHOST}: no Unix account "${GHOST}" on this host, so ${GHOST} \\(the mayor\\) cannot approve from a terminal, the desktop or the dashboard nor reach the agents' sockets \\(talk, portal\\) here: create it \\(useradd --create-home ${GHOST}\\) or set humans\\.${GHOST}\\.unixUser to the account ${GHOST} logs in with`,
      ),
    );

    upProcess = town.up();
    const deadline = Date.now() + 90_000;
    while (!output().includes("is up:") && Date.now() < deadline) {
      if (upProcess.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.match(output(), /is up:/, output());
    assert.match(output(), new RegExp(`note: humans\\.${GHOST}: no Unix account "${GHOST}"`));
    assert.match(
      output(),
      new RegExp(
        `refused: nobody can approve the agents' sudo requests on this host \\(humans\\.${GHOST} has no Unix account "${GHOST}" here\\), so approvald is not started`,
      ),
    );
    assert.match(output(), /useradd --create-home NAME\) or set humans\.NAME\.unixUser/);
    const state = JSON.parse(readFileSync(path.join(root, "run", "up.json"), "utf8")) as UpState;
    assert.ok(!state.services.some((s) => s.name === "approvald"), JSON.stringify(state));
    // The agent daemon says plainly why the mayor cannot reach its socket (not setfacl's words).
    const log = path.join(root, "state", "logs", `agent-${AGENT}.log`);
    const deadlineLog = Date.now() + 20_000;
    while (
      Date.now() < deadlineLog &&
      !(existsSync(log) && /can reach/.test(readFileSync(log, "utf8")))
    )
      await new Promise((r) => setTimeout(r, 200));
    const agentLog = readFileSync(log, "utf8");
    assert.match(
      agentLog,
      new RegExp(`only ${AGENT} can reach \\S+: humans\\.${GHOST}: no Unix account`),
    );
    assert.doesNotMatch(agentLog, /setfacl/);
  });
});
