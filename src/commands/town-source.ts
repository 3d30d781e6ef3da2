/**
 * Where a host command gets its town: a declaration (`--config`, or the
 * positional argument), or the manifest that apply installed, which is what
 * the boot-time reset and the daemons read.
 */
import { readFile } from "node:fs/promises";
import { ConfigError, RefusedError } from "../errors.ts";
import { DEFAULT_MANIFEST, parseManifest } from "../town/manifest.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";

export { DEFAULT_MANIFEST };

export interface TownSourceOptions {
  readonly config?: string;
  readonly manifest?: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly cwd: string;
  readonly err: NodeJS.WritableStream;
}

export async function townFrom(opts: TownSourceOptions): Promise<ResolvedTown> {
  if (opts.config !== undefined) {
    // Loaded only for a declaration: the schema and the parsers cost the daemons that read
    // the manifest ~35 MB of memory they would never use.
    const [{ loadTown }, { writeWarnings }] = await Promise.all([
      import("../town/load.ts"),
      import("./check.ts"),
    ]);
    const { town, warnings } = await loadTown(opts.config, opts);
    writeWarnings(opts.err, warnings);
    return town;
  }
  const manifest = opts.manifest ?? DEFAULT_MANIFEST;
  let text: string;
  try {
    text = await readFile(manifest, "utf8");
  } catch {
    throw new ConfigError(manifest, [
      {
        path: "",
        message: "no manifest here: run `nuketown apply <config>` first, or pass --config",
      },
    ]);
  }
  const parsed = parseManifest(text);
  if (!parsed.ok) throw new ConfigError(manifest, parsed.problems);
  return parsed.town;
}

export function requireRoot(what: string): void {
  if (process.geteuid?.() !== 0)
    throw new RefusedError(`${what} changes the host and must run as root`);
}

/** The enabled agent `name` of the town, or a configuration error that names the ones there are. */
export function agentOf(
  town: ResolvedTown,
  name: string,
  opts: Pick<TownSourceOptions, "config" | "manifest">,
): ResolvedAgent {
  const agent = town.agents.find((a) => a.name === name);
  if (agent) return agent;
  throw new ConfigError(opts.config ?? opts.manifest ?? "the manifest", [
    {
      path: `agents.${name}`,
      message: `no enabled agent "${name}" in town ${town.name} (agents: ${town.agents.map((a) => a.name).join(", ") || "none"})`,
    },
  ]);
}

/** A service that acts as the agent refuses to run as anyone else; `why` says what is the agent's. */
export function requireAgentUid(agent: ResolvedAgent, command: string, why: string): void {
  const uid = process.getuid?.();
  if (uid === agent.uid) return;
  throw new RefusedError(
    `nuketown ${command} ${agent.name} must run as ${agent.name} (uid ${agent.uid}), not as uid ${uid}: ` +
      `${why} (runuser -u ${agent.name} -- nuketown ${command} ${agent.name})`,
  );
}
