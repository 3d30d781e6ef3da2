/**
 * Everything a task starts dies with it, as root with a real agent: a
 * `command` runtime that starts `setsid sleep` and a double-forked setsid
 * child (what the codex CLI does with every shell command: the process-group
 * kill misses them) times out, is cancelled, or exits 0 leaving them behind;
 * each time none of them is left in /proc. First under `nuketown up`, which
 * runs the agent daemon in a cgroup delegated to the agent (each task in a
 * cgroup of its own below it), then with the daemon started by hand in no
 * delegated cgroup (the fallback: the task's marker in /proc/<pid>/environ).
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { locateCgroup } from "../../src/agent/cgroup.ts";
import { AgentClient, type TaskEvent, type TaskOutcome } from "../../src/agent/client.ts";
import { townCgroup } from "../../src/commands/up.ts";
import { isRoot, mustRun } from "../support/host.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const TOWN = "nt-test-contain";
const AGENT = "nt-test-ct1";
const UID = 60701;

/** This process's cgroup v2 (`up`, its child, makes the town's cgroups below it). */
const OWN_CGROUP = (() => {
  try {
    return locateCgroup(
      readFileSync("/proc/self/mountinfo", "utf8"),
      readFileSync("/proc/self/cgroup", "utf8"),
    );
  } catch (error) {
    return { ok: false as const, reason: (error as Error).message };
  }
})();

/**
 * The runtime: two children that leave its process group and session (one
 * setsid'd, one double-forked and setsid'd), then it exits or hangs as the
 * prompt says. The sleeps' lengths tag them in /proc.
 */
const RUNTIME = `#!/bin/sh
task=$(cat)
setsid sleep 1001 &
(setsid sh -c 'sleep 1002' &)
printf '{"type":"progress","text":"started %s"}\\n' "$$"
case "$task" in
  *exit-now*) printf '{"type":"answer","text":"done"}\\n'; exit 0 ;;
esac
sleep 1003
`;

interface Proc {
  readonly pid: number;
  readonly cmdline: string;
  readonly cgroup: string;
  readonly marker: string | undefined;
}

