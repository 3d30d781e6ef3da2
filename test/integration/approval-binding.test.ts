/**
 * An approval is bound to what the human saw, attacked as the agent against
 * the real approvald, sudo and gate: a script rewritten between display and
 * approval (or while it runs) never runs as root; a file that appears after
 * display is refused; the answer carries the hash shown; policy targets are
 * uids, whatever the name; the audit's tty is the kernel's, not the agent's
 * stderr; a loop of denied sudos leaves a bounded audit log.
 *
 * Markers that prove what ran as root are written into a root-owned
 * directory the agent cannot write.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { isRoot, mustRun, run } from "../support/host.ts";
import { testPrefix } from "../support/install.ts";
import { type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const MAYOR = "nt-test-bnd-mayor";
const AGENT = "nt-test-binder";
const TARGET = "nt-test-bnd-pu";
const ALIAS = "nt-test-bnd-pual";
const UIDS = { mayor: 60420, agent: 60421, target: 60422 } as const;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface AuditLine {
  seq: number;
  event: string;
  data: Record<string, unknown> & {
    id?: string;
    argv?: string[];
    agent?: string;
    count?: number;
    decision?: string;
  };
}

describe("an approval is bound to what the human saw", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "binding",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: UIDS.mayor, [TARGET]: UIDS.target },
    install: true,
  });
  // The alias first (before the town's accounts go): userdel of the first name would leave a
  // second name of its uid behind.
  town.defer(() => run("userdel", [ALIAS]));
  let root = "";
  let manifest = "";
  let shimDir = "";
  let home = "";
  /** Root-owned, 0755: only root can leave a marker here. */
  let markers = "";
  let daemon: Daemon | undefined;
  const daemonLog = () => daemon?.output() ?? "";

  /** As a Unix user in its home, with the shim first on PATH, like the agent's service. */
  const asUser = (user: string, argv: string[], cwd = root): Promise<Outcome> =>
    new Promise((resolve) => {
      const child = spawn(
        "runuser",
        ["-u", user, "--", "env", `PATH=${shimDir}:/usr/bin:/bin`, `HOME=${home}`, ...argv],
        { cwd },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
      child.stdin.end();
    });
  const asAgent = (argv: string[]) => asUser(AGENT, argv, home);
  const sh = (script: string) => asAgent(["sh", "-c", script]);
  const nuketownAs = (user: string, args: string[]) =>
    asUser(user, [path.join(testPrefix(root), "bin", "nuketown"), ...args, "--manifest", manifest]);
  const audit = (): AuditLine[] =>
    readFileSync(path.join(root, "state", "audit.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as AuditLine);
  const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

  /** The one request waiting, as `approvals --json` shows it. */
  async function pending(): Promise<{ id: string; hash: string; writable?: unknown[] }> {
    let last = "";
    for (let i = 0; i < 150; i++) {
      const list = await nuketownAs(MAYOR, ["approvals", "--json"]);
      last = list.stderr;
      const [request] =
        list.code === 0 ? (JSON.parse(list.stdout) as { id: string; hash: string }[]) : [];
      if (request) return request;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`no request showed up (${last}) ${daemonLog()}`);
  }

  before(async () => {
    root = town.root;
    home = path.join(root, "agents", AGENT);
    markers = path.join(root, "markers");
    mkdirSync(markers, { mode: 0o755 });
    // Two names, one uid: a rule written for either is about both.
    mustRun("useradd", [
      "--non-unique",
      "--uid",
      String(UIDS.target),
      "--gid",
      TARGET,
      "--no-create-home",
      "--home-dir",
      `${root}/humans/${TARGET}`,
      ALIAS,
    ]);
    town.declare({
      domain: "test.local",
      approval: { timeout: 30 },
      humans: { [MAYOR]: { approver: true } },
      agents: {
        [AGENT]: {
          uid: UIDS.agent,
          sudo: {
            enable: true,
            timeout: 20,
            policy: {
              default: "ask",
              rules: [
                { action: "allow", argv: ["id", "-un"] },
                { action: "deny", argv: ["rm", "**"], reason: "no deleting as root" },
                { action: "allow", argv: ["id", "-un"], runAs: TARGET },
                { action: "deny", argv: ["**"], runAs: ALIAS, reason: `nothing as ${ALIAS}` },
              ],
            },
          },
        },
      },
    });
    town.apply();
    manifest = town.manifest;
    shimDir = town.shimDir;
    town.sudoers();
    daemon = await town.approvald();
    town.defer(() => {
      if (process.env.NT_TEST_VERBOSE) process.stderr.write(daemonLog());
    });
  });

  it("refuses a script rewritten between display and approval: the new content never runs as root", async () => {
    const benign = "#!/bin/sh\necho benign\n";
    const evil = `#!/bin/sh\nid -u > ${markers}/rewritten\n`;
    assert.equal((await sh(`printf '%s' '${benign}' > s.sh && chmod 755 s.sh`)).code, 0);
    const running = asAgent(["sudo", "./s.sh"]);
    const request = await pending();
    const shown = await nuketownAs(MAYOR, ["approvals"]);
    // The agent rewrites it after the human saw it (the same file, as an editor would not).
    assert.equal((await sh(`printf '%s' '${evil}' > s.sh`)).code, 0);
    const approved = await nuketownAs(MAYOR, ["approve", request.id]);
    const result = await running;
    assert.ok(!existsSync(`${markers}/rewritten`), "the rewritten script never ran as root");
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal(result.code, 18, result.stderr);
    assert.match(
      result.stderr,
      /s\.sh changed after it was shown \(sha256 [0-9a-f]{16} → [0-9a-f]{16}\)/,
    );
    assert.match(result.stderr, /nothing ran/);
    assert.equal(result.stdout, "");
    assert.match(
      shown.stdout,
      new RegExp(
        `${request.id}: ⚠ agent-writable program ${home}/s.sh · sha256 ${sha256(benign).slice(0, 16)}`,
      ),
    );

    const records = audit();
    const asked = records.find((r) => r.event === "request" && r.data.id === request.id);
    assert.deepEqual(
      ((asked?.data.agentWritable ?? []) as { index: number; path: string; sha256: string }[]).map(
        (f) => [f.index, f.path, f.sha256],
      ),
      [[0, `${home}/s.sh`, sha256(benign)]],
      "the audit names the agent-writable program and the hash approved",
    );
    const refused = records.find((r) => r.event === "refused" && r.data.id === request.id);
    assert.match(String(refused?.data.reason), /changed after it was shown/);
  });

  it("runs an unchanged agent-writable script once approved, from a root-owned copy", async () => {
    const script = `#!/bin/sh\nid -u\ntouch ${markers}/unchanged\n`;
    assert.equal((await sh(`printf '%s' '${script}' > ok.sh && chmod 755 ok.sh`)).code, 0);
    const running = asAgent(["sudo", "./ok.sh"]);
    const request = await pending();
    assert.equal((await nuketownAs(MAYOR, ["approve", request.id])).code, 0);
    const result = await running;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, "0\n");
    assert.ok(existsSync(`${markers}/unchanged`));
  });

  it("runs an agent-writable script as another user from the copy too", async () => {
    assert.equal((await sh("printf '#!/bin/sh\\nid -un\\n' > who.sh && chmod 755 who.sh")).code, 0);
    // (Not TARGET: a deny rule covers its uid.)
    const running = asAgent(["sudo", "-u", MAYOR, "./who.sh"]);
    const request = await pending();
    assert.equal((await nuketownAs(MAYOR, ["approve", request.id])).code, 0);
    const result = await running;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `${MAYOR}\n`);
  });

  it("runs the approved bytes even when the agent rewrites the script while it runs", async () => {
    // bash reads a script as it goes: without the copy, what the agent writes during the sleep would run.
    const version = (n: number) => `#!/bin/bash\nsleep 2\ntouch ${markers}/v${n}-ran\n`;
    assert.equal((await sh(`printf '%s' '${version(1)}' > slow.sh && chmod 755 slow.sh`)).code, 0);
    const running = asAgent(["sudo", "./slow.sh"]);
    const request = await pending();
    assert.equal((await nuketownAs(MAYOR, ["approve", request.id])).code, 0);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await sh(`printf '%s' '${version(2)}' > slow.sh`)).code, 0);
    const result = await running;
    assert.equal(result.code, 0, result.stderr);
    assert.ok(existsSync(`${markers}/v1-ran`), "the approved version ran");
    assert.ok(!existsSync(`${markers}/v2-ran`), "what the agent wrote meanwhile did not");
  });

  it("refuses a file argument that changed, and one that appeared after display", async () => {
    assert.equal((await sh("echo 'echo one' > arg.sh")).code, 0);
    const changed = asAgent(["sudo", "bash", "./arg.sh"]);
    let request = await pending();
    const shown = await nuketownAs(MAYOR, ["approvals"]);
    assert.match(shown.stdout, new RegExp(`agent-writable argument 1 ${home}/arg.sh`));
    assert.equal((await sh(`echo 'touch ${markers}/arg-ran' > arg.sh`)).code, 0);
    assert.equal((await nuketownAs(MAYOR, ["approve", request.id])).code, 0);
    let result = await changed;
    assert.equal(result.code, 18, result.stderr);
    assert.ok(!existsSync(`${markers}/arg-ran`));

    // Shown without any file the agent could change: bash with an argument naming nothing yet.
    const later = asAgent(["sudo", "bash", "./later.sh"]);
    request = await pending();
    assert.equal(request.writable, undefined);
    assert.equal((await sh(`echo 'touch ${markers}/later-ran' > later.sh`)).code, 0);
    assert.equal((await nuketownAs(MAYOR, ["approve", request.id])).code, 0);
    result = await later;
    assert.equal(result.code, 18, result.stderr);
    assert.match(
      result.stderr,
      /later\.sh is a file the agent could change that the human was not shown/,
    );
    assert.ok(!existsSync(`${markers}/later-ran`));
  });

  it("takes an answer only for the hash the human was shown", async () => {
    const running = asAgent(["sudo", "id", "-u"]);
    const request = await pending();
    const wrong = await nuketownAs(MAYOR, ["approve", request.id, "--hash", "00000000"]);
    assert.equal(wrong.code, 3);
    assert.match(wrong.stderr, /not the 00000000 you were shown/);
    const right = await nuketownAs(MAYOR, [
      "approve",
      request.id,
      "--hash",
      request.hash.slice(0, 12),
    ]);
    assert.equal(right.code, 0, right.stderr);
    const result = await running;
    assert.equal(result.stdout, "0\n", result.stderr);
  });

  it("matches policy targets by uid: a rule for one name holds for the other name of its uid", async () => {
    // The allow rule names TARGET; asked as ALIAS (same uid), it allows.
    const allowed = await asAgent(["sudo", "-u", ALIAS, "id", "-un"]);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stderr, /allowed by policy rule 2/);
    // The deny rule names ALIAS; asked as TARGET, it denies at once.
    const denied = await asAgent(["sudo", "-u", TARGET, "true"]);
    assert.equal(denied.code, 11, denied.stderr);
    assert.match(denied.stderr, new RegExp(`nothing as ${ALIAS} \\(policy rule 3\\)`));
  });

  it("records the tty the kernel gives sudo, not the file the agent calls its stderr", async () => {
    const fake = `/dev/shm/nt-test-binding-tty-${process.pid}`;
    try {
      // A real terminal (script's pty), with stderr sent to a file named like a device.
      const result = await asAgent([
        "script",
        "--quiet",
        "--return",
        "--command",
        `sudo id -un 2>${fake}`,
        "/dev/null",
      ]);
      assert.equal(result.code, 0, `${result.stdout}${result.stderr}`);
    } finally {
      rmSync(fake, { force: true });
    }
    const record = audit()
      .filter((r) => r.event === "request" && r.data.argv?.join(" ") === "id -un")
      .at(-1);
    assert.match(String(record?.data.tty), /^\/dev\/pts\/\d+$/);
    assert.equal(record?.data.ttyFrom, "sudo's controlling terminal");
  });

  it("writes a bounded number of records for 500 rapid denials, and counts them all", async (t) => {
    const before = audit().length;
    // 500 denied sudos from the agent, 20 at a time.
    const loop = await sh(
      "fails=0; i=0; while [ $i -lt 500 ]; do j=0; while [ $j -lt 20 ]; do sudo rm -rf /nt-test-nothing 2>/dev/null & j=$((j+1)); i=$((i+1)); done; " +
        "for p in $(jobs -p); do wait $p; [ $? = 11 ] || fails=$((fails+1)); done; done; echo $fails",
    );
    assert.equal(loop.stdout.trim(), "0", `every one was denied by policy: ${loop.stderr}`);
    // The agent's next record ends its burst: the summary lands before it.
    const next = await asAgent(["sudo", "id", "-un"]);
    assert.equal(next.stdout, "root\n", next.stderr);
    const records = audit().slice(before);
    const denials = records.filter(
      (r) => r.event === "decision" && r.data.decision === "denied" && r.data.agent === AGENT,
    );
    const summaries = records.filter((r) => r.event === "denials.suppressed");
    const counted = summaries.reduce((sum, r) => sum + (r.data.count ?? 0), 0);
    assert.equal(denials.length + counted, 500, "every denial is recorded or counted");
    assert.ok(
      denials.length <= 3,
      `at most one burst a minute: ${denials.length} recorded in full`,
    );
    assert.ok(
      records.length <= 3 * denials.length + 2,
      `${records.length} records for 500 denials`,
    );
    t.diagnostic(
      `500 denials: ${denials.length} recorded in full, ${counted} counted in ${summaries.length} summaries; ${records.length} records in all`,
    );
    const verified = await nuketownAs(MAYOR, ["audit", "verify"]);
    assert.equal(verified.code, 0, verified.stderr);
  });

  // Last: it spends the agent's asks for the next 10 minutes.
  it("cuts off an agent that floods the humans with requests it cancels at once", async (t) => {
    const before = audit().length;
    const codes: (number | null)[] = [];
    let cutOff: Outcome | undefined;
    // Eight at a time (the waiting cap), each given up once the humans were asked.
    for (let batch = 0; batch < 15 && !cutOff; batch++) {
      const asks = Array.from({ length: 8 }, () => asAgent(["sudo", "true"]));
      let settled = 0;
      for (const ask of asks) void ask.then(() => settled++);
      for (let i = 0; i < 150; i++) {
        const list = await nuketownAs(MAYOR, ["approvals", "--json"]);
        const waiting = list.code === 0 ? (JSON.parse(list.stdout) as unknown[]).length : 0;
        if (waiting + settled >= 8) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      // The agent gives up on each (Ctrl-C at its terminal, which reaches sudo though it runs as
      // root; sent here by root as a stand-in): sudo passes it to the gate, whose connection closes.
      run("pkill", [
        "-INT",
        "-f",
        `sudo -n ${path.join(testPrefix(root), "libexec", "nuketown", "sudo-gate")}`,
      ]);
      for (const result of await Promise.all(asks)) {
        codes.push(result.code);
        if (result.code === 17) cutOff ??= result;
      }
    }
    assert.ok(cutOff, `never cut off: ${codes.join(" ")}`);
    assert.match(
      cutOff.stderr,
      /has asked the humans 60 times in 10 minutes \(approval\.askLimit\): no more until /,
    );
    const records = audit().slice(before);
    const cancelled = records.filter(
      (r) => r.event === "decision" && r.data.decision === "cancelled" && r.data.agent === AGENT,
    ).length;
    const limited = codes.filter((c) => c === 17).length;
    // Every request that reached a human in this file so far counts (answered, cancelled, timed
    // out): at most 60 in all.
    const asked = audit().filter(
      (r) =>
        r.event === "decision" &&
        r.data.agent === AGENT &&
        (["cancelled", "timeout"].includes(String(r.data.decision)) ||
          (r.data as { by?: { kind?: string } }).by?.kind === "human"),
    ).length;
    assert.ok(asked <= 60, `${asked} requests reached a human`);
    // Past the limit, the denials are folded: a few records, not two per request.
    assert.ok(
      records.length <= 2 * cancelled + 8,
      `${records.length} records for ${cancelled} cancelled and ${limited} cut off`,
    );
    t.diagnostic(
      `${codes.length} sudos: ${cancelled} reached the humans and were cancelled, ${limited} cut off (exit 17); ${records.length} audit records`,
    );
    const verified = await nuketownAs(MAYOR, ["audit", "verify"]);
    assert.equal(verified.code, 0, verified.stderr);
  });
});
