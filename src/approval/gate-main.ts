/**
 * Entry of the approval gate (see gate.ts). Its wrapper, installed root-owned
 * at `install.gate`, calls it as `gate-main.ts --manifest M -- <args>`: only
 * what precedes the first `--` configures the gate, and that part is fixed
 * by the wrapper, never by the agent.
 */
import { readFileSync } from "node:fs";
import type { ResolvedTown } from "../town/types.ts";
import { GATE_EXIT, runGate } from "./gate.ts";

const args = process.argv.slice(2);
const separator = args.indexOf("--");
const own = separator < 0 ? args : args.slice(0, separator);
const manifestIndex = own.indexOf("--manifest");
const manifest = manifestIndex >= 0 ? own[manifestIndex + 1] : undefined;
if (separator < 0 || manifest === undefined || own.length !== 2) {
  process.stderr.write(
    "nuketown: the gate wrapper is broken (expected --manifest FILE -- ARGS); reinstall with nuketown apply\n",
  );
  process.exit(GATE_EXIT.refused);
}
let town: ResolvedTown;
try {
  town = (JSON.parse(readFileSync(manifest, "utf8")) as { town: ResolvedTown }).town;
} catch (error) {
  process.stderr.write(
    `nuketown: cannot read the town manifest ${manifest}: ${(error as Error).message}; sudo denied\n`,
  );
  process.exit(GATE_EXIT.refused);
}
process.exitCode = await runGate({
  argv: args.slice(separator + 1),
  env: process.env,
  euid: process.geteuid?.() ?? -1,
  cwd: process.cwd(),
  town,
  stderr: process.stderr,
  stdout: process.stdout,
});
