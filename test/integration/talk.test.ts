/**
 * `nuketown talk` end to end, in a real pseudo-terminal (tmux): the town is
 * brought up with `nuketown up`, the mayor types a line, the agent's
 * `command` runtime answers through the agent daemon.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { stringify } from "smol-toml";
import { REPO_ROOT } from "../support/fixtures.ts";
import { cleanupHost, isRoot, makeTempRoot, mustRun, run, stopChild } from "../support/host.ts";
import { installForTest } from "../support/install.ts";

const BIN = path.join(REPO_ROOT, "bin", "nuketown");
const AGENT = "nt-test-talker";
const MAYOR = "nt-test-talkmayor";
const APPROVERS = `nt-test-tkap-${process.pid}`;
const TMUX = `nt-test-talk-${process.pid}`;

describe("nuketown talk", { skip: !isRoot() && "needs root" }, () => {
  let root = "";
  let manifest = "";
  let upProcess: ChildProcess | undefined;
  let upOutput = "";
  const tmux = (...args: string[]) =>
    run("runuser", ["-u", MAYOR, "--", "tmux", "-L", TMUX, ...args]);
  const screen = () => tmux("capture-pane", "-p", "-t", "talk").stdout;

  async function until(what: string, probe: () => boolean, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (probe()) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`timed out waiting for ${what}\nscreen:\n${screen()}\nup:\n${upOutput}`);
  }

  before(async () => {
    root = makeTempRoot("talk");
    const mayorHome = path.join(root, "mayor");
    mkdirSync(mayorHome);
    mustRun("useradd", ["--uid", "60602", "--user-group", "--home-dir", mayorHome, MAYOR]);
    mustRun("chown", [`${MAYOR}:`, mayorHome]);
    mustRun("git", [
      "init",
      "--quiet",
      "--bare",
      "--initial-branch=main",
      path.join(root, "demo.git"),
    ]);
    const seed = path.join(root, "seed");
    mustRun("git", ["init", "--quiet", "--initial-branch=main", seed]);
    writeFileSync(path.join(seed, "README"), "demo\n");
    mustRun("git", [
      "-C",
      seed,
      "-c",
      "user.name=t",
      "-c",
      "user.email=t@t",
      "commit",
      "--quiet",
      "-m",
      "init",
      "--allow-empty",
    ]);
    mustRun("git", ["-C", seed, "push", "--quiet", path.join(root, "demo.git"), "main"]);
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(
      runtime,
      [
        "#!/bin/sh",
        "# Stand-in runtime (the command kind): the task as JSON on stdin, JSON lines out.",
        'prompt=$(sed -n \'s/.*"prompt":"\\([^"]*\\)".*/\\1/p\')',
        'echo "{\\"type\\":\\"progress\\",\\"text\\":\\"thinking\\"}"',
        'case "$prompt" in *slow*) sleep 60 ;; esac',
        'case "$prompt" in *escape*) echo \'{"type":"answer","text":"bell\\u0007 clear\\u001b[2J done"}\'; exit 0 ;; esac',
        'printf \'{"type":"answer","text":"you said: %s (uid %s)"}\\n\' "$prompt" "$(id -u)"',
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const config = path.join(root, "town.toml");
    writeFileSync(
      config,
      stringify({
        name: "nt-test-talk",
        agentsDir: path.join(root, "agents"),
        persistDir: path.join(root, "persist"),
        stateDir: path.join(root, "state"),
        runtimeDir: path.join(root, "run"),
        etcDir: path.join(root, "etc"),
        install: { prefix: installForTest(root) },
        uidRange: { min: 60100, max: 60999 },
        homes: { backend: "directory" },
        approval: { group: APPROVERS },
        humans: { [MAYOR]: { approver: true } },
        agents: {
          [AGENT]: {
            uid: 60601,
            persist: ["projects"],
            repos: [path.join(root, "demo.git")],
            runtime: { kind: "command", command: runtime },
          },
        },
      }),
    );
    manifest = path.join(root, "etc", "nuketown", "town.json");
    upProcess = spawn(BIN, ["up", config], { stdio: ["ignore", "pipe", "pipe"] });
    upProcess.stdout?.on("data", (d) => (upOutput += d));
    upProcess.stderr?.on("data", (d) => (upOutput += d));
    const socket = path.join(root, "run", "agents", AGENT, "agent.sock");
    await until("the agent daemon's socket", () => existsSync(socket), 60_000);
  });

  after(async () => {
    tmux("kill-server");
    await stopChild(upProcess);
    cleanupHost(root, [MAYOR, APPROVERS]);
  });

  it("answers a line typed by the mayor in a terminal, and keeps the conversation", async () => {
    const started = tmux(
      "new-session",
      "-d",
      "-s",
      "talk",
      "-x",
      "160",
      "-y",
      "40",
      `${BIN} talk ${AGENT} --manifest ${manifest}`,
    );
    assert.equal(started.code, 0, started.stderr);
    await until("the talk prompt", () => screen().includes(`${MAYOR}>`));
    assert.match(screen(), new RegExp(`talking to ${AGENT} \\(assistant\\) about demo`));
    tmux("send-keys", "-t", "talk", "hello there", "Enter");
    await until("the answer", () =>
      screen().includes(`${AGENT}> you said: hello there (uid 60601)`),
    );
    assert.match(screen(), /… thinking/);
    tmux("send-keys", "-t", "talk", "/quit", "Enter");
    await until("talk to exit", () => tmux("has-session", "-t", "talk").code !== 0, 10_000);

    // Next time, the conversation so far is shown.
    tmux(
      "new-session",
      "-d",
      "-s",
      "talk",
      "-x",
      "160",
      "-y",
      "40",
      `${BIN} talk ${AGENT} --manifest ${manifest}`,
    );
    await until("the earlier lines", () =>
      screen().includes(`(earlier) ${AGENT}> you said: hello there`),
    );
  });

  it("cancels with /cancel and Ctrl-C, goes on after a refused request, shows control characters escaped", async () => {
    const historyFile = path.join(
      root,
      "mayor",
      ".local",
      "state",
      "nuketown",
      "talk",
      `${AGENT}.jsonl`,
    );
    appendFileSync(historyFile, "{ not json\n");
    tmux(
      "new-session",
      "-d",
      "-s",
      "talk",
      "-x",
      "160",
      "-y",
      "40",
      `${BIN} talk ${AGENT} --manifest ${manifest}`,
    );
    await until("the talk prompt", () => screen().includes(`${MAYOR}>`));
    const count = (text: string) => screen().split(text).length - 1;
    tmux("send-keys", "-t", "talk", "slow one", "Enter");
    await until("the task to run", () => count("… thinking") >= 1);
    tmux("send-keys", "-t", "talk", "/cancel", "Enter");
    await until("/cancel to cancel it", () => count(`${AGENT}> (cancelled`) >= 1, 15_000);
    tmux("send-keys", "-t", "talk", "slow two", "Enter");
    await until("the second task to run", () => count("… thinking") >= 2);
    tmux("send-keys", "-t", "talk", "C-c");
    await until("Ctrl-C to cancel it", () => count(`${AGENT}> (cancelled`) >= 2, 15_000);
    assert.equal(tmux("has-session", "-t", "talk").code, 0, "talk goes on after Ctrl-C");
    tmux("send-keys", "-t", "talk", "/project ../nope", "Enter");
    tmux("send-keys", "-t", "talk", "hello", "Enter");
    await until("the refusal", () => screen().includes("error: "));
    tmux("send-keys", "-t", "talk", "/project demo", "Enter");
    tmux("send-keys", "-t", "talk", "escape please", "Enter");
    await until("the escaped answer", () => screen().includes("bell\\x07 clear\\x1b[2J done"));
    tmux("send-keys", "-t", "talk", "/quit", "Enter");
    await until("talk to exit", () => tmux("has-session", "-t", "talk").code !== 0, 10_000);
  });
});
