/**
 * The town's MCP server (`nuketown mcp`, stdio), run by an agent's runtime
 * as the agent. Its tools are clients of what the town already runs: sudo
 * through the shim and the gate (so approvald asks a human), change control
 * (proposals as this agent; never approve or apply), and the manifest. A
 * failure is an `isError` result with a hint, never a crash of the server.
 */
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { GATE_EXIT } from "../approval/gate.ts";
import { ChangeControl } from "../change/control.ts";
import { describeProposal, type Proposal } from "../change/proposal.ts";
import { renderIdentityToml } from "../host/render/identity.ts";
import { renderInstructions } from "../host/render/instructions.ts";
import { type Runner, systemRunner } from "../os/process.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";

export interface McpOptions {
  readonly town: ResolvedTown;
  /** The agent this server speaks for: the caller's own account. */
  readonly agent: ResolvedAgent;
  readonly runner?: Runner;
  readonly version?: string;
}

const ok = (value: unknown): CallToolResult => ({
  content: [
    { type: "text", text: typeof value === "string" ? value : JSON.stringify(value, null, 2) },
  ],
  ...(typeof value === "object" && value !== null && !Array.isArray(value)
    ? { structuredContent: value as Record<string, unknown> }
    : {}),
});

const failure = (message: string, hint: string): CallToolResult => ({
  content: [{ type: "text", text: `${message}\nhint: ${hint}` }],
  isError: true,
});

const GATE_HINTS: Readonly<Record<number, string>> = {
  [GATE_EXIT.deniedByHuman]: "a human said no; ask differently or not at all",
  [GATE_EXIT.deniedByPolicy]: "your sudo policy denies this command; ask the mayor to change it",
  [GATE_EXIT.timeout]: "nobody answered in time; try again when a human is around",
  [GATE_EXIT.cancelled]: "the request was withdrawn",
  [GATE_EXIT.unreachable]: "the approval daemon is not running (nuketown approvald)",
  [GATE_EXIT.refused]: "sudo is not enabled for you, or the request was malformed",
  [GATE_EXIT.testModeDenied]: "the town is in test mode auto-deny",
  [GATE_EXIT.tooManyWaiting]:
    "too many of your requests already wait for a human; wait for their answers",
  [GATE_EXIT.changed]:
    "a file you can change (the script, or a file argument) changed after a human saw it, so nothing ran; ask again with the file as it should run",
  [GATE_EXIT.notFound]: "the command is not on the secure path; give its absolute path",
};

