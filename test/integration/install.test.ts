/**
 * `nuketown install` and `uninstall` on the real host, into a prefix below a
 * temp root: two installs at once never share the copy (one holds the lock,
 * the other is refused and changes nothing), uninstall removes the programs
 * and what apply installed for the town and keeps its data, and
 * `uninstall --purge` takes the data too.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { isRoot, testUser } from "../support/host.ts";
import { installForTest, testPrefix } from "../support/install.ts";
import { BIN, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-uninst";
const MAYOR = "nt-test-uninstmy";

const nuketown = (args: string[]) => spawnSync(BIN, args, { encoding: "utf8" });
const exited = (child: ChildProcess) =>
  new Promise<{ code: number | null; out: string }>((resolve) => {
    let out = "";
    child.stdout?.on("data", (d) => (out += d));
    child.stderr?.on("data", (d) => (out += d));
    child.on("close", (code) => resolve({ code, out }));
  });

describe("nuketown install and uninstall", { skip: !isRoot() && "needs root" }, () => {
  // Not installed by the town: the first test installs into the prefix itself.
  const town = testTown({
    label: "install",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60562 },
  });
  let root = "";
  let prefix = "";
  const lib = () => path.join(prefix, "lib", "nuketown");

  before(() => {
    root = town.root;
    prefix = testPrefix(root);
  });

  it("lets one install at a time into a prefix: a second one meanwhile is refused and changes nothing", async () => {
    const installArgs = (version: string) => [
      "install",
      "--prefix",
      prefix,
      "--as-version",
      version,
      "--any-build",
      "--no-restart",
      "--manifest",
      path.join(root, "no-manifest"),
    ];
    const first = spawn(BIN, installArgs("0.0.0-first"), { stdio: ["ignore", "pipe", "pipe"] });
    const firstDone = exited(first);
    const lock = path.join(lib(), "lock");
    for (let i = 0; i < 300 && !existsSync(lock); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(existsSync(lock), "the first install holds the lock while it copies");

    const second = nuketown(installArgs("0.0.0-second"));
    assert.equal(second.status, 3, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(`another nuketown install \\(pid ${first.pid}\\) holds ${lock}; wait for it`),
    );

    const done = await firstDone;
    assert.equal(done.code, 0, done.out);
    assert.equal(readlinkSync(path.join(lib(), "current")), "0.0.0-first");
    assert.deepEqual(
      readdirSync(lib()).sort(),
      ["0.0.0-first", "current"],
      "no trace of the refused install, and no lock left",
    );
    const version = spawnSync(path.join(prefix, "bin", "nuketown"), ["--version"], {
      encoding: "utf8",
    });
    assert.equal(version.status, 0, version.stderr);

    const after = nuketown(installArgs("0.0.0-second"));
    assert.equal(after.status, 0, after.stderr);
    assert.equal(readlinkSync(path.join(lib(), "current")), "0.0.0-second");
    assert.equal(readlinkSync(path.join(lib(), "previous")), "0.0.0-first");
  });

  describe("of a town", () => {
    let manifest = "";
    let units: string[] = [];
    const persisted = () => path.join(root, "persist", "agents", AGENT, "projects", "work.txt");
    const programFiles = () => [
      lib(),
      path.join(prefix, "bin", "nuketown"),
      path.join(prefix, "libexec", "nuketown", "sudo-gate"),
      path.join(prefix, "libexec", "nuketown", "shim", "sudo"),
      path.join(root, "etc", "sudoers.d", "nuketown"),
      path.join(root, "etc", "profile.d", "nuketown.sh"),
      ...units,
    ];
    const present = (file: string) => {
      try {
        lstatSync(file);
        return true;
      } catch {
        return false;
      }
    };

    before(() => {
      installForTest(root);
      town.declare({
        name: "nt-test-uninstall",
        install: { prefix },
        basePackages: [],
        humans: { [MAYOR]: { approver: true } },
        agents: { [AGENT]: { uid: 60561, persist: ["projects"], sudo: { enable: true } } },
      });
      town.apply();
      manifest = town.manifest;
      const unitDir = path.join(root, "etc", "systemd", "system");
      units = readdirSync(unitDir).map((u) => path.join(unitDir, u));
      writeFileSync(persisted(), "kept\n");
    });

    it("removes the programs, units, sudoers, gate, shim and login profile, and keeps the town's data", () => {
      assert.ok(units.length > 0, "apply rendered units");
      for (const file of programFiles()) assert.ok(present(file), `apply installed ${file}`);
      const result = nuketown(["uninstall", "--manifest", manifest]);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /kept the town's data/);
      assert.match(result.stdout, new RegExp(`removed nuketown \\S+ from ${prefix}`));
      for (const file of programFiles()) assert.ok(!present(file), `uninstall left ${file}`);
      assert.ok(existsSync(manifest), "the manifest stays");
      assert.ok(existsSync(path.join(root, "state", "state.json")), "the state stays");
      assert.ok(testUser(AGENT), "the agent's account stays");
      assert.ok(existsSync(path.join(root, "agents", AGENT)), "its home stays");
      assert.equal(readFileSync(persisted(), "utf8"), "kept\n", "its persisted data stays");
    });

    it("with --purge removes the agents, their homes and persisted data, the state and the manifest", () => {
      const result = nuketown(["uninstall", "--purge", "--manifest", manifest]);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /removed the agents of town nt-test-uninstall/);
      assert.match(result.stdout, new RegExp(`nuketown was not installed in ${prefix}`));
      assert.equal(testUser(AGENT), undefined, "the agent's account is gone");
      for (const gone of [
        path.join(root, "agents", AGENT),
        path.join(root, "persist", "agents", AGENT),
        path.join(root, "state"),
        manifest,
      ]) {
        assert.ok(!existsSync(gone), `--purge left ${gone}`);
      }
    });
  });
});
