/**
 * `nuketown review` against real git: a bare origin, agents' clones that
 * push signed (and unsigned, and wrongly signed) `<agent>/*` branches, and
 * the mayor's clone where review fetches them and checks every signature
 * against the agents' keys only.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { ReviewedBranch } from "../../src/commands/review.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

const BIN = path.join(REPO_ROOT, "bin", "nuketown");

interface Review {
  repo: string;
  fetched: { remote: string; agents: string[]; ok: boolean }[];
  branches: ReviewedBranch[];
  warnings: string[];
}

describe("nuketown review", () => {
  let dir = "";
  let env: NodeJS.ProcessEnv = {};
  let town = "";
  let mayor = "";

  const git = (cwd: string, ...args: string[]) => {
    const result = spawnSync("git", args, { cwd, env, encoding: "utf8" });
    if (result.status !== 0)
      throw new Error(`git ${args.join(" ")} in ${cwd}: ${result.stderr}${result.stdout}`);
    return result.stdout;
  };
  const nuketown = (...args: string[]) => {
    const result = spawnSync(BIN, args, { cwd: mayor, env, encoding: "utf8" });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
  };
  const reviewJson = (...args: string[]): Review => {
    const result = nuketown("review", "--config", town, "--json", ...args);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout) as Review;
  };
  const branch = (review: Review, name: string) => {
    const found = review.branches.find((b) => b.branch === name);
    assert.ok(found, `${name} not in ${review.branches.map((b) => b.branch).join(", ")}`);
    return found;
  };

  /** A clone that commits as `email`, signing with `key` (or not at all). */
  function agentClone(name: string, email: string): string {
    const clone = path.join(dir, "clones", name);
    git(dir, "clone", "--quiet", path.join(dir, "origin.git"), clone);
    git(clone, "config", "user.name", name[0]!.toUpperCase() + name.slice(1));
    git(clone, "config", "user.email", email);
    git(clone, "config", "gpg.format", "ssh");
    return clone;
  }
  function commitOn(
    clone: string,
    branchName: string,
    files: Record<string, string>,
    subject: string,
    key?: string,
  ) {
    git(clone, "checkout", "--quiet", "-B", branchName, "origin/main");
    for (const [file, text] of Object.entries(files)) writeFileSync(path.join(clone, file), text);
    git(clone, "add", ...Object.keys(files));
    if (key) git(clone, "-c", `user.signingkey=${key}`, "commit", "--quiet", "-S", "-m", subject);
    else git(clone, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", subject);
  }
  const keygen = (name: string) => {
    const file = path.join(dir, "keys", name);
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", file]);
    return file;
  };

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "nuketown-review-"));
    mkdirSync(path.join(dir, "home"));
    mkdirSync(path.join(dir, "keys"));
    env = {
      PATH: process.env.PATH,
      HOME: path.join(dir, "home"),
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_TERMINAL_PROMPT: "0",
      LC_ALL: "C",
    };
    const adaKey = keygen("ada");
    const voxKey = keygen("vox");
    keygen("stranger");

    // ada's key is found in her home; vox's is declared in the town.
    const adaHome = path.join(dir, "agents", "ada");
    mkdirSync(path.join(adaHome, ".ssh"), { recursive: true });
    writeFileSync(
      path.join(adaHome, ".ssh", "id_ed25519.pub"),
      readFileSync(`${adaKey}.pub`, "utf8"),
    );
    town = path.join(dir, "town.json");
    writeFileSync(
      town,
      JSON.stringify({
        name: "reviewtown",
        domain: "test.local",
        agentsDir: path.join(dir, "agents"),
        persistDir: path.join(dir, "persist"),
        stateDir: path.join(dir, "state"),
        runtimeDir: path.join(dir, "run"),
        etcDir: path.join(dir, "etc"),
        uidRange: { min: 60400, max: 60499 },
        homes: { backend: "directory" },
        humans: { mayor: { approver: true } },
        agents: {
          ada: {
            uid: 60410,
            git: { signing: { format: "ssh", key: `${adaHome}/.ssh/id_ed25519.pub` } },
          },
          vox: {
            uid: 60411,
            git: {
              signing: {
                format: "ssh",
                key: `${dir}/agents/vox/.ssh/id_ed25519.pub`,
                publicKey: readFileSync(`${voxKey}.pub`, "utf8").trim(),
              },
            },
          },
        },
      }),
    );

    git(dir, "init", "--quiet", "--bare", "--initial-branch=main", "origin.git");
    mayor = path.join(dir, "mayor");
    git(dir, "clone", "--quiet", path.join(dir, "origin.git"), mayor);
    git(mayor, "config", "user.name", "Mayor");
    git(mayor, "config", "user.email", "mayor@test.local");
    git(mayor, "checkout", "--quiet", "-b", "main");
    writeFileSync(path.join(mayor, "README.md"), "# project\n");
    git(mayor, "add", "README.md");
    git(mayor, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", "Start");
    git(mayor, "push", "--quiet", "origin", "main");
    git(mayor, "remote", "set-head", "origin", "main");

    const ada = agentClone("ada", "ada@test.local");
    commitOn(
      ada,
      "ada/topic",
      { "feature.txt": "one\ntwo\nthree\n", "README.md": "# project\n\nwith a feature\n" },
      "Add the feature",
      adaKey,
    );
    commitOn(ada, "ada/unsigned", { "notes.txt": "unsigned\n" }, "Unsigned work");
    commitOn(
      ada,
      "ada/stranger",
      { "odd.txt": "who signed this?\n" },
      "Signed by a stranger",
      path.join(dir, "keys", "stranger"),
    );
    commitOn(ada, "ada/impostor", { "vox.txt": "vox's key\n" }, "Signed with vox's key", voxKey);
    commitOn(ada, "ada/gone", { "gone.txt": "soon deleted\n" }, "Short-lived", adaKey);
    git(
      ada,
      "push",
      "--quiet",
      "origin",
      "ada/topic",
      "ada/unsigned",
      "ada/stranger",
      "ada/impostor",
      "ada/gone",
    );

    // vox's branch is not pushed to origin: the mayor has a remote named vox on vox's clone.
    const vox = agentClone("vox", "vox@test.local");
    commitOn(vox, "vox/local", { "vox.md": "from vox's own clone\n" }, "Vox at home", voxKey);
    git(mayor, "remote", "add", "vox", vox);
  });

  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("fetches the agents' branches and shows a good signature and the diffstat", () => {
    const review = reviewJson();
    assert.deepEqual(review.warnings, []);
    const topic = branch(review, "ada/topic");
    assert.equal(topic.agent, "ada");
    assert.equal(topic.remote, "origin");
    assert.equal(topic.ref, "refs/remotes/origin/ada/topic");
    assert.equal(topic.base, "origin/main");
    assert.equal(topic.subject, "Add the feature");
    assert.deepEqual(topic.author, { name: "Ada", email: "ada@test.local" });
    assert.equal(topic.signature.status, "G");
    assert.equal(topic.signature.signer, "ada@test.local");
    assert.equal(topic.signature.otherAgent, false);
    assert.deepEqual(topic.commitSignatures, { G: 1 });
    assert.equal(topic.notSignedByAgent, 0);
    assert.equal(topic.ahead, 1);
    assert.equal(topic.behind, 0);
    assert.equal(topic.diffstat.files, 2);
    assert.equal(topic.diffstat.insertions, 5);
    assert.equal(topic.diffstat.deletions, 0);
    assert.match(topic.diffstat.text, /feature\.txt \| 3 \+\+\+/);
    assert.match(topic.diffstat.text, /2 files changed, 5 insertions\(\+\)/);
  });

  it("shows an unsigned branch as N", () => {
    const unsigned = branch(reviewJson(), "ada/unsigned");
    assert.equal(unsigned.signature.status, "N");
    assert.deepEqual(unsigned.commitSignatures, { N: 1 });
  });

  it("does not trust a key that is not the agent's", () => {
    const review = reviewJson();
    const stranger = branch(review, "ada/stranger");
    assert.ok(["U", "E", "B"].includes(stranger.signature.status), stranger.signature.status);
    assert.notEqual(stranger.signature.signer, "ada@test.local");
    // Another agent's key verifies, but as that agent: flagged on ada's branch.
    const impostor = branch(review, "ada/impostor");
    assert.equal(impostor.signature.status, "G");
    assert.equal(impostor.signature.signer, "vox@test.local");
    assert.equal(impostor.signature.otherAgent, true);
    assert.equal(impostor.notSignedByAgent, 1);
  });

  it("fetches from a remote named after the agent when there is one", () => {
    const local = branch(reviewJson("vox"), "vox/local");
    assert.equal(local.remote, "vox");
    assert.equal(local.ref, "refs/remotes/vox/vox/local");
    assert.equal(local.signature.status, "G");
    assert.equal(local.signature.signer, "vox@test.local");
  });

  it("lists one agent's branches when named, and forgets branches deleted upstream", () => {
    const before = reviewJson("ada");
    assert.ok(before.branches.every((b) => b.agent === "ada"));
    assert.ok(before.branches.some((b) => b.branch === "ada/gone"));
    git(mayor, "push", "--quiet", "origin", "--delete", "ada/gone");
    const after = reviewJson("ada");
    assert.ok(!after.branches.some((b) => b.branch === "ada/gone"));
    assert.deepEqual(after.fetched, [{ remote: "origin", agents: ["ada"], ok: true }]);
  });

  it("prints a table with the signature letter and a diffstat per branch", () => {
    const result = nuketown("review", "--config", town, "--no-fetch");
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^BRANCH\s+SIG\s+AUTHOR\s+AHEAD\s+CHANGES\s+SUBJECT/m);
    assert.match(result.stdout, /^ada\/topic\s+G\s+Ada\s+1\s+2 files \+5 -0\s+Add the feature$/m);
    assert.match(result.stdout, /^ada\/unsigned\s+N\s/m);
    assert.match(result.stdout, /^ada\/impostor\s+G!\s/m);
    assert.match(result.stdout, /feature\.txt \| 3 \+\+\+/);
    assert.match(result.stdout, /^ada\/impostor .*1 commit not signed by ada's key \(1 G\)$/m);
  });

  it("refuses an unknown agent and a directory that is not a repository", () => {
    assert.equal(nuketown("review", "nobody", "--config", town).code, 2);
    assert.equal(nuketown("review", "--config", town, "--repo", dir).code, 2);
  });
});
