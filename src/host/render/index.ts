/**
 * Every file a host needs, rendered from the resolved town: the pure half of
 * `apply`. `nuketown render --out DIR` lays these out under DIR; the host
 * reconciler installs them (validated first) onto the live system.
 */
import { renderProgramArtifacts, usesGate } from "../../approval/wrappers.ts";
import { renderManifest } from "../../town/manifest.ts";
import type { ResolvedAgent, ResolvedTown } from "../../town/types.ts";
import type { Artifact } from "./artifact.ts";
import { renderAllowedSigners, renderGitConfig, renderSshConfig } from "./git.ts";
import { renderIdentityToml } from "./identity.ts";
import { renderClaudeAgent, renderInstructions } from "./instructions.ts";
import { renderClaudeSettings, renderClaudeState, renderCodexConfig } from "./runtime-config.ts";
import { renderSudoers } from "./sudoers.ts";
import { renderUdevRules } from "./udev.ts";
import { renderUnits } from "./units.ts";

export type { Artifact } from "./artifact.ts";

/** The town grants some agent a device: only then is there a udev rules file. */
export const grantsDevices = (town: ResolvedTown) => town.agents.some((a) => a.devices.length > 0);

/**
 * All artifacts, sorted by path. With `programs`, also the approval gate,
 * the sudo shim and the login profile (they run the installed nuketown).
 * The udev rules and the sudoers fragment exist only while some agent needs
 * them, so removing the last device grant or sudo agent removes the file.
 */
export function renderArtifacts(town: ResolvedTown, programs = false): Artifact[] {
  const artifacts: Artifact[] = [
    { path: town.paths.manifest, content: renderManifest(town), mode: "0644", layer: "manifest" },
    ...(grantsDevices(town)
      ? [
          {
            path: town.paths.udevRules,
            content: renderUdevRules(town),
            mode: "0644",
            layer: "devices",
          } as const,
        ]
      : []),
    // sudo ignores fragments that are group- or world-writable; 0440 is what visudo expects.
    ...(usesGate(town)
      ? [
          {
            path: town.paths.sudoers,
            content: renderSudoers(town),
            mode: "0440",
            layer: "privileges",
          } as const,
        ]
      : []),
    ...renderUnits(town).map(
      (unit): Artifact => ({
        path: `${town.paths.unitDir}/${unit.name}`,
        content: unit.content,
        mode: "0644",
        layer: "services",
      }),
    ),
    ...town.agents.flatMap((agent) => renderHomeArtifacts(town, agent)),
    ...(programs ? renderProgramArtifacts(town) : []),
  ];
  return artifacts.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Files placed in an agent's home every round, owned by the agent. The
 * allowed-signers file needs the public key; without one declared it is
 * derived from the secret at apply time, so it is absent here.
 * `presentPackages`: the declared packages the host has (instructions.ts).
 */
export function renderHomeArtifacts(
  town: ResolvedTown,
  agent: ResolvedAgent,
  publicKey?: string,
  presentPackages?: readonly string[],
): Artifact[] {
  const file = (relative: string, content: string, mode = "0644"): Artifact => ({
    path: `${agent.home}/${relative}`,
    content,
    mode,
    owner: agent.name,
    group: agent.group,
    layer: "identity",
  });
  const instructions = renderInstructions(town, agent, presentPackages);
  const out = [
    file(".config/nuketown/identity.toml", renderIdentityToml(town, agent)),
    file("AGENTS.md", instructions),
    file(".config/git/config", renderGitConfig(town, agent)),
    file(".ssh/config", renderSshConfig(town, agent), "0600"),
    ...agent.files.map((f) => file(f.path, f.text, f.mode)),
  ];
  const signers = renderAllowedSigners(agent, publicKey);
  if (signers !== undefined) out.push(file(".config/git/allowed_signers", signers));
  if (agent.runtime.kind === "claude-code") {
    out.push(
      file(
        `.claude/agents/${agent.name}-${agent.role}.md`,
        renderClaudeAgent(town, agent, presentPackages),
      ),
    );
    // claude rewrites both as it runs: private to the agent, placed afresh every round.
    out.push(file(".claude/settings.json", renderClaudeSettings(agent), "0600"));
    out.push(file(".claude.json", renderClaudeState(agent, mcpCommand(town)), "0600"));
  }
  if (agent.runtime.kind === "codex") {
    out.push(file(".codex/AGENTS.md", instructions));
    out.push(file(".codex/config.toml", renderCodexConfig(agent, mcpCommand(town)), "0600"));
  }
  return out;
}

/** The town's MCP server as the runtimes start it: the installed nuketown, reading the manifest. */
function mcpCommand(town: ResolvedTown) {
  return { command: town.install.bin, args: ["mcp", "--manifest", town.paths.manifest] };
}
