/**
 * The runtimes' own configuration, rendered per agent every round so that
 * the real `claude` and `codex` CLIs work on a blank home without a first-run
 * dialog, headless or in a terminal:
 *
 * - claude-code: `~/.claude/settings.json` (permission mode, the key command,
 *   base URL, model, environment) and `~/.claude.json` (onboarding done, the
 *   agent's projects trusted, bypass mode accepted);
 * - codex: `~/.codex/config.toml` (approval policy, sandbox mode, a provider
 *   with the base URL and the key command, the agent's projects trusted).
 *
 * The agent's account is its sandbox (its uid, the sudo gate, device ACLs),
 * so by default both runtimes run every tool without asking; the declaration
 * narrows them (`runtime.allowedTools`, `runtime.sandbox`). The API key is
 * never in these files, only the path of the file it is decrypted to.
 *
 * The runtimes' session stores are links into the agent's persisted state,
 * so a conversation resumes after a reset.
 *
 * Pure: no I/O here.
 */
import path from "node:path";
import { stringify } from "smol-toml";
import { RUNTIME_KEY_FILE } from "../../town/rules.ts";
import type { ResolvedAgent } from "../../town/types.ts";

type Agent = Pick<ResolvedAgent, "home" | "stateDir" | "runtime" | "repos" | "chat">;
type Json = Record<string, unknown>;

/** A symlink placed in the home every round: `path` → `target` (both absolute). */
export interface HomeLink {
  readonly path: string;
  readonly target: string;
}

/** The directories a runtime is told to trust: the home and every project the agent declares. */
export function trustedDirs(agent: Agent): string[] {
  const dirs = new Set([agent.home]);
  for (const repo of agent.repos) dirs.add(path.join(agent.home, repo.path));
  if (agent.chat.project !== undefined)
    dirs.add(path.join(agent.home, "projects", agent.chat.project));
  return [...dirs].sort();
}

export const runtimeKeyPath = (agent: Pick<ResolvedAgent, "home">) =>
  path.join(agent.home, RUNTIME_KEY_FILE);

/** `~/.claude/settings.json`: nuketown's settings, then `runtime.settings` merged over them. */
export function renderClaudeSettings(agent: Agent): string {
  const { runtime } = agent;
  const settings: Json = {
    permissions: runtime.allowedTools
      ? { defaultMode: "dontAsk", allow: [...runtime.allowedTools] }
      : { defaultMode: "bypassPermissions" },
    // Bypass mode is what the agent's account is for: no warning, no offer of another mode.
    skipDangerousModePermissionPrompt: true,
    disableAutoMode: "disable",
    ...(runtime.apiKey && { apiKeyHelper: `cat ${runtimeKeyPath(agent)}` }),
    ...(runtime.model !== undefined && { model: runtime.model }),
    env: {
      // An agent talks to its model API and to nothing else of the vendor's.
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
      DISABLE_AUTOUPDATER: "1",
      ...(runtime.baseUrl !== undefined && { ANTHROPIC_BASE_URL: runtime.baseUrl }),
      ...runtime.env,
    },
  };
  return `${JSON.stringify(merge(settings, runtime.settings), null, 2)}\n`;
}

/** How a runtime starts the town's MCP server (`nuketown mcp`), run as the agent. */
export interface McpCommand {
  readonly command: string;
  readonly args: readonly string[];
}

/**
 * `~/.claude.json`: the state claude keeps of its first run, as if it had
 * been done, and the town's MCP server at user scope.
 */
export function renderClaudeState(agent: Agent, mcp?: McpCommand): string {
  const state = {
    ...(mcp && {
      mcpServers: {
        nuketown: { type: "stdio", command: mcp.command, args: [...mcp.args], env: {} },
      },
    }),
    hasCompletedOnboarding: true,
    bypassPermissionsModeAccepted: true,
    projects: Object.fromEntries(
      trustedDirs(agent).map((dir) => [
        dir,
        { hasTrustDialogAccepted: true, hasCompletedProjectOnboarding: true },
      ]),
    ),
  };
  return `${JSON.stringify(state, null, 2)}\n`;
}

/** `~/.codex/config.toml`: nuketown's configuration, then `runtime.settings` merged over it. */
export function renderCodexConfig(agent: Agent, mcp?: McpCommand): string {
  const { runtime } = agent;
  const ownProvider = runtime.apiKey !== undefined || runtime.baseUrl !== undefined;
  const config: Json = {
    approval_policy: "never",
    sandbox_mode: runtime.sandbox,
    check_for_update_on_startup: false,
    ...(runtime.model !== undefined && { model: runtime.model }),
    ...(ownProvider && { model_provider: "nuketown" }),
    ...(ownProvider && {
      model_providers: {
        nuketown: {
          name: "nuketown",
          base_url: runtime.baseUrl ?? "https://api.openai.com/v1",
          wire_api: "responses",
          ...(runtime.apiKey
            ? { auth: { command: "cat", args: [runtimeKeyPath(agent)] } }
            : { env_key: "OPENAI_API_KEY" }),
        },
      },
    }),
    projects: Object.fromEntries(
      trustedDirs(agent).map((dir) => [dir, { trust_level: "trusted" }]),
    ),
    ...(mcp && { mcp_servers: { nuketown: { command: mcp.command, args: [...mcp.args] } } }),
  };
  return `# Written by nuketown every round; change runtime.settings in the town instead.\n${stringify(merge(config, runtime.settings))}\n`;
}

/** The runtimes' session stores, kept in the agent's persisted state across rounds. */
export function renderRuntimeLinks(agent: Agent): HomeLink[] {
  switch (agent.runtime.kind) {
    case "claude-code":
      return [
        {
          path: path.join(agent.home, ".claude", "projects"),
          target: path.join(agent.stateDir, "runtimes", "claude", "projects"),
        },
      ];
    case "codex":
      return [
        {
          path: path.join(agent.home, ".codex", "sessions"),
          target: path.join(agent.stateDir, "runtimes", "codex", "sessions"),
        },
      ];
    case "command":
      return [];
  }
}

const isTable = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

/** `over` merged into `base`, tables key by key; anything else in `over` replaces. */
export function merge(base: Json, over: Readonly<Json>): Json {
  const out: Json = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] = isTable(current) && isTable(value) ? merge(current, value) : value;
  }
  return out;
}
