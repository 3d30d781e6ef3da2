/**
 * A reset must not run what an agent planted in its persisted clone: the
 * round fetches that clone as the agent, and git would run the repository's
 * own hooks, fsmonitor command, upload-pack or alternate refs command. As
 * root, with a real git.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { commitTo, type SeededRepo, seededRepo } from "../support/git-repo.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-rgit";
const UID = 60741;

describe("a reset and the agent's persisted clone", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({ label: "reset-git", uids: uidsOf(import.meta.filename) });
  const nuketown = (args: string[]) => town.nuketown(args);
  let config = "";
  let clone = "";
  let marker = "";
  let repo: SeededRepo;

  before(() => {
    const root = town.root;
    mkdirSync(path.join(root, "agents"), { mode: 0o755 });
    repo = seededRepo(root, "site");
    const bare = repo.bare;
    town.declare({
      domain: "test.local",
      basePackages: ["git"],
      agents: { [AGENT]: { uid: UID, persist: ["projects"], repos: [bare] } },
    });
    config = town.config;
    const applied = nuketown(["apply", config]);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    clone = path.join(root, "agents", AGENT, "projects", "site");
    assert.ok(existsSync(path.join(clone, ".git")), "the round cloned the declared repo");
    marker = path.join(root, "planted-ran");
  });

  it("runs none of the clone's hooks, fsmonitor, ssh, upload-pack or alternate refs command, and leaves no process of the agent", {
    timeout: 300_000,
  }, () => {
    // What an agent can do to its own persisted clone.
    const evil = path.join(clone, ".git", "evil.sh");
    writeFileSync(
      evil,
      `#!/bin/sh\necho "$0 $*" >> ${marker}\n(setsid sleep 4242 >/dev/null 2>&1 &)\nexec git-upload-pack "$@"\n`,
      { mode: 0o755 },
    );
    const alternate = path.join(clone, ".git", "evil-alt.sh");
    writeFileSync(alternate, `#!/bin/sh\necho "$0 $*" >> ${marker}\nsleep 4243 &\n`, {
      mode: 0o755,
    });
    mustRun("git", ["init", "--quiet", "--bare", path.join(clone, ".git", "alt.git")]);
    writeFileSync(
      path.join(clone, ".git", "objects", "info", "alternates"),
      `${path.join(clone, ".git", "alt.git", "objects")}\n`,
    );
    const planted: [string, string][] = [
      ["core.fsmonitor", evil],
      ["core.hooksPath", path.join(clone, ".git", "myhooks")],
      ["remote.origin.uploadpack", evil],
      ["core.sshCommand", evil],
      ["credential.helper", `!${evil}`],
      // Listed refs of an alternate the clone names (inside its own .git): a process that keeps
      // git's pipes open would hang the reset, if it ran.
      ["core.alternateRefsCommand", alternate],
    ];
    for (const [key, value] of planted)
      run("runuser", ["-u", AGENT, "--", "git", "-C", clone, "config", key, value]);
    mkdirSync(path.join(clone, ".git", "myhooks"), { recursive: true });
    for (const hook of [
      "post-checkout",
      "post-merge",
      "reference-transaction",
      "fsmonitor-watchman",
    ])
      writeFileSync(path.join(clone, ".git", "myhooks", hook), `#!/bin/sh\nexec ${evil}\n`, {
        mode: 0o755,
      });
    mustRun("chown", ["-R", `${UID}:${UID}`, path.join(clone, ".git")]);
    // A new commit upstream, so the round's fetch has something to do.
    commitTo(repo, "NEWS", "news\n", "news");

    const reset = nuketown(["reset", AGENT, "--config", config]);
    assert.equal(reset.code, 0, reset.stdout + reset.stderr);
    assert.ok(!existsSync(marker), "nothing the agent planted ran during the reset");
    assert.equal(
      run("pgrep", ["-u", String(UID)]).code,
      1,
      "no process of the agent outlives the round",
    );
    const fetched = run("runuser", [
      "-u",
      AGENT,
      "--",
      "git",
      "-C",
      clone,
      "log",
      "--oneline",
      "origin/main",
    ]);
    assert.match(fetched.stdout, /news/, "the declared repo was fetched all the same");
  });
});
