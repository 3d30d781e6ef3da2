/**
 * Places files in an agent's home by a process running AS the agent, never
 * as root: a symlink the agent planted (in its home or a persisted dir) can
 * then only lead where the agent could already write.
 */
import path from "node:path";
import { SOURCES } from "../sources.ts";
import type { ResolvedAgent } from "../town/types.ts";
import type { HomeLink } from "./render/runtime-config.ts";
import type { Runner } from "./system.ts";

export interface HomeFile {
  /** Absolute path inside the agent's home. */
  readonly path: string;
  readonly content: string | Buffer;
  /** Octal mode, e.g. "0600". */
  readonly mode: string;
}

const WRITER = path.join(SOURCES, "host", "agent-files-writer.ts");

export async function writeFilesAsAgent(
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
  await runner.run(process.execPath, [WRITER], {
    uid: agent.uid,
    gid: agent.gid,
    cwd: "/",
    env: { HOME: agent.home, PATH: "/usr/bin:/bin" },
    input: JSON.stringify(payload),
  });
}
