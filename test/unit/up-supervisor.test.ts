/**
 * `nuketown up`'s supervisor restarts a daemon that could not even start,
 * and survives a launch that throws; an agent daemon's PATH keeps the sudo
 * shim first whatever the runtime declares.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { agentServiceEnv } from "../../src/commands/up.ts";
import type { ResolvedTown } from "../../src/town/types.ts";
import { Supervisor } from "../../src/up/supervisor.ts";
import { exampleTown } from "../support/fixtures.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "nt-supervisor-"));
after(() => rmSync(dir, { recursive: true, force: true }));

const waitFor = async (check: () => boolean) => {
  for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  return check();
};

describe("the supervisor", () => {
  it("restarts a daemon whose spawn fails without an exit (a missing cwd)", async () => {
    const events: string[] = [];
    const supervisor = new Supervisor(
      [
        {
          name: "lost",
          command: "/bin/true",
          args: [],
          cwd: path.join(dir, "no-such-dir"),
          log: path.join(dir, "lost.log"),
        },
      ],
      { onEvent: (e) => events.push(e), minDelayMs: 10, maxDelayMs: 20 },
    );
    supervisor.start();
    try {
      assert.ok(
        await waitFor(() => (supervisor.state()[0]?.restarts ?? 0) >= 2),
        events.join("\n"),
      );
      assert.match(supervisor.state()[0]?.lastExit ?? "", /ENOENT/);
    } finally {
      await supervisor.stop();
    }
  });

  it("records why a daemon gave up: its exit code and the last line it logged", async () => {
    const supervisor = new Supervisor(
      [
        {
          name: "deaf",
          command: "/bin/sh",
          args: ["-c", "echo starting; echo 'fatal: the token was refused' >&2; exit 5"],
          log: path.join(dir, "deaf.log"),
        },
      ],
      { minDelayMs: 10_000, maxDelayMs: 10_000 },
    );
    supervisor.start();
    try {
      assert.ok(await waitFor(() => supervisor.state()[0]?.lastExit !== undefined));
      assert.equal(supervisor.state()[0]?.lastExit, "exited 5: fatal: the token was refused");
    } finally {
      await supervisor.stop();
    }
  });

  it("survives a launch that throws (an unwritable log) and keeps retrying", async () => {
    const events: string[] = [];
    const supervisor = new Supervisor(
      [{ name: "nolog", command: "/bin/true", args: [], log: path.join(dir, "none", "x.log") }],
      { onEvent: (e) => events.push(e), minDelayMs: 10, maxDelayMs: 20 },
    );
    supervisor.start();
    try {
      assert.ok(
        await waitFor(() => (supervisor.state()[0]?.restarts ?? 0) >= 2),
        events.join("\n"),
      );
      assert.match(events.join("\n"), /nolog: could not start: .*ENOENT/);
    } finally {
      await supervisor.stop();
    }
  });
});

describe("an agent daemon's environment under up", () => {
  it("puts the sudo shim first, also before a declared PATH", () => {
    const town = exampleTown();
    const agent = town.agents.find((a) => a.sudo.enable)!;
    assert.ok(agent, "the example town has an agent with sudo");
    const declared: ResolvedTown = {
      ...town,
      agents: town.agents.map((a) =>
        a === agent ? { ...a, runtime: { ...a.runtime, env: { PATH: "/opt/tools/bin" } } } : a,
      ),
    };
    const withPath = declared.agents.find((a) => a.name === agent.name)!;
    assert.equal(
      agentServiceEnv(declared, withPath).PATH,
      `${town.install.shimDir}:/opt/tools/bin`,
    );
    assert.equal(
      agentServiceEnv(town, agent).PATH,
      `${town.install.shimDir}:/usr/local/bin:/usr/bin:/bin`,
    );
  });
});
