/**
 * Writes the files generated from src/town/schema.ts: the JSON Schema and the
 * reference page. `--check` writes nothing and exits 1 when a committed copy
 * is stale, naming it.
 *
 *   node scripts/generate.ts [--check]
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { generatedFiles } from "../src/town/reference.ts";

const ROOT = path.join(import.meta.dirname, "..");

/** Generated files whose copy under `root` is missing or differs from what the schema gives now. */
export async function staleFiles(root: string = ROOT): Promise<string[]> {
  const stale: string[] = [];
  for (const [file, content] of generatedFiles()) {
    const current = await readFile(path.join(root, file), "utf8").catch(() => undefined);
    if (current !== content) stale.push(file);
  }
  return stale;
}

/** Write every generated file under `root`; returns the ones whose content changed. */
export async function writeGenerated(root: string = ROOT): Promise<string[]> {
  const changed = await staleFiles(root);
  for (const [file, content] of generatedFiles()) {
    if (!changed.includes(file)) continue;
    await mkdir(path.dirname(path.join(root, file)), { recursive: true });
    await writeFile(path.join(root, file), content);
  }
  return changed;
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes("--check")) {
    const stale = await staleFiles();
    if (stale.length === 0) return 0;
    for (const file of stale) console.error(`stale: ${file}`);
    console.error("run `npm run generate` and commit the result");
    return 1;
  }
  const changed = await writeGenerated();
  for (const file of generatedFiles().keys()) {
    console.log(`${changed.includes(file) ? "wrote" : "unchanged"} ${file}`);
  }
  return 0;
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
