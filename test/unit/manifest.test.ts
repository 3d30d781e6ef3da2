/**
 * The manifest as a contract: what the daemons read is checked (version,
 * shape, each problem with its path) and frozen.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  DEFAULT_MANIFEST,
  MANIFEST_VERSION,
  manifestPath,
  parseManifest,
  renderManifest,
} from "../../src/town/manifest.ts";
import { exampleTown } from "../support/fixtures.ts";

describe("the manifest", () => {
  const town = exampleTown();

  it("reads back what it wrote, frozen", () => {
    const parsed = parseManifest(renderManifest(town));
    assert.ok(parsed.ok);
    assert.equal(parsed.version, MANIFEST_VERSION);
    assert.deepEqual(parsed.town, JSON.parse(JSON.stringify(town)));
    assert.ok(Object.isFrozen(parsed.town));
    assert.ok(Object.isFrozen(parsed.town.agents[0]?.runtime));
    assert.throws(() => {
      (parsed.town.agents as unknown as unknown[]).push({});
    }, TypeError);
  });

  it("names one default path, derived like every town's", () => {
    assert.equal(DEFAULT_MANIFEST, "/etc/nuketown/town.json");
    assert.equal(manifestPath("/srv/etc"), "/srv/etc/nuketown/town.json");
    assert.equal(town.paths.manifest, manifestPath("/etc"));
  });

  it("says what to run when another nuketown wrote it", () => {
    const newer = parseManifest(JSON.stringify({ version: MANIFEST_VERSION + 1, town }));
    assert.ok(!newer.ok);
    assert.equal(newer.problems[0]?.path, "version");
    assert.match(newer.problems[0]?.message ?? "", /written by a newer nuketown.*nuketown install/);
    const older = parseManifest(JSON.stringify({ version: 0, town }));
    assert.ok(!older.ok);
    assert.match(older.problems[0]?.message ?? "", /older nuketown.*run nuketown apply again/);
  });

  it("reports every missing part with its path", () => {
    const broken = JSON.parse(renderManifest(town));
    delete broken.town.name;
    broken.town.agents[0].uid = "1100";
    delete broken.town.agents[1].socket;
    const parsed = parseManifest(JSON.stringify(broken));
    assert.ok(!parsed.ok);
    assert.deepEqual(
      parsed.problems.map((p) => `${p.path}: ${p.message}`),
      [
        "town.name: expected a string",
        "town.agents[0].uid: expected a number",
        "town.agents[1].socket: expected a string",
      ],
    );
  });

  it("refuses what is not a manifest at all", () => {
    for (const text of ["", "[]", '{"town":{}}', '{"version":"1"}']) {
      const parsed = parseManifest(text);
      assert.ok(!parsed.ok, text);
    }
  });
});
