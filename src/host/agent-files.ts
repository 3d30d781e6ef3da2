/**
 * Places files in an agent's home by a process running AS the agent, never
 * as root: a symlink the agent planted (in its home or a persisted dir) can
 * then only lead where the agent could already write.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { PROGRAM_FILES } from "../install/layout.ts";
import type { Runner } from "../os/process.ts";
import { programModule } from "../sources.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import type { HomeLink } from "./render/runtime-config.ts";

export interface HomeFile {
  /** Absolute path inside the agent's home. */
  readonly path: string;
  readonly content: string | Buffer;
  /** Octal mode, e.g. "0600". */
  readonly mode: string;
}

/**
 * The writer runs as the agent, so it must be a program the agent can read:
 * the installed copy (a checkout may sit in a private directory, such as
 * root's home), or the running program where nothing is installed yet.
 */
function writerProgram(town: ResolvedTown): { node: string; script: string } {
  const node = path.join(town.install.programDir, PROGRAM_FILES.node);
  const script = path.join(town.install.programDir, PROGRAM_FILES.writer);
  if (existsSync(node) && existsSync(script)) return { node, script };
  return { node: process.execPath, script: programModule("host/agent-files-writer") };
}

export async function writeFilesAsAgent(
  town: ResolvedTown,
  agent: ResolvedAgent,
  files: readonly HomeFile[],
  runner: Runner,
  links: readonly HomeLink[] = [],
): Promise<void> {
  for (const entry of [...files, ...links.flatMap((l) => [l, { path: l.target }])]) {
    if (!entry.path.startsWith(`${agent.home}/`))
      throw new Error(`${entry.path} is outside ${agent.home}`);
  }
  if (files.length === 0 && links.length === 0) return;
  const payload = [
    ...files.map((f) => ({
      path: f.path,
      mode: Number.parseInt(f.mode, 8),
      content: Buffer.from(f.content).toString("base64"),
    })),
    ...links.map((l) => ({ path: l.path, link: l.target })),
  ];
  const writer = writerProgram(town);
  await runner.run(writer.node, [writer.script], {
    uid: agent.uid,
    gid: agent.gid,
    cwd: "/",
    env: { HOME: agent.home, PATH: "/usr/bin:/bin" },
    input: JSON.stringify(payload),
  });
}
