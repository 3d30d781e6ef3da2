import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { ConfigError } from "../../src/errors.ts";
import { loadTown } from "../../src/town/load.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

const example = (name: string) => path.join(REPO_ROOT, "examples", name);

async function loadError(
  file: string,
  options: Parameters<typeof loadTown>[1] = {},
): Promise<ConfigError> {
  try {
    await loadTown(file, { hostname: "signi", ...options });
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    assert.equal(error.exitCode, 2);
    return error;
  }
  assert.fail(`${file} loaded, but should not have`);
}

describe("loading declarations", () => {
  let dir = "";
  const file = async (name: string, text: string) => {
    const full = path.join(dir, name);
    await writeFile(full, text);
    return full;
  };
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "nt-test-load-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("loads the TOML example and its YAML twin to the same town", async () => {
    const toml = await loadTown(example("town.toml"), { hostname: "signi" });
    const yaml = await loadTown(example("town.yaml"), { hostname: "signi" });
    assert.deepEqual(yaml.town, toml.town);
    assert.deepEqual(
      toml.town.agents.map((a) => a.name),
      ["ada", "vox"],
    );
  });

  it("loads JSON, and the same declaration from stdin", async () => {
    const json = await file("town.json", JSON.stringify({ agents: { ada: { uid: 1100 } } }));
    const fromFile = await loadTown(json, { hostname: "signi" });
    const fromStdin = await loadTown("-", {
      hostname: "signi",
      format: "json",
      stdin: Readable.from([JSON.stringify({ agents: { ada: { uid: 1100 } } })]),
      cwd: dir,
    });
    assert.deepEqual(fromStdin.town, fromFile.town);
  });

  it("loads `nix eval --json` output, where unset options are null", async () => {
    const { town } = await loadTown(path.join(REPO_ROOT, "test", "fixtures", "town.nix.json"), {
      hostname: "signi",
    });
    const [ada] = town.agents;
    assert.equal(ada?.git.email, "ada@signi.local");
    assert.equal(ada?.git.signing.format, "ssh");
    assert.deepEqual(ada?.secrets.sshKey, { format: "age", file: "/run/secrets/ada-ssh.age" });
    assert.equal(town.mayor?.name, "josh");
  });

  it("rejects a key given twice in JSON, which JSON.parse would silently accept", async () => {
    const json = await file("dup.json", '{"agents": {"ada": {"uid": 1100}, "ada": {"uid": 1101}}}');
    const error = await loadError(json);
    assert.match(error.message, /dup\.json:1:\d+: 1 problem/);
    assert.match(error.message, /duplicate key/);
  });

  it("rejects a table defined twice in TOML and a key twice in YAML, with line numbers", async () => {
    const toml = await file("dup.toml", "[agents.ada]\nuid = 1100\n[agents.ada]\nuid = 1101\n");
    assert.match((await loadError(toml)).message, /dup\.toml:3:\d+/);
    const yaml = await file("dup.yaml", "agents:\n  ada: { uid: 1100 }\n  ada: { uid: 1101 }\n");
    assert.match(
      (await loadError(yaml)).message,
      /dup\.yaml:3:\d+: 1 problem\n\s+syntax error: Map keys must be unique/,
    );
  });

  it("names the file, line and column of a syntax error", async () => {
    const toml = await file("broken.toml", 'name = "signi"\nagents.ada.uid = \n');
    assert.match(
      (await loadError(toml)).message,
      /broken\.toml:2:\d+: 1 problem\n\s+syntax error:/,
    );
  });

  it("refuses an unknown file type and a missing file clearly", async () => {
    assert.match((await loadError(await file("town.ini", ""))).message, /unknown format/);
    assert.match((await loadError(path.join(dir, "nope.toml"))).message, /cannot read: ENOENT/);
  });

  it("reports every problem of an invalid file in one error", async () => {
    const toml = await file(
      "bad.toml",
      '[agents.ada]\nuid = 42\npersist = ["/etc"]\n[[agents.ada.devices]]\nsubsystem = "tty"\nattrs = { idVendor = "04838" }\n',
    );
    const error = await loadError(toml);
    assert.deepEqual(error.problems.map((p) => p.path).sort(), [
      "agents.ada.devices[0].attrs.idVendor",
      "agents.ada.persist[0]",
      "agents.ada.uid",
    ]);
    assert.match(
      error.message,
      /agents\.ada\.devices\[0\]\.attrs\.idVendor: expected 4 lowercase hex digits, got "04838"/,
    );
  });
});
