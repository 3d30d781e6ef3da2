import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, cp, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { REPO_ROOT } from "../support/fixtures.ts";

const BIN = path.join(REPO_ROOT, "bin", "nuketown");
const EXAMPLE = path.join(REPO_ROOT, "examples", "town.toml");

function nuketown(args: string[], input?: string) {
  const result = spawnSync(BIN, args, { encoding: "utf8", input, cwd: REPO_ROOT });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe("nuketown CLI", () => {
  let dir = "";
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "nt-test-cli-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("check prints a table of the example's agents and exits 0", async () => {
    // The example's demo key as `npm run up` leaves it: root's alone (a checkout makes it 0644).
    const copy = path.join(dir, "example");
    await cp(path.dirname(EXAMPLE), copy, { recursive: true });
    await chmod(path.join(copy, "demo-age.key"), 0o600);
    const { code, stdout, stderr } = nuketown(["check", path.join(copy, "town.toml")]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /^town signi \(signi\.local\): 2 agents/);
    assert.match(stdout, /AGENT\s+UID\s+ROLE\s+PERSIST\s+DEVICES\s+SUDO\s+RUNTIME/);
    assert.match(stdout, /ada\s+1100\s+software\s+projects, \.config\/claude\s+tty 0483:5740/);
    assert.match(stdout, /vox\s+1101\s+research\s+notes\s+-\s+no\s+codex/);
  });

  it("check refuses an age key others can read, with the chmod that fixes it (exit 3)", async () => {
    const copy = path.join(dir, "example-0644");
    await cp(path.dirname(EXAMPLE), copy, { recursive: true });
    const key = path.join(copy, "demo-age.key");
    await chmod(key, 0o644);
    const { code, stderr } = nuketown(["check", path.join(copy, "town.toml")]);
    assert.equal(code, 3, stderr);
    assert.match(stderr, /refused: secrets\.ageKeyFile: the age key .* \(mode 0644\)/);
    assert.ok(stderr.includes(`chmod 600 ${key}`), stderr);
    const json = nuketown(["check", path.join(copy, "town.toml"), "--json"]);
    assert.equal(json.code, 3);
    assert.equal(JSON.parse(json.stdout).refused[0].path, "secrets.ageKeyFile");
  });

  it("check --json prints the resolved town", () => {
    const { code, stdout } = nuketown(["check", EXAMPLE, "--json", "--hostname", "elsewhere"]);
    assert.equal(code, 0);
    const parsed = JSON.parse(stdout);
    assert.equal(parsed.valid, true);
    assert.equal(parsed.town.agents[0].git.email, "ada@signi.local");
  });

  it("check exits 2 and lists every problem with its path", async () => {
    const bad = path.join(dir, "bad.toml");
    await writeFile(bad, '[agents.ada]\nuid = 5\npersist = ["../up"]\n');
    const { code, stderr } = nuketown(["check", bad]);
    assert.equal(code, 2);
    assert.match(stderr, /2 problems/);
    assert.match(stderr, /agents\.ada\.uid: 5 is outside uidRange 1100–1999/);
    assert.match(stderr, /agents\.ada\.persist\[0\]: must not climb out/);
    const json = nuketown(["check", bad, "--json"]);
    assert.equal(json.code, 2);
    assert.deepEqual(
      JSON.parse(json.stdout)
        .errors.map((e: { path: string }) => e.path)
        .sort(),
      ["agents.ada.persist[0]", "agents.ada.uid"],
    );
  });

  it("reads a declaration from stdin", () => {
    const { code, stdout } = nuketown(
      ["check", "-", "--format", "yaml"],
      "agents:\n  ada: { uid: 1100 }\n",
    );
    assert.equal(code, 0, stdout);
    assert.match(stdout, /1 agent,/);
  });

  it("has --help on every command and exits 2 on bad usage", () => {
    for (const args of [["--help"], ["check", "--help"], ["render", "--help"]]) {
      const { code, stdout } = nuketown(args);
      assert.equal(code, 0, args.join(" "));
      assert.match(stdout, /Usage: nuketown/);
      assert.match(stdout, /Exit codes:/);
    }
    assert.equal(nuketown(["check"]).code, 2);
    assert.equal(nuketown(["check", EXAMPLE, "--bogus"]).code, 2);
    assert.equal(nuketown(["frobnicate"]).code, 2);
    assert.equal(nuketown(["render", EXAMPLE]).code, 2, "render without --out");
    if (process.getuid?.() === 0) {
      const bare = nuketown(["reset", "--config", EXAMPLE]);
      assert.equal(bare.code, 2, "reset with neither agents nor --all");
      assert.match(bare.stderr, /name the agents to reset, or pass --all/);
    }
  });

  it("render lays out every artifact as on the host, with modes", async () => {
    const out = path.join(dir, "host");
    const { code, stdout, stderr } = nuketown(["render", EXAMPLE, "--out", out]);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /rendered \d+ files for town signi/);
    for (const file of [
      "etc/nuketown/town.json",
      "etc/udev/rules.d/70-nuketown.rules",
      "etc/sudoers.d/nuketown",
      "etc/systemd/system/nuketown-reset.service",
      "etc/systemd/system/nuketown-approvald.service",
      "etc/systemd/system/nuketown-agent-ada.service",
      "etc/systemd/system/nuketown-agent-vox.service",
      "agents/ada/.config/nuketown/identity.toml",
      "agents/ada/AGENTS.md",
      "agents/ada/.claude/agents/ada-software.md",
      "agents/ada/.config/git/config",
      "agents/vox/.codex/AGENTS.md",
    ]) {
      await stat(path.join(out, file));
    }
    assert.equal((await stat(path.join(out, "etc/sudoers.d/nuketown"))).mode & 0o777, 0o440);
    const manifest = JSON.parse(await readFile(path.join(out, "etc/nuketown/town.json"), "utf8"));
    assert.equal(manifest.town.name, "signi");
  });

  it("render replaces its own previous output, dropping files of removed agents", async () => {
    const out = path.join(dir, "rerender");
    const town = path.join(dir, "two.toml");
    await writeFile(town, "[agents.ada]\nuid = 1100\n[agents.bob]\nuid = 1101\n");
    assert.equal(nuketown(["render", town, "--out", out]).code, 0);
    await stat(path.join(out, "agents/bob/AGENTS.md"));
    await writeFile(town, "[agents.ada]\nuid = 1100\n");
    const { code, stdout } = nuketown(["render", town, "--out", out, "--json"]);
    assert.equal(code, 0);
    assert.ok(JSON.parse(stdout).files.every((f: { path: string }) => !f.path.includes("/bob/")));
    await assert.rejects(stat(path.join(out, "agents/bob")), { code: "ENOENT" });
  });

  it("render refuses a directory it did not create, and writes nothing for an invalid town", async () => {
    const foreign = path.join(dir, "foreign");
    await writeFile(path.join(dir, "keep"), "x");
    const refused = nuketown(["render", EXAMPLE, "--out", dir]);
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /not empty and was not rendered by nuketown/);
    assert.equal(await readFile(path.join(dir, "keep"), "utf8"), "x");

    const bad = path.join(dir, "bad.json");
    await writeFile(bad, JSON.stringify({ agents: { ada: { uid: 1 } } }));
    const invalid = nuketown(["render", bad, "--out", foreign]);
    assert.equal(invalid.code, 2);
    await assert.rejects(stat(foreign), { code: "ENOENT" });
  });

  it("plan and apply --root render into a tree without touching the host, then report no changes", async () => {
    const tree = path.join(dir, "rooted");
    const planned = nuketown(["plan", EXAMPLE, "--root", tree]);
    assert.equal(planned.code, 0, planned.stderr);
    assert.match(planned.stdout, /^files$/m);
    assert.match(planned.stdout, /\+ \/etc\/sudoers\.d\/nuketown \(0440\)/);
    assert.doesNotMatch(planned.stdout, /^accounts$/m);
    assert.match(planned.stdout, /note: --root: only files are planned/);

    // The host may have a live town of its own: what is there (or not) must stay as it is.
    const live = ["/etc/sudoers.d/nuketown", "/etc/nuketown/town.json"];
    const snapshot = () =>
      Promise.all(
        live.map((file) =>
          stat(file).then(
            (info) => `${file} ${info.ino} ${info.mtimeMs} ${info.size}`,
            () => `${file} absent`,
          ),
        ),
      );
    const liveBefore = await snapshot();
    const applied = nuketown(["apply", EXAMPLE, "--root", tree]);
    assert.equal(applied.code, 0, applied.stderr);
    assert.equal((await stat(path.join(tree, "etc/sudoers.d/nuketown"))).mode & 0o777, 0o440);
    await stat(path.join(tree, "etc/systemd/system/nuketown-agent-ada.service"));
    await stat(path.join(tree, "var/lib/nuketown/state.json"));
    assert.deepEqual(await snapshot(), liveBefore, "the live host is untouched");

    const again = nuketown(["plan", EXAMPLE, "--root", tree, "--json"]);
    assert.equal(JSON.parse(again.stdout).changes, 0);
  });

  it("doctor lists every prerequisite with a fix for what is missing", () => {
    const { code, stdout } = nuketown(["doctor", "--json"]);
    assert.ok(code === 0 || code === 4, `exit ${code}`);
    const report = JSON.parse(stdout);
    const names = report.checks.map((c: { name: string }) => c.name);
    for (const tool of [
      "root",
      "systemd",
      "btrfs (kernel)",
      "btrfs",
      "setfacl",
      "visudo",
      "udevadm",
      "git",
      "ssh-keygen",
      "age",
      "sops",
    ]) {
      assert.ok(names.includes(tool), `doctor checks ${tool}`);
    }
    for (const check of report.checks) {
      if (!check.ok) assert.ok(check.fix, `${check.name} has a fix`);
    }
    assert.equal(report.ok, code === 0);
  });
});
