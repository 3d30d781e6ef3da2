/**
 * Runtimes as real processes, and workspaces as real git clones: the
 * command runtime through every way a process can end, a missing claude.
 * The real claude and codex CLIs are driven in agent-clis.test.ts.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { WorkspaceReport } from "../../src/agent/protocol.ts";
import {
  createRuntime,
  type RuntimeFailure,
  type RuntimeResult,
  TaskAborted,
} from "../../src/agent/runtimes/index.ts";
import type { RuntimeTask } from "../../src/agent/runtimes/types.ts";
import { FileSessionStore } from "../../src/agent/sessions.ts";
import { prepareWorkspace, type WorkspaceError } from "../../src/agent/workspace.ts";
import { type Runner, systemRunner } from "../../src/os/process.ts";
import type { ResolvedAgent } from "../../src/town/types.ts";
import { resolveOrThrow } from "../support/fixtures.ts";

let dir = "";
before(() => {
  dir = mkdtempSync(path.join(tmpdir(), "nuketown-agent-runtimes-"));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function agentWith(
  runtime: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): ResolvedAgent {
  const town = resolveOrThrow({
    name: "t",
    domain: "test.local",
    agentsDir: path.join(dir, "agents"),
    runtimeDir: path.join(dir, "run"),
    agents: { ada: { uid: 1100, runtime, persist: ["projects"], ...extra } },
  });
  return town.agents[0]!;
}

function script(name: string, body: string): string {
  const file = path.join(dir, "bin", name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

const workspace = (): WorkspaceReport => {
  const ws = path.join(dir, "ws");
  mkdirSync(ws, { recursive: true });
  return { workspace: ws, branch: "ada/x", created: true, cloned: false, dirty: [], warnings: [] };
};

const task = (over: Partial<RuntimeTask> = {}): RuntimeTask => ({
  id: "0a1b2c3d",
  agent: "ada",
  project: "site",
  prompt: "fix the footer",
  mode: "batch",
  ...over,
});

async function run(
  agent: ResolvedAgent,
  over: Partial<RuntimeTask> = {},
  signal = new AbortController().signal,
) {
  const progress: string[] = [];
  const runtime = createRuntime(agent, {
    runner: systemRunner,
    sessions: new FileSessionStore(path.join(dir, "state", "sessions.json")),
    scratchDir: path.join(dir, "scratch"),
    killGraceMs: 500,
  });
  const outcome: { result?: RuntimeResult; error?: Error } = {};
  try {
    outcome.result = await runtime.run({
      task: task(over),
      workspace: workspace(),
      emit: (t) => progress.push(t),
      signal,
    });
  } catch (error) {
    outcome.error = error as Error;
  }
  return { ...outcome, progress };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("the command runtime as a process", () => {
  it("gets the task on stdin and the workspace as cwd, streams progress, returns the answer", async () => {
    const command = script(
      "echo-task",
      `task=$(cat)
printf '{"type":"progress","text":"in %s"}\\n' "$(pwd)"
echo "plain line"
printf '{"type":"progress","text":"env %s %s %s"}\\n' "$NUKETOWN_TASK_ID" "$NUKETOWN_BRANCH" "$GREETING"
printf '{"type":"answer","text":%s}\\n' "$(printf '%s' "$task" | sed 's/.*"prompt":\\("[^"]*"\\).*/\\1/')"`,
    );
    const agent = agentWith({ kind: "command", command, env: { GREETING: "hello" } });
    const { result, error, progress } = await run(agent);
    assert.equal(error, undefined);
    assert.equal(result?.answer, "fix the footer");
    assert.deepEqual(progress, [
      `in ${path.join(dir, "ws")}`,
      "plain line",
      "env 0a1b2c3d ada/x hello",
    ]);
  });

  it("reports a missing executable as missing-runtime", async () => {
    const agent = agentWith({ kind: "command", command: path.join(dir, "bin", "nowhere") });
    const { error } = await run(agent);
    assert.equal((error as RuntimeFailure).reason, "missing-runtime");
    assert.match(error!.message, /nowhere: not found/);
  });

  it("reports a crash with its exit code and the tail of stderr", async () => {
    const command = script("crash", 'echo "first" >&2\necho "boom: out of cheese" >&2\nexit 3');
    const { error } = await run(agentWith({ kind: "command", command }));
    const failure = error as RuntimeFailure;
    assert.equal(failure.reason, "crashed");
    assert.equal(failure.exitCode, 3);
    assert.match(failure.message, /exited 3: boom: out of cheese/);
    assert.equal(failure.stderr, "first\nboom: out of cheese");
  });

  it("reports an error line with a clean exit as runtime-error", async () => {
    const command = script(
      "refuse",
      `cat >/dev/null; echo '{"type":"error","text":"cannot do that"}'`,
    );
    const { error } = await run(agentWith({ kind: "command", command }));
    assert.equal((error as RuntimeFailure).reason, "runtime-error");
    assert.equal(error!.message, "cannot do that");
  });

  it("kills the whole process group of a runtime that hangs past its timeout", async () => {
    const command = script(
      "hang",
      `sleep 300 &
printf '{"type":"progress","text":"child %s"}\\n' "$!"
trap '' TERM
sleep 300`,
    );
    const started = Date.now();
    const { error, progress } = await run(agentWith({ kind: "command", command, timeout: 1 }));
    assert.equal((error as RuntimeFailure).reason, "timeout");
    assert.match(error!.message, /timeout \(1 s\)/);
    assert.ok(Date.now() - started < 5000, "stopped soon after the timeout");
    const child = Number(progress[0]?.split(" ")[1]);
    assert.ok(child > 0);
    assert.equal(alive(child), false, "the runtime's background child is gone too");
  });

  it("stops a runtime when its task is cancelled", async () => {
    const command = script(
      "wait",
      `cat >/dev/null; echo '{"type":"progress","text":"waiting"}'; sleep 300`,
    );
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 300);
    const { error } = await run(agentWith({ kind: "command", command }), {}, controller.signal);
    assert.ok(error instanceof TaskAborted);
  });
});

