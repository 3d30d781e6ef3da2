import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { systemRunner } from "../os/process.ts";
import { isExecutable, searchPath, which } from "../os/which.ts";
import type { UnitFile } from "./render/units.ts";

export type VerifyResult = { ok: true } | { ok: false; output: string } | { skipped: string };

export interface VerifyOptions {
  /**
   * Where to look for the tools.
   * @default $PATH, then /usr/sbin, /sbin, /usr/bin, /bin (visudo lives in sbin, often off a user's PATH)
   */
  readonly searchPath?: readonly string[];
}

const TOOL_TIMEOUT_MS = 60_000;

/**
 * Run `visudo -c -s -f` on `content`: syntax plus strict checks (every alias
 * used is defined). Skipped with the package to install when visudo is absent.
 */
export async function verifySudoers(
  content: string,
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const visudo = await findTool("visudo", options);
  if (!visudo) return { skipped: "visudo not found: apt-get install sudo" };
  return withTempDir(async (dir) => {
    const file = path.join(dir, "nuketown");
    // The mode sudo wants for a fragment; visudo -c does not insist, sudo does.
    await writeFile(file, content, { mode: 0o440 });
    const run = await runTool(visudo, ["-c", "-s", "-f", file]);
    return run.code === 0 ? { ok: true } : { ok: false, output: tidy(run.output, dir) };
  });
}

/**
 * Run `systemd-analyze verify` on the units, as a set (so their references to
 * each other resolve), without PID 1: this works in a container.
 *
 * - `--man=no`: no Documentation= lookups; `--generators=no`: generators need
 *   a booted system and add nothing to our units; `--recursive-errors=no`:
 *   report our units, not the distribution's units they reference.
 * - verify refuses an ExecStart binary that does not exist, and nuketown is
 *   usually not installed yet when its units are rendered: in the copy, an
 *   Exec* binary that is missing here is pointed at /bin/sh, so every other
 *   setting is still checked. Line numbers stay those of the rendered files.
 * - Warnings (unknown keys, bad values) leave the exit code at 0, so any
 *   output at SYSTEMD_LOG_LEVEL=warning counts as a failure.
 * - When even a trivial probe unit fails, the tool cannot work on this host:
 *   the result is skipped with its output, not a failure of our units.
 */
export async function verifyUnits(
  units: readonly UnitFile[],
  options: VerifyOptions = {},
): Promise<VerifyResult> {
  const tool = await findTool("systemd-analyze", options);
  if (!tool) return { skipped: "systemd-analyze not found: apt-get install systemd" };
  if (units.length === 0) return { ok: true };
  return withTempDir(async (dir) => {
    const files: string[] = [];
    for (const unit of units) {
      if (unit.name.includes("/") || unit.name.startsWith(".")) {
        throw new Error(`not a unit file name: ${JSON.stringify(unit.name)}`);
      }
      const file = path.join(dir, unit.name);
      await writeFile(file, await withResolvableBinaries(unit.content), { mode: 0o644 });
      files.push(file);
    }
    const run = await analyze(tool, files);
    if (run.code === 0 && run.output.trim() === "") return { ok: true };

    const probe = path.join(dir, "nuketown-verify-probe.service");
    await writeFile(probe, "[Service]\nType=oneshot\nExecStart=/bin/sh -c true\n");
    const probed = await analyze(tool, [probe]);
    if (probed.code !== 0 || probed.output.trim() !== "") {
      return {
        skipped: `systemd-analyze cannot verify units on this host: ${tidy(probed.output, dir).trim()}`,
      };
    }
    return { ok: false, output: tidy(run.output, dir) };
  });
}

function analyze(tool: string, files: readonly string[]) {
  return runTool(
    tool,
    ["verify", "--man=no", "--generators=no", "--recursive-errors=no", ...files],
    {
      SYSTEMD_LOG_LEVEL: "warning",
      SYSTEMD_LOG_COLOR: "0",
      SYSTEMD_COLORS: "0",
      SYSTEMD_PAGER: "",
    },
  );
}

const EXEC_LINE = /^(Exec[A-Za-z]+=)([-@:+!]*)(\S+)(.*)$/;

/** Point Exec* lines whose binary is missing here at /bin/sh (see verifyUnits). */
async function withResolvableBinaries(content: string): Promise<string> {
  const lines = content.split("\n");
  for (const [i, line] of lines.entries()) {
    const match = EXEC_LINE.exec(line);
    if (!match) continue;
    const [, key, prefix, binary, rest] = match;
    if (binary?.startsWith("/") && !(await isExecutable(binary))) {
      lines[i] = `${key}${prefix}/bin/sh${rest}`;
    }
  }
  return lines.join("\n");
}

function findTool(name: string, options: VerifyOptions): Promise<string | undefined> {
  return which(name, options.searchPath ?? [...searchPath(), "/usr/bin", "/bin"]);
}

interface ToolRun {
  readonly code: number;
  /** stdout then stderr. */
  readonly output: string;
}

async function runTool(
  file: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<ToolRun> {
  const result = await systemRunner
    .run(file, args, {
      env: { ...process.env, ...env },
      timeoutMs: TOOL_TIMEOUT_MS,
      allowFailure: true,
    })
    .catch((error: Error) => {
      throw new Error(`${file} ${args.join(" ")} could not run: ${error.message}`, {
        cause: error,
      });
    });
  return { code: result.code, output: `${result.stdout}${result.stderr}` };
}

async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  // mkdtemp creates the dir 0700: nobody else can read or swap what we check.
  const dir = await mkdtemp(path.join(tmpdir(), "nuketown-verify-"));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Tool messages name our temp files; show the unit or file name alone. */
function tidy(output: string, dir: string): string {
  return output.replaceAll(`${dir}${path.sep}`, "");
}
