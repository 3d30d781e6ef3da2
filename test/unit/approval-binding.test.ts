/**
 * What a human's yes is bound to: which files count as agent-writable, the
 * hash over their contents, how every channel shows them; the audit's
 * folding of denial bursts; the parsers behind the audit's tty.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { commandHash, SHORT_SHA256, writableLines } from "../../src/approval/binding.ts";
import { DenialBursts, type DenialSummary } from "../../src/approval/bursts.ts";
import { dialogArguments } from "../../src/approval/desktop.ts";
import type { PendingRequest } from "../../src/approval/protocol.ts";
import {
  type AgentIdentity,
  fileArguments,
  type Inode,
  sameFiles,
  type WritableFile,
  type WritableProbe,
  whyAgentWritable,
} from "../../src/approval/writable.ts";
import { requestText } from "../../src/chat/approval-channel.ts";
import { approvalItem } from "../../src/dashboard/approvals.ts";
import { htmlText } from "../../src/dashboard/html.ts";
import { approvalsSection } from "../../src/dashboard/pages.ts";
import { parseProcStat, parseSubordinateIds, ttyDeviceName } from "../../src/os/tables.ts";

const ADA: AgentIdentity = {
  uid: 1100,
  gids: new Set([1100, 50]),
  subuids: [[100000, 65536]],
  subgids: [[100000, 65536]],
};

const dir = (uid: number, mode: number, gid = 0): Inode => ({ uid, gid, mode, kind: "directory" });
const file = (uid: number, mode: number, gid = 0): Inode => ({ uid, gid, mode, kind: "file" });
const link = (target: string): Inode & { target: string } => ({
  uid: 0,
  gid: 0,
  mode: 0o777,
  kind: "symlink",
  target,
});

/** A file system as a table; `acl` lists paths whose ACL lets ada write. */
function probe(
  nodes: Record<string, Inode & { target?: string }>,
  acl: string[] = [],
): WritableProbe & { aclAsked: string[] } {
  const all: Record<string, Inode & { target?: string }> = { "/": dir(0, 0o755), ...nodes };
  const aclAsked: string[] = [];
  return {
    aclAsked,
    lstat: async (p) => all[p],
    readlink: async (p) => all[p]?.target,
    aclWrite: async (p) => {
      aclAsked.push(p);
      return acl.includes(p);
    },
  };
}

const system = {
  "/usr": dir(0, 0o755),
  "/usr/bin": dir(0, 0o755),
  "/usr/bin/systemctl": file(0, 0o755),
  "/agents": dir(0, 0o755),
  "/agents/ada": dir(1100, 0o700, 1100),
  "/agents/ada/s.sh": file(1100, 0o755, 1100),
  "/agents/ada/ro.sh": file(1100, 0o500, 1100),
  "/agents/ada/root.sh": file(0, 0o755),
  "/tmp": dir(0, 0o1777),
  "/tmp/mine.sh": file(1100, 0o755, 1100),
  "/tmp/roots.sh": file(0, 0o755),
  "/opt": dir(0, 0o755),
  "/opt/tools": dir(0, 0o775, 50),
  "/opt/tools/run": file(0, 0o755),
  "/opt/shared": dir(0, 0o775, 60),
  "/opt/shared/run": file(0, 0o755),
  "/opt/acl": dir(0, 0o775, 60),
  "/opt/acl/run": file(0, 0o755),
  "/opt/sub.sh": file(100_500, 0o755),
  "/opt/world.sh": file(0, 0o757),
  "/opt/link": link("/agents/ada/s.sh"),
  "/opt/back": link("../agents/ada/root.sh"),
  "/opt/fd": link("anon_inode:[memfd]"),
  "/opt/loop": link("/opt/loop"),
};

