/**
 * The packages layer with the real apt-get, as root: a small Debian package
 * this machine lacks is planned, installed, listed in the agent's
 * instructions, and the next plan is quiet; an unknown package stops apply
 * with the exact command to run, before anything else changes. The package
 * is removed afterwards, and only if this test installed it.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { before, describe, it } from "node:test";
import { isRoot, run } from "../support/host.ts";
import { testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const AGENT = "nt-test-pkgs";
const UNKNOWN = "nt-test-no-such-package";
/** Tiny, harmless, with no dependencies a Debian host lacks; the first one not installed is used. */
const CANDIDATES = ["sl", "hello", "cowsay"];

const isDebian = run("sh", ["-c", "command -v apt-get && command -v dpkg-query"]).code === 0;

const installed = (pkg: string) =>
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format.
  run("dpkg-query", ["--show", "--showformat=${db:Status-Status}", pkg]).stdout === "installed";

/** apt-get knows where to download it from (after an apt-get update if the lists lack it). */
function hasCandidate(pkg: string): boolean {
  return /Candidate: (?!\(none\))/.test(run("apt-cache", ["policy", pkg]).stdout);
}

describe("packages layer with the real apt-get", {
  skip: (!isRoot() && "needs root") || (!isDebian && "needs apt-get and dpkg"),
}, () => {
  const town = testTown({ label: "packages", uids: uidsOf(import.meta.filename) });
  const nuketown = (args: string[]) => town.nuketown(args);
  let config = "";
  let pkg = "";
  let installedByTest = false;
  let declaration: Record<string, any> = {};
  const write = () => town.write(declaration);
  const agentsMd = () => readFileSync(town.path("agents", AGENT, "AGENTS.md"), "utf8");
  const stateOf = () => JSON.parse(readFileSync(town.path("state", "state.json"), "utf8"));

  before(() => {
    const chosen = CANDIDATES.find((p) => !installed(p));
    assert.ok(chosen, `every candidate (${CANDIDATES.join(", ")}) is installed already`);
    pkg = chosen;
    if (!hasCandidate(pkg)) {
      const update = run("apt-get", ["update", "-q"]);
      assert.equal(update.code, 0, `apt-get update failed: ${update.stderr}`);
    }
    assert.ok(hasCandidate(pkg), `apt-get cannot find ${pkg} even after apt-get update`);

    config = town.config;
    // The directory backend makes missing parents of a home root-only: make agentsDir first.
    mkdirSync(town.path("agents"), { mode: 0o755 });
    declaration = town.declare({
      domain: "test.local",
      basePackages: ["git"],
      agents: { [AGENT]: { uid: 60710, role: "tester", packages: [pkg] } },
    });
    // At cleanup, before the town goes: the package, if this test installed it.
    town.defer(() => {
      if (installedByTest && installed(pkg)) {
        const removed = run("apt-get", ["remove", "-y", "-q", pkg]);
        if (removed.code !== 0) process.stderr.write(`apt-get remove ${pkg}: ${removed.stderr}`);
      }
    });
  });

  it("plans the missing package for the agent that wants it, installs it, and lists it as installed", () => {
    const planned = nuketown(["plan", config]);
    assert.equal(planned.code, 0, planned.stderr);
    assert.match(
      planned.stdout,
      new RegExp(`^packages\\n  \\+ ${pkg} for ${AGENT} \\(apt-get\\)$`, "m"),
    );
    assert.doesNotMatch(planned.stdout, /\+ git for/, "git is installed here already");

    // Whatever happens next, a package this test put on the machine is taken off again.
    installedByTest = true;
    const applied = nuketown(["apply", config]);
    assert.equal(applied.code, 0, `${applied.stdout}\n${applied.stderr}`);
    assert.ok(installed(pkg), `dpkg-query does not show ${pkg} installed after apply`);
    assert.match(applied.stderr, new RegExp(`installing ${pkg} with apt-get`));

    assert.match(agentsMd(), new RegExp(`Packages installed for you: \`git\`, \`${pkg}\`\\.`));
    assert.doesNotMatch(agentsMd(), /missing on this host|rendered without checking/);

    const again = nuketown(["plan", config]);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stdout, /^packages$/m);
    assert.match(again.stdout, /^no changes$/m);
  });

  it("refuses an unknown package with the exact apt-get command, and changes nothing else", () => {
    const before = stateOf();
    const instructions = agentsMd();
    declaration.agents[AGENT].packages = [pkg, UNKNOWN];
    write();

    const planned = nuketown(["plan", config]);
    assert.equal(planned.code, 0, planned.stderr);
    assert.match(planned.stdout, new RegExp(`\\+ ${UNKNOWN} for ${AGENT} \\(apt-get\\)`));
    assert.match(planned.stdout, new RegExp(`~ reset ${AGENT} `));

    const applied = nuketown(["apply", config]);
    assert.equal(applied.code, 5, `${applied.stdout}\n${applied.stderr}`);
    assert.match(applied.stderr, new RegExp(`E: Unable to locate package ${UNKNOWN}`));
    assert.match(applied.stderr, new RegExp(`\\n {2}apt-get install -y ${UNKNOWN}\\n`));
    // The round the plan wanted did not happen: same instructions, same state.
    assert.equal(agentsMd(), instructions);
    assert.deepEqual(stateOf(), before);
    assert.ok(installed(pkg), `${pkg} is still installed`);
  });
});
