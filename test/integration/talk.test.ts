/**
 * `nuketown talk` end to end, in a real pseudo-terminal (tmux): the town is
 * brought up with `nuketown up`, the mayor types a line, the agent's
 * `command` runtime answers through the agent daemon.
 */
import assert from "node:assert/strict";
import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { isRoot, mustRun, run } from "../support/host.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-talker";
const MAYOR = "nt-test-talkmayor";
const TMUX = `nt-test-talk-${process.pid}`;

describe("nuketown talk", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "talk",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: { uid: 60602, makeHome: true } },
    install: true,
  });
  let root = "";
  let manifest = "";
  let upProcess: Daemon | undefined;
  town.defer(() => tmux("kill-server"));
  const tmux = (...args: string[]) =>
    run("runuser", ["-u", MAYOR, "--", "tmux", "-L", TMUX, ...args]);
  const screen = () => tmux("capture-pane", "-p", "-t", "talk").stdout;

  async function until(what: string, probe: () => boolean, ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (probe()) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(
      `timed out waiting for ${what}\nscreen:\n${screen()}\nup:\n${upProcess?.output()}`,
    );
  }

  before(async () => {
    root = town.root;
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
    town.declare({
      humans: { [MAYOR]: { approver: true } },
      agents: {
        [AGENT]: {
          uid: 60601,
          persist: ["projects"],
          repos: [path.join(root, "demo.git")],
          runtime: { kind: "command", command: runtime },
        },
      },
    });
    manifest = town.manifest;
    upProcess = town.up();
    await until("the agent daemon's socket", () => existsSync(town.socket(AGENT)), 60_000);
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
      town.accountHome(MAYOR),
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
