/**
 * The agent daemon for real, as root: a town of two test agents applied with
 * `nuketown apply`, each daemon started as its agent with runuser, tasks
 * sent through the socket. The runtime is a small script (the `command`
 * runtime) that says which uid it runs as, edits a file and commits with the
 * git config nuketown placed, which signs with the agent's SSH key.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import path from "node:path";
import { before, describe, it } from "node:test";
import { AgentClient, type TaskEvent, type TaskOutcome } from "../../src/agent/client.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { BIN, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const A = "nt-test-ag1";
const B = "nt-test-ag2";
const UIDS: Readonly<Record<string, number>> = { [A]: 60301, [B]: 60302 };
const MAYOR = "nt-test-ag-mayor";
const STRANGER = "nt-test-ag-strngr";

/** The test runtime: its behaviour is chosen by words in the prompt. */
const RUNTIME = `#!/bin/sh
task=$(cat)
printf '{"type":"progress","text":"uid %s pgid %s"}\\n' "$(id -u)" "$$"
case "$task" in
  *crash-now*) echo "boom: crashing on purpose" >&2; exit 3 ;;
  *hang-now*) sleep 300 & printf '{"type":"progress","text":"child %s"}\\n' "$!"; sleep 300 ;;
  *slow-now*) sleep 1 ;;
  *dirty-now*)
    i=0; while [ $i -lt 3000 ]; do : > "untracked-file-with-a-rather-long-name-number-$i.txt"; i=$((i+1)); done
    printf '{"type":"answer","text":"left a mess"}\\n'; exit 0 ;;
esac
echo "$NUKETOWN_TASK_ID" >> notes.txt
git add notes.txt
git commit --quiet -m "Task $NUKETOWN_TASK_ID" || { echo "git commit failed" >&2; exit 4; }
printf '{"type":"answer","text":"committed %s on %s"}\\n' "$(git rev-parse HEAD)" "$(git rev-parse --abbrev-ref HEAD)"
`;

