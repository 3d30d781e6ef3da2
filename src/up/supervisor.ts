/**
 * Keeps the town's daemons running where systemd does not (containers, hosts
 * with another init): each is a child process, restarted when it dies, with
 * a growing delay so a daemon that cannot start does not spin. Each child's
 * output goes to its own log file. A service may get a cgroup of its own,
 * delegated to its user as systemd's Delegate=yes would: it runs in it from
 * its first instruction, and what it leaves there is killed when it ends.
 */
import { closeSync, openSync } from "node:fs";
import { open, stat } from "node:fs/promises";
import { GATED_EXEC_SCRIPT } from "../agent/cgroup.ts";
import { delegateCgroup, destroyCgroup, moveToCgroup } from "../agent/containment.ts";
import { stopUser } from "../host/stop.ts";
import { acquireLock, type LockHolder, lockHolder, releaseLock } from "../os/lock.ts";
import { type ChildProcess, startProcess, systemRunner } from "../os/process.ts";

export interface ServiceSpec {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** Run as this user (the caller is root). */
  readonly uid?: number;
  readonly gid?: number;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Appended with the child's stdout and stderr. */
  readonly log: string;
  /**
   * A cgroup v2 directory to run in: made, delegated to `uid`, joined before
   * the service's program starts, emptied (cgroup.kill) when it ends and
   * removed when the supervisor stops.
   */
  readonly cgroup?: string;
  /**
   * The agent's round (a reset) and this service: never started while the
   * round holds `lock` (the supervisor takes it to start the service), and
   * restarted at once, without back-off, when it died because a round ran:
   * while the lock was held, or after its process started (`stamp`'s mtime,
   * touched by every round as it ends).
   */
  readonly round?: { readonly lock: string; readonly stamp: string };
}

export interface ServiceState {
  readonly name: string;
  readonly pid: number | undefined;
  readonly restarts: number;
  /** ISO time the current process started. */
  readonly since: string | undefined;
  readonly lastExit?: string;
}

export interface SupervisorOptions {
  readonly onEvent?: (line: string) => void;
  /** First restart delay; doubles up to `maxDelayMs`, back to the first after a stable minute. */
  readonly minDelayMs?: number;
  readonly maxDelayMs?: number;
}

interface Running {
  readonly spec: ServiceSpec;
  child: ChildProcess | undefined;
  restarts: number;
  since: Date | undefined;
  delay: number;
  timer: NodeJS.Timeout | undefined;
  lastExit: string | undefined;
  /** Asked to restart (a new version installed): at once, not counted as a failure. */
  restartNow: boolean;
}

const STABLE_MS = 60_000;

export class Supervisor {
  readonly #services: Running[];
  readonly #onEvent: (line: string) => void;
  readonly #minDelay: number;
  readonly #maxDelay: number;
  #stopping = false;
  /** Ends every wait for a round's lock when the supervisor stops. */
  readonly #stopped = new AbortController();

