/**
 * The rendered sudoers fragment and units, checked by the real tools that
 * apply runs before installing them: visudo and systemd-analyze verify.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it, type TestContext } from "node:test";
import { renderSudoers } from "../../src/host/render/sudoers.ts";
import { renderUnits, type UnitFile } from "../../src/host/render/units.ts";
import { type VerifyResult, verifySudoers, verifyUnits } from "../../src/host/verify.ts";
import { exampleTown, minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

/** visudo is part of the test environment: a missing one fails, it never skips. */
function assertVisudoOk(result: VerifyResult): void {
  if ("skipped" in result) assert.fail(result.skipped);
  assert.deepEqual(result, { ok: true });
}

/** systemd-analyze may be unable to work in some containers: then say so and skip. */
function unitsResult(
  t: TestContext,
  result: VerifyResult,
): result is Exclude<VerifyResult, { skipped: string }> {
  if ("skipped" in result) {
    t.diagnostic(result.skipped);
    t.skip(result.skipped);
    return false;
  }
  return true;
}

function townWithAgents(
  agents: Record<string, Record<string, unknown>>,
  top: Record<string, unknown> = {},
) {
  return resolveOrThrow({ ...minimalDeclaration(), ...top, agents });
}

describe("visudo -c accepts the rendered sudoers", () => {
  it("accepts the example town's fragment", async () => {
    assertVisudoOk(await verifySudoers(renderSudoers(exampleTown())));
  });

  it("accepts the comments-only fragment of a town without sudo agents", async () => {
    const town = resolveOrThrow(minimalDeclaration());
    assert.ok(town.agents.every((a) => !a.sudo.enable));
    assertVisudoOk(await verifySudoers(renderSudoers(town)));
  });

  it("accepts several sudo agents with - and _ in their names", async () => {
    const town = townWithAgents({
      ada: { uid: 1100, sudo: { enable: true } },
      "build-bot": { uid: 1101, sudo: { enable: true } },
      _ops: { uid: 1102, sudo: { enable: true } },
    });
    assertVisudoOk(await verifySudoers(renderSudoers(town)));
  });

  it("rejects a broken fragment, with visudo's explanation", async () => {
    const result = await verifySudoers("NUKETOWN_AGENTS ALL = (root NOPASSWD: /bin/true\n");
    if ("skipped" in result) assert.fail(result.skipped);
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.output : "", /syntax error/);
  });

  it("rejects an alias that is used but never defined (strict mode)", async () => {
    const result = await verifySudoers("ada ALL = (root) NOPASSWD: NUKETOWN_GATE\n");
    if ("skipped" in result) assert.fail(result.skipped);
    assert.equal(result.ok, false);
  });

  it("says which package to install when visudo is missing", async () => {
    assert.deepEqual(await verifySudoers("", { searchPath: [] }), {
      skipped: "visudo not found: apt-get install sudo",
    });
  });
});

describe("systemd-analyze verify accepts the rendered units", () => {
  it("accepts the example town's units", async (t) => {
    const result = await verifyUnits(renderUnits(exampleTown()));
    if (unitsResult(t, result)) assert.deepEqual(result, { ok: true });
  });

  it("accepts units for sudo, device, plain and networked-chat agents with a custom environment", async (t) => {
    const town = townWithAgents(
      {
        ada: { uid: 1100, sudo: { enable: true }, runtime: { env: { FMT: '100% "quoted" \\' } } },
        bob: { uid: 1101, devices: [{ subsystem: "tty", attrs: { idVendor: "0483" } }] },
        cy: { uid: 1102 },
        dee: {
          uid: 1103,
          chat: {
            enable: true,
            project: "site",
            matrix: { userId: "@dee:test.local", tokenSecret: { file: "dee.age" } },
          },
        },
      },
      {
        chat: { matrix: { homeserver: "https://matrix.test.local" } },
        runtimeDir: "/srv/nuketown-run",
      },
    );
    // An online agent is one unit: its daemon's, which runs its chat too.
    const dee = renderUnits(town).find((u) => u.name === "nuketown-agent-dee.service");
    assert.match(dee?.content ?? "", /^Description=.* online on matrix$/m);
    assert.ok(!renderUnits(town).some((u) => u.name === "nuketown-chat-dee.service"));
    const result = await verifyUnits(renderUnits(town));
    if (unitsResult(t, result)) assert.deepEqual(result, { ok: true });
  });

  it("says which package to install when systemd-analyze is missing", async () => {
    assert.deepEqual(await verifyUnits(renderUnits(exampleTown()), { searchPath: [] }), {
      skipped: "systemd-analyze not found: apt-get install systemd",
    });
  });

  it("fails on a value systemd would ignore with only a warning", async (t) => {
    const broken: UnitFile = {
      name: "nuketown-broken.service",
      content: "[Service]\nExecStart=/usr/local/bin/nuketown approvald\nProtectSystem=sorta\n",
    };
    const result = await verifyUnits([broken]);
    if (!unitsResult(t, result)) return;
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.output : "", /nuketown-broken\.service:3: .*sorta/);
  });
});

describe("temporary files", () => {
  it("are removed after success, failure and a refused unit name", async (t) => {
    const dir = mkdtempSync(path.join(tmpdir(), "nuketown-verify-test-"));
    const previous = process.env.TMPDIR;
    process.env.TMPDIR = dir;
    t.after(() => {
      if (previous === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = previous;
      rmSync(dir, { recursive: true, force: true });
    });

    await verifySudoers(renderSudoers(exampleTown()));
    await verifySudoers("this is ( not sudoers\n");
    await verifyUnits(renderUnits(exampleTown()));
    await assert.rejects(
      verifyUnits([{ name: "../escape.service", content: "" }]),
      /not a unit file name/,
    );
    assert.deepEqual(readdirSync(dir), []);
  });
});