export function createMcpServer(options: McpOptions): McpServer {
  const { town, agent } = options;
  const runner = options.runner ?? systemRunner;
  const server = new McpServer(
    { name: "nuketown", version: options.version ?? "0.1.0" },
    {
      instructions: `Tools of the nuketown town ${town.name} for the agent ${agent.name}. sudo and system changes always go through a human or the town's policy.`,
    },
  );
  const changes = () => new ChangeControl({ town, runner, uid: agent.uid });
  const guard =
    <A>(work: (args: A) => Promise<CallToolResult>, hint: string) =>
    async (args: A): Promise<CallToolResult> => {
      try {
        return await work(args);
      } catch (error) {
        return failure((error as Error).message, hint);
      }
    };

  /** sudo through the shim (first on PATH), so the gate and approvald decide. */
  const sudo = async (argv: readonly string[], cwd?: string) => {
    const env = {
      ...process.env,
      PATH: `${town.install.shimDir}:${process.env.PATH ?? "/usr/bin:/bin"}`,
    };
    return runner.run("sudo", [...argv], {
      env,
      allowFailure: true,
      cwd: cwd ?? agent.home,
      // The daemon answers by its timeout; a little more for the command itself.
      timeoutMs: (agent.sudo.timeout + 120) * 1000,
    });
  };

  server.registerTool(
    "whoami",
    {
      description:
        "Who you are in the town: name, uid, role, home, git identity, what sudo may do.",
      inputSchema: {},
    },
    async () =>
      ok({
        name: agent.name,
        uid: agent.uid,
        role: agent.role,
        description: agent.description,
        home: agent.home,
        git: { name: agent.git.name, email: agent.git.email },
        sudo: { enable: agent.sudo.enable, timeout: agent.sudo.timeout },
        town: town.name,
        mayor: town.mayor?.name ?? null,
      }),
  );

  server.registerTool(
    "town_status",
    {
      description: "The town: its agents and humans, and the changes to the system configuration.",
      inputSchema: {},
    },
    guard(async () => {
      const proposals = town.change.repo === undefined ? [] : await changes().list();
      return ok({
        town: town.name,
        domain: town.domain,
        agents: town.agents.map((a) => ({ name: a.name, uid: a.uid, role: a.role })),
        humans: town.humans.map((h) => ({ name: h.name, approver: h.approver })),
        changes: proposals.map((p) => ({
          id: p.id,
          agent: p.agent,
          host: p.host,
          state: p.state,
          risk: p.risk,
        })),
      });
    }, "the town's manifest or the change store could not be read"),
  );

  server.registerTool(
    "request_sudo",
    {
      description:
        "Run one command as root (or another user) after a human approves it through the town's approval daemon. Waits for the answer; returns the exit code and output.",
      inputSchema: {
        argv: z
          .array(z.string())
          .min(1)
          .describe("The command and its arguments, never a shell line"),
        cwd: z.string().optional().describe("Working directory (default: your home)"),
        user: z.string().optional().describe("Run as this user (default: root)"),
      },
    },
    guard(async ({ argv, cwd, user }: { argv: string[]; cwd?: string; user?: string }) => {
      const result = await sudo([...(user ? ["-u", user] : []), "--", ...argv], cwd);
      const body = {
        exitCode: result.code,
        stdout: result.stdout,
        stderr: result.stderr,
      };
      if (result.code === 0) return ok(body);
      const hint = GATE_HINTS[result.code] ?? "the command ran and failed; its output is above";
      return { ...failure(JSON.stringify(body, null, 2), hint) };
    }, "is sudo installed and enabled for you (sudo.enable)?"),
  );

  server.registerTool(
    "change_propose",
    {
      description:
        "Propose a change to a machine's system configuration (never applied directly): your branch in the config repo, or in your clone, or a patch file, with a written explanation. Returns the proposal with its risk.",
      inputSchema: {
        host: z.string().describe("The machine, as declared in change.hosts"),
        explanation: z.string().min(1).describe("What the change does and why"),
        branch: z.string().optional().describe("Your branch"),
        from: z.string().optional().describe("Your clone to fetch the branch from"),
        patch: z.string().optional().describe("A patch file instead of a branch"),
      },
    },
    guard(
      async (args: {
        host: string;
        explanation: string;
        branch?: string;
        from?: string;
        patch?: string;
      }) => {
        const c = changes();
        try {
          return ok(summary(await c.propose({ ...args, agent: agent.name })));
        } finally {
          await c.close();
        }
      },
      "the config repo must be clean and your branch based on its main branch; you need write access to change.dir",
    ),
  );

  server.registerTool(
    "change_verify",
    {
      description:
        "Build a proposed change without switching; returns whether it built, the build's error, and the closure difference.",
      inputSchema: { id: z.string().describe("The change id from change_propose") },
    },
    guard(async ({ id }: { id: string }) => {
      const c = changes();
      try {
        const p = await c.verify(id);
        const body = summary(p);
        return p.state === "verify-failed"
          ? failure(
              JSON.stringify(body, null, 2),
              "fix the configuration on your branch and propose again",
            )
          : ok(body);
      } finally {
        await c.close();
      }
    }, "change_status lists the changes and their states"),
  );

  server.registerTool(
    "change_status",
    {
      description: "One change in full, or every change in one line each.",
      inputSchema: { id: z.string().optional() },
    },
    guard(async ({ id }: { id?: string }) => {
      const c = changes();
      try {
        if (id !== undefined) return ok(await c.get(id));
        return ok((await c.list()).map(describeProposal).join("\n") || "no changes proposed");
      } finally {
        await c.close();
      }
    }, "is change.repo declared in the town?"),
  );

  server.registerTool(
    "persisted_paths",
    {
      description:
        "The paths of your home that survive a reset (everything else is wiped every round).",
      inputSchema: {},
    },
    async () =>
      ok({
        home: agent.home,
        paths: agent.persist.map((p) => ({ path: p.path, type: p.type, storedIn: p.source })),
      }),
  );

  server.registerTool(
    "request_reset",
    {
      description:
        "Ask for a new round: your home goes back to blank except persisted paths. A human approves; every process of yours stops, this one included.",
      inputSchema: {},
    },
    guard(async () => {
      const result = await sudo([
        town.install.bin,
        "reset",
        agent.name,
        "--manifest",
        town.paths.manifest,
      ]);
      if (result.code === 0) return ok({ exitCode: 0, output: result.stdout + result.stderr });
      return failure(
        `no reset (exit ${result.code}): ${(result.stderr || result.stdout).trim()}`,
        GATE_HINTS[result.code] ?? "see the output",
      );
    }, "is sudo enabled for you?"),
  );

  server.registerResource(
    "identity",
    "nuketown://agent/identity",
    { description: "Your identity in the town (TOML)", mimeType: "application/toml" },
    async (uri) => ({
      contents: [
        { uri: uri.href, mimeType: "application/toml", text: renderIdentityToml(town, agent) },
      ],
    }),
  );
  server.registerResource(
    "instructions",
    "nuketown://agent/instructions",
    { description: "Your instructions (AGENTS.md)", mimeType: "text/markdown" },
    async (uri) => ({
      contents: [
        { uri: uri.href, mimeType: "text/markdown", text: renderInstructions(town, agent) },
      ],
    }),
  );
  return server;
}

function summary(p: Proposal) {
  return {
    id: p.id,
    state: p.state,
    host: p.host,
    risk: p.risk,
    riskReasons: p.riskReasons,
    options: p.options,
    commit: p.commit,
    base: p.base,
    diffstat: p.diffstat,
    ...(p.verify && {
      verify: {
        ok: p.verify.ok,
        ...(p.verify.error !== undefined && { error: p.verify.error }),
        ...(p.verify.closure && { closure: p.verify.closure }),
      },
    }),
  };
}
