/**
 * `~/.config/nuketown/identity.toml`: who the agent is, for any runtime or
 * tool that needs to know (a chat bridge, the MCP server, a shell script).
 */
import { stringify } from "smol-toml";
import type { ResolvedAgent, ResolvedTown } from "../../town/types.ts";

/**
 * Render the agent's runtime-agnostic identity file: name, role, email,
 * domain, home, uid and description, in that order.
 */
export function renderIdentityToml(town: ResolvedTown, agent: ResolvedAgent): string {
  const identity = {
    name: agent.name,
    role: agent.role,
    email: agent.git.email,
    domain: town.domain,
    home: agent.home,
    uid: agent.uid,
    description: agent.description,
  };
  return `# Identity of ${agent.name} in the town ${town.name}, written by nuketown every round.\n${stringify(identity).trimEnd()}\n`;
}
