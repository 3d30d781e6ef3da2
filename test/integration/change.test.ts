/**
 * Change control end to end, as root, with real parts: a real git config
 * repo shaped like a multi-machine flake (machines/<name>/, programs/,
 * cloud/), a real evaluation of the machine's modules by Debian's
 * nix-instantiate with the nixpkgs library, the real approvald and the CLI
 * approving, and the audit log.
 *
 * The host's steps are the stand-ins of test/support/change-repo.ts.
 *
 * Then the MCP server, run as the agent, driven by the SDK's own client over
 * stdio: every tool listed, the identity, and a request_sudo that a human
 * approves with `nuketown approve`.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { gitIn, makeChangeRepo } from "../support/change-repo.ts";
import { isRoot, mustRun } from "../support/host.ts";
import { BIN, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const NIXER = "nt-test-nixer";
const TOOLER = "nt-test-tooler";
const MAYOR = "nt-test-cmayor";

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("change control of a NixOS config repo", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "change",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60810 },
    install: true,
  });
  let root = "";
  let repo = "";
  let clone = "";
  let system = "";
  let manifest = "";
  let shimDir = "";

  const run = (
    argv: string[],
    opts: { cwd?: string; user?: string; env?: Record<string, string> } = {},
  ) =>
    new Promise<Outcome>((resolve) => {
      const [program, ...args] = opts.user
        ? [
            "runuser",
            "-u",
            opts.user,
            "--",
            "env",
            `PATH=${shimDir}:/usr/bin:/bin`,
            `HOME=${root}`,
            ...argv,
          ]
        : argv;
      const child = spawn(program as string, args, {
        cwd: opts.cwd ?? root,
        env: { ...process.env, ...opts.env },
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end();
    });
  const nuketown = (args: string[], user?: string) =>
    run([BIN, ...args, "--manifest", manifest], user ? { user } : {});
  const git = gitIn;
  let ranLog: () => string = () => "";
  let current: () => string = () => "";

  /** Make the agent's branch in its clone: one commit on top of main. */
  function branch(name: string, file: string, transform: (text: string) => string): void {
    git(clone, "fetch", "-q", "origin");
    git(clone, "checkout", "-q", "-B", name, "origin/main");
    const target = path.join(clone, file);
    writeFileSync(target, transform(existsSync(target) ? readFileSync(target, "utf8") : ""));
    git(clone, "add", "-A");
    git(clone, "commit", "-q", "-m", `${name}`);
  }

  async function propose(agent: string, name: string, explain: string): Promise<string> {
    const out = await nuketown([
      "change",
      "propose",
      "--host",
      "tom",
      "--agent",
      agent,
      "--from",
      clone,
      "--branch",
      name,
      "--explain",
      explain,
      "--json",
    ]);
    assert.equal(out.code, 0, out.stderr);
    return (JSON.parse(out.stdout) as { id: string }).id;
  }

  async function pendingId(): Promise<string> {
    for (let i = 0; i < 100; i++) {
      const list = await nuketown(["approvals", "--json"], MAYOR);
      const requests = list.code === 0 ? (JSON.parse(list.stdout) as { id: string }[]) : [];
      if (requests[0]) return requests[0].id;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("no request showed up");
  }

  before(async () => {
    root = town.root;
    const fixture = makeChangeRepo(root);
    ({ repo, system } = fixture);
    ranLog = fixture.ranLog;
    current = fixture.current;
    clone = path.join(root, "clone");
    mustRun("git", ["clone", "-q", repo, clone]);

    town.declare({
      domain: "test.local",
      approval: { timeout: 60 },
      humans: { [MAYOR]: { approver: true } },
      agents: {
        [NIXER]: {
          uid: 60801,
          persist: ["notes"],
          sudo: { enable: true, policy: { default: "ask", rules: [] } },
        },
        [TOOLER]: { uid: 60802 },
      },
      change: {
        repo,
        autoApprove: [TOOLER],
        hosts: { tom: fixture.host },
      },
    });
    town.apply();
    manifest = town.manifest;
    shimDir = town.shimDir;
    town.sudoers();
    const daemon = await town.approvald();
    town.defer(() => {
      if (process.env.NT_TEST_VERBOSE) process.stderr.write(daemon.output());
    });
  });

  it("a high-risk change (a sudo rule) is verified by a real evaluation, waits for a human, and is applied", async () => {
    branch(`${NIXER}/sudo-rule`, "machines/tom/configuration.nix", (t) =>
      t.replace(
        "  networking.firewall",
        '  security.sudo.extraRules = [ { users = [ "nt-test-nixer" ]; commands = [ "ALL" ]; } ];\n  networking.firewall',
      ),
    );
    const id = await propose(NIXER, `${NIXER}/sudo-rule`, "Let nt-test-nixer run anything as root");
    const status = JSON.parse((await nuketown(["change", "status", id, "--json"])).stdout);
    assert.equal(status.risk, "high");
    assert.ok(status.options.includes("security.sudo.extraRules"), status.options);

    const verified = await nuketown(["change", "verify", id, "--json"]);
    assert.equal(verified.code, 0, verified.stderr + verified.stdout);
    const report = JSON.parse(verified.stdout).verify;
    assert.equal(report.ok, true);
    assert.equal(report.closure.tool, "changed paths");
    assert.match(report.closure.summary, /~ config\.json/);
    assert.equal(current(), path.join(system, "generations", "1"), "verify switched nothing");
    assert.match(ranLog(), /^build tom 60801$/m, "verify built as the agent, never as root");

    const approving = nuketown(["change", "approve", id]);
    const request = await pendingId();
    const shown = await nuketown(["approvals"], MAYOR);
    assert.match(shown.stdout, new RegExp(`change ${id} → tom \\(high risk\\)`));
    const yes = await nuketown(["approve", request], MAYOR);
    assert.equal(yes.code, 0, yes.stderr);
    const approved = await approving;
    assert.equal(approved.code, 0, approved.stderr + approved.stdout);
    assert.match(approved.stdout, new RegExp(`approval: approved by human ${MAYOR}`));

    const applied = await nuketown(["change", "apply", id, "--json"]);
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    const record = JSON.parse(applied.stdout);
    assert.equal(record.state, "applied");
    assert.equal(record.apply.previousGeneration, path.join(system, "generations", "1"));
    assert.equal(record.apply.generation, path.join(system, "generations", "2"));
    assert.deepEqual(
      ranLog()
        .trim()
        .split("\n")
        .map((l) => l.split(" ")[0]),
      ["build", "build", "test", "health", "switch"],
    );
    assert.match(ranLog(), /^build tom 0$/m, "apply (approved) builds as root");
    assert.equal(git(repo, "rev-parse", "main").trim(), record.commit, "main moved to the change");
  });

  it("a low-risk change from an agent the policy lists passes without a human", async () => {
    branch(`${TOOLER}/htop`, "machines/tom/configuration.nix", (t) =>
      t.replace('"ripgrep"\n', '"ripgrep"\n    "htop"\n'),
    );
    const id = await propose(TOOLER, `${TOOLER}/htop`, "htop for looking at processes");
    assert.equal((await nuketown(["change", "verify", id])).code, 0);
    const approved = await nuketown(["change", "approve", id, "--json"]);
    assert.equal(approved.code, 0, approved.stderr);
    const { approval, risk } = JSON.parse(approved.stdout);
    assert.equal(risk, "low");
    assert.equal(approval.by.kind, "policy");
    const applied = await nuketown(["change", "apply", id]);
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    assert.ok(existsSync(path.join(system, "current", "sw", "htop")));
  });

  it("a broken change fails verify with the evaluator's error", async () => {
    branch(`${TOOLER}/typo`, "machines/tom/configuration.nix", (t) =>
      t.replace("[ 22 ]", '[ "twenty-two" ]'),
    );
    const id = await propose(TOOLER, `${TOOLER}/typo`, "ssh port");
    const verified = await nuketown(["change", "verify", id]);
    assert.equal(verified.code, 5, verified.stdout);
    assert.match(verified.stdout, /verify: FAILED/);
    assert.match(verified.stdout, /error:.*(port|16 bit|integer)/is);
    const approve = await nuketown(["change", "approve", id]);
    assert.equal(approve.code, 3);
    assert.match(approve.stderr, /verify-failed/);
  });

  it("a failing health check rolls back to the recorded generation", async () => {
    const before = current();
    branch(`${TOOLER}/unhealthy`, "machines/tom/configuration.nix", (t) =>
      t.replace('"ripgrep"\n', '"ripgrep"\n    "nt-test-unhealthy"\n'),
    );
    const id = await propose(TOOLER, `${TOOLER}/unhealthy`, "a package that breaks the machine");
    assert.equal((await nuketown(["change", "verify", id])).code, 0);
    assert.equal((await nuketown(["change", "approve", id])).code, 0);
    writeFileSync(path.join(system, "ran.log"), "");
    const applied = await nuketown(["change", "apply", id, "--json"]);
    assert.equal(applied.code, 5, applied.stdout);
    const record = JSON.parse(applied.stdout);
    assert.equal(record.state, "rolled-back");
    assert.match(record.apply.error, /health failed: not healthy within 2 s/);
    assert.match(ranLog(), /^rollback /m);
    assert.doesNotMatch(ranLog(), /^switch /m);
    assert.equal(current(), before, "back on the generation recorded before");
    assert.notEqual(git(repo, "rev-parse", "main").trim(), record.commit, "main did not take it");
  });

  it("refuses to apply when the branch moved after approval", async () => {
    branch(`${NIXER}/port`, "machines/tom/configuration.nix", (t) =>
      t.replace("[ 22 ]", "[ 22 443 ]"),
    );
    const id = await propose(NIXER, `${NIXER}/port`, "open https");
    assert.equal((await nuketown(["change", "verify", id])).code, 0);
    const approving = nuketown(["change", "approve", id]);
    assert.equal((await nuketown(["approve", await pendingId()], MAYOR)).code, 0);
    assert.equal((await approving).code, 0);
    // The agent pushes something else under the approved name.
    git(clone, "commit", "-q", "--amend", "-m", "open everything");
    mustRun("git", [
      "-C",
      repo,
      "fetch",
      "-q",
      clone,
      `+refs/heads/${NIXER}/port:refs/nuketown/incoming/${NIXER}/${NIXER}/port`,
    ]);
    const applied = await nuketown(["change", "apply", id]);
    assert.equal(applied.code, 3, applied.stdout + applied.stderr);
    assert.match(applied.stderr, /moved since change .* was proposed/);
  });

  it("refuses to propose on a dirty tree, and rolls an applied change back by hand", async () => {
    writeFileSync(path.join(repo, "stray.nix"), "{ }\n");
    const dirty = await nuketown([
      "change",
      "propose",
      "--host",
      "tom",
      "--agent",
      NIXER,
      "--branch",
      "main",
      "--explain",
      "x",
    ]);
    assert.equal(dirty.code, 3);
    assert.match(dirty.stderr, /uncommitted changes/);
    rmSync(path.join(repo, "stray.nix"));

    const list = JSON.parse((await nuketown(["change", "status", "--json"])).stdout) as {
      id: string;
      agent: string;
      state: string;
    }[];
    const htop = list.find((p) => p.agent === TOOLER && p.state === "applied");
    assert.ok(htop);
    const back = await nuketown(["change", "rollback", htop.id, "--json"]);
    assert.equal(back.code, 0, back.stderr + back.stdout);
    assert.equal(JSON.parse(back.stdout).state, "rolled-back");
    assert.ok(!existsSync(path.join(system, "current", "sw", "htop")));
    assert.match(git(repo, "log", "-1", "--format=%s"), /^Revert/);
  });

  it("keeps every step in a hash-chained log that change log checks", async () => {
    const log = await nuketown(["change", "log", "-n", "200"]);
    assert.equal(log.code, 0, log.stderr);
    for (const event of [
      "change.proposed",
      "change.verified",
      "change.approval-requested",
      "change.decided",
      "change.apply-started",
      "change.applied",
      "change.apply-failed",
      "change.rolled-back",
      "change.refused",
    ])
      assert.match(log.stdout, new RegExp(event.replace(".", "\\.")));
    assert.match(log.stdout, /audit log intact/);
    // approvald's own log holds the change request, bound to the commit.
    const approvals = readFileSync(path.join(root, "state", "audit.jsonl"), "utf8");
    assert.match(approvals, /"change":\{"base":"[0-9a-f]{40}","commit":"[0-9a-f]{40}"/);
  });

  it("serves the town over MCP to the agent: every tool, and a request_sudo a human approves", async () => {
    const transport = new StdioClientTransport({
      command: "runuser",
      args: [
        "-u",
        NIXER,
        "--",
        "env",
        `PATH=${shimDir}:/usr/bin:/bin`,
        `HOME=${root}`,
        BIN,
        "mcp",
        "--manifest",
        manifest,
      ],
      stderr: "pipe",
    });
    const client = new Client({ name: "nt-test", version: "1.0.0" });
    await client.connect(transport);
    try {
      const tools = (await client.listTools()).tools.map((t) => t.name).sort();
      assert.deepEqual(tools, [
        "change_propose",
        "change_status",
        "change_verify",
        "persisted_paths",
        "request_reset",
        "request_sudo",
        "town_status",
        "whoami",
      ]);
      const who = await client.callTool({ name: "whoami", arguments: {} });
      assert.equal((who.structuredContent as { name: string }).name, NIXER);
      const persisted = await client.callTool({ name: "persisted_paths", arguments: {} });
      assert.match(JSON.stringify(persisted.structuredContent), /"path":"notes"/);
      const town = await client.callTool({ name: "town_status", arguments: {} });
      assert.match(JSON.stringify(town.structuredContent), /"state":"rolled-back"/);
      const status = await client.callTool({ name: "change_status", arguments: {} });
      assert.match(JSON.stringify(status.content), /applied/);
      const unknown = await client.callTool({ name: "change_verify", arguments: { id: "nope" } });
      assert.equal(unknown.isError, true);
      assert.match(JSON.stringify(unknown.content), /hint:/);
      // Through approvald's change socket, as the agent: a refusal is an error with a hint, not a crash.
      const propose = await client.callTool({
        name: "change_propose",
        arguments: { host: "tom", explanation: "x", branch: "main" },
      });
      assert.equal(propose.isError, true);
      assert.match(JSON.stringify(propose.content), /nothing on top of main.*hint: rebase/s);
      const resources = (await client.listResources()).resources.map((r) => r.uri).sort();
      assert.deepEqual(resources, ["nuketown://agent/identity", "nuketown://agent/instructions"]);

      const sudo = client.callTool(
        { name: "request_sudo", arguments: { argv: ["id", "-u"] } },
        undefined,
        { timeout: 60_000 },
      );
      const request = await pendingId();
      assert.equal((await nuketown(["approve", request], MAYOR)).code, 0);
      const result = await sudo;
      assert.equal(result.isError, undefined, JSON.stringify(result.content));
      assert.equal((result.structuredContent as { stdout: string }).stdout, "0\n");
    } finally {
      await client.close();
    }
  });
});