  constructor(specs: readonly ServiceSpec[], options: SupervisorOptions = {}) {
    this.#onEvent = options.onEvent ?? (() => {});
    this.#minDelay = options.minDelayMs ?? 1000;
    this.#maxDelay = options.maxDelayMs ?? 30_000;
    this.#services = specs.map((spec) => ({
      spec,
      child: undefined,
      restarts: 0,
      since: undefined,
      delay: this.#minDelay,
      timer: undefined,
      lastExit: undefined,
      restartNow: false,
    }));
  }

  start(): void {
    for (const service of this.#services) this.#launch(service);
  }

  state(): ServiceState[] {
    return this.#services.map((s) => ({
      name: s.spec.name,
      pid: s.child?.pid,
      restarts: s.restarts,
      since: s.since?.toISOString(),
      ...(s.lastExit !== undefined && { lastExit: s.lastExit }),
    }));
  }

  /**
   * Restart every child now (SIGTERM, then SIGKILL after `graceMs`), each
   * started again at once through its command: after `nuketown install`, the
   * daemons run the new version.
   */
  async restartAll(graceMs = 5000): Promise<void> {
    if (this.#stopping) return;
    await Promise.all(
      this.#services.map(async (service) => {
        const child = service.child;
        service.restartNow = true;
        if (!child || child.exitCode !== null || child.signalCode !== null) {
          // Waiting out a back-off: start it now.
          if (service.timer !== undefined && child === undefined) {
            clearTimeout(service.timer);
            service.restartNow = false;
            service.restarts++;
            this.#launch(service);
          }
          return;
        }
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  /**
   * Stop every child (SIGTERM, then SIGKILL after `graceMs`) and restart
   * none; then kill what is left in their cgroups and remove them.
   */
  async stop(graceMs = 5000): Promise<void> {
    this.#stopping = true;
    this.#stopped.abort();
    await Promise.all(
      this.#services.map(async (service) => {
        clearTimeout(service.timer);
        const child = service.child;
        if (child && child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((resolve) => child.once("exit", resolve));
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
          await exited;
          clearTimeout(timer);
        }
        if (service.spec.cgroup === undefined) return;
        const { removed } = await destroyCgroup(service.spec.cgroup).catch(() => ({
          removed: false,
        }));
        if (!removed) this.#onEvent(`${service.spec.name}: cannot remove ${service.spec.cgroup}`);
      }),
    );
  }

  /**
   * Make and delegate the service's cgroup; false (and why, as an event) when
   * that fails: the service then runs in `up`'s own cgroup.
   */
  async #prepareCgroup(spec: ServiceSpec): Promise<boolean> {
    if (spec.cgroup === undefined) return false;
    try {
      await delegateCgroup(spec.cgroup, spec.uid ?? 0, spec.gid ?? 0);
      return true;
    } catch (error) {
      this.#onEvent(
        `${spec.name}: cannot make its cgroup ${spec.cgroup}: ${(error as Error).message}`,
      );
      return false;
    }
  }

  #launch(service: Running): void {
    void this.#start(service);
  }

  /** Start the service, holding its round's lock meanwhile: a round waits until it runs. */
  async #start(service: Running): Promise<void> {
    const lock = service.spec.round?.lock;
    if (lock !== undefined) {
      try {
        // Waits out a round that holds it (the supervisor never gives up on a service).
        await acquireLock(lock, `supervisor (starting ${service.spec.name})`, {
          waitMs: Number.MAX_SAFE_INTEGER,
          signal: this.#stopped.signal,
        });
      } catch (error) {
        if (this.#stopping) return;
        this.#onEvent(`${service.spec.name}: cannot take ${lock}: ${(error as Error).message}`);
      }
    }
    try {
      const inCgroup = await this.#prepareCgroup(service.spec);
      await this.#spawn(service, inCgroup);
    } finally {
      if (lock !== undefined) await releaseLock(lock).catch(() => {});
    }
  }

  /** Resolves once the child runs its program (in its cgroup, when it has one). */
  async #spawn(service: Running, inCgroup: boolean): Promise<void> {
    if (this.#stopping) return;
    const { spec } = service;
    let child: ChildProcess;
    try {
      const log = openSync(spec.log, "a", 0o640);
      try {
        // In a cgroup: sh waits for a line on stdin, sent once this process (root) has moved
        // it into the cgroup; then it execs the service. It starts as the service's user,
        // which may not move itself out of root's cgroup.
        child = startProcess(
          inCgroup ? "/bin/sh" : spec.command,
          inCgroup
            ? [
                "-c",
                GATED_EXEC_SCRIPT,
                `nuketown-${spec.name.replace(/\s+/g, "-")}`,
                spec.command,
                ...spec.args,
              ]
            : [...spec.args],
          {
            uid: spec.uid,
            gid: spec.gid,
            env: spec.env ?? process.env,
            cwd: spec.cwd,
            stdio: [inCgroup ? "pipe" : "ignore", log, log],
          },
        );
      } finally {
        closeSync(log);
      }
    } catch (error) {
      // A synchronous failure (an unwritable log, a bad argument) must not end `up`.
      service.child = undefined;
      this.#died(service, `could not start: ${(error as Error).message}`);
      return;
    }
    service.child = child;
    service.since = new Date();
    let moved: Promise<void> | undefined;
    if (inCgroup && spec.cgroup !== undefined) {
      const cgroup = spec.cgroup;
      const gate = child.stdin;
      gate?.on("error", () => {});
      const pid = child.pid;
      moved = (pid === undefined ? Promise.resolve() : moveToCgroup(cgroup, pid))
        .catch((error: Error) =>
          this.#onEvent(`${spec.name}: cannot move it into ${cgroup}: ${error.message}`),
        )
        .finally(() => gate?.end("go\n"));
    }
    this.#onEvent(`${spec.name}: started (pid ${child.pid})`);
    let gone = false;
    const died = (why: string) => {
      if (gone) return;
      gone = true;
      if (service.child === child) service.child = undefined;
      this.#died(service, why);
    };
    child.on("error", (error) => {
      service.lastExit = error.message;
      // A child that never started (ENOENT, a missing cwd) has no exit to wait for.
      if (child.pid === undefined) died(`could not start: ${error.message}`);
    });
    child.on("exit", (code, signal) => {
      if (signal || code === 0) {
        died(signal ? `killed by ${signal}` : `exited ${code}`);
        return;
      }
      // A daemon that gives up says why last (a refused chat token): that is the exit's reason.
      void lastLogLine(spec.log).then((line) => died(`exited ${code}${line ? `: ${line}` : ""}`));
    });
    await moved;
  }

  #died(service: Running, why: string): void {
    const since = service.since?.getTime() ?? Date.now();
    void this.#roundRan(service, since).then((round) => {
      if (round === undefined) return this.#restart(service, why, since);
      service.lastExit = why;
      if (this.#stopping) return;
      // The round stopped it and kills whatever it left: no reaping, no back-off.
      this.#onEvent(
        `${service.spec.name}: ${why} by ${round}; starting it again as soon as the round ends`,
      );
      service.restarts++;
      this.#launch(service);
    });
  }

  /** Who stopped the service, when a round did: it holds the lock, or ended after the service started. */
  async #roundRan(service: Running, since: number): Promise<string | undefined> {
    const round = service.spec.round;
    if (round === undefined) return undefined;
    const holder: LockHolder | undefined = await lockHolder(round.lock).catch(() => undefined);
    if (holder !== undefined && holder.pid !== process.pid)
      return `${holder.what || "a round"} (pid ${holder.pid})`;
    const ended = await stat(round.stamp).then(
      (s) => s.mtimeMs,
      () => 0,
    );
    return ended >= since ? "a round" : undefined;
  }

  #restart(service: Running, why: string, since: number): void {
    const { spec } = service;
    const uptime = Date.now() - since;
    service.lastExit = why;
    if (this.#stopping) return;
    let delay: number;
    if (service.restartNow) {
      service.restartNow = false;
      delay = 0;
      this.#onEvent(`${spec.name}: ${why}; restarting now (asked to)`);
    } else {
      service.delay = uptime > STABLE_MS ? this.#minDelay : service.delay;
      this.#onEvent(`${spec.name}: ${why}; restarting in ${service.delay} ms (see ${spec.log})`);
      delay = service.delay;
      service.delay = Math.min(service.delay * 2, this.#maxDelay);
    }
    // What the daemon started (its runtimes, in their own process groups) outlives it:
    // a new daemon must not find the old one's work still running.
    const reap = async () => {
      if (spec.cgroup !== undefined) await destroyCgroup(spec.cgroup).catch(() => {});
      if (spec.uid !== undefined && spec.uid !== 0)
        await stopUser(
          { name: spec.name, uid: spec.uid, gid: spec.gid ?? spec.uid },
          { runner: systemRunner },
        ).catch((error: Error) => this.#onEvent(`${spec.name}: ${error.message}`));
    };
    // Under the round's lock: a round that starts meanwhile must not have its own work killed.
    const lock = spec.round?.lock;
    const reaped =
      lock === undefined
        ? reap()
        : acquireLock(lock, `supervisor (reaping ${spec.name})`, {
            waitMs: Number.MAX_SAFE_INTEGER,
            signal: this.#stopped.signal,
          }).then(
            () => reap().finally(() => releaseLock(lock).catch(() => {})),
            () => (this.#stopping ? undefined : reap()),
          );
    void reaped.then(() => {
      if (this.#stopping) return;
      service.timer = setTimeout(() => {
        service.restarts++;
        this.#launch(service);
      }, delay);
    });
  }
}

/** The last non-empty line of a log (its last 4 KiB), cut to 300 characters; "" when unreadable. */
async function lastLogLine(file: string): Promise<string> {
  try {
    const handle = await open(file, "r");
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, 4096);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      const lines = buffer
        .toString("utf8")
        .split("\n")
        .map((l) => l.trim());
      return (lines.findLast((l) => l !== "") ?? "").slice(0, 300);
    } finally {
      await handle.close();
    }
  } catch {
    return "";
  }
}
