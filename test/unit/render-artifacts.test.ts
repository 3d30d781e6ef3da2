import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderArtifacts, renderHomeArtifacts } from "../../src/host/render/index.ts";
import { generatedHomeFiles } from "../../src/town/rules.ts";
import { exampleTown } from "../support/fixtures.ts";

describe("all artifacts of a town", () => {
  it("are sorted by path, unique, and the same on every call", () => {
    const town = exampleTown();
    const first = renderArtifacts(town);
    const paths = first.map((a) => a.path);
    assert.deepEqual(paths, [...paths].sort());
    assert.equal(new Set(paths).size, paths.length);
    assert.deepEqual(renderArtifacts(town), first);
  });

  it("carries the resolved town as the manifest", () => {
    const town = exampleTown();
    const manifest = renderArtifacts(town).find((a) => a.path === "/etc/nuketown/town.json");
    assert.deepEqual(JSON.parse(manifest?.content ?? "{}"), {
      version: 1,
      town: JSON.parse(JSON.stringify(town)),
    });
  });

  it("gives home files to the agent and system files to root", () => {
    for (const artifact of renderArtifacts(exampleTown())) {
      if (artifact.path.startsWith("/agents/")) {
        const agent = artifact.path.split("/")[2];
        assert.equal(artifact.owner, agent, artifact.path);
        assert.equal(artifact.layer, "identity");
      } else {
        assert.equal(artifact.owner, undefined, artifact.path);
      }
    }
  });

  it("writes in a home only files the declaration may not claim", () => {
    // rules.ts refuses declared files at these paths; keep the two lists in step.
    for (const agent of exampleTown().agents) {
      const reserved = new Set(generatedHomeFiles(agent).map((p) => `${agent.home}/${p}`));
      for (const artifact of renderHomeArtifacts(exampleTown(), agent, "ssh-ed25519 AAAA test")) {
        assert.ok(
          reserved.has(artifact.path),
          `${artifact.path} is missing from generatedHomeFiles`,
        );
      }
    }
  });
});
