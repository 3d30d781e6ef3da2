/**
 * A copy of nuketown installed for a test town, as `nuketown install` makes
 * it, under the test's temp root: the gate, the shim and the daemons run it,
 * never the checkout (which may sit in a 0700 directory agents cannot enter).
 */
import path from "node:path";
import { REPO_ROOT } from "./fixtures.ts";
import { mustRun } from "./host.ts";

const BIN = path.join(REPO_ROOT, "bin", "nuketown");

/** The install prefix a test town declares (`install.prefix`); `up` installs into it itself. */
export const testPrefix = (root: string) => path.join(root, "prefix");

/** Install the checkout's build below `root` (needs root; `npm test` builds first). */
export function installForTest(root: string): string {
  const prefix = testPrefix(root);
  mustRun(BIN, [
    "install",
    "--prefix",
    prefix,
    "--no-restart",
    // What `npm test` built: other work may change sources while the suite runs.
    "--any-build",
    "--manifest",
    path.join(root, "no-manifest"),
  ]);
  return prefix;
}
