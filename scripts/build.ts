/**
 * Compiles src/ to dist/ (plain JavaScript) and stamps it. bin/nuketown runs
 * dist/ while no source is newer than the stamp, else src/ directly: the
 * build only saves the long-running daemons the memory of Node's type
 * stripping (~18 MB each), it is never needed for correctness.
 */
import { spawnSync } from "node:child_process";
import { rmSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.join(import.meta.dirname, "..");
const dist = path.join(root, "dist");
rmSync(dist, { recursive: true, force: true });
// The stamp carries the time the build began: a source saved while tsc runs is newer than it.
const began = new Date();
const tsc = spawnSync(
  path.join(root, "node_modules", ".bin", "tsc"),
  ["-p", path.join(root, "tsconfig.build.json")],
  { stdio: "inherit" },
);
if ((tsc.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") {
  // An install without dev dependencies (npm ci --omit=dev): bin/nuketown runs src/.
  console.log("build: TypeScript is not installed; nuketown runs from src/");
  process.exit(0);
}
if (tsc.status !== 0) {
  rmSync(dist, { recursive: true, force: true });
  process.exit(tsc.status ?? 1);
}
const stamp = path.join(dist, ".built");
writeFileSync(stamp, `${began.toISOString()}\n`);
utimesSync(stamp, began, began);
