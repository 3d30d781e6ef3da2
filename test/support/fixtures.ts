/**
 * Towns for tests: the example declaration resolved with a fixed host name
 * and folder, so rendered output does not depend on where the repo lives.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseDeclaration } from "../../src/town/parse.ts";
import { resolveTown } from "../../src/town/resolve.ts";
import type { ResolvedTown } from "../../src/town/types.ts";

export const REPO_ROOT = path.join(import.meta.dirname, "..", "..");
export const FIXED_CONTEXT = { hostname: "signi", baseDir: "/etc/nuketown" } as const;

/** The raw example declaration (examples/town.toml), as a fresh object. */
export function exampleDeclaration(): Record<string, unknown> {
  const file = path.join(REPO_ROOT, "examples", "town.toml");
  return parseDeclaration(readFileSync(file, "utf8"), "toml", file) as Record<string, unknown>;
}

/** Resolve a raw declaration, failing the test with every problem if invalid. */
export function resolveOrThrow(raw: unknown): ResolvedTown {
  const result = resolveTown(raw, FIXED_CONTEXT);
  if (!result.town) {
    throw new Error(
      `fixture is invalid:\n${result.errors.map((e) => `${e.path}: ${e.message}`).join("\n")}`,
    );
  }
  return result.town;
}

export function exampleTown(): ResolvedTown {
  return resolveOrThrow(exampleDeclaration());
}

/** A small valid town to build variations from. */
export function minimalDeclaration(): Record<string, unknown> {
  return {
    name: "testtown",
    domain: "test.local",
    humans: { mayor: { displayName: "Mayor", email: "mayor@test.local", approver: true } },
    agents: { ada: { uid: 1100, role: "software", secrets: { sshKey: { file: "keys/ada.age" } } } },
  };
}
