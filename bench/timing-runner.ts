/**
 * The real runner, recording how long each program it started took: the
 * profile of a reset or an apply, for the benches that print one.
 */
import { performance } from "node:perf_hooks";
import { type Runner, systemRunner } from "../src/os/process.ts";

/** Time spent in each program the runner started, e.g. "btrfs subvolume delete". */
export type Spent = Map<string, number>;

export function timingRunner(spent: Spent): Runner {
  return {
    async run(program, args, options) {
      const t0 = performance.now();
      try {
        return await systemRunner.run(program, args, options);
      } finally {
        const key =
          program === process.execPath || program.endsWith("/bin/node")
            ? "node (as-agent file writer)"
            : program === "btrfs"
              ? `btrfs ${args.slice(0, 2).join(" ")}`
              : program === "/bin/sh" && options?.uid !== undefined
                ? "kill -9 -1 (as the agent)"
                : program;
        spent.set(key, (spent.get(key) ?? 0) + performance.now() - t0);
      }
    },
  };
}
