/**
 * sudo with a human in the loop, for real: test accounts, the real sudo with
 * our sudoers fragment in /etc/sudoers.d, the gate, the daemon, a human who
 * approves through the control socket.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { before, describe, it } from "node:test";
import { parseMountinfo } from "../../src/os/tables.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { testPrefix } from "../support/install.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const mountInfo = () => parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"));

const AGENT = "nt-test-sudoer";
const SLOW = "nt-test-slowpoke";
const MAYOR = "nt-test-mayor";
const STRANGER = "nt-test-stranger";

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe("sudo through the approval gate", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "approval",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60202, [STRANGER]: 60203 },
    install: true,
  });
  let root = "";
  let manifest = "";
  let shimDir = "";
  let daemon: Daemon | undefined;
  const daemons: Daemon[] = [];
  town.defer(() => {
    if (process.env.NT_TEST_VERBOSE) for (const d of daemons) process.stderr.write(d.output());
  });

  /** Run as a Unix user, with the shim first on PATH, like the agent's service does. */
  const asUser = (user: string, argv: string[], input?: string): Promise<Outcome> =>
    new Promise((resolve) => {
      const child = spawn(
        "runuser",
        ["-u", user, "--", "env", `PATH=${shimDir}:/usr/bin:/bin`, `HOME=${root}`, ...argv],
        {
          cwd: root,
        },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(input ?? "");
    });
  const nuketownAs = (user: string, args: string[]) =>
    // The installed copy, as a human or agent has it: they may not enter the checkout.
    asUser(user, [path.join(testPrefix(root), "bin", "nuketown"), ...args, "--manifest", manifest]);

  /** Wait until the daemon shows a pending request from the agent; return its id. */
  async function pendingId(): Promise<string> {
    let last = "";
    for (let i = 0; i < 100; i++) {
      const list = await nuketownAs(MAYOR, ["approvals", "--json"]);
      last = list.stderr;
      const requests = list.code === 0 ? (JSON.parse(list.stdout) as { id: string }[]) : [];
      if (requests[0]) return requests[0].id;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no request showed up (${last})`);
  }

  before(async () => {
    root = town.root;
    town.ageKey();
    town.encrypt("api-token.age", "the api token\n");

    town.declare({
      domain: "test.local",
      approval: { timeout: 30 },
      humans: { [MAYOR]: { approver: true }, [STRANGER]: { approver: false } },
      agents: {
        [AGENT]: {
          uid: 60201,
          secrets: { unlockable: { api: { file: "api-token.age", ttl: 2 } } },
          sudo: {
            enable: true,
            policy: {
              default: "ask",
              rules: [
                { action: "allow", argv: ["id", "-un"] },
                { action: "allow", argv: ["printf", "**"] },
                { action: "allow", argv: ["/bin/bash", "-c", "pwd"] },
                { action: "deny", argv: ["rm", "**"], reason: "no deleting as root" },
                // Without runAs an allow rule is about root only: the mayor's account needs its own.
                { action: "allow", argv: ["id", "-un"], runAs: MAYOR },
              ],
            },
          },
        },
        [SLOW]: { uid: 60204, sudo: { enable: true, timeout: 1 } },
      },
    });
    town.apply();
    manifest = town.manifest;
    shimDir = town.shimDir;
    // The fragment apply rendered (and checked with visudo) goes where sudo reads it.
    town.sudoers();
    daemon = await town.approvald();
    daemons.push(daemon);
  });

  it("runs `sudo id -u` as root once the mayor approves through the control socket", async () => {
    const agent = asUser(AGENT, ["sudo", "id", "-u"]);
    const id = await pendingId();
    const approved = await nuketownAs(MAYOR, ["approve", id]);
    assert.equal(approved.code, 0, approved.stderr);
    const result = await agent;
    assert.equal(result.stdout, "0\n", result.stderr);
    assert.equal(result.code, 0);
    assert.match(result.stderr, new RegExp(`waiting for a human to approve request ${id}`));
  });

  it("fails with the reason when the mayor denies, and when nobody answers in time", async () => {
    const agent = asUser(AGENT, ["sudo", "id", "-u"]);
    const id = await pendingId();
    const denied = await nuketownAs(MAYOR, ["deny", id, "--reason", "not today"]);
    assert.equal(denied.code, 0, denied.stderr);
    const result = await agent;
    assert.equal(result.code, 10);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /sudo denied: not today \(by nt-test-mayor\)/);

    const slow = await asUser(SLOW, ["sudo", "id", "-u"]);
    assert.equal(slow.code, 12);
    assert.match(slow.stderr, /sudo timeout: no answer within 1 s/);
  });

  it("lets policy allow and deny without a human", async () => {
    const allowed = await asUser(AGENT, ["sudo", "id", "-un"]);
    assert.equal(allowed.stdout, "root\n", allowed.stderr);
    assert.match(allowed.stderr, /allowed by policy rule 0/);
    const denied = await asUser(AGENT, ["sudo", "rm", "-rf", `${root}/nothing`]);
    assert.equal(denied.code, 11);
    assert.match(denied.stderr, /no deleting as root \(policy rule 3\)/);
    // Spelled otherwise (a path instead of the name, long options): still the deny, at once.
    for (const argv of [
      ["/bin/rm", "-rf", `${root}/nothing`],
      ["/usr/bin/rm", "--recursive", "--force", `${root}//nothing/.`],
    ]) {
      const again = await asUser(AGENT, ["sudo", ...argv]);
      assert.equal(again.code, 11, `${argv.join(" ")}: ${again.stderr}`);
      assert.match(again.stderr, /no deleting as root \(policy rule 3\)/);
    }
    const asMayor = await asUser(AGENT, ["sudo", "-u", MAYOR, "id", "-un"]);
    assert.equal(asMayor.stdout, `${MAYOR}\n`, asMayor.stderr);
    const login = await asUser(AGENT, ["sudo", "-i", "pwd"]);
    assert.equal(login.stdout, "/root\n", login.stderr);
  });

  it("runs arguments literally: spaces, quotes, ;, $() and newlines reach the program as given", async () => {
    const args = ["a b", '"quoted"', "it's", ";", "$(id)", "`id`", "line1\nline2", "*"];
    const result = await asUser(AGENT, ["sudo", "printf", "[%s]\\n", ...args]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, args.map((a) => `[${a}]\n`).join(""));
  });

  it("marks test-mode decisions in the agent's output and in the audit log", async () => {
    // The mode file does not exist until root creates it: root sets it, then the mayor may change it.
    const early = await nuketownAs(MAYOR, ["approval-mode", "auto-approve"]);
    assert.equal(early.code, 3);
    assert.match(early.stderr, /root must set the mode once/);
    mustRun(BIN, ["approval-mode", "auto-approve", "--manifest", manifest]);
    try {
      const result = await asUser(AGENT, ["sudo", "id", "-u"]);
      assert.equal(result.stdout, "0\n", result.stderr);
      assert.match(result.stderr, /\*\*\* TEST MODE \(auto-approve\): no human was asked \*\*\*/);
      const byMayor = await nuketownAs(MAYOR, ["approval-mode", "auto-deny"]);
      assert.equal(byMayor.code, 0, byMayor.stderr);
      const denied = await asUser(AGENT, ["sudo", "id", "-u"]);
      assert.equal(denied.code, 16);
    } finally {
      mustRun(BIN, ["approval-mode", "off", "--manifest", manifest]);
    }
    const tail = mustRun(BIN, ["audit", "tail", "--json", "-n", "50", "--manifest", manifest]);
    const records = JSON.parse(tail) as { event: string; data: { by?: { kind: string } } }[];
    assert.ok(records.some((r) => r.event === "decision" && r.data.by?.kind === "test-mode"));
  });

  it("keeps agents away from the request socket, the control socket and the mode file", async () => {
    // The installed copy's Node: the agent may not enter the checkout.
    const node = path.join(testPrefix(root), "lib", "nuketown", "current", "bin", "node");
    const connect = (socket: string) =>
      asUser(AGENT, [
        node,
        "-e",
        `require("net").connect(${JSON.stringify(socket)}).on("error", (e) => { console.log(e.code); }).on("connect", () => { console.log("CONNECTED"); process.exit(0); })`,
      ]);
    assert.equal(
      (await connect(path.join(root, "run", "approval", "request.sock"))).stdout.trim(),
      "EACCES",
    );
    assert.equal((await connect(path.join(root, "run", "control.sock"))).stdout.trim(), "EACCES");
    const write = await asUser(AGENT, [
      "sh",
      "-c",
      `echo auto-approve > ${path.join(root, "state", "approval-mode")}`,
    ]);
    assert.notEqual(write.code, 0);
    const stranger = await nuketownAs(STRANGER, ["approvals"]);
    assert.equal(stranger.code, 3);
    assert.match(stranger.stderr, /permission denied/);
  });

  it("cannot run the gate with a forged identity, nor any other command without a password", async () => {
    const gate = path.join(testPrefix(root), "libexec", "nuketown", "sudo-gate");
    const direct = await asUser(AGENT, [gate, "--", "id", "-u"]);
    assert.equal(direct.code, 15);
    assert.match(direct.stderr, /must be run through sudo/);
    const forged = await asUser(AGENT, [
      "/usr/bin/sudo",
      "-n",
      "SUDO_UID=0",
      "SUDO_USER=root",
      gate,
      "--",
      "id",
      "-u",
    ]);
    assert.notEqual(forged.code, 0);
    assert.equal(forged.stdout, "");
    const other = await asUser(AGENT, ["/usr/bin/sudo", "-n", "/usr/bin/id", "-u"]);
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /password is required/);
    const listed = await asUser(AGENT, ["/usr/bin/sudo", "-n", "-l"]);
    // sudo -l wraps long lines (the gate's path below a temp prefix is long): read it as words.
    const words = listed.stdout.replace(/\s+/g, " ");
    const grants = [...words.matchAll(/\(root\) (NOSETENV: NOPASSWD|NOPASSWD: NOSETENV): (\S+)/g)];
    assert.equal(words.match(/NOPASSWD/g)?.length, 1, listed.stdout);
    assert.equal(grants.length, 1, listed.stdout);
    assert.equal(grants[0]![2], gate, listed.stdout);
  });

  it("answers malformed and oversized frames with an error and keeps serving", async () => {
    const talk = (payload: string) =>
      new Promise<string>((resolve) => {
        const socket = net.createConnection(path.join(root, "run", "approval", "request.sock"));
        let reply = "";
        socket.on("data", (d) => {
          reply += d;
          if (reply.includes("\n")) socket.destroy();
        });
        socket.on("close", () => resolve(reply));
        socket.write(payload);
      });
    assert.match(await talk("this is not json\n"), /"type":"error","error":"frame is not JSON"/);
    assert.match(
      await talk('{"v":1,"type":"request","request":{"argv":"id"}}\n'),
      /malformed frame/,
    );
    assert.match(await talk('{"v":9,"type":"request"}\n'), /unsupported protocol version/);
    assert.match(await talk(`${"x".repeat(70 * 1024)}`), /frame too large/);
    const still = await asUser(AGENT, ["sudo", "id", "-un"]);
    assert.equal(still.stdout, "root\n", still.stderr);
  });

  it("cancels a request whose agent gives up, and keeps a verifiable audit log", async () => {
    const agent = spawn(
      "runuser",
      ["-u", AGENT, "--", "env", `PATH=${shimDir}:/usr/bin:/bin`, "sudo", "id", "-u"],
      { cwd: root },
    );
    const id = await pendingId();
    // The agent gives up (Ctrl-C): sudo passes the signal on to the gate, whose connection closes.
    run("pkill", [
      "-INT",
      "-f",
      `sudo -n ${path.join(testPrefix(root), "libexec", "nuketown", "sudo-gate")}`,
    ]);
    agent.kill("SIGKILL");
    for (let i = 0; i < 50; i++) {
      const list = await nuketownAs(MAYOR, ["approvals", "--json"]);
      if (
        list.code === 0 &&
        !(JSON.parse(list.stdout) as { id: string }[]).some((r) => r.id === id)
      )
        break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const late = await nuketownAs(MAYOR, ["approve", id]);
    assert.equal(late.code, 3);
    assert.match(late.stderr, /no pending request/);
    const verified = spawnSync(BIN, ["audit", "verify", "--manifest", manifest], {
      encoding: "utf8",
    });
    assert.equal(verified.status, 0, verified.stderr);
    assert.match(verified.stdout, /audit log intact: \d+ records/);
    assert.ok(
      readFileSync(path.join(root, "state", "audit.jsonl"), "utf8").includes(
        '"decision":"cancelled"',
      ),
    );
  });

  it("unlocks a declared secret onto tmpfs after a human's yes, for its ttl, and locks it on demand", async () => {
    const unlocking = nuketownAs(AGENT, ["unlock", "api"]);
    const id = await pendingId();
    assert.equal((await nuketownAs(MAYOR, ["approve", id])).code, 0);
    const unlocked = await unlocking;
    assert.equal(unlocked.code, 0, unlocked.stderr);
    const file = unlocked.stdout.trim();
    assert.equal(file, path.join(root, "run", "secrets", AGENT, "api"));
    assert.equal(readFileSync(file, "utf8"), "the api token\n");
    const info = statSync(file);
    assert.equal(info.mode & 0o777, 0o440, "readable by the agent's group, writable by nobody");
    assert.equal(info.uid, 0);
    assert.equal(info.gid, 60201);
    assert.equal(
      (await asUser(AGENT, ["cat", file])).stdout,
      "the api token\n",
      "the agent reads it through its group",
    );
    assert.notEqual(
      (await asUser(AGENT, ["rm", "-f", file])).code,
      0,
      "the agent cannot replace it",
    );
    assert.equal(
      mountInfo().find((m) => m.mountPoint === path.join(root, "run", "secrets"))?.fsType,
      "tmpfs",
      "unlocked secrets never touch a disk",
    );
    const other = await asUser(MAYOR, ["cat", file]);
    assert.notEqual(other.code, 0, "nobody else can read it");
    // ttl = 2 s
    for (let i = 0; i < 60 && existsSync(file); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(!existsSync(file), "the plaintext is removed when its time is up");

    const again = nuketownAs(AGENT, ["unlock", "api"]);
    assert.equal((await nuketownAs(MAYOR, ["approve", await pendingId()])).code, 0);
    assert.equal((await again).code, 0);
    const locked = await nuketownAs(AGENT, ["lock"]);
    assert.equal(locked.code, 0, locked.stderr);
    assert.match(locked.stderr, /locked api/);
    assert.ok(!existsSync(file), "lock removes it at once");

    const unknown = await nuketownAs(AGENT, ["unlock", "nope"]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /no unlockable secret "nope"/);
  });

  it("fails closed when the daemon dies: the waiting gate says no, and the restarted daemon records it", async () => {
    const agent = asUser(AGENT, ["sudo", "id", "-u"]);
    const id = await pendingId();
    daemon?.child.kill("SIGKILL");
    const result = await agent;
    assert.equal(result.code, 14);
    assert.match(result.stderr, /went away before deciding; sudo denied/);
    assert.equal(result.stdout, "");

    daemon = town.spawn([BIN, "approvald", "--manifest", manifest], { graceMs: 5000 });
    daemons.push(daemon);
    const log = path.join(root, "state", "audit.jsonl");
    let text = "";
    for (let i = 0; i < 100; i++) {
      text = readFileSync(log, "utf8");
      if (text.includes("restarted while this request was pending")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const record = text
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { event: string; data: { id?: string; reason?: string } })
      .find((r) => r.event === "decision" && r.data.id === id);
    assert.match(
      record?.data.reason ?? "",
      /restarted while this request was pending \(failed closed\)/,
    );
    const verified = spawnSync(BIN, ["audit", "verify", "--manifest", manifest], {
      encoding: "utf8",
    });
    assert.equal(verified.status, 0, verified.stderr);
  });

  it("runs in the directory the human saw, even if the agent swaps the path for a symlink meanwhile", async () => {
    const home = path.join(root, "agents", AGENT);
    const agent = asUser(AGENT, [
      "sh",
      "-c",
      `mkdir -p ${home}/proj && cd ${home}/proj && sudo pwd`,
    ]);
    const id = await pendingId();
    const listed = JSON.parse((await nuketownAs(MAYOR, ["approvals", "--json"])).stdout) as {
      id: string;
      cwd: string;
    }[];
    assert.equal(listed.find((r) => r.id === id)?.cwd, `${home}/proj`);
    const swap = await asUser(AGENT, [
      "sh",
      "-c",
      `mv ${home}/proj ${home}/proj.old && ln -s / ${home}/proj`,
    ]);
    assert.equal(swap.code, 0, swap.stderr);
    assert.equal((await nuketownAs(MAYOR, ["approve", id])).code, 0);
    const result = await agent;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      `${home}/proj.old\n`,
      "the approved directory itself, not what the path points to now",
    );
  });

  it("denies at once past 8 requests waiting from one agent", async () => {
    const waiting = Array.from({ length: 8 }, () => asUser(AGENT, ["sudo", "id", "-u"]));
    for (let i = 0; i < 100; i++) {
      const list = await nuketownAs(MAYOR, ["approvals", "--json"]);
      if (list.code === 0 && (JSON.parse(list.stdout) as unknown[]).length === 8) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const ninth = await asUser(AGENT, ["sudo", "id", "-u"]);
    assert.equal(ninth.code, 17, "not 10: no human said no");
    assert.match(ninth.stderr, /already has 8 requests waiting for a human/);
    const pending = JSON.parse((await nuketownAs(MAYOR, ["approvals", "--json"])).stdout) as {
      id: string;
    }[];
    for (const r of pending) await nuketownAs(MAYOR, ["deny", r.id, "--reason", "enough"]);
    for (const result of await Promise.all(waiting)) assert.equal(result.code, 10);
  });

  it("restarts (exit 75) when the town changes, so a revoked rule takes effect at once", async () => {
    const exited = new Promise<number | null>((resolve) =>
      daemon?.child.once("exit", (code) => resolve(code)),
    );
    const text = readFileSync(manifest, "utf8");
    writeFileSync(`${manifest}.new`, `${text}\n`);
    renameSync(`${manifest}.new`, manifest);
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r("still running"), 10_000)),
    ]);
    assert.equal(code, 75);
  });
});
