import { ConfigError, EXIT } from "../errors.ts";
import { plural, type Streams, table } from "../output.ts";
import { loadTown } from "../town/load.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { formatProblem, type Problem } from "../town/problems.ts";
import type { ResolvedAgent, ResolvedDevice, ResolvedTown } from "../town/types.ts";

export interface CheckOptions extends Streams {
  /** Path of the declaration, or "-" for stdin. */
  readonly config: string;
  readonly cwd: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly json?: boolean;
}

/** `nuketown check`: validate and summarise; returns the exit code. */
export async function check(opts: CheckOptions): Promise<number> {
  let loaded: Awaited<ReturnType<typeof loadTown>>;
  try {
    loaded = await loadTown(opts.config, opts);
  } catch (error) {
    if (opts.json && error instanceof ConfigError) {
      opts.out.write(
        `${JSON.stringify({ valid: false, source: error.source, errors: error.problems }, null, 2)}\n`,
      );
      return EXIT.invalid;
    }
    throw error;
  }
  const { town, warnings } = loaded;
  if (opts.json) {
    opts.out.write(`${JSON.stringify({ valid: true, warnings, town }, null, 2)}\n`);
    return EXIT.ok;
  }
  writeWarnings(opts.err, warnings);
  opts.out.write(`${summary(town)}\n\n${agentTable(town)}\n`);
  return EXIT.ok;
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
