/**
 * sudo reaches a human from every way into an agent's account: a login
 * session (`runuser -l`, through the login profile in /etc/profile.d), a
 * tmux pane as the portal opens it, and a plain `runuser -u agent -- sudo`
 * that keeps the caller's PATH (through the sudo wrapper early on it), while
 * root and other users who meet the wrapper get the real sudo untouched.
 * The town's sudoers fragment and login profile are copied where sudo and
 * /etc/profile read them, under nt-test names, and removed after.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { agentLoginArgv, shellLine } from "../../src/portal/tmux.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { testPrefix } from "../support/install.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-sessag";
const MAYOR = "nt-test-sessmy";
const TMUX = `nt-test-sessions-${process.pid}`;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("sudo in every session of an agent", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "sessions",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60822 },
    install: true,
  });
  town.defer(() => run("tmux", ["-L", TMUX, "kill-server"]));
  let root = "";
  let manifest = "";
  let wrapperDir = "";
  let daemon: Daemon | undefined;
  const daemonLog = () => daemon?.output() ?? "";
  /** A caller's PATH with the wrapper's directory where /usr/local/bin is on a real host. */
  const callerPath = () =>
    `${wrapperDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`;

  const spawnOutcome = (argv: string[], env?: NodeJS.ProcessEnv): Promise<Outcome> =>
    new Promise((resolve) => {
      const child = spawn(argv[0]!, argv.slice(1), { cwd: root, env: env ?? process.env });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end();
    });
  const asMayor = (args: string[]) =>
    // The installed copy, as the mayor has it: the checkout may be private.
    run("runuser", [
      "-u",
      MAYOR,
      "--",
      path.join(testPrefix(root), "bin", "nuketown"),
      ...args,
      "--manifest",
      manifest,
    ]);
  const auditRecords = () =>
    readFileSync(path.join(root, "state", "audit.jsonl"), "utf8")
      .split("\n")
      .filter(Boolean).length;

  /** The mayor approves the one request pending, through `nuketown approve`. */
  async function approvePending(): Promise<string> {
    let last = "";
    for (let i = 0; i < 150; i++) {
      const list = asMayor(["approvals", "--json"]);
      last = list.stderr;
      const [request] = list.code === 0 ? (JSON.parse(list.stdout) as { id: string }[]) : [];
      if (request) {
        const approved = asMayor(["approve", request.id]);
        assert.equal(approved.code, 0, approved.stderr);
        return request.id;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no request showed up (${last}); approvald said:\n${daemonLog()}`);
  }

  before(async () => {
    root = town.root;
    wrapperDir = path.join(root, "local-bin");
    town.declare({
      install: { sudoWrapper: path.join(wrapperDir, "sudo") },
      basePackages: [],
      approval: { timeout: 60 },
      humans: { [MAYOR]: { approver: true } },
      agents: { [AGENT]: { uid: 60821, sudo: { enable: true } } },
    });
    town.apply();
    manifest = town.manifest;
    // Where sudo and login shells read them on a real host.
    town.sudoers();
    town.profile();
    daemon = await town.approvald();
  });

  it("runuser -l <agent> -c 'sudo id -u': the login session finds the shim, and prints 0 once the mayor approves", async () => {
    const session = spawnOutcome(["runuser", "-l", AGENT, "-c", "command -v sudo; sudo id -u"]);
    await approvePending();
    const result = await session;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      `${path.join(testPrefix(root), "libexec", "nuketown", "shim", "sudo")}\n0\n`,
    );
    assert.match(result.stderr, /waiting for a human to approve request/);
  });

  it("runuser -u <agent> -- sudo id -u, keeping the caller's PATH: the wrapper sends it to a human, and it prints 0 once approved", async () => {
    const env = { ...process.env, PATH: callerPath() };
    const command = spawnOutcome(["runuser", "-u", AGENT, "--", "sudo", "id", "-u"], env);
    const id = await approvePending();
    const result = await command;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "0\n");
    assert.match(result.stderr, new RegExp(`waiting for a human to approve request ${id}`));
  });

  it("leaves sudo untouched for root and for a user who is not an agent", async () => {
    const env = { ...process.env, PATH: callerPath() };
    const before = auditRecords();
    const asRoot = spawnSync("sudo", ["-n", "id", "-u"], { encoding: "utf8", env });
    assert.equal(asRoot.status, 0, asRoot.stderr);
    assert.equal(asRoot.stdout, "0\n");
    assert.equal(asRoot.stderr, "");
    const version = spawnSync("sudo", ["-V"], { encoding: "utf8", env });
    assert.match(version.stdout, /^Sudo version /, "the real sudo answers");
    // The mayor has no sudo rule here: the real sudo's own refusal, no request.
    const human = spawnSync("runuser", ["-u", MAYOR, "--", "sudo", "-n", "true"], {
      encoding: "utf8",
      env,
    });
    assert.equal(human.status, 1);
    assert.match(human.stderr, /^sudo: a password is required/);
    assert.equal(auditRecords(), before, "approvald heard of none of them");
    assert.equal(asMayor(["approvals", "--json"]).stdout.trim(), "[]");
  });

  it("a tmux pane opened as the portal opens it reaches approvald (auto-approve test mode)", async () => {
    mustRun(BIN, ["approval-mode", "auto-approve", "--manifest", manifest]);
    try {
      // In the agent's home: the pane runs as the agent.
      const out = path.join(root, "agents", AGENT, "pane.out");
      const script = `sudo id -u > ${out} 2>&1; echo done >> ${out}`;
      const pane = shellLine(
        agentLoginArgv(AGENT, script, { systemd: false, root: true, runuser: true }),
      );
      mustRun("tmux", ["-L", TMUX, "-f", "/dev/null", "new-session", "-d", "-s", "portal", pane]);
      for (let i = 0; i < 150 && !readIf(out).includes("done"); i++)
        await new Promise((r) => setTimeout(r, 100));
      const said = readIf(out);
      assert.match(said, /\*\*\* TEST MODE \(auto-approve\): no human was asked \*\*\*/);
      assert.match(said, /^0$/m, said);
    } finally {
      mustRun(BIN, ["approval-mode", "off", "--manifest", manifest]);
    }
  });
});

function readIf(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
