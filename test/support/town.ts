/**
 * A test town on the real host, built one way for every integration test:
 * one temp root holding the town's directories, the Unix accounts the test
 * makes itself (its humans) with uids its file owns (uids.ts), the
 * declaration written to <root>/town.toml with every path below the root,
 * nuketown run on it, and one cleanup that stops what the town started and
 * removes what it made (processes, mounts, accounts, system files, the
 * root), run even when the setup failed.
 *
 *     describe("nuketown up", () => {
 *       const town = testTown({ label: "up", uids: uidsOf(import.meta.filename),
 *         accounts: { [MAYOR]: MAYOR_UID }, install: true });
 *       before(() => {
 *         town.declare({ humans: { [MAYOR]: { approver: true } }, agents: { … } });
 *         town.apply();
 *       });
 *
 * `testTown` registers the setup and cleanup as the suite's before and after
 * hooks, so hooks a test adds after it run after the setup and, for after
 * hooks, after the cleanup: what must stop before the accounts go (daemons,
 * tmux servers) goes in `town.defer` or through `town.up` / `town.approvald`.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { after, before } from "node:test";
import { stringify } from "smol-toml";
import { parsePasswd } from "../../src/os/tables.ts";
import type { TownInput } from "../../src/town/schema.ts";
import { REPO_ROOT } from "./fixtures.ts";
import {
  cleanupHost,
  isRoot,
  makeTempRoot,
  mustRun,
  run,
  stopChild,
  TEST_PREFIX,
  TEST_UID_MAX,
  TEST_UID_MIN,
} from "./host.ts";
import { installForTest } from "./install.ts";
import type { Uids } from "./uids.ts";

export const BIN = path.join(REPO_ROOT, "bin", "nuketown");

/** A declaration as a test writes it: the builder fills in the paths, uid range and approvers. */
export type TownDeclaration = Partial<TownInput>;

/** A Unix account the test makes before the town (a human, or an agent of a town never applied). */
export interface AccountOptions {
  readonly uid: number;
  /** Absolute, or relative to the root (default `humans/<name>`). */
  readonly home?: string;
  /** Make the home (with its parents) and give it to the account. */
  readonly makeHome?: boolean;
  /** `useradd --create-home`: the home from /etc/skel. */
  readonly createHome?: boolean;
  readonly shell?: string;
}

export interface TestTownOptions {
  /** A short word: the temp root is /tmp/nt-test-<label>-*, the town nt-test-<label> unless declared otherwise. */
  readonly label: string;
  /** The uids the test's file owns: every account's and declared agent's uid must be one. */
  readonly uids: Uids;
  /** Accounts to make first: name → uid, or with options. */
  readonly accounts?: Readonly<Record<string, number | AccountOptions>>;
  /** Install the checkout's build below the root, declared as `install.prefix`. */
  readonly install?: boolean;
}

export interface Outcome {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Run as this Unix user (runuser), with the installed copy when there is one. */
  readonly as?: string;
  readonly input?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

/** A long-running process the town started, stopped at cleanup. */
export interface Daemon {
  readonly child: ChildProcess;
  /** Everything it wrote so far, stdout and stderr. */
  output(): string;
}

export class TestTown {
  readonly label: string;
  readonly uids: Uids;
  /** The approval group, unique per run: test files run at the same time. */
  readonly approvers: string;
  readonly #options: TestTownOptions;
  #root: string | undefined;
  #prefix: string | undefined;
  #recipient: string | undefined;
  readonly #steps: (() => unknown)[] = [];
  readonly #systemFiles: string[] = [];
  readonly #accounts = new Map<string, AccountOptions>();
  readonly #extraNames = new Set<string>();
  /** The accounts this town made (only those are removed by name: never another run's). */
  readonly #made = new Set<string>();

