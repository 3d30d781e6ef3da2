/**
 * The Debian package for real: `scripts/package.ts` (what `npm run package`
 * runs) builds it from the suite's build into a temp dir and runs lintian
 * (an error fails; the findings are reported), `apt-get install ./…deb`
 * installs it into /usr, the packaged nuketown passes doctor and applies a
 * test town, `apt-get remove` leaves the town's data, `apt-get purge` leaves
 * nothing of the package. The one test that installs into the real /usr: it
 * refuses to run when anything else holds /usr/lib/nuketown or
 * /usr/bin/nuketown, and purges what it installed even when it fails.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, lstatSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { REPO_ROOT } from "../support/fixtures.ts";
import { isRoot, run, testUser } from "../support/host.ts";
import { testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-debagent";
const MAYOR = "nt-test-debmayor";
const LIB = "/usr/lib/nuketown";
const COMMAND = "/usr/bin/nuketown";
const VERSION: string = JSON.parse(
  readFileSync(path.join(REPO_ROOT, "package.json"), "utf8"),
).version;

const exists = (file: string) => {
  try {
    lstatSync(file);
    return true;
  } catch {
    return false;
  }
};
/** dpkg's status of the nuketown package ("install ok installed"…), or undefined. */
const packageStatus = () => {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not a template
  const query = run("dpkg-query", ["-W", "-f", "${Status}", "nuketown"]);
  return query.code === 0 && query.stdout.trim() !== "" ? query.stdout.trim() : undefined;
};
const apt = (args: string[]) =>
  spawnSync("apt-get", ["-y", "-q", "-o", "DPkg::Lock::Timeout=300", ...args], {
    encoding: "utf8",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });

describe("the Debian package", { skip: !isRoot() && "needs root" }, () => {
  const town = testTown({
    label: "deb",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60812 },
  });
  let root = "";
  let deb = "";
  let installed = false;
  // Whatever happened: what this test installed is purged, before the town goes.
  town.defer(() => {
    const status = packageStatus();
    if (installed && status !== undefined && !status.endsWith("not-installed")) {
      const purged = apt(["purge", "nuketown"]);
      if (purged.status !== 0) run("dpkg", ["--purge", "nuketown"]);
    }
  });

  before((t) => {
    // Never on top of a nuketown this test did not install: refuse, loudly.
    const foreign = [
      ...[LIB, COMMAND].filter(exists),
      ...(packageStatus()?.endsWith("not-installed") === false
        ? [`the nuketown package (${packageStatus()})`]
        : []),
    ];
    if (foreign.length > 0) {
      throw new Error(
        `refusing to test the Debian package: ${foreign.join(", ")} already on this machine and not made by this test; remove it (apt-get purge nuketown) or run this test elsewhere`,
      );
    }
    root = town.root;
    const built = spawnSync(
      process.execPath,
      [
        path.join(REPO_ROOT, "scripts", "package.ts"),
        "--out",
        path.join(root, "build"),
        "--any-build",
      ],
      { encoding: "utf8" },
    );
    // Reported by tag: "W: script-not-executable ×6".
    const findings = new Map<string, number>();
    for (const line of built.stdout.split("\n")) {
      const tag = /^([EWIPXO]): nuketown: (\S+)/.exec(line);
      if (tag)
        findings.set(`${tag[1]}: ${tag[2]}`, (findings.get(`${tag[1]}: ${tag[2]}`) ?? 0) + 1);
    }
    t.diagnostic(
      `lintian: ${[...findings].map(([tag, n]) => `${tag} ×${n}`).join(", ") || "no findings"}`,
    );
    assert.equal(built.status, 0, `npm run package failed:\n${built.stdout}\n${built.stderr}`);
    assert.doesNotMatch(built.stdout, /lintian is not installed/);
    deb = path.join(root, "build", `nuketown_${VERSION}_amd64.deb`);
    assert.ok(existsSync(deb), built.stdout);
  });

  it("installs with apt-get install ./nuketown_<version>_amd64.deb, root-owned, and nuketown doctor passes", () => {
    installed = true;
    const result = apt(["install", deb]);
    assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
    assert.equal(packageStatus(), "install ok installed");
    assert.equal(lstatSync(path.join(LIB, "current")).isSymbolicLink(), true);
    assert.equal(statSync(path.join(LIB, "current", "bin", "node")).uid, 0);
    const writable = run("find", [
      LIB,
      "(",
      "-perm",
      "/022",
      "-o",
      "!",
      "-user",
      "root",
      ")",
      "!",
      "-type",
      "l",
    ]);
    assert.equal(writable.stdout, "", "files others could change");
    const doctor = run(COMMAND, ["doctor"]);
    assert.equal(doctor.code, 0, `${doctor.stdout}\n${doctor.stderr}`);
    assert.match(doctor.stdout, /sudo\s+ok/);
  });

  it("applies a town with the packaged nuketown, and apt-get remove keeps its data", () => {
    assert.ok(
      installed && packageStatus() === "install ok installed",
      "installed by the test above",
    );
    town.declare({
      // The package's program; the town's own gate and shim stay in the temp root.
      install: {
        prefix: "/usr",
        gate: path.join(root, "libexec", "sudo-gate"),
        shimDir: path.join(root, "libexec", "shim"),
        sudoWrapper: path.join(root, "local-bin", "sudo"),
      },
      basePackages: [],
      humans: { [MAYOR]: { approver: true } },
      agents: { [AGENT]: { uid: 60811, persist: ["projects"], sudo: { enable: true } } },
    });
    const applied = run(COMMAND, ["apply", town.config]);
    assert.equal(applied.code, 0, `${applied.stdout}\n${applied.stderr}`);
    const manifest = path.join(root, "etc", "nuketown", "town.json");
    assert.match(
      readFileSync(path.join(root, "libexec", "sudo-gate"), "utf8"),
      /\/usr\/lib\/nuketown\/current\/bin\/node/,
      "the gate runs the package's copy",
    );
    const persisted = path.join(root, "persist", "agents", AGENT, "projects", "work.txt");
    writeFileSync(persisted, "kept\n");

    const removed = apt(["remove", "nuketown"]);
    assert.equal(removed.status, 0, `${removed.stdout}\n${removed.stderr}`);
    assert.ok(!exists(COMMAND), "the command is gone");
    assert.ok(!exists(LIB), "the program is gone");
    assert.ok(existsSync(manifest), "the manifest stays");
    assert.ok(existsSync(path.join(root, "state", "state.json")), "the state stays");
    assert.ok(testUser(AGENT), "the agent's account stays");
    assert.ok(existsSync(path.join(root, "agents", AGENT)), "its home stays");
    assert.equal(readFileSync(persisted, "utf8"), "kept\n", "its persisted data stays");

    // With no conffiles, dpkg forgets the package on remove; purge what it may still record.
    if (packageStatus()?.endsWith("config-files")) {
      const purged = apt(["purge", "nuketown"]);
      assert.equal(purged.status, 0, `${purged.stdout}\n${purged.stderr}`);
    }
    const status = packageStatus();
    assert.ok(status === undefined || status.endsWith("not-installed"), `dpkg says ${status}`);
    assert.ok(existsSync(manifest), "purging the package is not purging the town");
  });
});
