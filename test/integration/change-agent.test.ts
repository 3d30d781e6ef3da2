/**
 * Change control as a real agent: an agent account (uid 60530), which can
 * write neither the change store nor the config repo, runs `nuketown mcp`
 * as itself — spawned by the MCP SDK's own stdio client — and proposes and
 * verifies through approvald's change socket, which knows it by its peer
 * credentials. Real accounts, the real approvald, real git, a real
 * `nix-instantiate` evaluation (test/support/change-repo.ts); the human
 * approves with the CLI and root applies with the declared stand-in steps.
 *
 * And what an agent must not manage: propose as another agent (no field
 * for it on the socket, the CLI refuses), verify another agent's change,
 * be served when it is no agent at all, have root read a repository only
 * root can read, or have its clone's hooks, fsmonitor or other settings run
 * as root while root takes its branch and builds it.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { type ChangeRepo, gitIn, makeChangeRepo } from "../support/change-repo.ts";
import { isRoot, mustRun, stopChild } from "../support/host.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-cagent";
const AGENT_UID = 60530;
const OTHER = "nt-test-cother";
const OTHER_UID = 60531;
const HUMAN = "nt-test-chuman";
const STRANGER = "nt-test-cstranger";

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The text of a tool's result, hint included. */
const text = (result: unknown) =>
  ((result as CallToolResult).content ?? [])
    .map((c) => (c.type === "text" ? c.text : ""))
    .join("\n");