  constructor(options: TestTownOptions) {
    this.#options = options;
    this.label = options.label;
    this.uids = options.uids;
    this.approvers = `${TEST_PREFIX}${options.label}-ap-${process.pid}`;
    for (const [name, account] of Object.entries(options.accounts ?? {})) {
      const full = typeof account === "number" ? { uid: account } : account;
      this.uids.check(full.uid, `account ${name}`);
      this.#accounts.set(name, full);
    }
  }

  /** The temp root (after setup). */
  get root(): string {
    if (this.#root === undefined)
      throw new Error(`the ${this.label} town is not set up yet (testTown's before hook)`);
    return this.#root;
  }

  /** A path below the root. */
  path(...parts: string[]): string {
    return path.join(this.root, ...parts);
  }

  get config(): string {
    return this.path("town.toml");
  }

  get manifest(): string {
    return this.path("etc", "nuketown", "town.json");
  }

  /** An agent's home. */
  home(agent: string): string {
    return this.path("agents", agent);
  }

  /** The home of an account the town made. */
  accountHome(name: string): string {
    const account = this.#accounts.get(name);
    if (account === undefined)
      throw new Error(`${name} is not an account of the ${this.label} town`);
    return path.resolve(this.root, account.home ?? path.join("humans", name));
  }

  /** An agent's daemon socket. */
  socket(agent: string): string {
    return this.path("run", "agents", agent, "agent.sock");
  }

  /** The install prefix (with `install: true`). */
  get prefix(): string {
    if (this.#prefix === undefined) throw new Error(`the ${this.label} town installs nothing`);
    return this.#prefix;
  }

  /** The installed program, as humans and agents run it (they may not enter the checkout). */
  get installedBin(): string {
    return path.join(this.prefix, "bin", "nuketown");
  }

  /** The sudo shim's directory in the installed copy. */
  get shimDir(): string {
    return path.join(this.prefix, "libexec", "nuketown", "shim");
  }

  /** Make the root, the accounts, and the installed copy. */
  async setup(): Promise<void> {
    this.#root = makeTempRoot(this.label);
    // Whose town this is, while it runs: a leftover sweep (below) leaves a live run's accounts alone.
    writeFileSync(path.join(this.#root, OWNER), `${process.pid}\n`);
    for (const [name, account] of this.#accounts) this.#makeAccount(name, account);
    if (this.#options.install) this.#prefix = installForTest(this.#root);
  }

  /**
   * Stop what the town started (the deferred steps, last first), remove the
   * system files it installed, then every process, mount, account and file
   * of the town. Never throws for a step that fails: the rest still runs.
   */
  async cleanup(): Promise<void> {
    const errors: unknown[] = [];
    for (const step of this.#steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    for (const file of this.#systemFiles.splice(0)) rmSync(file, { force: true });
    // Not root: no accounts, mounts or loop devices can be the town's (nor may losetup be on PATH).
    if (this.#root !== undefined && !isRoot()) rmSync(this.#root, { recursive: true, force: true });
    else if (this.#root !== undefined)
      cleanupHost(this.#root, [...this.#made, ...this.#extraNames, this.approvers]);
    if (errors.length > 0) throw new AggregateError(errors, `cleaning up the ${this.label} town`);
  }

  /** Accounts or groups by name that nuketown made for the test outside this town (a second town's approval group): removed at cleanup too. */
  removeAtCleanup(...names: string[]): void {
    for (const name of names) this.#extraNames.add(name);
  }

  /** Run `step` at cleanup, before the accounts and files go (last deferred, first run). */
  defer(step: () => unknown): void {
    this.#steps.push(step);
  }

  /** The declaration with the town's defaults filled in, written to `config`; returns what was written. */
  declare(declaration: TownDeclaration): TownDeclaration {
    const { approval, install, ...rest } = declaration;
    const full: TownDeclaration = {
      name: `${TEST_PREFIX}${this.label}`,
      agentsDir: this.path("agents"),
      persistDir: this.path("persist"),
      stateDir: this.path("state"),
      runtimeDir: this.path("run"),
      etcDir: this.path("etc"),
      uidRange: { min: TEST_UID_MIN, max: TEST_UID_MAX },
      homes: { backend: "directory" },
      approval: { group: this.approvers, ...approval },
      ...(this.#prefix !== undefined || install !== undefined
        ? { install: { ...(this.#prefix !== undefined && { prefix: this.#prefix }), ...install } }
        : {}),
      ...rest,
    };
    this.write(full);
    return full;
  }

  /** Write a declaration as it is (to `config` unless `file` says otherwise), its agents' uids checked. */
  write(declaration: TownDeclaration, file = this.config): void {
    for (const [name, agent] of Object.entries(declaration.agents ?? {}))
      if (typeof agent?.uid === "number") this.uids.check(agent.uid, `agents.${name}.uid`);
    writeFileSync(file, stringify(declaration));
  }

  /** The checkout's nuketown (or, run as a user, the installed copy), waited for. */
  nuketown(args: readonly string[], options: RunOptions = {}): Outcome {
    const argv = options.as
      ? ["runuser", "-u", options.as, "--", this.#prefix ? this.installedBin : BIN, ...args]
      : [BIN, ...args];
    const result = spawnSync(argv[0] as string, argv.slice(1), {
      encoding: "utf8",
      input: options.input,
      env: options.env,
      cwd: options.cwd,
    });
    if (result.error) throw result.error;
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  /** `nuketown apply <config>`; fails with what it said unless it exits 0. */
  apply(...args: string[]): Outcome {
    const result = this.nuketown(["apply", this.config, ...args]);
    if (result.code !== 0)
      throw new Error(`nuketown apply exited ${result.code}:\n${result.stdout}${result.stderr}`);
    return result;
  }

  /** `nuketown up <config>` (behind `wrap`, e.g. a network namespace), stopped at cleanup. */
  up(options: { wrap?: readonly string[] } = {}): Daemon {
    return this.spawn([...(options.wrap ?? []), BIN, "up", this.config]);
  }

  /** `nuketown approvald`, once its control socket is there; stopped at cleanup. */
  async approvald(): Promise<Daemon> {
    const daemon = this.spawn([BIN, "approvald", "--manifest", this.manifest], { graceMs: 5000 });
    const socket = this.path("run", "control.sock");
    for (let i = 0; i < 100 && !existsSync(socket); i++)
      await new Promise((r) => setTimeout(r, 100));
    if (!existsSync(socket))
      throw new Error(`approvald is not listening on ${socket}:\n${daemon.output()}`);
    return daemon;
  }

  /** A process of the test's, its output kept, stopped at cleanup (SIGTERM, SIGKILL after `graceMs`). */
  spawn(argv: readonly string[], options: { graceMs?: number; cwd?: string } = {}): Daemon {
    const { graceMs = 10_000, cwd } = options;
    const child = spawn(argv[0] as string, argv.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      ...(cwd !== undefined && { cwd }),
    });
    let output = "";
    child.stdout?.on("data", (d) => (output += d));
    child.stderr?.on("data", (d) => (output += d));
    this.defer(() => stopChild(child, graceMs));
    return { child, output: () => output };
  }

  /**
   * Where sudo reads it on a real host: the sudoers fragment apply rendered
   * (or `text`), as /etc/sudoers.d/nt-test-<label>-<pid>, checked with
   * visudo; removed at cleanup.
   */
  sudoers(text?: string): void {
    let source = this.path("etc", "sudoers.d", "nuketown");
    if (text !== undefined) {
      // Checked on its own first: a broken fragment in /etc/sudoers.d breaks sudo for everyone.
      source = this.path("sudoers");
      writeFileSync(source, text, { mode: 0o440 });
      mustRun("visudo", ["-cf", source]);
    }
    const target = `/etc/sudoers.d/${TEST_PREFIX}${this.label}-${process.pid}`;
    this.#systemFiles.push(target);
    copyFileSync(source, target);
    chmodSync(target, 0o440);
    mustRun("visudo", ["-c"]);
  }

  /** The login profile apply rendered, where /etc/profile reads it; removed at cleanup. */
  profile(): void {
    const target = `/etc/profile.d/${TEST_PREFIX}${this.label}-${process.pid}.sh`;
    this.#systemFiles.push(target);
    copyFileSync(this.path("etc", "profile.d", "nuketown.sh"), target);
  }

  /** An age identity at <root>/<file> (default: where the town looks, <stateDir>/age/keys.txt). */
  ageKey(file = path.join("state", "age", "keys.txt")): string {
    const key = this.path(file);
    mkdirSync(path.dirname(key), { recursive: true });
    mustRun("age-keygen", ["-o", key]);
    this.#recipient = mustRun("age-keygen", ["-y", key]).trim();
    return key;
  }

  /** `plaintext` encrypted to the town's age key, as <root>/<file>. */
  encrypt(file: string, plaintext: string): string {
    if (this.#recipient === undefined) throw new Error("encrypt: make the town's ageKey first");
    const target = this.path(file);
    mustRun("age", ["--encrypt", "-r", this.#recipient, "-o", target], plaintext);
    return target;
  }

  /** An account made now (after setup), removed at cleanup like the others. */
  account(name: string, account: number | AccountOptions): void {
    const full = typeof account === "number" ? { uid: account } : account;
    this.uids.check(full.uid, `account ${name}`);
    this.#accounts.set(name, full);
    this.#makeAccount(name, full);
  }

  #makeAccount(name: string, account: AccountOptions): void {
    removeLeftover(name, this.uids);
    const home = path.resolve(this.root, account.home ?? path.join("humans", name));
    if (account.makeHome || account.createHome)
      mkdirSync(path.dirname(home), { recursive: true, mode: 0o755 });
    if (account.makeHome) mkdirSync(home, { recursive: true });
    mustRun("useradd", [
      "--uid",
      String(account.uid),
      "--user-group",
      account.createHome ? "--create-home" : "--no-create-home",
      "--home-dir",
      home,
      ...(account.shell ? ["--shell", account.shell] : []),
      name,
    ]);
    this.#made.add(name);
    if (account.makeHome) mustRun("chown", [`${name}:`, home]);
  }
}

/** In a town's root: the pid of the test process that owns it. */
const OWNER = "owner.pid";

/**
 * An account of this name an earlier run left (killed before its cleanup):
 * only when it is a test account with one of this file's uids, and no live
 * process owns the temp root its home is in. One that does is another run
 * of the same test file, which cannot share its accounts: a clear error.
 */
function removeLeftover(name: string, uids: Uids): void {
  const user = parsePasswd(readFileSync("/etc/passwd", "utf8")).find((u) => u.name === name);
  if (!user || !name.startsWith(TEST_PREFIX) || !uids.has(user.uid)) return;
  const tempRoot = /^\/tmp\/nt-test-[^/]+/.exec(user.home)?.[0];
  const owner = tempRoot && Number(readIf(path.join(tempRoot, OWNER)).trim());
  if (owner && owner !== process.pid && alive(owner))
    throw new Error(
      `account ${name} (uid ${user.uid}) belongs to a run in progress (pid ${owner}, ${tempRoot}): ${uids.file} cannot run twice at once`,
    );
  run("pkill", ["-KILL", "-u", String(user.uid)]);
  run("userdel", [name]);
  run("groupdel", [name]);
}

/**
 * A town for the tests of a suite: set up in its before hook, cleaned up in
 * its after hook (which node runs even when a before hook failed). Call it
 * in the describe callback.
 */
export function testTown(options: TestTownOptions): TestTown {
  const town = new TestTown(options);
  before(() => town.setup());
  after(() => town.cleanup());
  return town;
}

/** A town outside a suite's hooks (a bench, a helper that builds more): cleaned up if the setup fails. */
export async function openTestTown(options: TestTownOptions): Promise<TestTown> {
  const town = new TestTown(options);
  try {
    await town.setup();
  } catch (error) {
    await town.cleanup().catch(() => {});
    throw error;
  }
  return town;
}

function readIf(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8") : "";
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, owned by someone else.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
