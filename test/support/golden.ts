/**
 * Golden files for rendered artifacts: compare with test/golden/<name>;
 * run with UPDATE_GOLDEN=1 to rewrite them after an intended change.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const GOLDEN_DIR = path.join(import.meta.dirname, "..", "golden");

export function assertGolden(name: string, actual: string): void {
  const file = path.join(GOLDEN_DIR, name);
  if (process.env.UPDATE_GOLDEN === "1" || !existsSync(file)) {
    if (process.env.CI === "true" && !existsSync(file)) {
      assert.fail(`golden file ${name} is missing; run UPDATE_GOLDEN=1 npm test and commit it`);
    }
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, actual);
    return;
  }
  assert.equal(
    actual,
    readFileSync(file, "utf8"),
    `${name} differs from its golden file (UPDATE_GOLDEN=1 to accept)`,
  );
}
