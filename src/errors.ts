/**
 * The few errors the CLI knows how to report, each with its exit code.
 * Anything else is a bug: the top-level handler prints its stack.
 */
import { formatProblem, type Problem } from "./town/problems.ts";

export const EXIT = {
  ok: 0,
  /** An internal error: a bug in nuketown. */
  internal: 1,
  /** Invalid configuration or command-line usage; nothing was changed. */
  invalid: 2,
  /** An operation refused for safety (a foreign account, a failed check, a lock held). */
  refused: 3,
  /** A required tool or runtime is missing on this host. */
  missing: 4,
  /**
   * An operation failed: a program the host runs did not do what was asked
   * (the package manager, useradd, btrfs, a round); the message says what was done.
   */
  failed: 5,
  /** A daemon's town changed (the manifest was rewritten): it stopped to be started again. */
  townChanged: 75,
} as const;

export class NuketownError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** The declaration (or the command line) is wrong; lists every problem. */
export class ConfigError extends NuketownError {
  readonly problems: readonly Problem[];
  readonly source: string;
  constructor(source: string, problems: readonly Problem[]) {
    const lines = problems.map((p) => `  ${formatProblem(p)}`);
    const count = problems.length === 1 ? "1 problem" : `${problems.length} problems`;
    super(`${source}: ${count}\n${lines.join("\n")}`, EXIT.invalid);
    this.problems = problems;
    this.source = source;
  }
}

export class RefusedError extends NuketownError {
  constructor(message: string) {
    super(message, EXIT.refused);
  }
}

export class FailedError extends NuketownError {
  constructor(message: string) {
    super(message, EXIT.failed);
  }
}

export class MissingToolError extends NuketownError {
  readonly tool: string;
  /** `source` is a Debian package name, or a whole sentence saying how to get the tool. */
  constructor(tool: string, source: string) {
    const fix = source.includes(" ") ? source : `apt-get install ${source}`;
    super(`${tool} is not installed (${fix})`, EXIT.missing);
    this.tool = tool;
  }
}
