/**
 * The packages observation and install through a stand-in Runner: which
 * manager is found, how each one's answer is read, and what a refusal says.
 * The real apt-get runs in test/integration/packages.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { FailedError, MissingToolError } from "../../src/errors.ts";
import { installCommand, installPackages, observePackages } from "../../src/host/packages.ts";
import type { CommandResult, Runner, RunOptions } from "../../src/os/process.ts";

type Call = { program: string; args: readonly string[]; options?: RunOptions };

/** Programs in `installed` answer with `reply`; the others are missing, as spawn's ENOENT. */
function fakeRunner(
  installed: readonly string[],
  reply: (call: Call) => Partial<CommandResult> = () => ({}),
): Runner & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    async run(program, args, options) {
      calls.push({ program, args, options });
      if (!installed.includes(program)) throw new MissingToolError(program, program);
      const result = { code: 0, stdout: "", stderr: "", ...reply({ program, args, options }) };
      return { ...result, stdoutBytes: Buffer.from(result.stdout) };
    },
  };
}

const noNixos = { nixosMarker: "/nonexistent/NIXOS" };

describe("observing declared packages", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nt-packages-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("GIVEN Debian THEN dpkg-query is asked once and only installed packages count", async () => {
    const runner = fakeRunner(["apt-get", "dpkg-query", "rpm"], ({ program, args }) =>
      program === "dpkg-query" && args[0] === "--show"
        ? {
            code: 1,
            stdout:
              "installed git git\nconfig-files sl sl\ninstalled libc6:amd64 libc6\nnot-installed jq jq\n",
            stderr: "dpkg-query: no packages found matching nt-bogus\n",
          }
        : {},
    );
    const observed = await observePackages(
      ["sl", "git", "libc6:amd64", "jq", "nt-bogus", "git"],
      runner,
      noNixos,
    );
    assert.deepEqual(observed, {
      kind: "managed",
      manager: "apt-get",
      present: ["git", "libc6:amd64"],
    });
    const query = runner.calls.filter((c) => c.args[0] === "--show");
    assert.equal(query.length, 1);
    // Names after --, so none could ever be read as an option.
    assert.deepEqual(query[0]?.args.slice(2), ["--", "git", "jq", "libc6:amd64", "nt-bogus", "sl"]);
  });

  it("GIVEN Fedora THEN rpm answers; GIVEN Arch THEN pacman does", async () => {
    const fedora = fakeRunner(["dnf", "rpm"], ({ program, args }) =>
      program === "rpm" && args[0] === "--query"
        ? { code: 1, stdout: "git git.x86_64\npackage sl is not installed\n" }
        : {},
    );
    assert.deepEqual(await observePackages(["git", "sl"], fedora, noNixos), {
      kind: "managed",
      manager: "dnf",
      present: ["git"],
    });
    const arch = fakeRunner(["pacman"], ({ args }) =>
      args[0] === "--query"
        ? { code: 1, stdout: "git 2.45.0-1\n", stderr: "error: package 'sl' was not found\n" }
        : {},
    );
    assert.deepEqual(await observePackages(["git", "sl"], arch, noNixos), {
      kind: "managed",
      manager: "pacman",
      present: ["git"],
    });
  });

  it("GIVEN dpkg without apt-get, or nothing known THEN the host is unsupported", async () => {
    assert.deepEqual(await observePackages(["git"], fakeRunner(["dpkg-query"]), noNixos), {
      kind: "unsupported",
    });
    assert.deepEqual(await observePackages(["git"], fakeRunner(["apk"]), noNixos), {
      kind: "unsupported",
    });
  });

  it("GIVEN /etc/NIXOS THEN no program runs; GIVEN no packages THEN nothing is looked at", async () => {
    const marker = path.join(dir, "NIXOS");
    writeFileSync(marker, "");
    const runner = fakeRunner(["apt-get", "dpkg-query"]);
    assert.deepEqual(await observePackages(["git"], runner, { nixosMarker: marker }), {
      kind: "nixos",
    });
    assert.deepEqual(await observePackages([], runner, noNixos), { kind: "unobserved" });
    assert.deepEqual(runner.calls, []);
  });

  it("GIVEN a cache file THEN dpkg is asked again only when its database changed or for new names", async () => {
    const status = path.join(dir, "dpkg-status");
    const cacheFile = path.join(dir, "packages.json");
    writeFileSync(status, "Package: git\n");
    const runner = fakeRunner(["apt-get", "dpkg-query"], ({ args }) =>
      args[0] === "--show" ? { code: 1, stdout: "installed git git\n" } : {},
    );
    const shows = () => runner.calls.filter((c) => c.args[0] === "--show").length;
    const observe = (names: string[]) =>
      observePackages(names, runner, { ...noNixos, cacheFile, dpkgStatus: status });
    const git = { kind: "managed", manager: "apt-get", present: ["git"] };
    assert.deepEqual(await observe(["git", "jq"]), git);
    assert.deepEqual(await observe(["jq", "git"]), git);
    assert.deepEqual(await observe(["git"]), git);
    assert.equal(shows(), 1, "answered from the cache");
    await observe(["git", "tree"]);
    assert.equal(shows(), 2, "a name not asked before");
    writeFileSync(status, "Package: git\nPackage: jq\n");
    await observe(["git"]);
    assert.equal(shows(), 3, "dpkg's database changed");
  });

  it("GIVEN dpkg-query failing for another reason THEN it says so instead of guessing", async () => {
    const runner = fakeRunner(["apt-get", "dpkg-query"], ({ args }) =>
      args[0] === "--show" ? { code: 2, stderr: "dpkg-query: error: parsing file status\n" } : {},
    );
    await assert.rejects(observePackages(["git"], runner, noNixos), (error: Error) => {
      assert.ok(error instanceof FailedError);
      assert.match(
        error.message,
        /could not be checked:\n {2}dpkg-query: error: parsing file status/,
      );
      return true;
    });
  });
});

