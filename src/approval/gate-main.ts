/**
 * Entry of the approval gate (see gate.ts), bundled by the build into one
 * file (`dist/libexec/gate.cjs`) that loads nothing but Node's own modules.
 * Its wrapper, installed root-owned at `install.gate`, calls it as
 * `gate.cjs --manifest M -- <args>`: only what precedes the first `--`
 * configures the gate, and that part is fixed by the wrapper, never by the
 * agent.
 *
 * `<args>` are the gate's own strict format (sudo-args.ts), or, after
 * `--sudo-argv`, sudo's own command line as the agent typed it: the `sudo`
 * shim is a two-line shell script that passes it on through the real sudo,
 * so a sudo costs one Node start-up, not two. Both spellings reach the same
 * request: the agent gains nothing by calling the gate either way.
 */
import { readFileSync } from "node:fs";
import { parseManifest } from "../town/manifest.ts";
import type { ResolvedTown } from "../town/types.ts";
import { GATE_EXIT, runGate } from "./gate.ts";
import { gateArguments, parseSudoArgs, SudoUsageError } from "./sudo-args.ts";

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

let argv = args.slice(separator + 1);
if (argv[0] === "--sudo-argv") {
  try {
    const invocation = parseSudoArgs(argv.slice(1));
    switch (invocation.mode) {
      case "help":
        process.stdout.write(
          "usage: sudo [-u user] [-g group] [-H] [-n] [-i | -s] [-D dir] [--] command [args...]\n" +
            "Every command goes to a human for approval (nuketown); there is no password.\n",
        );
        process.exit(0);
        break;
      case "version":
        process.stdout.write(
          "nuketown sudo shim (commands are approved by a human through the nuketown gate)\n",
        );
        process.exit(0);
        break;
      case "validate":
      case "invalidate":
        // Nothing is cached: every command is approved on its own.
        process.exit(0);
        break;
      case "list":
        process.stdout.write(
          "You may run any command through sudo; each one is sent to a human for approval (nuketown).\n",
        );
        process.exit(0);
        break;
      case "run":
        if (invocation.preserveEnv !== false) {
          throw new SudoUsageError(
            "sudo: -E/--preserve-env is not available: approved commands run with a clean environment",
          );
        }
        argv = gateArguments(invocation);
        break;
    }
  } catch (error) {
    if (!(error instanceof SudoUsageError)) throw error;
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
}

let town: ResolvedTown;
try {
  const parsed = parseManifest(readFileSync(manifest, "utf8"));
  if (!parsed.ok)
    throw new Error(
      parsed.problems.map((p) => `${p.path ? `${p.path}: ` : ""}${p.message}`).join("; "),
    );
  town = parsed.town;
} catch (error) {
  process.stderr.write(
    `nuketown: cannot read the town manifest ${manifest}: ${(error as Error).message}; sudo denied\n`,
  );
  process.exit(GATE_EXIT.refused);
}
// No top-level await: the bundle is CommonJS, which Node loads with less memory than an ES module.
void runGate({
  argv,
  env: process.env,
  euid: process.geteuid?.() ?? -1,
  cwd: process.cwd(),
  town,
  stderr: process.stderr,
  stdout: process.stdout,
}).then((code) => {
  process.exitCode = code;
});
