/**
 * The uid registry (test/support/uids.ts) keeps test files that run at the
 * same time from making accounts with the same uid: its rows do not
 * overlap, and every test uid written in an integration test or a support
 * file is one its own file owns.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { REPO_ROOT } from "../support/fixtures.ts";
import { TEST_UID_MAX, TEST_UID_MIN } from "../support/host.ts";
import { BENCH_UIDS, UID_REGISTRY, uidsOf } from "../support/uids.ts";

/** The files that make accounts, or hand uids to helpers that do. */
const SCANNED = ["test/integration", "test/support", "test/attack"].flatMap((dir) =>
  readdirSync(path.join(REPO_ROOT, dir))
    .filter((name) => name.endsWith(".ts"))
    .map((name) => `${dir}/${name}`),
);
/** Where the range itself is defined, not a uid used. */
const DEFINITIONS = new Set(["test/support/host.ts", "test/support/uids.ts"]);

/** Numbers in the test range written in `text`, with their line; a declared uidRange and the range's own bounds are no uid. */
function uidsWritten(text: string): { uid: number; line: number }[] {
  const found: { uid: number; line: number }[] = [];
  const lines = text.replace(/uidRange:\s*\{[^}]*\}/g, (m) => m.replace(/\d/g, "0")).split("\n");
  lines.forEach((line, index) => {
    for (const match of line.matchAll(/(?<![\d_.])(\d{5})(?![\d_])/g)) {
      const uid = Number(match[1]);
      if (uid > TEST_UID_MIN && uid < TEST_UID_MAX) found.push({ uid, line: index + 1 });
    }
  });
  return found;
}

describe("the uid registry", () => {
  it("has rows inside the test range, each owned by a file that exists", () => {
    for (const row of UID_REGISTRY) {
      assert.ok(row.min <= row.max, `${row.file}: ${row.min}-${row.max}`);
      assert.ok(row.min > TEST_UID_MIN && row.max < TEST_UID_MAX, `${row.file}: ${row.min}`);
      assert.ok(existsSync(path.join(REPO_ROOT, row.file)), `${row.file} does not exist`);
    }
  });

  it("gives no uid to two rows", () => {
    const rows = [...UID_REGISTRY].sort((a, b) => a.min - b.min);
    for (let i = 1; i < rows.length; i++) {
      const [before, row] = [rows[i - 1], rows[i]];
      assert.ok(before && row);
      assert.ok(
        before.max < row.min,
        `${before.file} (${before.min}-${before.max}) and ${row.file} (${row.min}-${row.max}) overlap`,
      );
    }
  });

  it("lets every test file use only the uids it owns", () => {
    const strays: string[] = [];
    for (const file of SCANNED.filter((f) => !DEFINITIONS.has(f))) {
      const owned = UID_REGISTRY.some((r) => r.file === file)
        ? uidsOf(path.join(REPO_ROOT, file))
        : undefined;
      for (const { uid, line } of uidsWritten(readFileSync(path.join(REPO_ROOT, file), "utf8"))) {
        if (owned?.has(uid)) continue;
        const owner = UID_REGISTRY.find((r) => uid >= r.min && uid <= r.max)?.file;
        strays.push(
          `${file}:${line}: uid ${uid} is ${owner ? `${owner}'s` : "reserved for no file"}`,
        );
      }
    }
    assert.deepEqual(strays, [], "reserve the uids in test/support/uids.ts");
  });

  it("keeps the benches to their own uids, which no test file owns", () => {
    for (const row of UID_REGISTRY)
      assert.ok(
        row.max < BENCH_UIDS.min || row.min > BENCH_UIDS.max,
        `${row.file} (${row.min}-${row.max}) reaches into the benches' ${BENCH_UIDS.min}-${BENCH_UIDS.max}`,
      );
    const benches = readdirSync(path.join(REPO_ROOT, "bench"))
      .filter((name) => name.endsWith(".ts"))
      .map((name) => `bench/${name}`);
    assert.ok(benches.length > 0);
    const strays = benches.flatMap((file) =>
      uidsWritten(readFileSync(path.join(REPO_ROOT, file), "utf8"))
        .filter(({ uid }) => uid < BENCH_UIDS.min || uid > BENCH_UIDS.max)
        .map(({ uid, line }) => `${file}:${line}: uid ${uid}`),
    );
    assert.deepEqual(strays, [], `benches keep to ${BENCH_UIDS.min}-${BENCH_UIDS.max}`);
  });

  it("finds a uid written anywhere in a line, and none in a declared uidRange or a timeout", () => {
    const text = [
      "const UID = 60741;",
      'mustRun("useradd", ["--uid", "60602", name]);',
      "uidRange: { min: 60300, max: 60399 },",
      "setTimeout(done, 60_000); const big = 160700;",
    ].join("\n");
    assert.deepEqual(uidsWritten(text), [
      { uid: 60741, line: 1 },
      { uid: 60602, line: 2 },
    ]);
  });
});
