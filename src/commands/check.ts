import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { ConfigError, EXIT } from "../errors.ts";
import { keyFileProblem } from "../host/key-file.ts";
import { renderArtifacts } from "../host/render/index.ts";
import { inspectKeyFile } from "../host/secrets.ts";
import { readPasswd } from "../os/etc.ts";
import { plural, type Streams, table } from "../output.ts";
import { loadTown } from "../town/load.ts";
import { parseManifest, renderManifest } from "../town/manifest.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { formatProblem, type Problem } from "../town/problems.ts";
import { missingHumanAccounts } from "../town/rules.ts";
import {
  NIXOS_LAYERS,
  type ResolvedAgent,
  type ResolvedDevice,
  type ResolvedTown,
} from "../town/types.ts";

export interface CheckOptions extends Streams {
  /** Path of the declaration, or "-" for stdin; absent with `manifest`. */
  readonly config?: string;
  readonly cwd: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly json?: boolean;
  /** Check this manifest (what the daemons read) instead of a declaration. */
  readonly manifest?: string;
  /** Also write the manifest of the valid town here (the NixOS module's build step). */
  readonly writeManifest?: string;
  /** The layers another system owns, recorded in the written manifest. */
  readonly managedBy?: "nixos";
}

/** `nuketown check`: validate and summarise; returns the exit code. */
export async function check(opts: CheckOptions): Promise<number> {
  if (opts.manifest !== undefined) {
    if (opts.config !== undefined)
      throw new ConfigError("check", [
        { path: "", message: "give a declaration or --manifest, not both" },
      ]);
    return checkManifest(opts, opts.manifest);
  }
  if (opts.config === undefined)
    throw new ConfigError("check", [
      { path: "", message: "name a declaration (or - for stdin), or pass --manifest FILE" },
    ]);
  if (opts.managedBy !== undefined && opts.writeManifest === undefined)
    throw new ConfigError("check", [
      { path: "", message: "--managed-by only goes with --write-manifest" },
    ]);
  let loaded: Awaited<ReturnType<typeof loadTown>>;
  try {
    loaded = await loadTown(opts.config, { ...opts, format: opts.format });
  } catch (error) {
    if (opts.json && error instanceof ConfigError) {
      opts.out.write(
        `${JSON.stringify({ valid: false, source: error.source, errors: error.problems }, null, 2)}\n`,
      );
      return EXIT.invalid;
    }
    throw error;
  }
  const town: ResolvedTown =
    opts.managedBy === "nixos"
      ? { managed: { by: "nixos", layers: NIXOS_LAYERS }, ...loaded.town }
      : loaded.town;
  // On the host it is for (no --hostname, not a NixOS build): humans without an account here.
  const onThisHost = opts.writeManifest === undefined && opts.hostname === undefined;
  const warnings = [...loaded.warnings, ...(onThisHost ? await hostWarnings(town) : [])];
  // Valid, but unsafe to use here: the same refusal apply gives, before anyone relies on it.
  const refused = onThisHost ? await hostRefusals(town) : [];
  if (opts.writeManifest !== undefined)
    await writeFile(path.resolve(opts.cwd, opts.writeManifest), renderManifest(town));
  if (opts.json) {
    opts.out.write(`${JSON.stringify({ valid: true, warnings, refused, town }, null, 2)}\n`);
    return refused.length > 0 ? EXIT.refused : EXIT.ok;
  }
  writeWarnings(opts.err, warnings);
  if (refused.length > 0) {
    for (const problem of refused) opts.err.write(`refused: ${formatProblem(problem)}\n`);
    return EXIT.refused;
  }
  opts.out.write(`${summary(town)}\n\n${agentTable(town)}\n`);
  return EXIT.ok;
}

/** What this host lacks for the town: the mayor's and approvers' Unix accounts. */
async function hostWarnings(town: ResolvedTown): Promise<Problem[]> {
  const users = await readPasswd().catch(() => undefined);
  if (users === undefined) return [];
  const names = new Set(users.map((u) => u.name));
  return missingHumanAccounts(town, (name) => names.has(name));
}

