/**
 * Where the running nuketown is: a checkout (running `src/` with type
 * stripping, or its build in `dist/`) or an installed copy
 * (`<prefix>/lib/nuketown/<version>`, see install/layout.ts), which carries
 * an `install.json` naming its version and prefix.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

const here = import.meta.dirname;

/** The directory holding `src/` or `dist/`: a checkout, or one installed version. */
export const PROGRAM_ROOT = path.dirname(here);

/** A module of the running program, by its path below `src/` without extension. */
export const programModule = (relative: string) =>
  path.join(here, `${relative}${path.basename(here) === "dist" ? ".js" : ".ts"}`);

/** The `bin/nuketown` launcher beside the running program. */
export const LAUNCHER = path.join(PROGRAM_ROOT, "bin", "nuketown");

export interface RunningInstall {
  readonly version: string;
  readonly prefix: string;
}

let cached: RunningInstall | null | undefined;

/** The installed copy this process runs from, or undefined in a checkout. */
export function runningInstall(): RunningInstall | undefined {
  if (cached === undefined) {
    try {
      const info = JSON.parse(readFileSync(path.join(PROGRAM_ROOT, "install.json"), "utf8"));
      cached =
        typeof info.version === "string" && typeof info.prefix === "string"
          ? { version: info.version, prefix: info.prefix }
          : null;
    } catch {
      cached = null;
    }
  }
  return cached ?? undefined;
}

/**
 * The checkout's `src/` directory (also when its build runs). Only the portal
 * still runs a module from here as the agent; it should move to the installed
 * copy (`town.install.programDir`), which an agent can always read.
 */
export const SOURCES = path.basename(here) === "dist" ? path.join(PROGRAM_ROOT, "src") : here;
