/**
 * Compiles src/ to dist/ (plain JavaScript) and stamps it. bin/nuketown runs
 * dist/ while no source is newer than the stamp, else src/ directly: the
 * build only saves the long-running daemons the memory of Node's type
 * stripping (~18 MB each), it is never needed for correctness.
 */
import { spawnSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.join(import.meta.dirname, "..");
const dist = path.join(root, "dist");
rmSync(dist, { recursive: true, force: true });
const tsc = spawnSync(
  path.join(root, "node_modules", ".bin", "tsc"),
  ["-p", path.join(root, "tsconfig.build.json")],
  { stdio: "inherit" },
);
if (tsc.status !== 0) {
  rmSync(dist, { recursive: true, force: true });
  process.exit(tsc.status ?? 1);
}
writeFileSync(path.join(dist, ".built"), `${new Date().toISOString()}\n`);
