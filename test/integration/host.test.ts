/**
 * The reconciler on the real host, as root: three test agents on a
 * loop-mounted btrfs image, real accounts, real bind mounts, real secrets.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { stringify } from "smol-toml";
import { isRoot, mountPoints, mustRun, run, testGroup, testUser } from "../support/host.ts";
import { testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENTS = { "nt-test-a": 60101, "nt-test-b": 60102, "nt-test-c": 60103 } as const;

describe("host reconciler on a real btrfs image", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({ label: "host", uids: uidsOf(import.meta.filename) });
  const nuketown = (args: string[]) => town.nuketown(args);
  let root = "";
  let config = "";
  let declaration: Record<string, any> = {};
  let hasSops = false;
  const write = () => town.write(declaration);
  const home = (agent: string) => path.join(root, "agents", agent);

  before(() => {
    root = town.root;
    config = town.config;
    mkdirSync(path.join(root, "secrets"));
    const keyFile = town.ageKey();
    const recipient = mustRun("age-keygen", ["-y", keyFile]).trim();
    for (const agent of Object.keys(AGENTS)) {
      const key = path.join(root, "secrets", `${agent}-ssh`);
      mustRun("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", agent, "-f", key]);
      town.encrypt(`secrets/${agent}-ssh.age`, readFileSync(key, "utf8"));
    }
    town.encrypt("secrets/token.age", "s3cret token\n");

    // sops is built by scripts/install-sops.sh (CI runs it); without it the sops secret is left out, loudly.
    hasSops = run("sh", ["-c", "command -v sops"]).code === 0;
    if (hasSops) {
      const plain = path.join(root, "secrets", "agents.plain.yaml");
      writeFileSync(plain, 'api:\n  token: "sops token"\n');
      const encrypted = mustRun("sops", [
        "--encrypt",
        "--age",
        recipient,
        "--input-type",
        "yaml",
        "--output-type",
        "yaml",
        plain,
      ]);
      writeFileSync(path.join(root, "secrets", "agents.yaml"), encrypted);
    } else if (process.env.CI === "true") {
      throw new Error("sops is not installed: run scripts/install-sops.sh");
    }

    declaration = town.declare({
      name: "nt-test-town",
      domain: "test.local",
      homes: { backend: "image", image: { size: "256M" } },
      agents: Object.fromEntries(
        Object.entries(AGENTS).map(([name, uid]) => [
          name,
          {
            uid,
            role: "tester",
            persist: ["projects", ".config/tool", { path: ".bash_history", type: "file" }],
            secrets: {
              sshKey: { file: `secrets/${name}-ssh.age` },
              extraSecrets: {
                token: { file: "secrets/token.age", target: ".config/token", mode: "0400" },
                ...(hasSops && {
                  api: {
                    file: "secrets/agents.yaml",
                    key: "api.token",
                    target: ".config/api-token",
                  },
                }),
              },
            },
          },
        ]),
      ),
    });
  });

  it("applies a town: accounts, homes on the image, persisted binds, identity and secrets", (t) => {
    if (!hasSops)
      t.diagnostic(
        "sops is not installed: the sops secret was not tested (scripts/install-sops.sh)",
      );
    const result = nuketown(["apply", config]);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    assert.ok(
      mountPoints().includes(path.join(root, "agents")),
      "the image is mounted at the agents dir",
    );

    for (const [name, uid] of Object.entries(AGENTS)) {
      assert.deepEqual(testUser(name), { uid, gid: uid }, `${name} has its uid and own group`);
      assert.equal(testGroup(name)?.gid, uid);
      const info = statSync(home(name));
      assert.equal(info.ino, 256, `${name}'s home is a btrfs subvolume`);
      assert.equal(info.uid, uid);
      assert.equal(info.mode & 0o777, 0o700);
      for (const p of ["projects", ".config/tool", ".bash_history", ".local/state/nuketown"]) {
        assert.ok(mountPoints().includes(path.join(home(name), p)), `${p} is bind-mounted`);
      }
      const persisted = statSync(path.join(root, "persist", "agents", name, "projects"));
      assert.equal(persisted.uid, uid, "persisted dirs are created with the agent's ownership");

      const identity = readFileSync(
        path.join(home(name), ".config/nuketown/identity.toml"),
        "utf8",
      );
      assert.match(identity, new RegExp(`uid = ${uid}`));
      assert.equal(statSync(path.join(home(name), ".config/nuketown/identity.toml")).uid, uid);

      const key = path.join(home(name), ".ssh/id_ed25519");
      const keyInfo = lstatSync(key);
      assert.equal(keyInfo.mode & 0o777, 0o600);
      assert.equal(keyInfo.uid, uid);
      assert.equal(
        readFileSync(key, "utf8"),
        readFileSync(path.join(root, "secrets", `${name}-ssh`), "utf8"),
      );
      assert.equal(
        readFileSync(`${key}.pub`, "utf8").split(" ").slice(0, 2).join(" "),
        readFileSync(path.join(root, "secrets", `${name}-ssh.pub`), "utf8")
          .split(" ")
          .slice(0, 2)
          .join(" "),
      );
      const token = path.join(home(name), ".config/token");
      assert.equal(readFileSync(token, "utf8"), "s3cret token\n");
      assert.equal(lstatSync(token).mode & 0o777, 0o400);
      assert.match(
        readFileSync(path.join(home(name), ".config/git/allowed_signers"), "utf8"),
        /ssh-ed25519 /,
      );
      if (hasSops) {
        const api = path.join(home(name), ".config/api-token");
        assert.equal(readFileSync(api, "utf8"), "sops token");
        assert.equal(lstatSync(api).mode & 0o777, 0o600);
        assert.equal(lstatSync(api).uid, uid);
      }
    }
    // No agent has sudo: no sudoers fragment at all (it comes and goes with them).
    assert.ok(!existsSync(path.join(root, "etc", "sudoers.d", "nuketown")));
    assert.ok(existsSync(path.join(root, "etc", "nuketown", "town.json")));
  });

  it("reports no changes on a second apply", () => {
    const result = nuketown(["plan", config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^no changes$/m);
    const again = nuketown(["apply", config, "--json"]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(JSON.parse(again.stdout).changes, 0);
  });

  it("keeps persisted files across a reset, drops the rest, and leaves other agents alone", () => {
    const a = home("nt-test-a");
    const b = home("nt-test-b");
    writeFileSync(path.join(a, "projects", "keep.txt"), "kept");
    writeFileSync(path.join(a, ".bash_history"), "ls\n");
    writeFileSync(path.join(a, "scratch.txt"), "gone");
    writeFileSync(path.join(b, "scratch.txt"), "untouched");
    // A rollback is a new subvolume snapshotted from the blank one (constant time, whatever
    // the home holds); a file-by-file wipe would keep the same subvolume and fail this.
    const subvolumeId = (dir: string) =>
      /Subvolume ID:\s+(\d+)/.exec(mustRun("btrfs", ["subvolume", "show", dir]))?.[1];
    const before = subvolumeId(a);
    assert.ok(before, "the home is a btrfs subvolume");
    const bBefore = subvolumeId(b);

    const result = nuketown(["reset", "nt-test-a", "--config", config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /reset nt-test-a/);
    assert.notEqual(subvolumeId(a), before, "the home was rolled back to a new snapshot");
    assert.equal(subvolumeId(b), bBefore, "the other agent's home is the same subvolume");

    assert.equal(readFileSync(path.join(a, "projects", "keep.txt"), "utf8"), "kept");
    assert.equal(readFileSync(path.join(a, ".bash_history"), "utf8"), "ls\n");
    assert.ok(!existsSync(path.join(a, "scratch.txt")), "a file outside persisted paths is gone");
    assert.ok(
      existsSync(path.join(a, ".config/nuketown/identity.toml")),
      "identity is placed again",
    );
    assert.equal(readFileSync(path.join(b, "scratch.txt"), "utf8"), "untouched");
  });

  it("stops the agent's processes before a reset", () => {
    const sleeper = spawnSync(
      "bash",
      ["-c", "runuser -u nt-test-b -- sleep 300 >/dev/null 2>&1 &"],
      { encoding: "utf8" },
    );
    assert.equal(sleeper.status, 0);
    // runuser starts the process a moment later.
    for (let i = 0; i < 50 && run("pgrep", ["-u", "60102"]).code !== 0; i++)
      spawnSync("sleep", ["0.05"]);
    assert.equal(run("pgrep", ["-u", "60102"]).code, 0, "the agent has a process");
    const result = nuketown(["reset", "nt-test-b", "--config", config]);
    assert.equal(result.code, 0, result.stderr);
    assert.notEqual(run("pgrep", ["-u", "60102"]).code, 0, "no process of the agent survives");
  });

  it("refuses a declaration that claims a foreign account, and changes nothing", () => {
    town.account("nt-test-foreign", 60150);
    const before = readFileSync(path.join(root, "state", "state.json"), "utf8");
    const claimed = structuredClone(declaration);
    claimed.agents["nt-test-foreign"] = { uid: 60150 };
    claimed.agents["nt-test-d"] = { uid: 60104 };
    const file = path.join(root, "claimed.toml");
    writeFileSync(file, stringify(claimed));
    const result = nuketown(["apply", file]);
    assert.equal(result.code, 3, result.stdout + result.stderr);
    assert.match(
      result.stderr,
      /agents\.nt-test-foreign: a user "nt-test-foreign" \(uid 60150\) exists and was not created by nuketown/,
    );
    assert.equal(testUser("nt-test-d"), undefined, "the valid new agent was not created either");
    assert.equal(readFileSync(path.join(root, "state", "state.json"), "utf8"), before);
  });

  it("refuses an invalid declaration with exit 2 before touching anything", () => {
    const bad = structuredClone(declaration);
    bad.agents["nt-test-a"].persist = ["../../etc"];
    const file = path.join(root, "bad.toml");
    writeFileSync(file, stringify(bad));
    const result = nuketown(["apply", file]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /agents\.nt-test-a\.persist\[0\]: must not climb out/);
  });

  it("refuses an age key others can read, naming the fix, before touching anything", () => {
    const keyFile = path.join(root, "state", "age", "keys.txt");
    const asAgent = () => run("runuser", ["-u", "nt-test-a", "--", "cat", keyFile]);
    assert.notEqual(asAgent().code, 0, "the key is the town's alone");
    chmodSync(keyFile, 0o644);
    try {
      // The attack: with the key readable, an agent holds every agent's secrets.
      assert.equal(asAgent().code, 0);
      const result = nuketown(["apply", config]);
      assert.equal(result.code, 3, result.stdout + result.stderr);
      assert.match(
        result.stderr,
        /secrets\.ageKeyFile: the age key \S+keys\.txt is readable or writable by others \(mode 0644\): any agent could decrypt every agent's secrets; fix: chmod 600 /,
      );
      const reset = nuketown(["reset", "nt-test-a", "--config", config]);
      assert.notEqual(reset.code, 0, "a round refuses to decrypt with it too");
      assert.match(reset.stderr, /is readable or writable by others/);
    } finally {
      chmodSync(keyFile, 0o600);
    }
  });

  it("removes a dropped agent's account and home but keeps its persisted data", () => {
    writeFileSync(path.join(home("nt-test-c"), "projects", "precious.txt"), "keep me");
    delete declaration.agents["nt-test-c"];
    write();
    const result = nuketown(["apply", config]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(
      result.stdout,
      /- agent nt-test-c: account, home and services \(persisted data kept\)/,
    );
    assert.equal(testUser("nt-test-c"), undefined);
    assert.equal(testGroup("nt-test-c"), undefined);
    assert.ok(!existsSync(home("nt-test-c")));
    assert.ok(!mountPoints().some((m) => m.startsWith(`${home("nt-test-c")}/`)));
    assert.equal(
      readFileSync(
        path.join(root, "persist", "agents", "nt-test-c", "projects", "precious.txt"),
        "utf8",
      ),
      "keep me",
    );
  });

  it("purges a removed agent's persisted data only with --purge", () => {
    delete declaration.agents["nt-test-b"];
    write();
    const result = nuketown(["apply", config, "--purge"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(testUser("nt-test-b"), undefined);
    assert.ok(!existsSync(path.join(root, "persist", "agents", "nt-test-b")));
    assert.ok(
      existsSync(path.join(root, "persist", "agents", "nt-test-a")),
      "other agents' data stays",
    );
  });

  it("shows each agent in status, from the installed manifest", () => {
    const result = nuketown([
      "status",
      "--manifest",
      path.join(root, "etc", "nuketown", "town.json"),
      "--json",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const status = JSON.parse(result.stdout);
    assert.equal(status.homesMounted, true);
    const [a] = status.agents;
    assert.equal(a.agent, "nt-test-a");
    assert.equal(a.created, true);
    assert.equal(a.binds, 4);
    assert.match(a.lastReset, /^\d{4}-\d\d-\d\dT/);
    assert.ok(a.persistedBytes > 0);
    const text = nuketown(["status", "--config", config]);
    assert.match(text.stdout, /nt-test-a\s+60101\s+image\s+\d{4}-/);
  });

  it("never lets two runs interleave: a live lock holder refuses the second", () => {
    const holder = spawnSync("bash", ["-c", "sleep 30 >/dev/null 2>&1 & echo $!"], {
      encoding: "utf8",
    });
    const pid = holder.stdout.trim();
    const lock = path.join(root, "state", "lock");
    try {
      writeFileSync(
        lock,
        `${pid} ${readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()} apply\n`,
      );
      const refused = nuketown(["apply", config]);
      assert.equal(refused.code, 3);
      assert.match(refused.stderr, new RegExp(`another nuketown apply \\(pid ${pid}\\) holds`));
      process.kill(Number(pid));
      // A lock whose holder died is taken over.
      const after = nuketown(["apply", config]);
      assert.equal(after.code, 0, after.stderr);
      assert.ok(!existsSync(lock), "the lock is released after the run");
    } finally {
      run("kill", [pid]);
    }
  });
});
