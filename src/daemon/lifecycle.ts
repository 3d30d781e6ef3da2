/**
 * The life of every long-running nuketown process (approvald, the agent
 * daemon, the chat presence; next the dashboard and the cloud controller):
 * read the town from its manifest (or a declaration), watch that file, serve
 * until a stop signal (exit 0) or until the town changes under it — then
 * stop cleanly and exit 75, so systemd or `nuketown up` starts it again with
 * the new town (a revoked rule or a new approver takes effect at once).
 */
import { readFile, type Stats, unwatchFile, watchFile } from "node:fs";
import path from "node:path";
import { type TownSourceOptions, townFrom } from "../commands/town-source.ts";
import { EXIT, NuketownError } from "../errors.ts";
import { DEFAULT_MANIFEST } from "../town/manifest.ts";
import type { ResolvedTown } from "../town/types.ts";

/** What a daemon serves until it is told to stop. */
export interface Service {
  stop(): Promise<void>;
}

export interface WatchedTown {
  readonly town: ResolvedTown;
  /** The file the town came from: the manifest, or the declaration given. */
  readonly source: string;
  /** Its text when the town was read: anything else there later is a change. */
  readonly original: string | undefined;
}

/** The town, and what to watch for a change of it. */
export async function loadWatchedTown(opts: TownSourceOptions): Promise<WatchedTown> {
  const source = path.resolve(opts.cwd, opts.config ?? opts.manifest ?? DEFAULT_MANIFEST);
  // Read before the town is loaded: a change that lands in between is still seen.
  const original = await readText(source);
  return { town: await townFrom(opts), source, original };
}

export interface ServeOptions {
  /** Prefixes the log lines, e.g. "nuketown agent ada". */
  readonly name: string;
  readonly log: (line: string) => void;
  /** Resolves when the daemon should stop; default: SIGTERM or SIGINT. */
  readonly until?: Promise<unknown>;
  /** How often the town's file is checked; default 2 s. */
  readonly watchIntervalMs?: number;
  /**
   * Resolves when the service cannot go on (a chat credential refused): it is
   * stopped and this exits with the error's code (5 unless it says), so its
   * supervisor starts it again and the log's last line says why.
   */
  readonly failed?: Promise<Error>;
}

/**
 * Serves `service` until a stop (exit 0) or a change of the town (exit 75);
 * either way the service is stopped before this resolves.
 */
export async function serveUntilDone(
  service: Service,
  watched: WatchedTown,
  opts: ServeOptions,
): Promise<number> {
  const changed = townChange(watched.source, watched.original, opts.watchIntervalMs ?? 2000);
  try {
    const failed = opts.failed?.then((error) => new Failure(error));
    const why = await Promise.race([
      opts.until ?? stopSignal(),
      changed.promise,
      ...(failed ? [failed] : []),
    ]);
    await service.stop();
    if (why instanceof Failure) {
      const { error } = why;
      const code = error instanceof NuketownError ? error.exitCode : EXIT.failed;
      opts.log(`stopping (exit ${code}): ${error.message}`);
      return code;
    }
    if (why === CHANGED) {
      opts.log(
        `${watched.source} changed: stopping to start again with the new town (exit ${EXIT.townChanged})`,
      );
      return EXIT.townChanged;
    }
    return EXIT.ok;
  } finally {
    changed.stop();
  }
}

const CHANGED = Symbol("town changed");

/** The service gave up, with the error that says why. */
class Failure {
  readonly error: Error;
  constructor(error: Error) {
    this.error = error;
  }
}

function readText(file: string): Promise<string | undefined> {
  return new Promise((resolve) =>
    readFile(file, "utf8", (error, text) => resolve(error ? undefined : text)),
  );
}

/**
 * Resolves when the file at `file` holds something else than `original`.
 * apply replaces the manifest by a rename, so the path is polled, not the inode.
 * A file that vanished (mid-replace, or removed) is not a change.
 */
function townChange(file: string, original: string | undefined, intervalMs: number) {
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