describe("installing the missing packages", () => {
  it("runs one non-interactive apt-get for all of them, then checks again", async () => {
    const runner = fakeRunner(["apt-get", "dpkg-query"], ({ program }) =>
      program === "dpkg-query" ? { stdout: "installed sl sl\ninstalled hello hello\n" } : {},
    );
    assert.deepEqual(await installPackages("apt-get", ["sl", "hello"], runner), []);
    const install = runner.calls.find((c) => c.program === "apt-get");
    assert.deepEqual(install?.args, [
      "install",
      "-y",
      "-q",
      "-o",
      "DPkg::Lock::Timeout=300",
      "--",
      "sl",
      "hello",
    ]);
    assert.equal(install?.options?.env?.DEBIAN_FRONTEND, "noninteractive");
  });

  it("GIVEN apt-get refusing THEN the error quotes its E: lines and the exact command to run", async () => {
    const runner = fakeRunner(["apt-get"], () => ({
      code: 100,
      stdout: "Reading package lists...\nBuilding dependency tree...\n",
      stderr: "E: Unable to locate package nt-bogus\n",
    }));
    await assert.rejects(installPackages("apt-get", ["sl", "nt-bogus"], runner), (error: Error) => {
      assert.ok(error instanceof FailedError);
      assert.equal(
        error.message,
        "apt-get could not install the declared packages (exit 100):\n" +
          "  E: Unable to locate package nt-bogus\n" +
          "Nothing else was applied. Fix the declaration, or run it yourself to see why:\n" +
          "  apt-get install -y sl nt-bogus",
      );
      return true;
    });
  });

  it("reports a package still missing after a clean install (a virtual package)", async () => {
    const runner = fakeRunner(["apt-get", "dpkg-query"], ({ program }) =>
      program === "dpkg-query" ? { code: 1, stdout: "installed mawk mawk\n" } : {},
    );
    assert.deepEqual(await installPackages("apt-get", ["awk"], runner), ["awk"]);
  });

  it("names the command a human would type for each manager", () => {
    assert.equal(installCommand("dnf", ["git", "sl"]).shown, "dnf install -y git sl");
    assert.equal(installCommand("pacman", ["git"]).shown, "pacman -S --needed --noconfirm git");
    assert.deepEqual(installCommand("pacman", ["git"]).args, [
      "--sync",
      "--needed",
      "--noconfirm",
      "--",
      "git",
    ]);
  });
});
