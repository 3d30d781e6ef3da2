/**
 * apply removing a unit it no longer renders (an agent's chat unit, now part
 * of its daemon's): systemd is told to stop and disable it while its file is
 * still there. A recording runner stands in for systemctl.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { applyPlan } from "../../src/host/apply.ts";
import type { SecretDecryptor } from "../../src/host/secrets.ts";
import type { Runner } from "../../src/os/process.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

describe("apply, removing a unit it no longer renders", () => {
  it("stops and disables it before its file goes, where systemd runs", async () => {
    const root = mkdtempSync(path.join(tmpdir(), "nt-apply-units-"));
    try {
      const resolved = resolveOrThrow(minimalDeclaration());
      const unitDir = path.join(root, "units");
      mkdirSync(unitDir);
      const town = {
        ...resolved,
        stateDir: path.join(root, "state"),
        paths: { ...resolved.paths, unitDir },
      };
      const legacy = path.join(unitDir, "nuketown-chat-ada.service");
      const other = path.join(root, "not-a-unit.conf");
      writeFileSync(legacy, "[Service]\n");
      writeFileSync(other, "x\n");
      const calls: string[] = [];
      const runner: Runner = {
        run: async (program, args) => {
          // The file is still there when systemd is asked: it can disable what it knows.
          calls.push(
            `${program} ${args.join(" ")} (file ${existsSync(legacy) ? "there" : "gone"})`,
          );
          return { code: 0, stdout: "", stderr: "", stdoutBytes: Buffer.alloc(0) };
        },
      };
      await applyPlan(
        {
          actions: [
            { layer: "files", kind: "remove-file", path: legacy },
            { layer: "files", kind: "remove-file", path: other },
          ],
          errors: [],
          notes: [],
        },
        {
          town,
          runner,
          decryptor: {} as SecretDecryptor,
          systemd: true,
          log: () => {},
        },
      );
      assert.deepEqual(calls, ["systemctl disable --now nuketown-chat-ada.service (file there)"]);
      assert.ok(!existsSync(legacy) && !existsSync(other));
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
