/**
 * Declared packages on a host that is not NixOS: which ones the host's own
 * package manager (apt-get, dnf or pacman) reports installed, and one
 * non-interactive command that installs the missing ones. On NixOS
 * (/etc/NIXOS) packages come from Nix and nothing here runs a program.
 */
import { access, readFile, stat } from "node:fs/promises";
import { FailedError, MissingToolError } from "../errors.ts";
import { writeFileAtomic } from "../os/files.ts";
import type { CommandResult, Runner } from "../os/process.ts";
import type { ObservedPackages, PackageManager } from "./plan.ts";

export interface PackageObserveOptions {
  /** The file whose presence means NixOS. @default "/etc/NIXOS" */
  readonly nixosMarker?: string;
  /**
   * Keep dpkg's answer here (a root-owned file beside the state) and give it
   * again, without running anything, while dpkg's database is the same file
   * (inode, size, mtime: every install and removal rewrites it) and no other
   * name is asked: a round asks every time, the packages rarely change.
   */
  readonly cacheFile?: string;
  /** dpkg's database. @default "/var/lib/dpkg/status" */
  readonly dpkgStatus?: string;
}

interface PackageCache {
  readonly manager: "apt-get";
  readonly database: string;
  readonly asked: readonly string[];
  readonly present: readonly string[];
}

async function databaseStamp(file: string): Promise<string | undefined> {
  const info = await stat(file).catch(() => undefined);
  return info && `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}`;
}

/** The managers nuketown knows, in the order they are looked for, with every program each needs. */
const MANAGERS: readonly { readonly manager: PackageManager; readonly tools: readonly string[] }[] =
  [
    { manager: "apt-get", tools: ["apt-get", "dpkg-query"] },
    { manager: "dnf", tools: ["dnf", "rpm"] },
    { manager: "pacman", tools: ["pacman"] },
  ];

/** Which of `names` the host has, and with which package manager it would install the rest. */
export async function observePackages(
  names: readonly string[],
  runner: Runner,
  options: PackageObserveOptions = {},
): Promise<ObservedPackages> {
  const wanted = [...new Set(names)].sort();
  if (wanted.length === 0) return { kind: "unobserved" };
  const nixos = await access(options.nixosMarker ?? "/etc/NIXOS").then(
    () => true,
    () => false,
  );
  if (nixos) return { kind: "nixos" };
  const database = options.cacheFile
    ? await databaseStamp(options.dpkgStatus ?? "/var/lib/dpkg/status")
    : undefined;
  const cached =
    options.cacheFile && database !== undefined
      ? ((await readFile(options.cacheFile, "utf8").then(JSON.parse, () => undefined)) as
          | PackageCache
          | undefined)
      : undefined;
  const current =
    cached?.manager === "apt-get" && cached.database === database ? cached : undefined;
  if (current !== undefined) {
    if (wanted.every((name) => current.asked.includes(name))) {
      return {
        kind: "managed",
        manager: "apt-get",
        present: wanted.filter((name) => current.present.includes(name)),
      };
    }
  }
  const manager = await detectManager(runner);
  if (manager === undefined) return { kind: "unsupported" };
  const present = await queryPresent(manager, wanted, runner);
  if (options.cacheFile && database !== undefined && manager === "apt-get") {
    // Merged with what other agents' rounds asked against the same database.
    const cache: PackageCache = {
      manager,
      database,
      asked: [...new Set([...(current?.asked ?? []), ...wanted])].sort(),
      present: [
        ...new Set([
          ...(current?.present ?? []).filter((name) => !wanted.includes(name)),
          ...present,
        ]),
      ].sort(),
    };
    await writeFileAtomic(options.cacheFile, `${JSON.stringify(cache)}\n`, { mode: 0o644 }).catch(
      () => {},
    );
  }
  return { kind: "managed", manager, present };
}

/** Found once per runner: a host's package manager does not change under a running nuketown. */
const detected = new WeakMap<Runner, Promise<PackageManager | undefined>>();

export function detectManager(runner: Runner): Promise<PackageManager | undefined> {
  let found = detected.get(runner);
  if (found === undefined) {
    found = probeManagers(runner);
    // A probe that failed (not "missing": broken) is asked again next time.
    found.catch(() => detected.delete(runner));
    detected.set(runner, found);
  }
  return found;
}

async function probeManagers(runner: Runner): Promise<PackageManager | undefined> {
  for (const { manager, tools } of MANAGERS) {
    let all = true;
    for (const tool of tools) if (!(await runs(tool, runner))) all = false;
    if (all) return manager;
  }
  return undefined;
}