/** Live (not zombie) processes of the test agent. */
function agentProcesses(): Proc[] {
  const found: Proc[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (statSync(`/proc/${name}`).uid !== UID) continue;
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      const environ = readFileSync(`/proc/${name}/environ`, "latin1").split("\0");
      found.push({
        pid: Number(name),
        cmdline: readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").join(" ").trim(),
        cgroup:
          readFileSync(`/proc/${name}/cgroup`, "utf8")
            .split("\n")
            .find((l) => l.startsWith("0::"))
            ?.slice(3) ?? "",
        marker: environ.find((e) => e.startsWith("NUKETOWN_TASK_ID="))?.split("=")[1],
      });
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** What is left of a task: its tagged sleeps, or anything carrying its id. */
const leftOf = (id: string) =>
  agentProcesses().filter((p) => /sleep 100[123]/.test(p.cmdline) || p.marker === id);

async function waitFor<T>(what: string, probe: () => T | undefined, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe("everything a task starts dies with it", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({ label: "contain", uids: uidsOf(import.meta.filename), install: true });
  let root = "";
  let manifest = "";
  let cgroups = "";
  let upProcess: Daemon | undefined;
  const clients: AgentClient[] = [];
  town.defer(() => {
    for (const client of clients) client.close();
  });
  const socket = () => town.socket(AGENT);

  /**
   * Run a task; while it runs, note its two escaped children (`during`) as
   * soon as both are there, and cancel it then if asked.
   */
  async function task(
    prompt: string,
    options: { mode?: "batch" | "interactive"; cancelWhenStarted?: boolean } = {},
  ) {
    const client = await AgentClient.connect(socket());
    clients.push(client);
    const seen: TaskEvent[] = [];
    const controller = new AbortController();
    let during: Proc[] = [];
    let ended = false;
    const outcome: Promise<TaskOutcome> = client.run(
      { project: "widget", prompt, mode: options.mode ?? "batch" },
      { signal: controller.signal, onEvent: (e) => seen.push(e) },
    );
    const watching = (async () => {
      while (!ended) {
        const escaped = agentProcesses().filter((p) => /sleep 100[12]$/.test(p.cmdline));
        if (["sleep 1001", "sleep 1002"].every((t) => escaped.some((p) => p.cmdline.endsWith(t)))) {
          during = escaped;
          if (options.cancelWhenStarted) controller.abort();
          return;
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const result = await outcome.finally(() => {
      ended = true;
    });
    await watching;
    return { outcome: result, seen, during };
  }

  before(() => {
    root = town.root;
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(runtime, RUNTIME, { mode: 0o755 });
    town.declare({
      name: TOWN,
      agents: {
        [AGENT]: {
          uid: UID,
          persist: ["projects"],
          runtime: { kind: "command", command: runtime, timeout: 2 },
        },
      },
    });
    manifest = town.manifest;
    const applied = town.nuketown(["apply", town.config]);
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    // A project for the tasks: a clone of nothing, made by the agent.
    const project = path.join(root, "agents", AGENT, "projects", "widget");
    const git = [
      "-c",
      "user.name=Ct",
      "-c",
      "user.email=ct@test.local",
      "-c",
      "commit.gpgsign=false",
    ];
    mustRun("runuser", ["-u", AGENT, "--", "git", "init", "--quiet", "-b", "main", project]);
    mustRun("runuser", [
      "-u",
      AGENT,
      "--",
      "git",
      "-C",
      project,
      ...git,
      "commit",
      "--quiet",
      "--allow-empty",
      "-m",
      "first",
    ]);
  });

  // After the town's cleanup.
  after(() => {
    if (cgroups !== "") assert.equal(existsSync(cgroups), false, `${cgroups} is left`);
  });

  describe("under nuketown up: a cgroup per task", {
    skip: !OWN_CGROUP.ok && `no cgroup v2 here: ${OWN_CGROUP.reason}`,
  }, () => {
    before(async () => {
      assert.ok(OWN_CGROUP.ok);
      cgroups = townCgroup(OWN_CGROUP.dir, { name: TOWN });
      upProcess = town.up();
      await waitFor("the agent's socket", () => (existsSync(socket()) ? true : undefined), 60_000);
      assert.match(upProcess.output(), /agent daemons run in cgroups under /);
    });

    it("runs the agent daemon in its cgroup, delegated to the agent", () => {
      const dir = path.join(cgroups, AGENT);
      assert.equal(statSync(dir).uid, UID);
      assert.equal(statSync(path.join(dir, "cgroup.procs")).uid, UID);
      const daemons = agentProcesses().filter((p) => p.cmdline.includes(`agent ${AGENT}`));
      assert.equal(daemons.length, 1, JSON.stringify(agentProcesses()));
      assert.ok(dir.endsWith(daemons[0]!.cgroup), `${daemons[0]!.cgroup} is not ${dir}`);
    });

    it("times out, with everything the runtime started gone and its cgroup removed", async () => {
      const { outcome, seen, during } = await task("hang-now");
      assert.equal(outcome.state, "failed");
      assert.ok(outcome.end.event === "task.failed");
      assert.equal(outcome.end.reason, "timeout");
      assert.ok(seen.some((e) => e.event === "task.progress" && /^started/.test(e.text)));
      assert.ok(during.length >= 2, JSON.stringify(during));
      for (const p of during) assert.match(p.cgroup, new RegExp(`/${AGENT}/task-${outcome.id}$`));
      assert.deepEqual(leftOf(outcome.id), []);
      assert.equal(existsSync(path.join(cgroups, AGENT, `task-${outcome.id}`)), false);
    });

    it("is cancelled, with everything the runtime started gone; they were in the task's cgroup", async () => {
      const { outcome, during } = await task("hang-now for a cancel", { cancelWhenStarted: true });
      assert.equal(outcome.state, "cancelled", JSON.stringify(outcome.end));
      assert.ok(during.length >= 2, JSON.stringify(during));
      for (const p of during) assert.match(p.cgroup, new RegExp(`/${AGENT}/task-${outcome.id}$`));
      assert.deepEqual(leftOf(outcome.id), []);
      assert.equal(existsSync(path.join(cgroups, AGENT, `task-${outcome.id}`)), false);
    });

    it("finishes when the runtime exits 0, and kills what it left behind", async () => {
      const started = Date.now();
      const { outcome } = await task("exit-now");
      assert.equal(outcome.state, "finished", JSON.stringify(outcome.end));
      assert.equal(outcome.answer, "done");
      assert.ok(Date.now() - started < 5000, "not held up by the children's open stdout");
      assert.deepEqual(leftOf(outcome.id), []);
    });

    it("kills what an interactive task's window started when it times out", async () => {
      const { outcome, during } = await task("hang-now in tmux", { mode: "interactive" });
      assert.equal(outcome.state, "failed", JSON.stringify(outcome.end));
      assert.ok(outcome.end.event === "task.failed");
      assert.equal(outcome.end.reason, "timeout");
      assert.ok(during.length >= 2, JSON.stringify(during));
      for (const p of during) assert.match(p.cgroup, new RegExp(`/${AGENT}/task-${outcome.id}$`));
      assert.deepEqual(leftOf(outcome.id), []);
    });

    it("removes the daemons' cgroups when up stops", async () => {
      const exited = new Promise((resolve) => upProcess?.child.once("exit", resolve));
      upProcess?.child.kill("SIGTERM");
      await exited;
      assert.equal(existsSync(path.join(cgroups, AGENT)), false);
      assert.equal(existsSync(cgroups), false);
    });
  });

  describe("started by hand, without a delegated cgroup: by process group and marker", () => {
    before(async () => {
      const daemon = town.spawn(
        ["runuser", "-u", AGENT, "--", BIN, "agent", AGENT, "--manifest", manifest],
        { cwd: root },
      );
      const log = daemon.output;
      await waitFor("the daemon", () => (log().includes("listening on") ? true : undefined));
      assert.match(log(), /tasks run without a cgroup \(its cgroup .* is not delegated to it\)/);
    });

    it("times out, with everything the runtime started gone", async () => {
      const { outcome } = await task("hang-now");
      assert.equal(outcome.state, "failed");
      assert.ok(outcome.end.event === "task.failed");
      assert.equal(outcome.end.reason, "timeout");
      assert.deepEqual(leftOf(outcome.id), []);
    });

    it("is cancelled, with everything the runtime started gone", async () => {
      const { outcome, during } = await task("hang-now for a cancel", { cancelWhenStarted: true });
      assert.equal(outcome.state, "cancelled", JSON.stringify(outcome.end));
      assert.ok(during.length >= 2, JSON.stringify(during));
      for (const p of during) assert.equal(p.marker, outcome.id, "the children carry the marker");
      assert.deepEqual(leftOf(outcome.id), []);
    });

    it("finishes when the runtime exits 0, and kills what it left behind", async () => {
      const { outcome } = await task("exit-now");
      assert.equal(outcome.state, "finished", JSON.stringify(outcome.end));
      assert.deepEqual(leftOf(outcome.id), []);
    });
  });
});
