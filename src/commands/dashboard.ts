/**
 * `nuketown dashboard serve` (as root: its unit, or `nuketown up`) runs the
 * town hall; `nuketown dashboard url` prints a one-time sign-in link for the
 * human who runs it (root may name one with --human).
 */
import { readFile, rm } from "node:fs/promises";
import { userInfo } from "node:os";
import path from "node:path";
import { loadWatchedTown, serveUntilDone } from "../daemon/lifecycle.ts";
import { mintToken } from "../dashboard/auth.ts";
import { readOwnSecret } from "../dashboard/secrets.ts";
import { Dashboard } from "../dashboard/server.ts";
import { EXIT, RefusedError } from "../errors.ts";
import { writeFileAtomic } from "../os/files.ts";
import type { Streams } from "../output.ts";
import type { ResolvedTown } from "../town/types.ts";
import { requireRoot, townFrom } from "./town-source.ts";

export interface DashboardOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  /** @default "127.0.0.1" */
  readonly address?: string;
  /** @default 7377; 0 picks a free port */
  readonly port?: number;
  readonly until?: Promise<unknown>;
  readonly onReady?: (dashboard: Dashboard) => void;
  readonly watchIntervalMs?: number;
}

/** Where the running dashboard says its URL, for `dashboard url` (world-readable). */
export const dashboardUrlFile = (town: Pick<ResolvedTown, "runtimeDir">) =>
  path.join(town.runtimeDir, "dashboard.json");

export async function dashboard(opts: DashboardOptions): Promise<number> {
  requireRoot("dashboard");
  const watched = await loadWatchedTown(opts);
  const { town } = watched;
  const log = (line: string) => opts.err.write(`nuketown dashboard: ${line}\n`);
  // The flags win over the declaration (a second dashboard of the same town, a test).
  const address = opts.address ?? town.dashboard?.address ?? "127.0.0.1";
  const port = opts.port ?? town.dashboard?.port;
  const server = new Dashboard({
    town,
    log,
    address,
    ...(port !== undefined && { port }),
  });
  await server.start();
  await writeFileAtomic(dashboardUrlFile(town), `${JSON.stringify({ url: server.url })}\n`, {
    mode: 0o644,
  });
  opts.onReady?.(server);
  opts.out.write(
    `nuketown dashboard: listening on ${server.url}; sign in with the link \`nuketown dashboard url\` prints for you\n`,
  );
  try {
    return await serveUntilDone(server, watched, {
      name: "nuketown dashboard",
      log,
      ...(opts.until !== undefined && { until: opts.until }),
      ...(opts.watchIntervalMs !== undefined && { watchIntervalMs: opts.watchIntervalMs }),
    });
  } finally {
    await rm(dashboardUrlFile(town), { force: true });
  }
}

export interface DashboardUrlOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  /** Root only: the declared human to sign in. */
  readonly human?: string;
  readonly clock?: () => number;
}

/** A sign-in link for a declared human, or undefined when the dashboard is not running. */
export async function signInLink(
  town: ResolvedTown,
  human: string,
  now: number = Date.now(),
): Promise<string | undefined> {
  const declared = town.humans.find((h) => h.name === human);
  if (!declared) throw new RefusedError(`${human} is not a human of town ${town.name}`);
  const running = await readFile(dashboardUrlFile(town), "utf8").catch(() => undefined);
  if (running === undefined) return undefined;
  const { url } = JSON.parse(running) as { url: string };
  const secret = await readOwnSecret(town, declared.unixUser);
  return `${url}/login?token=${mintToken(declared.name, secret, now)}`;
}

export async function dashboardUrl(opts: DashboardUrlOptions): Promise<number> {
  const town = await townFrom(opts);
  const me = userInfo().username;
  let human = town.humans.find((h) => h.unixUser === me)?.name;
  if (opts.human !== undefined) {
    if (process.getuid?.() !== 0 && opts.human !== human)
      throw new RefusedError("only root may make a link for someone else");
    human = opts.human;
  }
  if (!human)
    throw new RefusedError(
      `${me} is not a declared human of town ${town.name}: no dashboard for you`,
    );
  const link = await signInLink(town, human, opts.clock?.() ?? Date.now()).catch(
    (error: NodeJS.ErrnoException) => {
      if (error.code === "EACCES" || error.code === "ENOENT")
        throw new RefusedError(
          `cannot read your dashboard secret (${error.code}): has the dashboard started since you were declared?`,
        );
      throw error;
    },
  );
  if (!link) {
    opts.err.write(
      `nuketown dashboard url: the dashboard is not running (no ${dashboardUrlFile(town)})\n`,
    );
    return EXIT.missing;
  }
  opts.out.write(`${link}\n`);
  opts.err.write("(the link works once, for 5 minutes)\n");
  return EXIT.ok;
}
