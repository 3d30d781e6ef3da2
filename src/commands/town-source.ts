/**
 * Where a host command gets its town: a declaration (`--config`, or the
 * positional argument), or the manifest that apply installed, which is what
 * the boot-time reset and the daemons read.
 */
import { readFile as readFileCallback, type Stats, unwatchFile, watchFile } from "node:fs";
import { readFile } from "node:fs/promises";
import { ConfigError, EXIT, RefusedError } from "../errors.ts";
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

export const CHANGED = Symbol("town changed");

export function readText(file: string): Promise<string | undefined> {
  return new Promise((resolve) =>
    readFileCallback(file, "utf8", (error, text) => resolve(error ? undefined : text)),
  );
}

/**
 * Resolves when the file at `file` holds something else than `original`.
 * apply replaces the manifest by a rename, so the path is polled, not the inode.
 * A file that vanished (mid-replace, or removed) is not a change.
 */
export function townChange(file: string, original: string | undefined, intervalMs: number) {
  let listener: ((current: Stats, previous: Stats) => void) | undefined;
  const promise = new Promise<typeof CHANGED>((resolve) => {
    let checking = false;
    listener = () => {
      if (checking) return;
      checking = true;
      void readText(file).then((text) => {
        checking = false;
        if (text !== undefined && text !== original) resolve(CHANGED);
      });
    };
    watchFile(file, { interval: intervalMs, persistent: false }, listener);
  });
  return {
    promise,
    stop: () => {
      if (listener) unwatchFile(file, listener);
    },
  };
}

/** The exit code that asks to be started again: the town changed under a running daemon. */
export const EXIT_TOWN_CHANGED = EXIT.townChanged;

/** Resolves on the first SIGTERM or SIGINT. */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off("SIGTERM", stop);
      process.off("SIGINT", stop);
      resolve(signal);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
  });
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
