/**
 * The Runner's output cap: a program whose stdout outgrows what the caller
 * will hold in memory (an agent's bundle, a commit's archive) is stopped.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
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

describe("systemRunner's untrustedChildren", () => {
  it("stops waiting for output shortly after the program exits, though a child holds its pipes", async () => {
    const started = Date.now();
    const result = await systemRunner.run("sh", ["-c", "sleep 30 & echo $!"], {
      untrustedChildren: { exitGraceMs: 100 },
    });
    const holder = Number(result.stdout.trim());
    try {
      assert.equal(result.code, 0);
      assert.ok(holder > 0, "what it wrote before exiting is kept");
      assert.ok(Date.now() - started < 5000, `waited ${Date.now() - started} ms`);
    } finally {
      process.kill(holder, "SIGKILL");
    }
  });

  it("kills the program's whole process group at the timeout", async () => {
    const started = Date.now();
    const result = await systemRunner.run("sh", ["-c", "sleep 30 & echo $!; wait"], {
      untrustedChildren: { exitGraceMs: 100 },
      timeoutMs: 300,
      allowFailure: true,
    });
    assert.notEqual(result.code, 0);
    assert.ok(Date.now() - started < 5000, `waited ${Date.now() - started} ms`);
    const holder = Number(result.stdout.trim());
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Gone, or a zombie waiting for init to reap it.
    const state = (() => {
      try {
        return readFileSync(`/proc/${holder}/stat`, "utf8").split(") ")[1]?.[0];
      } catch {
        return "gone";
      }
    })();
    assert.ok(state === "gone" || state === "Z", `the child was killed with it (state ${state})`);
  });
});
