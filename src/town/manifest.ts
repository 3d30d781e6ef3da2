/**
 * The manifest: the resolved town as every daemon reads it
 * (`<etcDir>/nuketown/town.json`, written by apply or by the NixOS module).
 * A versioned contract between the nuketown that wrote it and the one that
 * reads it: `parseManifest` checks the version (a newer or older one is a
 * clear error saying what to run), the shape a daemon relies on (every
 * problem with its path), and hands back the town frozen.
 *
 * No schema library here on purpose: the daemons read this, and zod costs
 * each of them ~35 MB it would use for nothing else. Pure: no I/O.
 */
import type { Problem } from "./problems.ts";
import { type ManagedLayer, NIXOS_LAYERS, type ResolvedTown } from "./types.ts";

/** The manifest format this nuketown writes and reads. */
export const MANIFEST_VERSION = 1;

/** Where a town's manifest is, below its `etcDir`. */
export const manifestPath = (etcDir: string) => `${etcDir}/nuketown/town.json`;

/** The manifest of a town whose `etcDir` is /etc: what commands read by default. */
export const DEFAULT_MANIFEST = manifestPath("/etc");

export function renderManifest(town: ResolvedTown): string {
  return `${JSON.stringify({ version: MANIFEST_VERSION, town }, null, 2)}\n`;
}

export type ManifestResult =
  | { readonly ok: true; readonly town: ResolvedTown; readonly version: number }
  | { readonly ok: false; readonly problems: readonly Problem[] };

/** The manifest's text, checked and frozen; or every problem, each with its path. */
export function parseManifest(text: string): ManifestResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return fail("", `not JSON (${(error as Error).message}): run nuketown apply again`);
  }
  if (!isRecord(parsed)) return fail("", "expected a JSON object: not a nuketown manifest");
  const version = parsed.version;
  if (typeof version !== "number" || !Number.isInteger(version))
    return fail("version", "missing: not a nuketown manifest");
  if (version > MANIFEST_VERSION)
    return fail(
      "version",
      `version ${version} was written by a newer nuketown; this one reads version ${MANIFEST_VERSION}: install the newer nuketown (nuketown install), or run nuketown apply with this one to write version ${MANIFEST_VERSION}`,
    );
  if (version < MANIFEST_VERSION)
    return fail(
      "version",
      `version ${version} was written by an older nuketown; this one reads version ${MANIFEST_VERSION}: run nuketown apply again to rewrite it`,
    );
  const problems = townProblems(parsed.town);
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, town: deepFreeze(parsed.town as ResolvedTown), version };
}

/** What a daemon relies on in the resolved town. */
function townProblems(town: unknown): Problem[] {
  if (!isRecord(town)) return [{ path: "town", message: "expected the resolved town" }];
  const problems: Problem[] = [];
  const need = (at: string, value: unknown, kind: "string" | "number" | "object" | "array") => {
    const ok =
      kind === "array"
        ? Array.isArray(value)
        : kind === "object"
          ? isRecord(value)
          : typeof value === kind;
    if (!ok)
      problems.push({
        path: at,
        message: `expected ${{ array: "a list", object: "a table", string: "a string", number: "a number" }[kind]}`,
      });
    return ok;
  };
  for (const key of ["name", "domain", "agentsDir", "persistDir", "stateDir", "runtimeDir"])
    need(`town.${key}`, town[key], "string");
  for (const key of ["homes", "approval", "chat", "secrets", "install", "paths", "uidRange"])
    need(`town.${key}`, town[key], "object");
  for (const key of ["humans", "agents", "disabledAgents"]) need(`town.${key}`, town[key], "array");
  if (isRecord(town.paths)) need("town.paths.manifest", town.paths.manifest, "string");
  if (Array.isArray(town.agents)) {
    town.agents.forEach((agent: unknown, i) => {
      const at = `town.agents[${i}]`;
      if (!need(at, agent, "object") || !isRecord(agent)) return;
      for (const key of ["name", "home", "group", "stateDir", "runtimeDir", "socket"])
        need(`${at}.${key}`, agent[key], "string");
      need(`${at}.uid`, agent.uid, "number");
      for (const key of ["git", "secrets", "sudo", "runtime", "chat", "portal", "cloud"])
        need(`${at}.${key}`, agent[key], "object");
      for (const key of ["persist", "devices", "repos", "packages", "files"])
        need(`${at}.${key}`, agent[key], "array");
    });
  }
  if (town.managed !== undefined) {
    const managed = town.managed;
    if (!isRecord(managed) || managed.by !== "nixos")
      problems.push({ path: "town.managed.by", message: 'expected "nixos"' });
    else if (
      !Array.isArray(managed.layers) ||
      managed.layers.some((l) => typeof l !== "string" || !NIXOS_LAYERS.includes(l as ManagedLayer))
    )
      problems.push({
        path: "town.managed.layers",
        message: `expected some of ${NIXOS_LAYERS.join(", ")}`,
      });
  }
  return problems;
}

function fail(path: string, message: string): ManifestResult {
  return { ok: false, problems: [{ path, message }] };
}

const isRecord = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
