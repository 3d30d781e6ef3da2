/**
 * The real `claude` and `codex` CLIs (pinned, from npm) as real agents:
 * accounts, homes and secrets by `nuketown up`, tasks through `nuketown
 * talk`, commits signed with the agents' keys and checked by `nuketown
 * review`. The vendors' APIs are the loopback STAND-INS of
 * test/support/vendor-stub.ts, scripted per test; the town runs in their
 * network namespace, which has loopback only.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { runTask } from "../../src/agent/client.ts";
import { seededRepo } from "../support/git-repo.ts";
import { isRoot, mustRun, run, stopChild } from "../support/host.ts";
import { BIN, type Daemon, type TownDeclaration, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";
import {
  CLAUDE,
  CODEX,
  requireAgentClis,
  startVendorStub,
  type VendorStub,
} from "../support/vendor.ts";
import type { LoggedRequest } from "../support/vendor-stub.ts";

const MAYOR = "nt-test-climayor";
const CLAUDE_AGENT = "nt-test-claude";
const CODEX_AGENT = "nt-test-codex";
const NARROW_AGENT = "nt-test-narrow";
const PROJECT = "demo";

describe("the real claude and codex CLIs as agents", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "clis",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: { uid: 60612, makeHome: true } },
    install: true,
  });
  let root = "";
  let config = "";
  let manifest = "";
  let bare = "";
  let stub: VendorStub;
  // Run last: after up has stopped.
  town.defer(() => stub?.stop());
  let upProcess: Daemon | undefined;
  const upOutput = () => upProcess?.output() ?? "";

  const home = (agent: string) => path.join(root, "agents", agent);
  const socket = (agent: string) => path.join(root, "run", "agents", agent, "agent.sock");

  async function until(what: string, probe: () => boolean, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (probe()) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`timed out waiting for ${what}\nup:\n${upOutput().slice(-4000)}`);
  }

  /**
   * One `nuketown talk` as the mayor: each line said in turn, each answer
   * (the agent's `name> …` line) awaited before the next.
   */
  async function talk(
    agent: string,
    ...lines: string[]
  ): Promise<{ answers: string[]; output: string }> {
    const child = spawn(
      "runuser",
      ["-u", MAYOR, "--", BIN, "talk", agent, "--manifest", manifest],
      {
        stdio: ["pipe", "pipe", "pipe"],
        cwd: "/",
      },
    );
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const answers: string[] = [];
    const prompt = `${MAYOR}> `;
    const prompts = () => output.split(prompt).length - 1;
    try {
      for (const line of lines) {
        // Each line after its prompt: what talk shows of earlier conversations comes first.
        await until("talk's prompt", () => prompts() > answers.length);
        const before = output.length;
        child.stdin.write(`${line}\n`);
        const answer = new RegExp(`(?:^|\\n|> )${agent}> (.*)\\n`);
        await until(
          `${agent}'s answer to "${line}"`,
          () => answer.test(output.slice(before)),
          120_000,
        ).catch((error: Error) => {
          throw new Error(`${error.message}\ntalk:\n${output}`);
        });
        answers.push(answer.exec(output.slice(before))?.[1] ?? "");
      }
    } finally {
      child.stdin.end();
      await stopChild(child, 5000);
    }
    return { answers, output };
  }

  /** `nuketown reset` of one agent (in the stand-ins' namespace), then its daemon back up. */
  async function resetAndWait(agent: string): Promise<void> {
    const resetAt = Date.now();
    const reset = run(stub.inNetns[0]!, [
      ...stub.inNetns.slice(1),
      BIN,
      "reset",
      agent,
      "--config",
      config,
    ]);
    assert.equal(reset.code, 0, reset.stderr);
    await until(
      `${agent}'s daemon after the reset`,
      () => existsSync(socket(agent)) && lstatSync(socket(agent)).ctimeMs > resetAt,
    );
  }

  /** The requests of the main conversation (those that offered the shell tool), by vendor. */
  const mainRequests = (vendor: "anthropic" | "openai") =>
    stub.requests().filter((r) => r.vendor === vendor && r.answer.startsWith("step"));
  const said = (request: LoggedRequest | undefined) => JSON.stringify(request?.body ?? "");

  before(async () => {
    requireAgentClis();
    root = town.root;
    stub = await startVendorStub(path.join(root, "stub"));

    // Both agents push to it as themselves: objects one pushes must stay writable for the other.
    bare = seededRepo(root, PROJECT, { shared: true }).bare;

    // Secrets, age-encrypted like any of the town's: SSH signing keys and the vendor keys.
    town.ageKey(path.join("age", "keys.txt"));
    const encrypt = (name: string, plaintext: string) => town.encrypt(`${name}.age`, plaintext);
    for (const agent of [CLAUDE_AGENT, CODEX_AGENT, NARROW_AGENT]) {
      const file = path.join(root, `${agent}-ssh`);
      mustRun("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", agent, "-f", file]);
      encrypt(`${agent}-ssh`, readFileSync(file, "utf8"));
    }
    encrypt("anthropic-key", "sk-ant-test-nuketown-0123456789");
    encrypt("openai-key", "sk-openai-test-nuketown-9876543210");

    const agents: Record<string, unknown> = {};
    const declare = (name: string, uid: number, runtime: Record<string, unknown>) => {
      agents[name] = {
        uid,
        persist: ["projects"],
        repos: [bare],
        secrets: { sshKey: { file: `${name}-ssh.age` } },
        portal: { enable: true },
        runtime,
      };
    };
    const claudeRuntime = {
      kind: "claude-code",
      command: CLAUDE,
      apiKey: { file: "anthropic-key.age" },
      baseUrl: stub.url,
      model: "nt-test-model",
      // One retry, not ten: a refused key must fail the task in seconds here.
      env: { CLAUDE_CODE_MAX_RETRIES: "1" },
      timeout: 60,
    };
    declare(CLAUDE_AGENT, 60610, claudeRuntime);
    declare(CODEX_AGENT, 60611, {
      kind: "codex",
      command: CODEX,
      apiKey: { file: "openai-key.age" },
      baseUrl: `${stub.url}/v1`,
      model: "nt-test-model",
      timeout: 25,
    });
    declare(NARROW_AGENT, 60613, { ...claudeRuntime, allowedTools: ["Read"] });
    town.declare({
      basePackages: ["git"],
      secrets: { ageKeyFile: "age/keys.txt" },
      humans: { [MAYOR]: { approver: true } },
      agents: agents as TownDeclaration["agents"],
    });
    config = town.config;
    manifest = town.manifest;
    upProcess = town.up({ wrap: stub.inNetns });
    for (const name of [CLAUDE_AGENT, CODEX_AGENT, NARROW_AGENT])
      await until(`${name}'s daemon`, () => existsSync(socket(name)), 120_000);
  });

  it("renders each runtime's configuration: no key in it, the session store in persisted state", () => {
    const settings = JSON.parse(
      readFileSync(path.join(home(CLAUDE_AGENT), ".claude", "settings.json"), "utf8"),
    );
    assert.equal(settings.permissions.defaultMode, "bypassPermissions");
    assert.equal(settings.env.ANTHROPIC_BASE_URL, stub.url);
    assert.equal(settings.apiKeyHelper, `cat ${home(CLAUDE_AGENT)}/.config/nuketown/runtime-key`);
    const key = path.join(home(CLAUDE_AGENT), ".config", "nuketown", "runtime-key");
    assert.equal(readFileSync(key, "utf8"), "sk-ant-test-nuketown-0123456789");
    assert.equal(lstatSync(key).mode & 0o777, 0o600);
    assert.equal(lstatSync(key).uid, 60610);
    for (const file of [
      manifest,
      path.join(home(CLAUDE_AGENT), ".claude", "settings.json"),
      path.join(home(CODEX_AGENT), ".codex", "config.toml"),
    ])
      assert.ok(!readFileSync(file, "utf8").includes("sk-"), `${file} holds no key`);
    assert.equal(
      readlinkSync(path.join(home(CLAUDE_AGENT), ".claude", "projects")),
      path.join(
        home(CLAUDE_AGENT),
        ".local",
        "state",
        "nuketown",
        "runtimes",
        "claude",
        "projects",
      ),
    );
    assert.equal(
      readlinkSync(path.join(home(CODEX_AGENT), ".codex", "sessions")),
      path.join(home(CODEX_AGENT), ".local", "state", "nuketown", "runtimes", "codex", "sessions"),
    );
    const codex = readFileSync(path.join(home(CODEX_AGENT), ".codex", "config.toml"), "utf8");
    assert.match(codex, /sandbox_mode = "danger-full-access"/);
    assert.match(codex, /approval_policy = "never"/);
  });

  for (const [agent, vendor, label] of [
    [CLAUDE_AGENT, "anthropic", "claude"],
    [CODEX_AGENT, "openai", "codex"],
  ] as const) {
    it(`${label}: commits a signed file on its branch through its shell tool, then resumes the conversation, also after a reset`, async () => {
      const file = `${label}.txt`;
      const steps = [
        {
          shell: `echo hello > ${file} && git add ${file} && git commit -q -m 'Add ${file}' && git push -q origin HEAD`,
        },
        { text: `committed ${file}` },
      ];
      stub.script({ [vendor]: { steps } });
      const first = await talk(agent, `please add ${file}`);
      assert.equal(first.answers[0], `committed ${file}`, first.output);

      const branches = mustRun("git", [
        "-C",
        bare,
        "for-each-ref",
        "--format=%(refname:short)",
        `refs/heads/${agent}/`,
      ])
        .trim()
        .split("\n");
      assert.equal(branches.length, 1, `one branch of ${agent}: ${branches.join(", ")}`);
      const branch = branches[0]!;
      assert.equal(mustRun("git", ["-C", bare, "show", `${branch}:${file}`]), "hello\n");
      const clone = path.join(root, `review-${label}`);
      mustRun("git", ["clone", "--quiet", bare, clone]);
      const review = JSON.parse(
        mustRun(BIN, ["review", agent, "--manifest", manifest, "--repo", clone, "--json"]),
      );
      const reviewed = review.branches.find((b: { branch: string }) => b.branch === branch);
      assert.equal(reviewed?.signature.status, "G", JSON.stringify(review));

      stub.script({ [vendor]: { steps: [{ text: "still here" }] } });
      const second = await talk(agent, "what did you just do?");
      assert.equal(second.answers[0], "still here");
      assert.match(
        said(mainRequests(vendor).at(-1)),
        new RegExp(`please add ${file}`),
        "the runtime resumed the conversation",
      );

      await resetAndWait(agent);
      stub.script({ [vendor]: { steps: [{ text: "remembered" }] } });
      const third = await talk(agent, "and after the reset?");
      assert.equal(third.answers[0], "remembered", third.output);
      const last = said(mainRequests(vendor).at(-1));
      assert.match(last, new RegExp(`please add ${file}`), "the conversation survived the reset");
      assert.match(last, /what did you just do\?/);
    });
  }

  it("claude: calls the town's MCP server (nuketown mcp, registered for it) in a task", async () => {
    stub.script({
      anthropic: {
        steps: [{ tool: "mcp__nuketown__whoami", input: {} }, { text: "asked the town" }],
      },
    });
    const { answers, output } = await talk(CLAUDE_AGENT, "who are you, says the town?");
    assert.equal(answers[0], "asked the town", output);
    // The request after the tool call carries its result: what nuketown mcp answered.
    const results = mainRequests("anthropic")
      .flatMap(
        (r) => ((r.body as { messages?: unknown[] }).messages ?? []) as Record<string, unknown>[],
      )
      .flatMap((m) => (Array.isArray(m.content) ? (m.content as Record<string, unknown>[]) : []))
      .filter((b) => b.type === "tool_result");
    const last = JSON.stringify(results.at(-1) ?? {});
    assert.doesNotMatch(last, /"is_error":true/, last);
    assert.match(last, new RegExp(CLAUDE_AGENT), last);
    assert.match(last, /60610/, "whoami names the agent's uid");
  });

  it("claude: the prompt is never in the runtime's argv, where any user could read it", async () => {
    stub.script({ anthropic: { delayMs: 2000, steps: [{ text: "kept quiet" }] } });
    const secret = `the-mayors-words-${process.pid}`;
    const answer = talk(CLAUDE_AGENT, secret);
    const seen: string[] = [];
    const deadline = Date.now() + 10_000;
    let sawClaude = false;
    while (Date.now() < deadline && !sawClaude) {
      for (const line of run("ps", ["-u", "60610", "-o", "args="]).stdout.split("\n")) {
        if (line.includes("agent-clis")) sawClaude = true;
        if (line.includes(secret)) seen.push(line);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(sawClaude, "claude ran while the stand-in held its answer");
    assert.equal((await answer).answers[0], "kept quiet");
    assert.deepEqual(seen, []);
  });

  it("claude: a tool its narrowed permissions refuse fails the task with the refusal", async () => {
    stub.script({
      anthropic: { steps: [{ shell: "echo sneaky > sneaky.txt" }, { text: "done anyway" }] },
    });
    const { answers } = await talk(NARROW_AGENT, "write a file");
    assert.match(
      answers[0] ?? "",
      /^\(failed: finished with refusals: claude's permission settings refused Bash \(echo sneaky > sneaky\.txt\)/,
    );
    assert.ok(!existsSync(path.join(home(NARROW_AGENT), "projects", PROJECT, "sneaky.txt")));
  });

  for (const [agent, vendor, label] of [
    [CLAUDE_AGENT, "anthropic", "claude"],
    [CODEX_AGENT, "openai", "codex"],
  ] as const) {
    it(`${label}: a key the vendor refuses fails the task with the auth reason`, async () => {
      stub.script({ [vendor]: { status: 401, steps: [] } });
      const { answers } = await talk(agent, "anything");
      assert.match(answers[0] ?? "", /^\(failed: .*401/);
      assert.match(
        answers[0] ?? "",
        label === "claude" ? /credentials \(401\): Invalid API key/ : /Incorrect API key provided/,
      );
    });
  }

  for (const [agent, vendor, label] of [
    [CLAUDE_AGENT, "anthropic", "claude"],
    [CODEX_AGENT, "openai", "codex"],
  ] as const) {
    it(`${label}: a stored session it no longer knows is dropped and the task runs once in a new one`, async () => {
      const sessions = path.join(home(agent), ".local", "state", "nuketown", "sessions.json");
      const stored = JSON.parse(readFileSync(sessions, "utf8"));
      // Well-formed for each CLI, known to neither.
      const unknown = "01a23738-0000-7000-8000-000000000000";
      for (const entry of Object.values(stored.sessions) as { id: string }[]) entry.id = unknown;
      writeFileSync(sessions, JSON.stringify(stored));
      stub.script({ [vendor]: { steps: [{ text: "fresh start" }] } });
      const { answers, output } = await talk(agent, "hello again");
      assert.equal(answers[0], "fresh start", output);
      assert.ok(!readFileSync(sessions, "utf8").includes(unknown), "the unknown id is forgotten");
    });
  }

  it("codex: a reconnect notice is progress, and the task that then succeeds succeeds", async () => {
    stub.script({ openai: { failFirst: 2, failWith: "drop", steps: [{ text: "after drops" }] } });
    const { answers, output } = await talk(CODEX_AGENT, "try hard");
    assert.equal(answers[0], "after drops", output);
  });

  it("codex: a tool command that outlives the task's timeout fails the task, and nothing of it is left", async () => {
    // codex hands back a command still running after a while (and it goes on in its own
    // session): the model asks for it again and again, until the task's timeout.
    stub.script({ openai: { steps: [{ shell: "sleep 4242" }] } });
    const { answers } = await talk(CODEX_AGENT, "wait a while");
    assert.match(answers[0] ?? "", /^\(failed: the runtime ran longer than its timeout \(25 s\)/);
    const left = run("pgrep", ["-u", "60611", "-f", "sleep 4242"]);
    assert.equal(left.code, 1, `left behind: ${left.stdout}`);
  });

  it("the portal opens claude and codex at their prompt on a fresh home, and leaves nothing behind", async () => {
    const server = path.join(root, "portal.sock");
    const tmux = (...args: string[]) =>
      run(stub.inNetns[0]!, [...stub.inNetns.slice(1), "tmux", "-S", server, ...args]);
    const started = tmux("new-session", "-d", "-s", "main", "-x", "200", "-y", "50");
    assert.equal(started.code, 0, started.stderr);
    // A directory of the mayor's that no rendered configuration trusts.
    const work = path.join(root, "work", "site");
    mkdirSync(work, { recursive: true, mode: 0o755 });
    mustRun("chmod", ["755", path.dirname(work)]);
    try {
      for (const [agent, ready] of [
        [CLAUDE_AGENT, /bypass permissions on/],
        [CODEX_AGENT, /Ask Codex to do anything/],
      ] as const) {
        await resetAndWait(agent);
        const line = `NUKETOWN_TMUX_SOCKET=${server} ${BIN} portal ${agent} ${work} --manifest ${manifest}`;
        assert.equal(tmux("send-keys", "-t", "main", "-l", line).code, 0);
        tmux("send-keys", "-t", "main", "Enter");
        // The portal's window, found by the tag it sets (its name has a colon in it).
        const windowId = () =>
          tmux("list-windows", "-a", "-F", "#{window_id}\t#{@nuketown-portal}")
            .stdout.split("\n")
            .find((l) => l.endsWith(`\t${agent}:site`))
            ?.split("\t")[0];
        let screen = "";
        await until(
          `${agent}'s runtime at its prompt in the portal`,
          () => {
            const id = windowId();
            screen = id ? tmux("capture-pane", "-p", "-t", `${id}.0`).stdout : "";
            return ready.test(screen);
          },
          60_000,
        ).catch((error: Error) => {
          const mayor = tmux("capture-pane", "-p", "-t", "main:0").stdout;
          throw new Error(`${error.message}\nthe pane:\n${screen}\nthe mayor's pane:\n${mayor}`);
        });
        assert.doesNotMatch(
          screen,
          /trust this folder|Do you want to use this API key|Unable to connect/i,
        );
        // Closing the window, then the agent's own session for the project (shared with its
        // daemon's interactive tasks), ends the runtime and everything it started.
        assert.equal(tmux("kill-window", "-t", windowId() ?? "none").code, 0);
        const uid = agent === CLAUDE_AGENT ? "60610" : "60611";
        run("runuser", [
          "-u",
          agent,
          "--",
          "tmux",
          "-S",
          path.join(root, "run", "agents", agent, "tmux.sock"),
          "kill-session",
          "-t",
          `=${agent}-site`,
        ]);
        await until(
          `no ${agent} runtime process left`,
          () =>
            run("pgrep", ["-u", uid, "-f", "agent-clis|\\.codex/packages|codex app-server"])
              .code === 1,
          15_000,
        ).catch((error: Error) => {
          throw new Error(`${error.message}: ${run("ps", ["-u", uid, "-o", "pid,args"]).stdout}`);
        });
      }
    } finally {
      tmux("kill-server");
    }
  });

  for (const [agent, vendor, quit] of [
    [CLAUDE_AGENT, "anthropic", ["/exit", "Enter"]],
    [CODEX_AGENT, "openai", ["C-c", "C-c"]],
  ] as const) {
    it(`${agent}: an interactive task opens the runtime in the agent's tmux session with the same configuration, and ends with it`, async () => {
      stub.script({ [vendor]: { steps: [{ text: "interactive hello" }] } });
      const tmuxSocket = path.join(root, "run", "agents", agent, "tmux.sock");
      const asAgent = (...args: string[]) =>
        run("runuser", ["-u", agent, "--", "tmux", "-S", tmuxSocket, ...args]);
      const prompt = `say hello, mark ${agent}-typed-prompt`;
      const outcome = runTask(socket(agent), { project: PROJECT, prompt, mode: "interactive" });
      // The task's window: the runtime works on the prompt at once, no dialog in its way.
      let screen = "";
      await until(
        `${agent}'s answer in its task window`,
        () => {
          const windows = asAgent(
            "list-windows",
            "-t",
            `=${agent}-${PROJECT}`,
            "-F",
            "#{window_id} #{window_name}",
          ).stdout;
          const id = windows
            .split("\n")
            .find((l) => l.includes(" task-"))
            ?.split(" ")[0];
          screen = id ? asAgent("capture-pane", "-p", "-t", id).stdout : "";
          return screen.includes("interactive hello");
        },
        60_000,
      ).catch((error: Error) => {
        throw new Error(`${error.message}\n${screen}`);
      });
      assert.doesNotMatch(screen, /trust this folder|Do you want to use this API key/i);
      // The prompt was typed into the runtime, not given in argv (readable in /proc by all).
      assert.equal(run("pgrep", ["-f", `${agent}-typed-prompt`]).code, 1, "prompt not in argv");
      assert.ok(
        stub.requests().some((r) => said(r).includes(`${agent}-typed-prompt`)),
        "the runtime sent the typed prompt to the API",
      );
      const windows = asAgent(
        "list-windows",
        "-t",
        `=${agent}-${PROJECT}`,
        "-F",
        "#{window_id} #{window_name}",
      ).stdout;
      const id =
        windows
          .split("\n")
          .find((l) => l.includes(" task-"))
          ?.split(" ")[0] ?? "";
      for (const key of quit) {
        asAgent("send-keys", "-t", id, ...(key.startsWith("/") ? ["-l", key] : [key]));
        await new Promise((r) => setTimeout(r, 500));
      }
      const ended = await outcome;
      assert.equal(ended.state, "finished", JSON.stringify(ended.end));
      const uid = agent === CLAUDE_AGENT ? "60610" : "60611";
      assert.equal(
        run("pgrep", ["-u", uid, "-f", "agent-clis|\\.codex/packages"]).code,
        1,
        "no runtime process left",
      );
    });
  }
});