describe("the agent daemon, as real agents", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "agent",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60303, [STRANGER]: 60304 },
  });
  let root = "";
  let manifest = "";
  let runtime = "";
  const daemons = new Map<string, { child: ChildProcess; log: () => string }>();
  const clients: AgentClient[] = [];
  const home = (agent: string) => path.join(root, "agents", agent);
  const socket = (agent: string) => path.join(root, "run", "agents", agent, "agent.sock");
  /** Processes of a group that are still alive (zombies wait for init to reap them). */
  const liveInGroup = (pgid: string) =>
    run("ps", ["-o", "pid=,stat=,args=", "-g", pgid])
      .stdout.split("\n")
      .filter((line) => line.trim() !== "" && !/^\s*\d+\s+Z/.test(line));
  const asAgent = (agent: string, argv: string[]) => run("runuser", ["-u", agent, "--", ...argv]);
  const connect = async (agent: string) => {
    const client = await AgentClient.connect(socket(agent));
    clients.push(client);
    return client;
  };
  const events = (list: TaskEvent[], name: TaskEvent["event"]) =>
    list.filter((e) => e.event === name);
  async function task(agent: string, request: Parameters<AgentClient["run"]>[0]) {
    const seen: TaskEvent[] = [];
    const client = await connect(agent);
    const outcome = await client.run(request, { onEvent: (e) => seen.push(e) });
    return { outcome, seen };
  }

  function startDaemon(agent: string): Promise<void> {
    const child = spawn(
      "runuser",
      ["-u", agent, "--", BIN, "agent", agent, "--manifest", manifest],
      {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let log = "";
    child.stdout.on("data", (d) => (log += d));
    child.stderr.on("data", (d) => (log += d));
    daemons.set(agent, { child, log: () => log });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${agent}'s daemon did not start: ${log}`)),
        15_000,
      );
      child.stdout.on("data", () => {
        if (log.includes("listening on")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`${agent}'s daemon exited ${code}: ${log}`));
      });
    });
  }

  before(async () => {
    root = town.root;
    town.ageKey();
    mkdirSync(path.join(root, "secrets"));
    for (const agent of [A, B]) {
      const key = path.join(root, "secrets", `${agent}-ssh`);
      mustRun("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", agent, "-f", key]);
      town.encrypt(`secrets/${agent}-ssh.age`, readFileSync(key, "utf8"));
    }

    // The declared repo: a bare repository the agents can read.
    const bare = path.join(root, "repos", "widget.git");
    mustRun("git", ["init", "--quiet", "--bare", "--initial-branch=main", bare]);
    const seed = path.join(root, "seed");
    mustRun("git", ["init", "--quiet", "--initial-branch=main", seed]);
    writeFileSync(path.join(seed, "README"), "widget\n");
    const ident = ["-c", "user.name=Seed", "-c", "user.email=seed@test.local"];
    mustRun("git", ["-C", seed, "add", "README"]);
    mustRun("git", ["-C", seed, ...ident, "commit", "--quiet", "--no-gpg-sign", "-m", "first"]);
    mustRun("git", ["-C", seed, "push", "--quiet", bare, "main"]);

    runtime = path.join(root, "bin", "runtime.sh");
    mkdirSync(path.dirname(runtime));
    writeFileSync(runtime, RUNTIME);
    chmodSync(runtime, 0o755);

    town.declare({
      name: "nt-test-agents",
      domain: "test.local",
      uidRange: { min: 60300, max: 60399 },
      mayor: MAYOR,
      humans: { [MAYOR]: { approver: true }, [STRANGER]: {} },
      agents: Object.fromEntries(
        [A, B].map((name) => [
          name,
          {
            uid: UIDS[name]!,
            persist: ["projects"],
            secrets: { sshKey: { file: `secrets/${name}-ssh.age` } },
            repos: [
              { url: bare, path: "projects/widget" },
              { url: bare, path: "projects/gadget" },
            ],
            runtime: {
              kind: "command",
              command: runtime,
              maxParallel: 2,
              timeout: name === B ? 2 : 30,
            },
          },
        ]),
      ),
    });
    const applied = town.nuketown(["apply", town.config]);
    assert.equal(applied.code, 0, applied.stderr + applied.stdout);
    manifest = town.manifest;
    // The first task of A clones its project itself.
    assert.equal(asAgent(A, ["rm", "-rf", path.join(home(A), "projects", "widget")]).code, 0);
    await Promise.all([startDaemon(A), startDaemon(B)]);
  });

  town.defer(async () => {
    for (const client of clients) client.close();
    await Promise.all(
      [...daemons.values()].map(
        ({ child }) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null) return resolve();
            const timer = setTimeout(resolve, 5000);
            child.on("exit", () => {
              clearTimeout(timer);
              resolve();
            });
            child.kill("SIGTERM");
          }),
      ),
    );
  });

  it("runs a task as the agent in a clone of its project and commits signed on <agent>/<topic>", async () => {
    for (const agent of [A, B]) {
      const { outcome, seen } = await task(agent, {
        project: "widget",
        prompt: "Add a note to the widget",
        source: "test",
      });
      assert.equal(outcome.state, "finished", JSON.stringify(outcome.end));
      const started = events(seen, "task.started")[0];
      assert.ok(started?.event === "task.started");
      const clone = path.join(home(agent), "projects", "widget");
      assert.equal(started.report.workspace, clone);
      assert.equal(started.report.branch, `${agent}/add-a-note-to-the-widget`);
      assert.equal(
        started.report.cloned,
        agent === A,
        "A's clone was removed, so its daemon cloned",
      );
      assert.deepEqual(started.report.warnings, []);

      // Who ran it, from the runtime's own output.
      const progress = events(seen, "task.progress").map((e) =>
        e.event === "task.progress" ? e.text : "",
      );
      assert.match(progress[0] ?? "", new RegExp(`^uid ${UIDS[agent]} `));
      assert.match(
        outcome.answer,
        new RegExp(`^committed [0-9a-f]{40} on ${agent}/add-a-note-to-the-widget$`),
      );
      const end = outcome.end;
      assert.ok(end.event === "task.finished");
      assert.equal(end.commit, outcome.answer.split(" ")[1]);
      assert.deepEqual(end.report?.dirty, []);

      assert.equal(statSync(clone).uid, UIDS[agent], "the clone is the agent's");
      assert.ok(
        existsSync(path.join(root, "persist", "agents", agent, "projects", "widget", ".git")),
        "the clone lives in the persisted projects dir",
      );
      const verify = asAgent(agent, ["git", "-C", clone, "verify-commit", "HEAD"]);
      assert.equal(verify.code, 0, `verify-commit: ${verify.stderr}`);
      assert.match(verify.stderr, /Good "git" signature for .*@test\.local with ED25519 key/);
      const branches = asAgent(agent, ["git", "-C", clone, "branch", "--list", `${agent}/*`]);
      assert.match(branches.stdout, new RegExp(`${agent}/add-a-note-to-the-widget`));
    }
    // The mayor's side: the branches reach the shared remote, and review checks
    // their signatures against the agents' own keys.
    const bare = path.join(root, "repos", "widget.git");
    for (const agent of [A, B]) {
      const clone = path.join(home(agent), "projects", "widget");
      mustRun("git", [
        "-c",
        "safe.directory=*",
        "-C",
        clone,
        "push",
        "--quiet",
        bare,
        `${agent}/add-a-note-to-the-widget`,
      ]);
    }
    const mayorClone = path.join(root, "mayor-widget");
    mustRun("git", ["clone", "--quiet", bare, mayorClone]);
    const review = spawnSync(
      BIN,
      ["review", "--repo", mayorClone, "--manifest", manifest, "--json"],
      { encoding: "utf8" },
    );
    assert.equal(review.status, 0, review.stderr);
    const reviewed = JSON.parse(review.stdout) as {
      branches: { agent: string; branch: string; signature: { status: string } }[];
    };
    for (const agent of [A, B]) {
      const branch = reviewed.branches.find(
        (b) => b.branch === `${agent}/add-a-note-to-the-widget`,
      );
      assert.equal(branch?.signature.status, "G", `review: ${review.stdout}`);
    }

    const history = readFileSync(
      path.join(home(A), ".local", "state", "nuketown", "tasks.jsonl"),
      "utf8",
    )
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(history.at(-1).state, "finished");
    assert.equal(history.at(-1).prompt, "Add a note to the widget");
    assert.equal(history.at(-1).source, "test");
  });

  it("fails a task for an undeclared project, naming the declared ones, and keeps serving", async () => {
    const { outcome, seen } = await task(A, { project: "nope", prompt: "anything" });
    assert.equal(outcome.state, "failed");
    assert.ok(outcome.end.event === "task.failed");
    assert.equal(outcome.end.reason, "unknown-project");
    assert.match(outcome.end.error, /unknown project "nope".*declared projects: gadget, widget/);
    assert.equal(events(seen, "task.started").length, 0);
    const status = await (await connect(A)).status();
    assert.equal(status.agent.name, A);
    assert.deepEqual(status.projects, ["gadget", "widget"]);
  });

  it("fails a task whose runtime crashes, with its exit code and stderr", async () => {
    const { outcome } = await task(B, { project: "widget", prompt: "please crash-now" });
    assert.ok(outcome.end.event === "task.failed");
    assert.equal(outcome.end.reason, "crashed");
    assert.equal(outcome.end.exitCode, 3);
    assert.match(outcome.end.stderr ?? "", /boom: crashing on purpose/);
    assert.equal((await (await connect(B)).status()).agent.uid, UIDS[B]);
  });

  it("kills a runtime that hangs past its timeout, with everything it started", async () => {
    const started = Date.now();
    const { outcome, seen } = await task(B, { project: "widget", prompt: "hang-now please" });
    assert.ok(outcome.end.event === "task.failed");
    assert.equal(outcome.end.reason, "timeout");
    assert.match(outcome.end.error, /timeout \(2 s\)/);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 2000 && elapsed < 8000, `took ${elapsed} ms`);
    const first = events(seen, "task.progress")[0];
    const pgid = first?.event === "task.progress" ? first.text.split(" ")[3] : undefined;
    assert.ok(pgid);
    assert.deepEqual(liveInGroup(pgid), [], "nothing of the runtime's group is left");
  });

  it("finishes a task that leaves thousands of changes: the report lists the first ones and counts them", async () => {
    const client = await connect(A);
    const pending = client.list(); // a request in flight must not be failed by anything else
    const { outcome } = await task(A, { project: "gadget", prompt: "dirty-now please" });
    await pending;
    try {
      assert.equal(outcome.state, "finished", JSON.stringify(outcome.end).slice(0, 500));
      assert.ok(outcome.end.event === "task.finished");
      assert.equal(outcome.answer, "left a mess");
      assert.equal(outcome.end.report?.dirty.length, 200);
      assert.equal(outcome.end.report?.dirtyCount, 3000);
      assert.ok((await client.list()).length > 0);
    } finally {
      const dir = path.join(home(A), "projects", "gadget");
      assert.equal(asAgent(A, ["git", "-C", dir, "clean", "-q", "-f"]).code, 0);
    }
  });

  it("fails a task whose runtime is missing, and keeps serving", async () => {
    renameSync(runtime, `${runtime}.away`);
    try {
      const { outcome } = await task(B, { project: "widget", prompt: "anything at all" });
      assert.ok(outcome.end.event === "task.failed");
      assert.equal(outcome.end.reason, "missing-runtime");
      assert.match(outcome.end.error, /runtime\.sh: not found/);
    } finally {
      renameSync(`${runtime}.away`, runtime);
    }
    const { outcome } = await task(B, { project: "widget", prompt: "Add a note to the widget" });
    assert.equal(outcome.state, "finished", "the daemon still runs tasks after every failure");
  });

  it("cancels a queued task and a running one", async () => {
    const client = await connect(A);
    const seen: TaskEvent[] = [];
    const running = client.run(
      { project: "widget", prompt: "hang-now for cancel", branch: "cancel-me" },
      { onEvent: (e) => seen.push(e) },
    );
    const queued = client.run({ project: "widget", prompt: "waits behind it" });
    const list = async () =>
      (await client.list()).filter((t) => t.state !== "finished" && t.state !== "failed");
    let live = await list();
    for (
      let i = 0;
      i < 100 && !seen.some((e) => e.event === "task.progress" && e.text.startsWith("child"));
      i++
    ) {
      await new Promise((r) => setTimeout(r, 50));
    }
    live = await list();
    const [hanging, waiting] = [
      live.find((t) => t.state === "running"),
      live.find((t) => t.state === "queued"),
    ];
    assert.ok(hanging && waiting, JSON.stringify(live));
    assert.equal(await client.cancel(waiting.id), "queued");
    const waited: TaskOutcome = await queued;
    assert.equal(waited.state, "cancelled");
    assert.equal(await client.cancel(hanging.id), "running");
    const stopped = await running;
    assert.equal(stopped.state, "cancelled");
    assert.ok(stopped.end.event === "task.cancelled");
    assert.equal(stopped.end.reason, "cancelled by request");
    const first = events(seen, "task.progress")[0];
    const pgid = first?.event === "task.progress" ? first.text.split(" ")[3] : "";
    assert.ok(pgid);
    assert.deepEqual(liveInGroup(pgid), [], "the runtime's group is gone");
    await assert.rejects(client.cancel(hanging.id), /already ended \(cancelled\)/);
  });

  it("runs tasks of one project one after the other and two projects side by side", async () => {
    const client = await connect(A);
    const x1 = client.run({ project: "widget", prompt: "slow-now one", branch: "q1" });
    const x2 = client.run({ project: "widget", prompt: "slow-now two", branch: "q2" });
    const y1 = client.run({ project: "gadget", prompt: "slow-now three", branch: "q3" });
    const [a, b, c] = await Promise.all([x1, x2, y1]);
    for (const outcome of [a, b, c])
      assert.equal(outcome.state, "finished", JSON.stringify(outcome.end));
    const span = (o: TaskOutcome) => ({
      start: Date.parse(o.end.task.startedAt ?? ""),
      end: Date.parse(o.end.task.endedAt ?? ""),
    });
    const [one, two, three] = [span(a), span(b), span(c)];
    assert.ok(two.start >= one.end, "the second widget task starts after the first ended");
    assert.ok(three.start < one.end && one.start < three.end, "gadget ran while widget did");
    assert.match(b.answer, /on nt-test-ag1\/q2$/);
    assert.match(c.answer, /on nt-test-ag1\/q3$/);
  });

  it("runs an interactive task in the agent's tmux session for the project", async () => {
    const { outcome, seen } = await task(A, {
      project: "gadget",
      prompt: "interactive note",
      mode: "interactive",
    });
    assert.equal(outcome.state, "finished", JSON.stringify(outcome.end));
    assert.equal(outcome.end.task.tmuxSession, `${A}-gadget`);
    assert.match(outcome.answer, new RegExp(`^committed [0-9a-f]{40} on ${A}/interactive-note$`));
    assert.ok(
      events(seen, "task.progress").some(
        (e) => e.event === "task.progress" && e.text === `ran in tmux session ${A}-gadget`,
      ),
    );
    const tmuxSocket = path.join(root, "run", "agents", A, "tmux.sock");
    assert.equal(
      asAgent(A, ["tmux", "-S", tmuxSocket, "has-session", "-t", `=${A}-gadget`]).code,
      0,
    );
    const pane = asAgent(A, [
      "tmux",
      "-S",
      tmuxSocket,
      "capture-pane",
      "-p",
      "-S",
      "-",
      "-t",
      `=${A}-gadget:task-${outcome.id}`,
    ]);
    assert.match(
      pane.stdout,
      new RegExp(`"uid ${UIDS[A]} `),
      "the window shows the runtime's output",
    );
  });

  it("lets the mayor talk to the agent and nobody else (ls -la, getfacl)", () => {
    const sock = socket(A);
    const info = statSync(sock);
    assert.equal(info.uid, UIDS[A]);
    assert.equal(info.mode & 0o007, 0, "nothing for others");
    assert.match(mustRun("getfacl", ["-p", sock]), new RegExp(`user:${MAYOR}:rw-`));
    const probe = `const s=require("net").connect(process.argv[1]);
s.on("connect",()=>s.write(JSON.stringify({v:1,type:"status",ref:"p"})+"\\n"));
s.on("data",(d)=>{process.stdout.write(String(d));s.end();});
s.on("error",(e)=>{process.stdout.write("ERR "+e.code);process.exitCode=2;});`;
    const mayor = run("runuser", ["-u", MAYOR, "--", process.execPath, "-e", probe, sock]);
    assert.equal(mayor.code, 0, mayor.stdout + mayor.stderr);
    const status = JSON.parse(mayor.stdout);
    assert.equal(status.type, "status");
    assert.equal(status.ref, "p");
    assert.equal(status.agent.name, A);
    const stranger = run("runuser", ["-u", STRANGER, "--", process.execPath, "-e", probe, sock]);
    assert.equal(stranger.stdout, "ERR EACCES");
  });

  it("answers malformed and oversized frames with an error and keeps the connection", async () => {
    const conn = net.createConnection(socket(B));
    await new Promise((resolve) => conn.once("connect", resolve));
    let buffer = "";
    conn.setEncoding("utf8");
    conn.on("data", (d: string) => (buffer += d));
    const nextLine = async () => {
      for (let i = 0; i < 100 && !buffer.includes("\n"); i++)
        await new Promise((r) => setTimeout(r, 20));
      const line = buffer.slice(0, buffer.indexOf("\n"));
      buffer = buffer.slice(buffer.indexOf("\n") + 1);
      return JSON.parse(line);
    };
    conn.write("hello there\n");
    assert.deepEqual(await nextLine(), { v: 1, type: "error", error: "frame is not JSON" });
    conn.write(
      `${JSON.stringify({ v: 1, type: "task", ref: "7", project: "../x", prompt: "y" })}\n`,
    );
    const invalid = await nextLine();
    assert.equal(invalid.ref, "7");
    assert.match(invalid.error, /project: expected a project name/);
    conn.write(`${"x".repeat(70 * 1024)}\n`);
    assert.match((await nextLine()).error, /frame larger than 65536 bytes/);
    conn.write(`${JSON.stringify({ v: 1, type: "status" })}\n`);
    const status = await nextLine();
    assert.equal(status.type, "status");
    assert.equal(status.agent.name, B);
    conn.end();
  });

  it("escapes what a task's sender chose before it reaches the daemon's log", async () => {
    // As the agent, on its own socket: a source that would retitle the terminal, clear it,
    // and start a forged line of the log.
    const source = "chat\u001b]0;pwned\u0007\u001b[2J\u202e\nnuketown agent forged: task finished";
    const frame = JSON.stringify({
      v: 1,
      type: "task",
      ref: "esc",
      project: "widget",
      prompt: "please crash-now",
      source,
    });
    const sent = asAgent(A, [
      process.execPath,
      "-e",
      `const s = require("net").connect(${JSON.stringify(socket(A))}, () => s.write(${JSON.stringify(`${frame}\n`)}));
       s.on("data", (d) => { process.stdout.write(d); s.end(); });`,
    ]);
    assert.match(sent.stdout, /"type":"accepted"/, sent.stderr);
    let line: string | undefined;
    for (let i = 0; i < 100 && line === undefined; i++) {
      line = (daemons.get(A)?.log() ?? "").split("\n").find((l) => l.includes("from chat"));
      if (line === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(line, daemons.get(A)?.log());
    assert.ok(
      line.includes("from chat\\x1b]0;pwned\\x07\\x1b[2J\\u{202e}\\nnuketown agent forged"),
      line,
    );
    const everything = daemons.get(A)?.log() ?? "";
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding them is the point.
    assert.doesNotMatch(everything, /[\u001b\u0007\u202e]/);
    assert.ok(!everything.split("\n").some((l) => l.startsWith("nuketown agent forged")));
  });

  it("refuses to run as anyone but the agent, and next to a running daemon", () => {
    const asRoot = spawnSync(BIN, ["agent", A, "--manifest", manifest], { encoding: "utf8" });
    assert.equal(asRoot.status, 3, asRoot.stderr);
    assert.match(asRoot.stderr, new RegExp(`must run as ${A} \\(uid 60301\\), not as uid 0`));
    const second = run("runuser", ["-u", A, "--", BIN, "agent", A, "--manifest", manifest]);
    assert.equal(second.code, 3, second.stderr);
    assert.match(second.stderr, /another agent daemon already listens on/);
    const unknown = spawnSync(BIN, ["agent", "nt-test-nobody", "--manifest", manifest], {
      encoding: "utf8",
    });
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /no enabled agent "nt-test-nobody"/);
  });

  it("stops on SIGTERM: cancels what runs, removes its socket, exits 0", async () => {
    const client = await connect(B);
    const seen: TaskEvent[] = [];
    const hanging = client.run(
      { project: "widget", prompt: "hang-now until stopped" },
      { onEvent: (e) => seen.push(e) },
    );
    for (let i = 0; i < 100 && !seen.some((e) => e.event === "task.started"); i++)
      await new Promise((r) => setTimeout(r, 50));
    const daemon = daemons.get(B)!;
    const exited = new Promise<number | null>((resolve) => daemon.child.on("exit", resolve));
    // The daemon itself, as systemd would signal it (runuser would answer SIGTERM for it).
    const pid = mustRun("pgrep", ["-P", String(daemon.child.pid), "-u", String(UIDS[B])]).trim();
    process.kill(Number(pid), "SIGTERM");
    const outcome = await hanging;
    assert.equal(outcome.state, "cancelled");
    assert.ok(outcome.end.event === "task.cancelled");
    assert.equal(outcome.end.reason, "the agent daemon stopped");
    assert.equal(await exited, 0, `runuser passes on the daemon's exit code: ${daemon.log()}`);
    assert.ok(!existsSync(socket(B)), "the socket is removed");
    assert.match(daemon.log(), /stopped/);
  });

  it("stops when its manifest changes, cancelling what runs, and exits 75 to be started again", async () => {
    const client = await connect(A);
    const seen: TaskEvent[] = [];
    const hanging = client.run(
      { project: "widget", prompt: "hang-now until the town changes" },
      { onEvent: (e) => seen.push(e) },
    );
    for (let i = 0; i < 100 && !seen.some((e) => e.event === "task.started"); i++)
      await new Promise((r) => setTimeout(r, 50));
    const daemon = daemons.get(A)!;
    const exited = new Promise<number | null>((resolve) => daemon.child.on("exit", resolve));
    // As apply does: a new file renamed over the old one.
    const next = `${manifest}.new`;
    writeFileSync(next, `${readFileSync(manifest, "utf8").trimEnd()}\n\n`, {
      mode: statSync(manifest).mode & 0o777,
    });
    renameSync(next, manifest);
    const outcome = await hanging;
    assert.equal(outcome.state, "cancelled");
    assert.equal(await exited, 75, daemon.log());
    assert.match(daemon.log(), /town\.json changed: stopping to start again with the new town/);
    assert.ok(!existsSync(socket(A)), "the socket is removed");
  });
});