/** What apply would refuse on this host whatever the declaration says: an age key others can read. */
async function hostRefusals(town: ResolvedTown): Promise<Problem[]> {
  const file = town.secrets.ageKeyFile;
  const access = await inspectKeyFile(file).catch(() => null);
  const problem = access && keyFileProblem(file, access.key, access.dir);
  return problem ? [{ path: "secrets.ageKeyFile", message: problem }] : [];
}

export function writeWarnings(err: NodeJS.WritableStream, warnings: readonly Problem[]): void {
  for (const warning of warnings) err.write(`warning: ${formatProblem(warning)}\n`);
}

function summary(town: ResolvedTown): string {
  const mayor = town.mayor ? `, mayor ${town.mayor.name}` : "";
  return (
    `town ${town.name} (${town.domain}): ${plural(town.agents.length, "agent")}, ` +
    `homes on ${town.homes.backend}, chat ${town.chat.transport}${mayor}`
  );
}

function agentTable(town: ResolvedTown): string {
  if (town.agents.length === 0) return "(no agents)";
  return table(
    ["agent", "uid", "role", "persist", "devices", "sudo", "runtime"],
    town.agents.map((a) => [
      a.name,
      String(a.uid),
      a.role,
      a.persist
        .filter((p) => !p.implicit)
        .map((p) => (p.type === "file" ? `${p.path} (file)` : p.path))
        .join(", ") || "-",
      a.devices.map(describeDevice).join(", ") || "-",
      describeSudo(a),
      a.runtime.kind === "command" ? `command ${a.runtime.command}` : a.runtime.kind,
    ]),
  );
}

function describeDevice(device: ResolvedDevice): string {
  const attrs = Object.fromEntries(device.attrs);
  if (attrs.idVendor && attrs.idProduct)
    return `${device.subsystem} ${attrs.idVendor}:${attrs.idProduct}`;
  const [first] = device.attrs;
  return first ? `${device.subsystem} ${first[0]}=${JSON.stringify(first[1])}` : device.subsystem;
}

function describeSudo(agent: ResolvedAgent): string {
  if (!agent.sudo.enable) return "no";
  const rules = agent.sudo.policy.rules.length;
  return rules === 0
    ? agent.sudo.policy.default
    : `${agent.sudo.policy.default} +${plural(rules, "rule")}`;
}

/**
 * `nuketown check --manifest FILE`: is this a manifest every daemon can read,
 * and does every artifact render from it? The NixOS module runs it on the
 * manifest it builds, so a bad one fails the build, not the boot.
 */
async function checkManifest(opts: CheckOptions, file: string): Promise<number> {
  const source = file;
  const text = await readFile(path.resolve(opts.cwd, file), "utf8").catch(
    (error: NodeJS.ErrnoException) => {
      throw new ConfigError(source, [
        { path: "", message: `cannot read: ${error.code ?? error.message}` },
      ]);
    },
  );
  const parsed = parseManifest(text);
  const problems: Problem[] = parsed.ok ? [] : [...parsed.problems];
  if (parsed.ok) {
    try {
      renderArtifacts(parsed.town, true);
    } catch (error) {
      problems.push({ path: "town", message: (error as Error).message });
    }
  }
  if (!parsed.ok || problems.length > 0) {
    if (opts.json) {
      opts.out.write(`${JSON.stringify({ valid: false, source, errors: problems }, null, 2)}\n`);
      return EXIT.invalid;
    }
    throw new ConfigError(source, problems);
  }
  const town = parsed.town;
  if (opts.json) {
    opts.out.write(`${JSON.stringify({ valid: true, warnings: [], town }, null, 2)}\n`);
    return EXIT.ok;
  }
  const managed = town.managed ? `; ${town.managed.by} owns ${town.managed.layers.join(", ")}` : "";
  opts.out.write(`manifest ${file}: ${summary(town)}${managed}\n\n${agentTable(town)}\n`);
  return EXIT.ok;
}
