/**
 * The Runner's output cap: a program whose stdout outgrows what the caller
 * will hold in memory (an agent's bundle, a commit's archive) is stopped.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { systemRunner } from "../../src/os/process.ts";

describe("systemRunner's maxOutputBytes", () => {
  it("stops a program whose output passes the cap, and says so", async () => {
    const result = await systemRunner.run("head", ["-c", "1000000", "/dev/zero"], {
      maxOutputBytes: 4096,
      allowFailure: true,
    });
    assert.equal(result.code, 1);
    assert.equal(result.stdoutBytes.length, 0);
    assert.match(result.stderr, /output passed 4096 bytes/);
  });

  it("hands over what stays within it", async () => {
    const result = await systemRunner.run("head", ["-c", "4096", "/dev/zero"], {
      maxOutputBytes: 4096,
    });
    assert.equal(result.code, 0);
    assert.equal(result.stdoutBytes.length, 4096);
  });
});