describe("change control as a real agent, through MCP and approvald", {
  skip: !isRoot() && "needs root",
}, () => {
  const town = testTown({
    label: "cagent",
    uids: uidsOf(import.meta.filename),
    accounts: { [HUMAN]: 60532, [STRANGER]: 60533 },
    install: true,
  });
  let root = "";
  let manifest = "";
  let fixture: ChangeRepo;
  let clone = "";
  let markers = "";
  let daemon: Daemon | undefined;
  let client: Client | undefined;
  let sudoRule = "";

  const run = (argv: string[], opts: { user?: string; input?: string } = {}) =>
    new Promise<Outcome>((resolve) => {
      const home = opts.user ? town.home(opts.user) : root;
      const [program, ...args] = opts.user
        ? ["runuser", "-u", opts.user, "--", "env", "PATH=/usr/bin:/bin", `HOME=${home}`, ...argv]
        : argv;
      const child = spawn(program as string, args, { cwd: root });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      // A program that exits without reading its input must not fail the test with EPIPE.
      child.stdin.on("error", () => {});
      child.stdin.end(opts.input ?? "");
    });
  const nuketown = (args: string[], user?: string) =>
    run([BIN, ...args, "--manifest", manifest], user ? { user } : {});
  /** git in the agent's clone, as the agent. */
  const agentGit = (...args: string[]) =>
    run(
      ["git", "-C", clone, "-c", `user.name=${AGENT}`, "-c", "user.email=a@test.local", ...args],
      {
        user: AGENT,
      },
    );

  /** One frame on the change socket, sent by `user`'s own process; its answer. */
  const raw = async (user: string, frame: object) => {
    const socket = path.join(root, "run", "change.sock");
    const script = `const s=require("net").createConnection(${JSON.stringify(socket)});s.setEncoding("utf8");let b="";s.on("data",d=>b+=d);s.on("close",()=>process.stdout.write(b));s.on("connect",()=>s.write(${JSON.stringify(`${JSON.stringify(frame)}\n`)}));`;
    const out = await run([process.execPath, "-e", script], { user });
    assert.equal(out.code, 0, out.stderr);
    return JSON.parse(out.stdout.split("\n")[0] ?? "") as {
      type: string;
      error?: string;
      proposal?: { agent: string };
    };
  };

  /** A branch in the agent's clone: one commit on top of main, made by the agent. */
  async function branch(name: string, transform: (text: string) => string): Promise<void> {
    const file = "machines/tom/configuration.nix";
    for (const args of [
      ["fetch", "-q", "origin"],
      ["checkout", "-q", "-B", name, "origin/main"],
    ])
      assert.equal((await agentGit(...args)).code, 0);
    const now = (await run(["cat", path.join(clone, file)], { user: AGENT })).stdout;
    const write = await run(["tee", path.join(clone, file)], {
      user: AGENT,
      input: transform(now),
    });
    assert.equal(write.code, 0, write.stderr);
    for (const args of [
      ["add", "-A"],
      ["commit", "-q", "-m", name],
    ])
      assert.equal((await agentGit(...args)).code, 0);
  }

  async function pendingId(): Promise<string> {
    for (let i = 0; i < 100; i++) {
      const list = await nuketown(["approvals", "--json"], HUMAN);
      const requests = list.code === 0 ? (JSON.parse(list.stdout) as { id: string }[]) : [];
      if (requests[0]) return requests[0].id;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("no request showed up");
  }

  before(async () => {
    root = town.root;
    fixture = makeChangeRepo(root);
    // A repository only root can read, with a branch an agent would like root to hand it.
    const secret = path.join(root, "secret");
    mustRun("git", ["clone", "-q", fixture.repo, secret]);
    gitIn(secret, "checkout", "-q", "-b", "loot");
    gitIn(secret, "commit", "-q", "--allow-empty", "-m", "root's eyes only");
    chmodSync(secret, 0o700);
    // Where a planted hook would leave its mark, named and owned by whoever ran it.
    markers = path.join(root, "markers");
    mkdirSync(markers, { mode: 0o1777 });
    chmodSync(markers, 0o1777);

    town.declare({
      name: "nt-test-change-agent",
      domain: "test.local",
      approval: { timeout: 60, channels: ["terminal"] },
      humans: { [HUMAN]: { approver: true } },
      agents: { [AGENT]: { uid: AGENT_UID }, [OTHER]: { uid: OTHER_UID } },
      change: { repo: fixture.repo, hosts: { tom: fixture.host } },
    });
    town.apply();
    manifest = town.manifest;

    // The agent's own clone of the config repo, in its home.
    clone = path.join(town.home(AGENT), "nixos");
    const cloned = await run(["git", "clone", "-q", fixture.repo, clone], { user: AGENT });
    assert.equal(cloned.code, 0, cloned.stderr);

    const approvald = await town.approvald();
    daemon = approvald;
    town.defer(() => {
      if (process.env.NT_TEST_VERBOSE) process.stderr.write(approvald.output());
    });
    const socket = path.join(root, "run", "change.sock");
    for (let i = 0; i < 100 && !existsSync(socket); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(existsSync(socket), `approvald serves the change socket\n${approvald.output()}`);

    client = new Client({ name: "nt-test-agent", version: "1.0.0" });
    // Closed before approvald stops and the accounts go (deferred steps run last first).
    town.defer(() => client?.close());
    await client.connect(
      new StdioClientTransport({
        command: "runuser",
        args: [
          "-u",
          AGENT,
          "--",
          "env",
          "PATH=/usr/bin:/bin",
          `HOME=${town.home(AGENT)}`,
          BIN,
          "mcp",
          "--manifest",
          manifest,
        ],
        cwd: town.home(AGENT),
        stderr: "pipe",
      }),
    );
  });

  const call = (name: string, args: Record<string, unknown>) =>
    (client as Client).callTool({ name, arguments: args }, undefined, { timeout: 120_000 });

  it("an agent proposes its branch through MCP (a sudo rule: high risk) and verify builds it as the agent", async () => {
    // The agent cannot write the store or the repo: the point of going through approvald.
    const store = statSync(path.join(root, "state"));
    assert.equal(store.uid, 0);
    await branch(`${AGENT}/sudo`, (t) =>
      t.replace(
        "  networking.firewall",
        `  security.sudo.extraRules = [ { users = [ "${AGENT}" ]; commands = [ "ALL" ]; } ];\n  networking.firewall`,
      ),
    );
    // Everything a clone can make git run, planted after the agent's own commits.
    const mark = path.join(town.home(AGENT), "mark.sh");
    await run(["tee", mark], {
      user: AGENT,
      input: `#!/bin/sh\ntouch "${markers}/$(id -u)-$(basename "$0")-$$"\ncat >/dev/null 2>&1 || true\n`,
    });
    await run(["chmod", "755", mark], { user: AGENT });
    const hooks = path.join(clone, ".git", "hooks");
    for (const hook of [
      "pre-commit",
      "post-checkout",
      "post-merge",
      "pre-push",
      "reference-transaction",
      "pre-auto-gc",
      "post-index-change",
      "fsmonitor-watchman",
    ])
      await run(["cp", mark, path.join(hooks, hook)], { user: AGENT });
    for (const [key, value] of [
      ["core.fsmonitor", mark],
      ["core.hooksPath", hooks],
      ["uploadpack.packObjectsHook", mark],
      ["core.sshCommand", mark],
      ["core.pager", mark],
      ["credential.helper", `!${mark}`],
    ] as const)
      assert.equal((await agentGit("config", key, value)).code, 0);

    const proposed = await call("change_propose", {
      host: "tom",
      branch: `${AGENT}/sudo`,
      from: "nixos", // relative to the MCP server's working directory: the agent's home
      explanation: "Let nt-test-cagent run anything as root",
    });
    assert.equal(proposed.isError, undefined, text(proposed));
    const proposal = proposed.structuredContent as {
      id: string;
      risk: string;
      options: string[];
      state: string;
    };
    assert.equal(proposal.risk, "high");
    assert.ok(proposal.options.includes("security.sudo.extraRules"), proposal.options.join());
    sudoRule = proposal.id;
    const status = await call("change_status", { id: sudoRule });
    const full = status.structuredContent as { agent: string; branch: string };
    assert.equal(full.agent, AGENT, "the proposal's agent is the one the kernel named");
    assert.equal(full.branch, `refs/nuketown/incoming/${AGENT}/${AGENT}/sudo`);

    fixture.clearRanLog();
    const verified = await call("change_verify", { id: sudoRule });
    assert.equal(verified.isError, undefined, text(verified));
    const report = (verified.structuredContent as { state: string; verify: Record<string, any> })
      .verify;
    assert.equal(report.ok, true);
    assert.equal(report.closure.tool, "changed paths");
    assert.match(report.closure.summary, /~ config\.json/);
    assert.equal(fixture.ranLog().trim(), `build tom ${AGENT_UID}`, "built as the agent, only");
    assert.equal(fixture.current(), path.join(fixture.system, "generations", "1"), "no switch");
    // Nothing was left behind in the builds directory.
    assert.deepEqual(readdirSync(path.join(root, "run", "change-builds")), []);

    // Not one planted command ran as root (the agent's own git ran some, as itself).
    const ranAsRoot = readdirSync(markers).filter(
      (m) => m.startsWith("0-") || statSync(path.join(markers, m)).uid === 0,
    );
    assert.deepEqual(ranAsRoot, [], "a hook or setting of the clone ran as root");
  });

  it("a broken change fails verify with the evaluator's error, as an isError result", async () => {
    await branch(`${AGENT}/typo`, (t) => t.replace("[ 22 ]", '[ "twenty-two" ]'));
    const proposed = await call("change_propose", {
      host: "tom",
      branch: `${AGENT}/typo`,
      from: clone,
      explanation: "ssh port",
    });
    assert.equal(proposed.isError, undefined, text(proposed));
    const id = (proposed.structuredContent as { id: string }).id;
    const verified = await call("change_verify", { id });
    assert.equal(verified.isError, true);
    assert.match(text(verified), /"state": "verify-failed"/);
    assert.match(text(verified), /error:.*(port|16 bit|integer)/is);
    assert.match(text(verified), /hint: the build failed/);
  });

  it("answers what went wrong with a hint: an unknown branch, an unknown host, a repo it cannot read", async () => {
    const missing = await call("change_propose", {
      host: "tom",
      branch: `${AGENT}/nothing`,
      from: clone,
      explanation: "x",
    });
    assert.equal(missing.isError, true);
    assert.match(
      text(missing),
      /branch nt-test-cagent\/nothing not found in .*hint: push or commit/s,
    );

    const host = await call("change_propose", {
      host: "nowhere",
      branch: `${AGENT}/sudo`,
      from: clone,
      explanation: "x",
    });
    assert.equal(host.isError, true);
    assert.match(
      text(host),
      /"nowhere" is not in change\.hosts.*hint: name one of the machines declared in change\.hosts: tom/s,
    );

    // Root can read it; the agent cannot, and its clone is read as the agent.
    const loot = await call("change_propose", {
      host: "tom",
      branch: "loot",
      from: path.join(root, "secret"),
      explanation: "x",
    });
    assert.equal(loot.isError, true);
    assert.match(text(loot), /not a git repository nt-test-cagent can read/);
    const refs = gitIn(fixture.repo, "for-each-ref", "--format=%(refname)");
    assert.doesNotMatch(refs, /loot/);
  });

  it("an agent cannot propose as another, verify another's change, or be served when it is no agent", async () => {
    // The socket has no field for a name: a frame that claims one is refused.
    const forged = await raw(AGENT, {
      v: 1,
      type: "propose",
      host: "tom",
      explanation: "as the other one",
      branch: `${AGENT}/sudo`,
      from: clone,
      agent: OTHER,
    });
    assert.equal(forged.type, "error");
    assert.match(forged.error ?? "", /malformed frame/);
    assert.doesNotMatch(JSON.stringify(forged), /not running/);
    // The CLI, run as the agent, refuses before asking.
    const cli = await nuketown(
      [
        "change",
        "propose",
        "--host",
        "tom",
        "--agent",
        OTHER,
        "--from",
        clone,
        "--branch",
        `${AGENT}/sudo`,
        "--explain",
        "x",
      ],
      AGENT,
    );
    assert.equal(cli.code, 3, cli.stderr);
    assert.match(cli.stderr, /nt-test-cagent cannot propose as nt-test-cother/);

    // Another agent may read the change, not build it under its own account.
    const other = await raw(OTHER, { v: 1, type: "verify", id: sudoRule });
    assert.equal(other.type, "error");
    assert.match(other.error ?? "", /verifies only its own changes/);
    // The CLI as the agent goes through the same socket and is the agent.
    const listed = await nuketown(["change", "status", "--json"], OTHER);
    assert.equal(listed.code, 0, listed.stderr);
    const all = JSON.parse(listed.stdout) as { agent: string }[];
    assert.ok(all.length >= 2 && all.every((p) => p.agent === AGENT));

    // Not an agent: the kernel says who connected, and it is refused.
    const stranger = await raw(STRANGER, { v: 1, type: "status" });
    assert.equal(stranger.type, "error");
    assert.match(stranger.error ?? "", /uid 60533 is not an agent of nt-test-change-agent/);
  });

  it("the human approves the high-risk change with the CLI, and root applies it with the declared steps", async () => {
    const approving = nuketown(["change", "approve", sudoRule]);
    const request = await pendingId();
    const shown = await nuketown(["approvals"], HUMAN);
    assert.match(shown.stdout, new RegExp(`change ${sudoRule} → tom \\(high risk\\)`));
    assert.match(shown.stdout, new RegExp(AGENT));
    const yes = await nuketown(["approve", request], HUMAN);
    assert.equal(yes.code, 0, yes.stderr);
    const approved = await approving;
    assert.equal(approved.code, 0, approved.stderr + approved.stdout);
    assert.match(approved.stdout, new RegExp(`approval: approved by human ${HUMAN}`));

    // Apply is root's: the agent's CLI is refused, and there is no apply on the socket.
    const byAgent = await nuketown(["change", "apply", sudoRule], AGENT);
    assert.notEqual(byAgent.code, 0);
    const onSocket = await raw(AGENT, { v: 1, type: "apply", id: sudoRule });
    assert.equal(onSocket.type, "error");

    fixture.clearRanLog();
    const applied = await nuketown(["change", "apply", sudoRule, "--json"]);
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    const record = JSON.parse(applied.stdout);
    assert.equal(record.state, "applied");
    assert.equal(record.apply.generation, path.join(fixture.system, "generations", "2"));
    assert.deepEqual(
      fixture
        .ranLog()
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[0]),
      ["build", "test", "health", "switch"],
    );
    assert.match(fixture.ranLog(), /^build tom 0$/m, "apply, once approved, builds as root");
    assert.equal(gitIn(fixture.repo, "rev-parse", "main").trim(), record.commit);

    // Still nothing of the clone ran as root, through approve and apply either —
    // while the planted commands do run, in the agent's own git, as the agent.
    const marks = readdirSync(markers).map((m) => statSync(path.join(markers, m)).uid);
    assert.ok(marks.includes(AGENT_UID), "the planted hooks work (as the agent)");
    assert.deepEqual(
      marks.filter((uid) => uid !== AGENT_UID),
      [],
    );
    const log = await nuketown(["change", "log", "-n", "100"]);
    assert.match(log.stdout, /audit log intact/);
    assert.match(log.stdout, /change\.verified/);
  });

  it("says approvald is not running when it is not", async () => {
    await stopChild(daemon?.child, 5000);
    const status = await call("change_status", {});
    assert.equal(status.isError, true);
    assert.match(text(status), /approvald is not running.*hint: approvald is not running/s);
  });
});