describe("agent-writable files", () => {
  const cases: [string, string, RegExp | undefined][] = [
    ["a program of the system", "/usr/bin/systemctl", undefined],
    [
      "a script the agent owns",
      "/agents/ada/s.sh",
      /in \/agents\/ada, which is owned by the agent/,
    ],
    ["a root-owned file in the agent's home", "/agents/ada/root.sh", /can replace/],
    ["its own script in sticky /tmp", "/tmp/mine.sh", /the agent can replace \/tmp\/mine.sh/],
    ["root's file in sticky /tmp", "/tmp/roots.sh", undefined],
    [
      "a file in a directory its group may write",
      "/opt/tools/run",
      /gid 50\), which the agent is in/,
    ],
    ["a file in another group's directory, no ACL", "/opt/shared/run", undefined],
    ["a file in a directory an ACL lets it write", "/opt/acl/run", /through an ACL/],
    ["a file of a subordinate uid", "/opt/sub.sh", /subordinate uid/],
    ["a world-writable file", "/opt/world.sh", /writable by everyone/],
    ["a root symlink into the agent's home", "/opt/link", /in \/agents\/ada/],
    ["a relative link through ..", "/opt/back", /in \/agents\/ada/],
    ["a magic link (an fd)", "/opt/fd", /cannot be told/],
    ["a symlink loop", "/opt/loop", /cannot be told/],
  ];
  for (const [what, path, expected] of cases) {
    it(`${expected ? "flags" : "does not flag"} ${what}`, async () => {
      const why = await whyAgentWritable(path, ADA, probe(system, ["/opt/acl"]));
      if (expected) assert.match(why ?? "(not flagged)", expected);
      else assert.equal(why, undefined);
    });
  }

  it("asks about ACLs only where the group-write bit leaves it open", async () => {
    const p = probe(system);
    await whyAgentWritable("/usr/bin/systemctl", ADA, p);
    await whyAgentWritable("/opt/tools/run", ADA, p);
    assert.deepEqual(p.aclAsked, []);
    await whyAgentWritable("/opt/shared/run", ADA, p);
    assert.deepEqual(p.aclAsked, ["/opt/shared"]);
  });

  it("takes file arguments and --opt=value values, resolved against cwd, never options", () => {
    assert.deepEqual(
      fileArguments(
        ["bash", "./s.sh", "-x", "--config=conf/a.toml", "/etc/passwd", ""],
        "/agents/ada",
      ),
      [
        { index: 1, path: "/agents/ada/s.sh" },
        { index: 3, path: "/agents/ada/conf/a.toml" },
        { index: 4, path: "/etc/passwd" },
      ],
    );
  });

  it("compares files by place and contents, not by the reason given", () => {
    const a: WritableFile = { index: 0, path: "/a/s.sh", sha256: "1".repeat(64), why: "owned" };
    assert.ok(sameFiles([a], [{ ...a, why: "another reason" }]));
    assert.ok(!sameFiles([a], [{ ...a, sha256: "2".repeat(64) }]));
    assert.ok(!sameFiles([a], []));
    assert.ok(!sameFiles([], [a]));
  });
});

const base = {
  agent: { uid: 1100 },
  argv: ["./s.sh"],
  command: "/agents/ada/s.sh",
  cwd: "/agents/ada",
  runAs: { user: "root" },
};
const script: WritableFile = {
  index: 0,
  path: "/agents/ada/s.sh",
  sha256: "5".repeat(64),
  why: "in /agents/ada, which is owned by the agent",
};

describe("the command hash", () => {
  it("stays what it was for a request with no agent-writable file and no target uid", () => {
    // The canonical form before either existed.
    const old = createHash("sha256")
      .update(
        JSON.stringify([
          1100,
          ["./s.sh"],
          "/agents/ada/s.sh",
          "/agents/ada",
          "root",
          null,
          null,
          null,
        ]),
      )
      .digest("hex");
    assert.equal(commandHash(base), old);
    assert.equal(commandHash({ ...base, writable: [] }), old);
  });

  it("covers the contents of agent-writable files and the target's uid", () => {
    const withScript = commandHash({ ...base, writable: [script] });
    assert.notEqual(withScript, commandHash(base));
    assert.notEqual(
      commandHash({ ...base, writable: [{ ...script, sha256: "6".repeat(64) }] }),
      withScript,
    );
    assert.equal(
      commandHash({ ...base, writable: [{ ...script, why: "other words" }] }),
      withScript,
    );
    assert.notEqual(
      commandHash({ ...base, runAs: { user: "root", uid: 0 } }),
      commandHash({ ...base, runAs: { user: "root", uid: 1 } }),
    );
  });
});

const pending = (overrides: Partial<PendingRequest> = {}): PendingRequest => ({
  agent: { name: "ada", uid: 1100 },
  argv: ["bash", "./s.sh"],
  command: "/usr/bin/bash",
  cwd: "/agents/ada",
  runAs: { user: "root", uid: 0 },
  writable: [{ ...script, index: 1 }],
  id: "0123456789abcdef",
  time: new Date(1_800_000_000_000).toISOString(),
  hash: "f".repeat(64),
  expires: new Date(1_800_000_060_000).toISOString(),
  ...overrides,
});

