/**
 * `nuketown review` against real git: a bare origin, agents' clones that
 * push signed (and unsigned, and wrongly signed) `<agent>/*` branches, and
 * the mayor's clone where review fetches them and checks every signature
 * against the keys the town vouches for only: declared, or recorded by
 * apply as root, never read from an agent's home. OpenPGP signatures by
 * real gpg keys count only by the fingerprint the town declares.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import type { ReviewedBranch } from "../../src/commands/review.ts";
import { isRoot } from "../support/host.ts";
import { BIN, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

/** A real account: the agent that rewrites the keys in its own home. */
const MALLORY = "nt-test-rev";
const MALLORY_UID = 60462;

interface Review {
  repo: string;
  fetched: { remote: string; agents: string[]; ok: boolean }[];
  branches: ReviewedBranch[];
  warnings: string[];
}

describe("nuketown review", () => {
  // Declared only, so no root needed; the one real account is made by the test that needs it.
  const testbed = testTown({ label: "review", uids: uidsOf(import.meta.filename) });
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
  /** An OpenPGP key in a keyring of its own: its fingerprint and the keyring. */
  const gpgKey = (name: string, uid: string) => {
    const home = path.join(dir, `gpg-${name}`);
    mkdirSync(home, { mode: 0o700 });
    gpgHomes.push(home);
    const gpg = (...args: string[]) => {
      const result = spawnSync("gpg", ["--homedir", home, "--batch", ...args], {
        encoding: "utf8",
      });
      if (result.status !== 0) throw new Error(`gpg ${args.join(" ")}: ${result.stderr}`);
      return result.stdout;
    };
    gpg("--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never");
    const fingerprint = /^fpr:+([0-9A-F]{40,64}):/m.exec(gpg("--with-colons", "--list-keys"))?.[1];
    assert.ok(fingerprint, "gpg made a key");
    return { home, fingerprint, publicKey: gpg("--armor", "--export", fingerprint) };
  };
  /** Put a public key into the mayor's own keyring, as a mayor who imported it would. */
  const mayorImports = (publicKey: string) => {
    const result = spawnSync("gpg", ["--batch", "--import"], { env, input: publicKey });
    assert.equal(result.status, 0, String(result.stderr));
  };
  const gpgHomes: string[] = [];
  let pgpKey: ReturnType<typeof gpgKey>;

  before(() => {
    dir = testbed.root;
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

    // ada's key is the one apply derived from her secret and recorded as root; vox's is declared.
    const adaHome = path.join(dir, "agents", "ada");
    mkdirSync(path.join(dir, "state", "signers"), { recursive: true, mode: 0o755 });
    chmodSync(path.join(dir, "state", "signers"), 0o755);
    writeFileSync(
      path.join(dir, "state", "signers", "ada.pub"),
      readFileSync(`${adaKey}.pub`, "utf8"),
      { mode: 0o644 },
    );
    writeFileSync(
      path.join(dir, "state", "signers", `${MALLORY}.pub`),
      readFileSync(`${keygen("mallory-legit")}.pub`, "utf8"),
      { mode: 0o644 },
    );
    pgpKey = gpgKey("pgp", "Pgp <pgp@test.local>");
    testbed.declare({
      name: "reviewtown",
      domain: "test.local",
      uidRange: { min: 60400, max: 60499 },
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
        pgp: {
          uid: 60463,
          git: { signing: { format: "openpgp", key: pgpKey.fingerprint } },
        },
        [MALLORY]: {
          uid: MALLORY_UID,
          git: {
            signing: { format: "ssh", key: `${dir}/agents/${MALLORY}/.ssh/id_ed25519.pub` },
          },
        },
      },
    });
    town = testbed.config;

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

  testbed.defer(() => {
    for (const home of gpgHomes) spawnSync("gpgconf", ["--homedir", home, "--kill", "all"]);
    spawnSync("gpgconf", ["--kill", "all"], { env });
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

  it("never takes a key from an agent's home: one the agent put there does not verify", (t) => {
    if (!isRoot()) return t.skip("needs root (a real account for the agent)");
    // The agent's account, its home, and the key apply derived from its secret (recorded as root).
    const home = path.join(dir, "agents", MALLORY);
    testbed.account(MALLORY, { uid: MALLORY_UID, home, makeHome: true });
    chmodSync(dir, 0o755);
    chmodSync(path.join(dir, "agents"), 0o755);
    chmodSync(path.join(dir, "origin.git"), 0o777);
    spawnSync("chmod", ["-R", "a+rwX", path.join(dir, "origin.git")]);
    // As the agent: a key of its own choosing in every place a reviewer might look, and a
    // commit signed with it on its branch.
    const script = [
      "set -e",
      "cd ~",
      "mkdir -p .ssh .config/git",
      // origin belongs to the test (root): git would refuse to read it otherwise.
      "git config --global safe.directory '*'",
      "ssh-keygen -q -t ed25519 -N '' -C mine -f .ssh/id_ed25519",
      `printf '${MALLORY}@test.local namespaces="git" %s\\n' "$(cut -d' ' -f1,2 .ssh/id_ed25519.pub)" > .config/git/allowed_signers`,
      `git clone --quiet ${path.join(dir, "origin.git")} work`,
      "cd work",
      `git config user.name Mallory && git config user.email ${MALLORY}@test.local`,
      "git config gpg.format ssh && git config user.signingkey ~/.ssh/id_ed25519",
      `git checkout --quiet -b ${MALLORY}/evil origin/main`,
      "echo pwned > evil.txt && git add evil.txt && git commit --quiet -S -m 'Trust me'",
      `git push --quiet origin ${MALLORY}/evil`,
    ].join("\n");
    const asAgent = spawnSync("runuser", ["-u", MALLORY, "--", "bash", "-c", script], {
      encoding: "utf8",
      env: { PATH: process.env.PATH, HOME: home, GIT_CONFIG_NOSYSTEM: "1", LC_ALL: "C" },
    });
    assert.equal(asAgent.status, 0, asAgent.stderr);

    const evil = branch(reviewJson(MALLORY), `${MALLORY}/evil`);
    assert.notEqual(evil.signature.status, "G", JSON.stringify(evil.signature));
    assert.equal(evil.signature.kind, "ssh");
    assert.equal(evil.notSignedByAgent, 1);
  });

  it("judges OpenPGP signatures by the declared fingerprint, never by the user id", () => {
    const pgp = agentClone("pgp", "pgp@test.local");
    git(pgp, "config", "gpg.format", "openpgp");
    const signed = (home: string, key: string, name: string, subject: string) => {
      git(pgp, "checkout", "--quiet", "-B", name, "origin/main");
      writeFileSync(path.join(pgp, `${name.replace("/", "-")}.txt`), `${subject}\n`);
      git(pgp, "add", ".");
      const result = spawnSync(
        "git",
        ["-c", `user.signingkey=${key}`, "commit", "--quiet", "-S", "-m", subject],
        { cwd: pgp, env: { ...env, GNUPGHOME: home }, encoding: "utf8" },
      );
      assert.equal(result.status, 0, result.stderr);
    };
    signed(pgpKey.home, pgpKey.fingerprint, "pgp/declared", "Signed with the declared key");
    // Another key calling itself pgp (and one calling itself ada), both in the mayor's keyring.
    const forged = gpgKey("forged", "Pgp <pgp@test.local>");
    const adaLike = gpgKey("adalike", "ada@test.local");
    signed(forged.home, forged.fingerprint, "pgp/forged", "Signed by a look-alike");
    signed(adaLike.home, adaLike.fingerprint, "pgp/adalike", "Signed as ada");
    git(pgp, "push", "--quiet", "origin", "pgp/declared", "pgp/forged", "pgp/adalike");
    mayorImports(pgpKey.publicKey);
    mayorImports(forged.publicKey);
    mayorImports(adaLike.publicKey);

    const review = reviewJson("pgp");
    const declared = branch(review, "pgp/declared");
    assert.equal(declared.signature.kind, "openpgp");
    assert.equal(declared.signature.status, "G", JSON.stringify(declared.signature));
    assert.equal(declared.signature.signer, "pgp@test.local");
    assert.equal(declared.signature.otherAgent, false);
    assert.equal(declared.notSignedByAgent, 0);
    for (const name of ["pgp/forged", "pgp/adalike"]) {
      const b = branch(review, name);
      assert.equal(b.signature.status, "P", `${name}: ${JSON.stringify(b.signature)}`);
      assert.match(b.signature.meaning, /^unverifiable: OpenPGP signature by key [0-9A-F]{40}/);
      assert.equal(b.signature.otherAgent, false, `${name} is not another agent's`);
      assert.equal(b.notSignedByAgent, 1);
    }
    // Without the mayor having the key at all: unverifiable, not bad and not good.
    spawnSync("gpg", ["--batch", "--yes", "--delete-keys", forged.fingerprint], { env });
    assert.equal(branch(reviewJson("pgp", "--no-fetch"), "pgp/forged").signature.status, "P");
    const text = nuketown("review", "pgp", "--config", town, "--no-fetch");
    assert.match(text.stdout, /^pgp\/forged\s+P\s/m);
    assert.match(text.stdout, /P unverifiable/);
  });

  it("refuses an unknown agent and a directory that is not a repository", () => {
    assert.equal(nuketown("review", "nobody", "--config", town).code, 2);
    assert.equal(nuketown("review", "--config", town, "--repo", dir).code, 2);
  });
});
