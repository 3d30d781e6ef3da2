/**
 * What the daemon understands of its runtimes' output, and of its clients'
 * frames. The claude and codex fixtures were recorded from the real CLIs
 * run against loopback stand-ins of their vendors' APIs.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { ClientFrameSchema, parseFrame } from "../../src/agent/frames.ts";
import { chunkText, clipBytes, isBranchName, isProjectName } from "../../src/agent/protocol.ts";
import {
  claudeBatchArgs,
  claudeInteractiveArgs,
  claudeParser,
} from "../../src/agent/runtimes/claude.ts";
import {
  codexBatchArgs,
  codexInteractiveArgs,
  codexParser,
} from "../../src/agent/runtimes/codex.ts";
import { commandInput, parseCommandLine } from "../../src/agent/runtimes/command.ts";
import { tmuxSessionName } from "../../src/agent/runtimes/tmux.ts";
import type { OutputParser, RuntimeOutput } from "../../src/agent/runtimes/types.ts";
import {
  declaredProjects,
  persistenceWarning,
  repoName,
  topicBranch,
  topicSlug,
} from "../../src/agent/workspace.ts";
import { filterNames, filterOverrides } from "../../src/host/git-guard.ts";
import { REPO_ROOT, resolveOrThrow } from "../support/fixtures.ts";

const FIXTURES = path.join(REPO_ROOT, "test", "fixtures", "runtimes");

function feed(parser: OutputParser, fixture: string): RuntimeOutput[] {
  return readFileSync(path.join(FIXTURES, fixture), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .flatMap((line) => parser.line(line));
}
const of = <T extends RuntimeOutput["type"]>(outputs: RuntimeOutput[], type: T) =>
  outputs.filter((o): o is Extract<RuntimeOutput, { type: T }> => o.type === type);

describe("command runtime output", () => {
  it("reads progress, answer, session and error lines", () => {
    assert.deepEqual(parseCommandLine('{"type":"progress","text":"uid 1100"}'), {
      type: "progress",
      text: "uid 1100",
    });
    assert.deepEqual(parseCommandLine('{"type":"answer","text":"done"}'), {
      type: "answer",
      text: "done",
    });
    assert.deepEqual(parseCommandLine('{"type":"session","id":"s-1"}'), {
      type: "session",
      id: "s-1",
    });
    assert.deepEqual(parseCommandLine('{"type":"error","text":"no"}'), {
      type: "error",
      text: "no",
    });
  });

  it("takes anything else on stdout as a progress line, as it is", () => {
    for (const line of [
      "compiling…",
      "[1, 2]",
      "null",
      '{"type":"answer"}',
      '{"type":"answer","text":42}',
      '{"type":"other","text":"x"}',
      "{not json",
    ]) {
      assert.deepEqual(parseCommandLine(line), { type: "progress", text: line });
    }
  });

  it("hands the runtime the task as one JSON object", () => {
    const input = commandInput(
      {
        id: "0a1b2c3d",
        agent: "ada",
        project: "site",
        prompt: "fix it",
        mode: "batch",
        replyTo: "thread-1",
      },
      { workspace: "/agents/ada/projects/site", branch: "ada/fix-it", warnings: [] },
      "s-1",
    );
    assert.deepEqual(input, {
      version: 1,
      id: "0a1b2c3d",
      agent: "ada",
      project: "site",
      prompt: "fix it",
      branch: "ada/fix-it",
      mode: "batch",
      workspace: "/agents/ada/projects/site",
      replyTo: "thread-1",
      session: "s-1",
      warnings: [],
    });
  });
});

// Recorded from the real CLIs (claude 2.1.332, codex 0.171.0) against the
// loopback vendor stand-ins of test/support/vendor-stub.ts.
const REC = "recorded";

describe("claude stream-json", () => {
  it("turns a run whose shell tool committed into progress, the session id and the answer", () => {
    const outputs = feed(claudeParser(), `${REC}/claude-2.1.332-commit.jsonl`);
    assert.deepEqual(
      of(outputs, "session").map((s) => s.id),
      ["e7a80f62-8cd0-4821-99c3-df8a35a64274", "e7a80f62-8cd0-4821-99c3-df8a35a64274"],
    );
    assert.deepEqual(of(outputs, "answer"), [{ type: "answer", text: "all done" }]);
    const progress = of(outputs, "progress").map((p) => p.text);
    assert.match(progress[0] ?? "", /^claude session e7a80f62-.* started \(claude-opus-5-5\)$/);
    assert.ok(progress.some((p) => p.startsWith("→ Bash: echo hi > made.txt")));
    assert.match(progress.at(-1) ?? "", /^claude finished \(2 turns, \$0\.\d{4}\)$/);
    assert.equal(of(outputs, "error").length, 0);
  });

  it("reports a success whose tool calls were refused as refused, with claude's reason", () => {
    const outputs = feed(claudeParser(), `${REC}/claude-2.1.332-refused-bash.jsonl`);
    assert.deepEqual(of(outputs, "answer"), []);
    const [error] = of(outputs, "error");
    assert.equal(error?.why, "refused");
    assert.match(
      error?.text ?? "",
      /^finished with refusals: claude's permission settings refused Bash \(echo hi > made\.txt/,
    );
    assert.match(error?.text ?? "", /it said: all done$/);
    assert.ok(
      of(outputs, "progress").some((p) =>
        /^refused: Bash: This Bash command contains multiple operations/.test(p.text),
      ),
    );
    // The session is real: the conversation may go on in it.
    assert.equal(of(outputs, "session").length, 2);
  });

  it("reports a refused key as an auth failure, and each retry as progress", () => {
    const outputs = feed(claudeParser(), `${REC}/claude-2.1.332-401.jsonl`);
    assert.deepEqual(of(outputs, "answer"), []);
    assert.deepEqual(of(outputs, "error"), [
      {
        type: "error",
        why: "auth",
        text: "the vendor refused the agent's credentials (401): Invalid API key · Fix external API key",
      },
    ]);
    assert.equal(of(outputs, "progress").filter((p) => p.text.startsWith("retrying (")).length, 10);
    assert.equal(
      of(outputs, "progress").find((p) => p.text.startsWith("retrying"))?.text,
      "retrying (1/10): 401 authentication_failed",
    );
  });

  it("tells an unknown resume id apart, and never hands that id back as the session", () => {
    const outputs = feed(claudeParser(), `${REC}/claude-2.1.332-unknown-resume.jsonl`);
    assert.deepEqual(of(outputs, "session"), []);
    assert.deepEqual(of(outputs, "error"), [
      {
        type: "error",
        why: "unknown-session",
        text: "No conversation found with session ID: 11111111-2222-3333-4444-555555555555",
      },
    ]);
  });

  it("calls claude -p with stream-json and every tool allowed, resuming the session, the prompt not in argv", () => {
    const agent = { runtime: { args: ["--effort", "low"] } } as never;
    assert.deepEqual(claudeBatchArgs(agent, "s-9"), [
      "-p",
      "--output-format",
      "stream-json",
      "--verbose",
      "--permission-mode",
      "bypassPermissions",
      "--resume",
      "s-9",
      "--effort",
      "low",
    ]);
    assert.ok(!claudeBatchArgs(agent).includes("--resume"));
    const narrowed = { runtime: { args: [], allowedTools: ["Read"] } } as never;
    assert.deepEqual(claudeBatchArgs(narrowed).slice(4, 6), ["--permission-mode", "dontAsk"]);
  });
});

describe("codex exec --json", () => {
  it("turns a thread into progress, the thread id and the last agent message as the answer", () => {
    const outputs = feed(codexParser(), `${REC}/codex-0.171.0-commit.jsonl`);
    assert.deepEqual(of(outputs, "session"), [
      { type: "session", id: "01a23738-0641-78e1-91d1-e0c490d08dbf" },
    ]);
    assert.deepEqual(of(outputs, "answer"), [{ type: "answer", text: "all done codex" }]);
    const progress = of(outputs, "progress").map((p) => p.text);
    // codex's error items are warnings: the turn goes on.
    assert.match(progress[0] ?? "", /^warning: Model metadata for `nt-test-model` not found/);
    assert.match(progress[2] ?? "", /^\$ \/bin\/bash -lc 'echo hi > made2\.txt.*' \(exit 0\)$/);
    assert.equal(of(outputs, "error").length, 0);
  });

  it("takes a reconnect notice for progress when the turn then completes", () => {
    const parser = codexParser();
    const outputs = feed(parser, `${REC}/codex-0.171.0-reconnect-then-success.jsonl`);
    outputs.push(...(parser.end?.() ?? []));
    assert.equal(of(outputs, "error").length, 0);
    assert.deepEqual(of(outputs, "answer"), [{ type: "answer", text: "after drops" }]);
    assert.equal(
      of(outputs, "progress").filter((p) => p.text.startsWith("retrying: Reconnecting... ")).length,
      2,
    );
  });

  it("reports a refused key as an auth failure, once", () => {
    const parser = codexParser();
    const outputs = feed(parser, `${REC}/codex-0.171.0-401.jsonl`);
    outputs.push(...(parser.end?.() ?? []));
    assert.deepEqual(of(outputs, "answer"), []);
    const errors = of(outputs, "error");
    assert.equal(errors.length, 1);
    assert.equal(errors[0]?.why, "auth");
    assert.match(
      errors[0]?.text ?? "",
      /^unexpected status 401 Unauthorized: Incorrect API key provided/,
    );
  });

  it("understands the older {id, msg} event shape", () => {
    const parser = codexParser();
    const outputs = [
      '{"id":"0","msg":{"type":"session_configured","session_id":"s-old","model":"o4-mini"}}',
      '{"id":"1","msg":{"type":"exec_command_begin","command":["bash","-lc","ls"]}}',
      '{"id":"1","msg":{"type":"agent_message","message":"Listed."}}',
      '{"id":"1","msg":{"type":"task_complete","last_agent_message":"All done."}}',
    ].flatMap((line) => parser.line(line));
    assert.deepEqual(outputs, [
      { type: "session", id: "s-old" },
      { type: "progress", text: "$ bash -lc ls" },
      { type: "progress", text: "Listed." },
      { type: "answer", text: "All done." },
    ]);
  });

  it("calls codex exec --json with its sandbox, the prompt on stdin, resuming a thread after the options", () => {
    const agent = { runtime: { args: ["--model", "m"], sandbox: "danger-full-access" } } as never;
    assert.deepEqual(codexBatchArgs(agent, "t-1"), [
      "exec",
      "--json",
      "--sandbox",
      "danger-full-access",
      "--model",
      "m",
      "resume",
      "t-1",
      "-",
    ]);
  });
});

describe("interactive runtimes", () => {
  it("start the CLIs' own interfaces resuming the conversation, the prompt not in argv (it is typed)", () => {
    const agent = { runtime: { args: ["--model", "m"], sandbox: "workspace-write" } } as never;
    assert.deepEqual(claudeInteractiveArgs(agent, "s-1"), [
      "--permission-mode",
      "bypassPermissions",
      "--resume",
      "s-1",
      "--model",
      "m",
    ]);
    assert.deepEqual(codexInteractiveArgs(agent, "t-1", "/agents/ada/projects/x"), [
      "resume",
      "t-1",
      "--no-daemon",
      "--sandbox",
      "workspace-write",
      "-c",
      'projects."/agents/ada/projects/x".trust_level="trusted"',
      "--model",
      "m",
    ]);
    assert.equal(tmuxSessionName("ada", "my.site"), "ada-my_site");
  });
});

describe("agent protocol frames", () => {
  const parse = (frame: object | string) =>
    parseFrame(typeof frame === "string" ? frame : JSON.stringify(frame), ClientFrameSchema);

  it("accepts a task and fills its defaults", () => {
    const parsed = parse({ v: 1, type: "task", project: "site", prompt: "fix the footer" });
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.frame, {
      v: 1,
      type: "task",
      project: "site",
      prompt: "fix the footer",
      mode: "batch",
      watch: false,
    });
  });

  it("names what is wrong with a malformed frame", () => {
    const cases: [object | string, RegExp][] = [
      ["nope", /not JSON/],
      [{ v: 2, type: "status" }, /unsupported protocol version 2/],
      [{ v: 1, type: "launch" }, /malformed frame: type/],
      [{ v: 1, type: "task", project: "../etc", prompt: "x" }, /project: expected a project name/],
      [{ v: 1, type: "task", project: "site", prompt: "" }, /prompt/],
      [{ v: 1, type: "task", project: "site", prompt: "x", branch: "a..b" }, /branch/],
      [{ v: 1, type: "task", project: "site", prompt: "x", mode: "eager" }, /mode/],
      [{ v: 1, type: "cancel", id: "x; rm" }, /id/],
      [{ v: 1, type: "status", extra: true }, /malformed/],
    ];
    for (const [frame, error] of cases) {
      const parsed = parse(frame);
      assert.ok(!parsed.ok, JSON.stringify(frame));
      assert.match(parsed.error, error, JSON.stringify(frame));
    }
  });

  it("knows project and branch names", () => {
    for (const ok of ["site", "my.site", "a_b-c"]) assert.ok(isProjectName(ok), ok);
    for (const bad of ["", ".hidden", "a/b", "..", "x.git", "a b"])
      assert.ok(!isProjectName(bad), bad);
    for (const ok of ["main", "ada/fix-footer", "release/1.2"]) assert.ok(isBranchName(ok), ok);
    for (const bad of ["-x", "a..b", "a//b", "a/", "a.lock", ".a", "a/.b", "HEAD", "a b", "a~1"])
      assert.ok(!isBranchName(bad), bad);
  });

  it("cuts answers into chunks that never split a character", () => {
    const text = `${"é".repeat(5000)}${"a".repeat(7000)}`;
    const chunks = chunkText(text, 8192);
    assert.equal(chunks.join(""), text);
    for (const chunk of chunks) assert.ok(Buffer.byteLength(chunk) <= 8192);
    assert.deepEqual(clipBytes("short", 10), { text: "short", truncated: false });
    assert.deepEqual(clipBytes("ééé", 5), { text: "éé", truncated: true });
  });
});

describe("workspace naming", () => {
  it("slugs the first words of a prompt into a topic", () => {
    assert.equal(topicSlug("Fix the login form, please!"), "fix-the-login-form-please");
    assert.equal(
      topicSlug("Ünïcödé names — and more words than six here"),
      "unicode-names-and-more-words-than",
    );
    assert.equal(topicSlug("!!!"), "task");
    assert.equal(topicSlug(`${"x".repeat(80)} y`), "x".repeat(48));
  });

  it("puts the agent's name in front of a new topic branch", () => {
    assert.equal(topicBranch("ada", { prompt: "Fix the footer" }), "ada/fix-the-footer");
    assert.equal(topicBranch("ada", { prompt: "x", branch: "footer" }), "ada/footer");
    assert.equal(topicBranch("ada", { prompt: "x", branch: "ada/footer" }), "ada/footer");
  });

  it("switches off every configured filter driver, whatever its name holds", () => {
    const listed = "filter.lfs.clean\0filter.lfs.smudge\0filter.n.t=x y.process\0filter.bad\0";
    assert.deepEqual(filterNames(listed), ["lfs", "n.t=x y"]);
    assert.deepEqual(filterNames(""), []);
    const env = filterOverrides(["n.t=x y"]);
    assert.equal(env.GIT_CONFIG_COUNT, "4");
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => `${env[`GIT_CONFIG_KEY_${i}`]}=${env[`GIT_CONFIG_VALUE_${i}`]}`),
      [
        "filter.n.t=x y.smudge=",
        "filter.n.t=x y.clean=",
        "filter.n.t=x y.process=",
        "filter.n.t=x y.required=false",
      ],
    );
  });

  it("names declared projects and warns when projects are not persisted", () => {
    const town = resolveOrThrow({
      name: "t",
      domain: "test.local",
      agents: {
        ada: {
          uid: 1100,
          persist: ["notes"],
          repos: [
            "git@host:org/site.git",
            { url: "https://h/x/blog.git", path: "projects/words" },
            { url: "/srv/tools.git", path: "src/tools" },
          ],
        },
      },
    });
    const agent = town.agents[0]!;
    assert.equal(repoName("git@host:org/site.git"), "site");
    assert.deepEqual(declaredProjects(agent), ["site", "tools", "words"]);
    assert.match(
      persistenceWarning(agent, `${agent.home}/projects/site`) ?? "",
      /~\/projects is not a persisted path of ada: .*add "projects" to agents\.ada\.persist/,
    );
  });
});

describe("the agent's pure parts", () => {
  it("never touch the file system, processes or the network", () => {
    const pure = [
      "src/agent/protocol.ts",
      "src/agent/queue.ts",
      "src/agent/runtimes/command.ts",
      "src/agent/runtimes/claude.ts",
      "src/agent/runtimes/codex.ts",
      "src/agent/runtimes/types.ts",
    ];
    for (const file of pure) {
      const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
      assert.doesNotMatch(
        text,
        /from\s+["'](node:)?(fs|fs\/promises|child_process|net|http|https|dgram)["']/,
        file,
      );
    }
  });
});
