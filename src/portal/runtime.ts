/**
 * The agent pane's command line when the portal runs the agent's runtime.
 * Pure: no I/O here.
 */
import { claudePermissionArgs } from "../agent/runtimes/claude.ts";
import { codexSandboxArgs } from "../agent/runtimes/codex.ts";
import { shellQuote } from "../approval/wrappers.ts";
import type { ResolvedAgent } from "../town/types.ts";

/** The program that marks a directory trusted for claude, run as the agent: the installed copy's. */
export interface TrustProgram {
  readonly node: string;
  readonly script: string;
}

/**
 * The agent pane's command line. The runtime's own command (the default)
 * runs with the args and environment its tasks get, so the portal's claude
 * or codex works like the daemon's, and the directory the mayor chose is
 * trusted first (the line runs there, as the agent: "$PWD"), so neither
 * stops at a dialog. A declared command is taken as it is.
 */
export function portalCommand(
  agent: Pick<ResolvedAgent, "portal" | "runtime">,
  trust: TrustProgram,
): string {
  const { runtime } = agent;
  if (agent.portal.command !== runtime.command || runtime.kind === "command")
    return agent.portal.command;
  if (runtime.kind === "claude-code") {
    const trustDir = [shellQuote(trust.node), shellQuote(trust.script), '"$PWD"'].join(" ");
    const claude = [runtime.command, ...claudePermissionArgs(agent), ...runtime.args].map(
      shellQuote,
    );
    // claude reads its environment from the rendered settings.json.
    return `${trustDir}; ${claude.join(" ")}`;
  }
  const env = Object.entries(runtime.env).map(([k, v]) => `${k}=${shellQuote(v)}`);
  return [
    ...(env.length > 0 ? ["env", ...env] : []),
    ...[runtime.command, "--no-daemon", ...codexSandboxArgs(agent)].map(shellQuote),
    // Double quotes: the agent's shell expands $PWD, the directory the line runs in.
    '-c "projects.\\"$PWD\\".trust_level=\\"trusted\\""',
    ...runtime.args.map(shellQuote),
  ].join(" ");
}