describe("claude-code and codex that cannot start", () => {
  // The real CLIs at work: test/integration/agent-clis.test.ts.
  it("reports a missing claude with how to install it", async () => {
    const { error } = await run(
      agentWith({ kind: "claude-code", command: path.join(dir, "no-claude") }),
    );
    assert.equal((error as RuntimeFailure).reason, "missing-runtime");
    assert.match(error!.message, /npm install -g @anthropic-ai\/claude-code/);
  });
});

describe("workspace bootstrap with real git", () => {
  let bare = "";
  const git = (cwd: string, ...args: string[]) =>
    execFileSync("git", ["-C", cwd, ...args], {
      encoding: "utf8",
      env: {
        ...process.env,
        GIT_CONFIG_GLOBAL: "/dev/null",
        GIT_AUTHOR_NAME: "T",
        GIT_AUTHOR_EMAIL: "t@test.local",
        GIT_COMMITTER_NAME: "T",
        GIT_COMMITTER_EMAIL: "t@test.local",
      },
    }).trim();
  const deps = { runner: systemRunner, env: { ...process.env, GIT_CONFIG_GLOBAL: "/dev/null" } };

  before(() => {
    bare = path.join(dir, "site.git");
    execFileSync("git", ["init", "--quiet", "--bare", "--initial-branch=main", bare]);
    const seed = path.join(dir, "seed");
    execFileSync("git", ["init", "--quiet", "--initial-branch=main", seed]);
    writeFileSync(path.join(seed, "README"), "site\n");
    git(seed, "add", "README");
    git(seed, "commit", "--quiet", "-m", "first");
    git(seed, "switch", "--quiet", "-c", "feature");
    writeFileSync(path.join(seed, "feature.txt"), "f\n");
    git(seed, "add", "feature.txt");
    git(seed, "commit", "--quiet", "-m", "feature");
    git(seed, "push", "--quiet", bare, "main", "feature");
  });

  const wsAgent = (extra: Record<string, unknown> = {}) =>
    agentWith(
      { kind: "command", command: "/bin/true" },
      {
        repos: [{ url: bare, path: "projects/site" }],
        ...extra,
      },
    );

  it("clones a declared project and creates <agent>/<topic> from the default branch", async () => {
    const agent = wsAgent();
    const report = await prepareWorkspace(
      agent,
      { project: "site", prompt: "Fix the footer!" },
      deps,
    );
    assert.equal(report.workspace, path.join(agent.home, "projects", "site"));
    assert.equal(report.cloned, true);
    assert.equal(report.branch, "ada/fix-the-footer");
    assert.equal(report.created, true);
    assert.deepEqual(report.warnings, []);
    assert.equal(git(report.workspace, "rev-parse", "--abbrev-ref", "HEAD"), "ada/fix-the-footer");
    assert.equal(git(report.workspace, "rev-parse", "HEAD"), git(bare, "rev-parse", "main"));

    const again = await prepareWorkspace(
      agent,
      { project: "site", prompt: "Fix the footer!" },
      deps,
    );
    assert.equal(again.cloned, false, "the existing clone is used");
    assert.equal(again.created, false, "the existing topic branch is checked out");
  });

  it("checks out a requested branch that exists on the remote", async () => {
    const agent = wsAgent();
    const report = await prepareWorkspace(
      agent,
      { project: "site", prompt: "x", branch: "feature" },
      deps,
    );
    assert.equal(report.branch, "feature");
    assert.equal(report.created, false);
    assert.ok(existsSync(path.join(report.workspace, "feature.txt")));
  });

  it("never switches branches over uncommitted changes, and runs in place on the same branch", async () => {
    const agent = wsAgent();
    const ws = path.join(agent.home, "projects", "site");
    writeFileSync(path.join(ws, "feature.txt"), "changed\n");
    writeFileSync(path.join(ws, "new.txt"), "new\n");
    await assert.rejects(
      prepareWorkspace(agent, { project: "site", prompt: "other topic" }, deps),
      (error: WorkspaceError) => {
        assert.equal(error.reason, "workspace");
        assert.match(
          error.message,
          /uncommitted changes on feature: not switching to ada\/other-topic/,
        );
        assert.match(error.message, / M feature\.txt, \?\? new\.txt/);
        return true;
      },
    );
    assert.equal(readFileSync(path.join(ws, "feature.txt"), "utf8"), "changed\n", "kept");
    const inPlace = await prepareWorkspace(
      agent,
      { project: "site", prompt: "x", branch: "feature" },
      deps,
    );
    assert.deepEqual(inPlace.dirty, [" M feature.txt", "?? new.txt"]);
    assert.match(
      inPlace.warnings.join("\n"),
      /2 uncommitted change\(s\) .* kept, the task runs with them/,
    );
    git(ws, "checkout", "--", "feature.txt");
    rmSync(path.join(ws, "new.txt"));
  });

  it("names the declared projects when a task asks for an unknown one", async () => {
    const agent = wsAgent();
    await assert.rejects(
      prepareWorkspace(agent, { project: "nope", prompt: "x" }, deps),
      (error: WorkspaceError) => {
        assert.equal(error.reason, "unknown-project");
        assert.match(
          error.message,
          /unknown project "nope".*declared projects: site; clones in ~\/projects: site/,
        );
        return true;
      },
    );
  });

  it("does not clone over a directory that is not a clone", async () => {
    const agent = wsAgent({ repos: [{ url: bare, path: "projects/other" }] });
    mkdirSync(path.join(agent.home, "projects", "other"), { recursive: true });
    writeFileSync(path.join(agent.home, "projects", "other", "notes"), "mine\n");
    await assert.rejects(
      prepareWorkspace(agent, { project: "other", prompt: "x" }, deps),
      /exists but is not a git clone: not cloning/,
    );
  });

  it("warns when projects are not persisted", async () => {
    const agent = wsAgent({ persist: [] });
    const report = await prepareWorkspace(agent, { project: "site", prompt: "y" }, deps);
    assert.match(report.warnings[0] ?? "", /~\/projects is not a persisted path of ada/);
  });

  it("works in an empty repository", async () => {
    const empty = path.join(dir, "empty.git");
    spawnSync("git", ["init", "--quiet", "--bare", empty]);
    const agent = wsAgent({ repos: [{ url: empty, path: "projects/empty" }] });
    const report = await prepareWorkspace(agent, { project: "empty", prompt: "start it" }, deps);
    assert.equal(report.branch, "ada/start-it");
    assert.equal(git(report.workspace, "symbolic-ref", "--short", "HEAD"), "ada/start-it");
  });

  it("never puts the branch name in git's argv, and sets the upstream as switch --track does", async () => {
    const agent = wsAgent();
    const argv: string[] = [];
    const recording: Runner = {
      run(program, args, options) {
        argv.push([program, ...args].join(" "));
        return systemRunner.run(program, args, options);
      },
    };
    const watched = { ...deps, runner: recording };
    const made = await prepareWorkspace(
      agent,
      { project: "site", prompt: "Rotate zebrakey tonight" },
      watched,
    );
    assert.equal(made.branch, "ada/rotate-zebrakey-tonight");
    assert.equal(made.created, true);
    const ws = made.workspace;
    assert.equal(git(ws, "symbolic-ref", "HEAD"), "refs/heads/ada/rotate-zebrakey-tonight");
    assert.equal(git(ws, "rev-parse", "HEAD"), git(bare, "rev-parse", "main"));
    git(ws, "switch", "--quiet", "main");
    const back = await prepareWorkspace(
      agent,
      { project: "site", prompt: "Rotate zebrakey tonight" },
      watched,
    );
    assert.deepEqual([back.branch, back.created], ["ada/rotate-zebrakey-tonight", false]);
    // A branch only the remote has: made locally, tracking it.
    git(bare, "branch", "ada/remote-only-zebra", "feature");
    git(ws, "fetch", "--quiet", "origin");
    const remote = await prepareWorkspace(
      agent,
      { project: "site", prompt: "x", branch: "remote-only-zebra" },
      watched,
    );
    assert.deepEqual([remote.branch, remote.created], ["ada/remote-only-zebra", false]);
    assert.equal(
      git(ws, "rev-parse", "--abbrev-ref", "@{upstream}"),
      "origin/ada/remote-only-zebra",
    );
    assert.ok(existsSync(path.join(ws, "feature.txt")), "the branch is checked out");
    assert.equal(git(ws, "status", "--porcelain"), "");
    const leaked = argv.filter((line) => line.includes("zebra"));
    assert.deepEqual(leaked, [], "no git command line carries the branch");
    git(ws, "switch", "--quiet", "main");
  });

  it("refuses a requested branch git would refuse, before running anything", async () => {
    const agent = wsAgent();
    for (const branch of ["a..b", "x y", "-f", "a.lock", "HEAD", "a:b", "a\nb"])
      await assert.rejects(
        prepareWorkspace(agent, { project: "site", prompt: "x", branch }, deps),
        /is not a valid branch name/,
        branch,
      );
  });

  it("runs no filter driver the repo's config and attributes declare", async () => {
    const agent = wsAgent();
    const ws = path.join(agent.home, "projects", "site");
    const ran = path.join(dir, "filter-ran");
    const filter = script("evil-filter", `echo "$0" >> ${ran}\nexec cat`);
    writeFileSync(path.join(ws, ".git", "info", "attributes"), "* filter=n.t=x\n");
    for (const [key, value] of [
      ["filter.n.t=x.smudge", filter],
      ["filter.n.t=x.clean", filter],
      ["filter.n.t=x.process", filter],
      ["filter.n.t=x.required", "true"],
    ] as const)
      git(ws, "config", key, value);
    try {
      const report = await prepareWorkspace(
        agent,
        { project: "site", prompt: "x", branch: "feature" },
        deps,
      );
      assert.equal(report.branch, "feature");
      assert.ok(existsSync(path.join(ws, "feature.txt")));
      assert.equal(existsSync(ran), false, "the filter ran");
    } finally {
      git(ws, "config", "--remove-section", "filter.n.t=x");
      rmSync(path.join(ws, ".git", "info", "attributes"), { force: true });
      git(ws, "switch", "--quiet", "main");
    }
  });
});
