/**
 * `nuketown portal` in a real tmux, with real accounts: a test mayor runs
 * the portal in a pane of the test's own tmux server (never the user's), the
 * agent's pane is a login session through sudo and runuser, and both panes
 * are read back with capture-pane. Running it again shows the same window
 * and never starts a second runtime.
 */
import assert from "node:assert/strict";
import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { shellQuote } from "../../src/approval/wrappers.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { BIN, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-portal-ag";
const MAYOR = "nt-test-portal-my";
const AGENT_UID = 60401;
const MAYOR_UID = 60402;
const SOCKET = `nt-test-${process.pid}`;
const OUTER_SOCKET = `nt-test-${process.pid}-out`;

const hasFzf = () => run("sh", ["-c", "command -v fzf"]).code === 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("nuketown portal in tmux", { skip: !isRoot() && "needs root" }, () => {
  // Never applied: the test makes the agent's account too, as a round would.
  const testbed = testTown({
    label: "portal",
    uids: uidsOf(import.meta.filename),
    accounts: {
      [AGENT]: { uid: AGENT_UID, home: `agents/${AGENT}`, createHome: true, shell: "/bin/bash" },
      [MAYOR]: { uid: MAYOR_UID, createHome: true, shell: "/bin/bash" },
    },
  });
  testbed.defer(() => {
    for (const socket of [SOCKET, OUTER_SOCKET]) tmux(socket, "kill-server");
  });
  let root = "";
  let mayorHome = "";
  let project = "";
  let town = "";
  let tmuxDir = "";

  /** tmux as the mayor, on one of the test's servers. */
  const tmux = (socket: string, ...args: string[]) =>
    run("runuser", [
      "-u",
      MAYOR,
      "--",
      "env",
      `TMUX_TMPDIR=${tmuxDir}`,
      "tmux",
      "-L",
      socket,
      ...args,
    ]);
  const mustTmux = (socket: string, ...args: string[]) => {
    const result = tmux(socket, ...args);
    assert.equal(result.code, 0, `tmux ${args.join(" ")}: ${result.stderr}`);
    return result.stdout;
  };
  /** What a human types into a pane of the test server. */
  const type = (target: string, line: string) => {
    mustTmux(SOCKET, "send-keys", "-t", target, "-l", line);
    mustTmux(SOCKET, "send-keys", "-t", target, "Enter");
  };
  const capture = (socket: string, pane: string) =>
    mustTmux(socket, "capture-pane", "-p", "-J", "-t", pane);
  /** Poll `probe`; on time-out, say what was on `screen` (a pane) then. */
  async function waitFor<T>(
    what: string,
    probe: () => T | undefined,
    screen?: [socket: string, pane: string],
  ): Promise<T> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const value = probe();
      if (value !== undefined) return value;
      if (Date.now() > deadline) {
        const shown = screen ? `; the pane shows:\n${capture(...screen).trimEnd()}` : "";
        throw new Error(`timed out waiting for ${what}${shown}`);
      }
      await sleep(100);
    }
  }
  /** Windows named so, or tagged so by the portal (a runtime may have renamed it). */
  const windowsNamed = (socket: string, name: string) =>
    tmux(
      socket,
      "list-windows",
      "-a",
      "-F",
      "#{session_name}\t#{window_id}\t#{window_name}\t#{@nuketown-portal}",
    )
      .stdout.split("\n")
      .map((line) => line.split("\t"))
      .filter((fields) => fields[2] === name || fields[3] === name);
  /** The window's panes, top first. */
  const panes = (socket: string, window: string) =>
    mustTmux(socket, "list-panes", "-t", window, "-F", "#{pane_top}\t#{pane_id}\t#{pane_height}")
      .trim()
      .split("\n")
      .map((line) => line.split("\t"))
      .sort((a, b) => Number(a[0]) - Number(b[0]))
      .map(([, id, height]) => ({ id: id!, height: Number(height) }));
  const runtimes = () =>
    run("pgrep", ["-u", String(AGENT_UID), "-f", "^sleep 86401$"])
      .stdout.split("\n")
      .filter((l) => l !== "").length;
  const portalLine = (socket: string, extra = "") =>
    `${extra}NUKETOWN_TMUX_SOCKET=${socket} ${shellQuote(BIN)} portal ${AGENT} ${shellQuote(project)} --config ${shellQuote(town)}; echo portal-exit=$?`;
  const windowName = `${AGENT}:proj`;

  before(() => {
    root = testbed.root;
    mayorHome = testbed.accountHome(MAYOR);
    // The agent works in the mayor's checkout, so it must be able to walk there.
    chmodSync(mayorHome, 0o755);
    project = path.join(mayorHome, "dev", "proj");
    // What the picker offers: two levels below ~/dev, hidden directories skipped.
    for (const dir of ["proj", "other", "org/deep/too-deep", ".hidden/inside"]) {
      mkdirSync(path.join(mayorHome, "dev", dir), { recursive: true });
    }
    mustRun("chown", ["-R", `${MAYOR_UID}:${MAYOR_UID}`, path.join(mayorHome, "dev")]);
    // The agent's runtime dir, as every round makes it: the portal attaches to
    // the agent's own tmux session there (the one its daemon uses).
    const agentRuntime = path.join(root, "run", "agents", AGENT);
    mkdirSync(agentRuntime, { recursive: true, mode: 0o755 });
    chmodSync(agentRuntime, 0o711);
    chownSync(agentRuntime, AGENT_UID, AGENT_UID);
    tmuxDir = path.join(root, "tmux");
    mkdirSync(tmuxDir);
    chownSync(tmuxDir, MAYOR_UID, MAYOR_UID);

    // The stand-in runtime says who and where it is, then stays.
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(
      runtime,
      '#!/bin/sh\necho "agent-uid=$(id -u) agent-dir=$(pwd)"\nexec sleep 86401\n',
      { mode: 0o755 },
    );
    testbed.declare({
      domain: "test.local",
      uidRange: { min: 60400, max: 60499 },
      humans: { [MAYOR]: { approver: true } },
      mayor: MAYOR,
      projectDirs: ["~/dev"],
      agents: {
        [AGENT]: {
          uid: AGENT_UID,
          portal: { enable: true, command: runtime, layout: "70/30" },
        },
      },
    });
    town = testbed.config;

    // The mayor may become the agent, as on a host where the mayor has sudo.
    testbed.sudoers(`${MAYOR} ALL=(root) NOPASSWD: /usr/sbin/runuser -l ${AGENT} -c *\n`);

    mustTmux(
      SOCKET,
      "-f",
      "/dev/null",
      "new-session",
      "-d",
      "-s",
      "test",
      "-x",
      "160",
      "-y",
      "50",
      "-c",
      mayorHome,
    );
  });

  it("opens the agent's login session on top and the mayor's shell below, in the project", async () => {
    type("test:0", portalLine(SOCKET));
    const window = await waitFor("the portal window", () => windowsNamed(SOCKET, windowName)[0]);
    assert.equal(window[0], "test", "inside tmux: a window in the current session");
    // The window exists a moment before the portal splits it.
    const [agentPane, humanPane] = await waitFor("the split", () => {
      const found = panes(SOCKET, window[1]!);
      return found.length === 2 ? found : undefined;
    });
    assert.ok(agentPane && humanPane, "two panes");
    assert.ok(
      agentPane.height > humanPane.height * 2,
      `70/30: ${agentPane.height}/${humanPane.height}`,
    );

    const agentSays = await waitFor(
      "the runtime's greeting",
      () => capture(SOCKET, agentPane.id).match(/agent-uid=(\d+) agent-dir=(\S+)/) ?? undefined,
    );
    assert.equal(agentSays[1], String(AGENT_UID));
    assert.equal(agentSays[2], project);

    type(humanPane.id, 'echo "human-uid=$(id -u) human-dir=$(pwd)"');
    const humanSays = await waitFor(
      "the human's shell",
      () => capture(SOCKET, humanPane.id).match(/human-uid=(\d+) human-dir=(\S+)/) ?? undefined,
    );
    assert.equal(humanSays[1], String(MAYOR_UID));
    assert.equal(humanSays[2], project);
    assert.equal(runtimes(), 1);
    await waitFor(
      "the first portal to exit",
      () => /portal-exit=0/.test(capture(SOCKET, "test:0")) || undefined,
    );
  });

  it("shows the open window again instead of starting a second runtime", async () => {
    // Even when something renamed the window in between.
    const [opened] = windowsNamed(SOCKET, windowName);
    mustTmux(SOCKET, "rename-window", "-t", opened![1]!, "claude");
    type("test:0", portalLine(SOCKET));
    const output = await waitFor("the second portal to exit", () => {
      const text = capture(SOCKET, "test:0");
      return (text.match(/portal-exit=\d+/g) ?? []).length >= 2 ? text : undefined;
    });
    assert.match(output, /already open/);
    assert.deepEqual((output.match(/portal-exit=\d+/g) ?? []).slice(-1), ["portal-exit=0"], output);
    assert.equal(windowsNamed(SOCKET, windowName).length, 1);
    await sleep(500);
    assert.equal(runtimes(), 1);
  });

  it("without a project, lists the projects and opens the one picked", {
    skip: hasFzf() && "fzf is installed: the portal would use it instead of the numbered list",
  }, async () => {
    mustTmux(SOCKET, "new-window", "-d", "-t", "test:", "-n", "picker", "-c", mayorHome);
    type(
      "test:picker",
      `NUKETOWN_TMUX_SOCKET=${SOCKET} ${shellQuote(BIN)} portal ${AGENT} --config ${shellQuote(town)}; echo portal-exit=$?`,
    );
    const list = await waitFor("the numbered list", () => {
      const text = capture(SOCKET, "test:picker");
      return text.includes("project (number") ? text : undefined;
    });
    assert.match(list, / {2}1\) org\n {2}2\) org\/deep\n {2}3\) other\n {2}4\) proj\n/);
    assert.doesNotMatch(list, /hidden|too-deep/);
    type("test:picker", "4");
    const output = await waitFor("the picked portal", () => {
      const text = capture(SOCKET, "test:picker");
      return /portal-exit=\d+/.test(text.split("project (number")[1] ?? "") ? text : undefined;
    }, [SOCKET, "test:picker"]);
    assert.match(output, /already open/, "proj is the window opened before");
    assert.match(output, /portal-exit=0/);
    assert.equal(windowsNamed(SOCKET, windowName).length, 1);
    assert.equal(runtimes(), 1);
  });

  it("outside tmux starts the nuketown session, attaches, and reattaches to it", async () => {
    // A fresh window of the test server is the mayor's terminal, with $TMUX unset.
    mustTmux(SOCKET, "new-window", "-d", "-t", "test:", "-n", "outside", "-c", mayorHome);
    type("test:outside", portalLine(OUTER_SOCKET, "env -u TMUX -u TMUX_PANE "));
    const window = await waitFor(
      "the nuketown session",
      () => windowsNamed(OUTER_SOCKET, windowName)[0],
    );
    assert.equal(window[0], "nuketown");
    await waitFor("the split", () =>
      panes(OUTER_SOCKET, window[1]!).length === 2 ? true : undefined,
    );
    // The agent pane shows the agent's own tmux session, where the runtime already runs.
    const agentSession = run("tmux", [
      "-S",
      path.join(root, "run", "agents", AGENT, "tmux.sock"),
      "capture-pane",
      "-p",
      "-t",
      `${AGENT}-proj`,
    ]);
    assert.match(agentSession.stdout, new RegExp(`agent-uid=${AGENT_UID}`));
    // The terminal is attached to the nuketown session.
    await waitFor("the attached client", () =>
      mustTmux(OUTER_SOCKET, "list-clients", "-t", "nuketown").trim() !== "" ? true : undefined,
    );
    // Both portals show the agent's own tmux session for the project: still one runtime.
    assert.equal(runtimes(), 1, "the agent's session is shared by every portal");

    mustTmux(SOCKET, "new-window", "-d", "-t", "test:", "-n", "again", "-c", mayorHome);
    type("test:again", portalLine(OUTER_SOCKET, "env -u TMUX -u TMUX_PANE "));
    await waitFor("the second client", () =>
      mustTmux(OUTER_SOCKET, "list-clients", "-t", "nuketown").trim().split("\n").length === 2
        ? true
        : undefined,
    );
    assert.equal(windowsNamed(OUTER_SOCKET, windowName).length, 1);
    await sleep(500);
    assert.equal(runtimes(), 1);
  });
});
