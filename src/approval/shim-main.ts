/**
 * The `sudo` an agent finds first on its PATH. It understands sudo's flags
 * and hands the request to the approval gate through the real sudo (the
 * gate is the agent's only NOPASSWD command). Its wrapper calls it as
 * `shim-main.ts --gate G --sudo S -- <the agent's sudo arguments>`.
 */
import { spawn } from "node:child_process";
import { gateArguments, parseSudoArgs, SudoUsageError } from "./sudo-args.ts";

const args = process.argv.slice(2);
const separator = args.indexOf("--");
const own = args.slice(0, Math.max(separator, 0));
const option = (name: string) => {
  const i = own.indexOf(name);
  return i >= 0 ? own[i + 1] : undefined;
};
const gate = option("--gate");
const sudo = option("--sudo") ?? "/usr/bin/sudo";
if (separator < 0 || gate === undefined) {
  process.stderr.write(
    "nuketown: the sudo shim wrapper is broken; reinstall with nuketown apply\n",
  );
  process.exit(1);
}

try {
  const invocation = parseSudoArgs(args.slice(separator + 1));
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
    case "run": {
      if (invocation.preserveEnv !== false) {
        throw new SudoUsageError(
          "sudo: -E/--preserve-env is not available: approved commands run with a clean environment",
        );
      }
      const child = spawn(sudo, ["-n", gate, ...gateArguments(invocation)], { stdio: "inherit" });
      child.on("error", (error) => {
        process.stderr.write(`nuketown: cannot run ${sudo}: ${error.message}\n`);
        process.exit(1);
      });
      child.on("close", (code, signal) => process.exit(code ?? (signal ? 128 + 1 : 1)));
      break;
    }
  }
} catch (error) {
  if (error instanceof SudoUsageError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  }
  throw error;
}