describe("agent-writable in every channel", () => {
  const short = "5".repeat(SHORT_SHA256);

  it("names the file, its place in argv and its shortened content hash", () => {
    assert.deepEqual(writableLines(pending()), [
      `agent-writable argument 1 /agents/ada/s.sh · sha256 ${short} (the agent could change it; checked before the command starts, not while it runs)`,
    ]);
    assert.match(
      writableLines({ writable: [script] })[0] ?? "",
      /^agent-writable program .*root-owned copy/,
    );
    assert.match(
      writableLines({ writable: [{ ...script, path: "/a/\u001b[2Jx" }] }, JSON.stringify)[0] ?? "",
      /\/a\/\\u001b\[2Jx/,
    );
  });

  it("shows it on the desktop, in chat and on the dashboard", () => {
    const dialog = dialogArguments(pending(), new Date(1_800_000_000_000));
    const text = dialog?.args.find((a) => a.startsWith("--text=")) ?? "";
    assert.match(text, new RegExp(`agent-writable argument 1 /agents/ada/s.sh · sha256 ${short}`));
    assert.match(
      requestText(pending(), new Date(1_800_000_000_000), true, true),
      new RegExp(`⚠ agent-writable argument 1 /agents/ada/s.sh · sha256 ${short}`),
    );
    const page = htmlText(
      approvalsSection([approvalItem(pending())], { human: "mayor", approver: true, csrf: "t" }, 0),
    );
    assert.match(page, /agent-writable<\/span> argument 1 \/agents\/ada\/s.sh/);
    // The buttons carry the hash shown: the answer is bound to it.
    assert.match(page, new RegExp(`name="hash" value="${"f".repeat(64)}"`));
  });
});

describe("bursts of denials in the audit", () => {
  function setUp(windowMs = 60_000) {
    let now = Date.parse("2026-11-22T10:00:00.000Z");
    const summaries: DenialSummary[] = [];
    const timers: { at: number; fire: () => void; cancelled: boolean }[] = [];
    const bursts = new DenialBursts({
      record: async (s) => {
        summaries.push(s);
      },
      clock: () => new Date(now),
      windowMs,
      schedule: (ms, fire) => {
        const timer = { at: now + ms, fire, cancelled: false };
        timers.push(timer);
        return { cancel: () => (timer.cancelled = true) };
      },
    });
    const advance = async (ms: number) => {
      now += ms;
      for (const t of timers.filter((t) => !t.cancelled && t.at <= now)) {
        t.cancelled = true;
        t.fire();
      }
      await new Promise((r) => setImmediate(r));
    };
    return { bursts, summaries, advance };
  }

  it("records the first of 500 denials and folds the other 499 into one summary", async () => {
    const { bursts, summaries } = setUp();
    const recorded: number[] = [];
    for (let i = 0; i < 500; i++) {
      const argv = ["rm", "-rf", `/x${i % 5}`];
      if (!(await bursts.denied("ada", argv, "no deleting as root"))) recorded.push(i);
    }
    assert.deepEqual(recorded, [0]);
    assert.equal(summaries.length, 0, "the burst is still open");
    await bursts.end("ada");
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0]?.count, 499);
    assert.deepEqual(summaries[0]?.reasons, [{ reason: "no deleting as root", count: 499 }]);
    assert.equal(summaries[0]?.samples.length, 3);
  });

  it("ends a burst when its window is over, and keeps agents apart", async () => {
    const { bursts, summaries, advance } = setUp(1000);
    assert.equal(await bursts.denied("ada", ["a"], "r"), false);
    assert.equal(await bursts.denied("bob", ["b"], "r"), false);
    assert.equal(await bursts.denied("ada", ["a"], "r"), true);
    await advance(1000);
    assert.deepEqual(
      summaries.map((s) => [s.agent, s.count]),
      [["ada", 1]],
      "bob's burst counted nothing: no summary",
    );
    assert.equal(await bursts.denied("ada", ["a"], "r"), false, "a new burst starts in full");
  });

  it("keeps at most a few reasons and samples, however varied the denials", async () => {
    const { bursts, summaries } = setUp();
    await bursts.denied("ada", ["x"], "first");
    for (let i = 0; i < 100; i++)
      await bursts.denied("ada", [`x${i}`, "y".repeat(1000)], `reason ${i}`);
    await bursts.endAll();
    const summary = summaries[0];
    assert.equal(summary?.count, 100);
    assert.equal(summary?.reasons.length, 9);
    assert.deepEqual(summary?.reasons[0], { reason: "other", count: 92 });
    assert.ok((summary?.samples ?? []).every((s) => s.every((a) => a.length <= 200)));
  });
});

describe("the parsers behind the audit's tty", () => {
  it("reads /proc/<pid>/stat, even with ') ' in the command name", () => {
    assert.deepEqual(parseProcStat("4242 (sudo) S 4241 4242 4000 34816 4242 4194560 0 0 0 0"), {
      pid: 4242,
      comm: "sudo",
      ppid: 4241,
      ttyNr: 34816,
    });
    assert.deepEqual(parseProcStat("7 (a) b (c) S 1 7 7 0 -1 0")?.ppid, 1);
    assert.deepEqual(parseProcStat("7 (a) b (c) S 1 7 7 0 -1 0")?.comm, "a) b (c");
    assert.equal(parseProcStat("garbage"), undefined);
  });

  it("names terminals as ps does", () => {
    assert.equal(ttyDeviceName(34816), "/dev/pts/0");
    assert.equal(ttyDeviceName(34819), "/dev/pts/3");
    // pts 300: minor 300 = 0x12c, high bits of the minor above bit 8.
    assert.equal(ttyDeviceName((136 << 8) | 0x2c | (0x100 << 12)), "/dev/pts/300");
    assert.equal(ttyDeviceName(1025), "/dev/tty1");
    assert.equal(ttyDeviceName(0), undefined);
  });

  it("reads subordinate id ranges by name or uid", () => {
    const text = "ada:100000:65536\n1100:300000:10\nbob:165536:65536\n";
    assert.deepEqual(parseSubordinateIds(text, { name: "ada", uid: 1100 }), [
      [100000, 65536],
      [300000, 10],
    ]);
    assert.deepEqual(parseSubordinateIds("", { name: "ada", uid: 1100 }), []);
  });
});
