/**
 * A reset must not run what an agent planted in its persisted clone: the
 * round fetches that clone as the agent, and git would run the repository's
 * own hooks, fsmonitor command or upload-pack. As root, with a real git.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { stringify } from "smol-toml";
import { REPO_ROOT } from "../support/fixtures.ts";
import { commitTo, type SeededRepo, seededRepo } from "../support/git-repo.ts";
import { cleanupHost, isRoot, makeTempRoot, mustRun, run } from "../support/host.ts";

const BIN = path.join(REPO_ROOT, "bin", "nuketown");
const AGENT = "nt-test-rgit";
const UID = 60741;
const APPROVERS = `nt-test-appr-rg-${process.pid}`;

function nuketown(args: string[]) {
  const result = spawnSync(BIN, args, { encoding: "utf8" });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe("a reset and the agent's persisted clone", { skip: !isRoot() && "needs root" }, () => {
  let root = "";
  let config = "";
  let clone = "";
  let marker = "";
  let repo: SeededRepo;

  before(() => {
    root = makeTempRoot("reset-git");
    mkdirSync(path.join(root, "agents"), { mode: 0o755 });
    repo = seededRepo(root, "site");
    const bare = repo.bare;
    config = path.join(root, "town.toml");
    writeFileSync(
      config,
      stringify({
        name: "nt-test-reset-git",
        domain: "test.local",
        agentsDir: path.join(root, "agents"),
        persistDir: path.join(root, "persist"),
        stateDir: path.join(root, "state"),
        runtimeDir: path.join(root, "run"),
        etcDir: path.join(root, "etc"),
        uidRange: { min: 60100, max: 60999 },
        homes: { backend: "directory" },
        approval: { group: APPROVERS },
        basePackages: ["git"],
        agents: { [AGENT]: { uid: UID, persist: ["projects"], repos: [bare] } },
      }),
    );
    const applied = nuketown(["apply", config]);
    assert.equal(applied.code, 0, applied.stdout + applied.stderr);
    clone = path.join(root, "agents", AGENT, "projects", "site");
    assert.ok(existsSync(path.join(clone, ".git")), "the round cloned the declared repo");
    marker = path.join(root, "planted-ran");
  });

  after(() => cleanupHost(root, [APPROVERS]));

  it("runs none of the clone's hooks, fsmonitor, ssh or upload-pack, and leaves no process of the agent", () => {
    // What an agent can do to its own persisted clone.
    const evil = path.join(clone, ".git", "evil.sh");
    writeFileSync(
      evil,
      `#!/bin/sh\necho "$0 $*" >> ${marker}\n(setsid sleep 4242 >/dev/null 2>&1 &)\nexec git-upload-pack "$@"\n`,
      { mode: 0o755 },
    );
    const planted: [string, string][] = [
      ["core.fsmonitor", evil],
      ["core.hooksPath", path.join(clone, ".git", "myhooks")],
      ["remote.origin.uploadpack", evil],
      ["core.sshCommand", evil],
      ["credential.helper", `!${evil}`],
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
