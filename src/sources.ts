/**
 * Where nuketown's TypeScript sources are, also when this process runs their
 * build in dist/: programs that run as separate processes (the gate and shim
 * wrappers, the writer that runs as an agent, the launcher) are always taken
 * from the sources, so what apply renders does not depend on which of the two
 * ran it, and rebuilding dist/ never breaks an installed wrapper.
 */
import path from "node:path";

const here = import.meta.dirname;

/** The `src` directory of this checkout. */
export const SOURCES = path.basename(here) === "dist" ? path.join(path.dirname(here), "src") : here;

/** The `bin/nuketown` launcher: runs the build when it is fresh, the sources otherwise. */
export const LAUNCHER = path.join(path.dirname(SOURCES), "bin", "nuketown");