async function runs(tool: string, runner: Runner): Promise<boolean> {
  try {
    await runner.run(tool, ["--version"], { allowFailure: true });
    return true;
  } catch (error) {
    if (error instanceof MissingToolError) return false;
    throw error;
  }
}

/** The subset of `names` installed, asked in one call; a name the manager does not know is absent. */
async function queryPresent(
  manager: PackageManager,
  names: readonly string[],
  runner: Runner,
): Promise<string[]> {
  const found = new Set<string>();
  const query = async (
    program: string,
    args: readonly string[],
    okCodes: (code: number) => boolean,
  ) => {
    const result = await runner.run(program, args, { allowFailure: true });
    if (!okCodes(result.code)) throw failure(`${[program, ...args].join(" ")}`, result);
    return result.stdout.split("\n").filter((line) => line.trim() !== "");
  };
  if (manager === "apt-get") {
    // Exit 1 when some name is unknown; "config-files" or "not-installed" are not installed.
    for (const line of await query(
      "dpkg-query",
      [
        "--show",
        // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format, not ours.
        "--showformat=${db:Status-Status} ${binary:Package} ${Package}\\n",
        "--",
        ...names,
      ],
      (code) => code <= 1,
    )) {
      const [status, qualified, plain] = line.trim().split(/\s+/);
      if (status === "installed") for (const name of [qualified, plain]) if (name) found.add(name);
    }
  } else if (manager === "dnf") {
    // Exit status is the number of names not installed.
    for (const line of await query(
      "rpm",
      ["--query", "--queryformat", "%{NAME} %{NAME}.%{ARCH}\\n", "--", ...names],
      () => true,
    )) {
      if (line.endsWith(" is not installed")) continue;
      for (const name of line.trim().split(/\s+/)) found.add(name);
    }
  } else {
    for (const line of await query("pacman", ["--query", "--", ...names], (code) => code <= 1)) {
      const [name] = line.trim().split(/\s+/);
      if (name) found.add(name);
    }
  }
  return names.filter((name) => found.has(name));
}

/**
 * The command for a human, and the one apply runs (the same, made
 * non-interactive and, for apt-get, waiting for another run's lock).
 */
export function installCommand(
  manager: PackageManager,
  names: readonly string[],
): { readonly shown: string; readonly args: readonly string[]; readonly env: NodeJS.ProcessEnv } {
  const list = names.join(" ");
  switch (manager) {
    case "apt-get":
      return {
        shown: `apt-get install -y ${list}`,
        args: ["install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "--", ...names],
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      };
    case "dnf":
      return {
        shown: `dnf install -y ${list}`,
        args: ["install", "-y", "--", ...names],
        env: process.env,
      };
    case "pacman":
      return {
        shown: `pacman -S --needed --noconfirm ${list}`,
        args: ["--sync", "--needed", "--noconfirm", "--", ...names],
        env: process.env,
      };
  }
}

/**
 * Install `names` in one command. A refusal (an unknown package, a held
 * lock, no network) throws with the manager's own words and the command to
 * run by hand. Returns the names still missing afterwards (a virtual package
 * installs something under another name).
 */
export async function installPackages(
  manager: PackageManager,
  names: readonly string[],
  runner: Runner,
): Promise<string[]> {
  const command = installCommand(manager, names);
  const result = await runner.run(manager, command.args, { env: command.env, allowFailure: true });
  if (result.code !== 0) {
    throw new FailedError(
      `${manager} could not install the declared packages (exit ${result.code}):\n` +
        `${summary(result)}\nNothing else was applied. Fix the declaration, or run it yourself to see why:\n  ${command.shown}`,
    );
  }
  const after = await queryPresent(manager, names, runner);
  return names.filter((name) => !after.includes(name));
}

/** The manager's error lines (apt's `E:`, dnf's `Error:`, pacman's `error:`), else its last lines. */
function summary(result: CommandResult): string {
  const lines = `${result.stderr}\n${result.stdout}`
    .split("\n")
    .map((line) => line.trimEnd())
    .filter((line) => line.trim() !== "");
  const errors = lines.filter((line) => /^(E|Err|Error|error):/.test(line.trim()));
  const shown = (errors.length > 0 ? errors : lines.slice(-5)).slice(0, 10);
  return shown.map((line) => `  ${line.trim()}`).join("\n");
}

function failure(command: string, result: CommandResult): FailedError {
  return new FailedError(
    `${command} exited ${result.code}, so the declared packages could not be checked:\n${summary(result)}`,
  );
}
