/**
 * The town's MCP server (`nuketown mcp`, stdio), run by an agent's runtime
 * as the agent. Its tools are clients of what the town already runs: sudo
 * through the shim and the gate (so approvald asks a human), change control
 * (proposals as this agent, through approvald's change socket, which knows
 * the agent by its uid; never approve or apply), and the manifest. A
 * failure is an `isError` result with a hint, never a crash of the server.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { GATE_EXIT } from "../approval/gate.ts";
import { askChangeService, ChangeServiceError } from "../change/client.ts";
import { ChangeControl } from "../change/control.ts";
import { describeProposal, type Proposal } from "../change/proposal.ts";
import { changeHint, changeSocketPath } from "../change/protocol.ts";
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
  /**
   * Change control through approvald's change socket (an agent cannot write
   * the change store), or in this process (root, for tests and debugging).
   * @default true unless this process runs as root
   */
  readonly viaChangeSocket?: boolean;
  /** Where a relative clone path is resolved. @default process.cwd() */
  readonly cwd?: string;
}

interface ProposeArgs {
  host: string;
  explanation: string;
  branch?: string;
  from?: string;
  patch?: string;
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
  const viaSocket = options.viaChangeSocket ?? (process.getuid?.() ?? 0) !== 0;
  const socket = changeSocketPath(town);
  const cwd = options.cwd ?? process.cwd();
  const local = async <T>(work: (c: ChangeControl) => Promise<T>): Promise<T> => {
    const c = new ChangeControl({ town, runner, uid: process.getuid?.() ?? 0 });
    try {
      return await work(c);
    } finally {
      await c.close();
    }
  };
  const changes = {
    list: (): Promise<readonly Proposal[]> =>
      viaSocket ? askChangeService(socket, { type: "status" }) : local((c) => c.list()),
    get: (id: string): Promise<Proposal> =>
      viaSocket ? askChangeService(socket, { type: "status", id }) : local((c) => c.get(id)),
    verify: (id: string): Promise<Proposal> =>
      viaSocket
        ? askChangeService(socket, { type: "verify", id })
        : local((c) => c.verify(id, { requester: agent.name })),
    propose: async (args: ProposeArgs): Promise<Proposal> => {
      // The clone and the patch are read here, as the agent; the daemon never opens a path of ours as root.
      const from = args.from === undefined ? undefined : path.resolve(cwd, args.from);
      const patch =
        args.patch === undefined
          ? undefined
          : await readFile(path.resolve(cwd, args.patch), "utf8");
      if (viaSocket)
        return askChangeService(socket, {
          type: "propose",
          host: args.host,
          explanation: args.explanation,
          ...(args.branch !== undefined && { branch: args.branch }),
          ...(from !== undefined && { from }),
          ...(patch !== undefined && { patch }),
        });
      return local((c) =>
        c.propose({
          host: args.host,
          explanation: args.explanation,
          agent: agent.name,
          ...(args.branch !== undefined && { branch: args.branch }),
          ...(from !== undefined && { from }),
          ...(patch !== undefined && { patchText: patch }),
        }),
      );
    },
  };
  const guard =
    <A>(work: (args: A) => Promise<CallToolResult>, hint: string) =>
    async (args: A): Promise<CallToolResult> => {
      try {
        return await work(args);
      } catch (error) {
        return failure((error as Error).message, hint);
      }
    };
  /** Change tools: the daemon's hint, or one for what went wrong here. */
  const changeGuard =
    <A>(type: "propose" | "verify" | "status", work: (args: A) => Promise<CallToolResult>) =>
    async (args: A): Promise<CallToolResult> => {
      try {
        return await work(args);
      } catch (error) {
        const message = (error as Error).message;
        return failure(
          message,
          error instanceof ChangeServiceError && error.hint !== ""
            ? error.hint
            : changeHint(type, message),
        );
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
      let proposals: readonly Proposal[] = [];
      let changesError: string | undefined;
      if (town.change.repo !== undefined)
        proposals = await changes.list().catch((error: Error) => {
          changesError = error.message;
          return [];
        });
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
        ...(changesError !== undefined && { changesError }),
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
        "Propose a change to a machine's system configuration (never applied directly): a branch of your clone of the config repo (or of the config repo itself), or a patch file, with a written explanation. The proposal is yours (the town knows you by your uid). Returns it with its risk; next, change_verify.",
      inputSchema: {
        host: z.string().describe("The machine, as declared in change.hosts"),
        explanation: z.string().min(1).describe("What the change does and why"),
        branch: z.string().optional().describe("Your branch"),
        from: z
          .string()
          .optional()
          .describe("Your clone of the config repo holding the branch (a path)"),
        patch: z.string().optional().describe("A patch file instead of a branch (a path)"),
      },
    },
    changeGuard("propose", async (args: ProposeArgs) => ok(summary(await changes.propose(args)))),
  );

  server.registerTool(
    "change_verify",
    {
      description:
        "Build one of your proposed changes without switching (the build runs as you, on a checkout of the exact commit); returns whether it built, the build's error, and the closure difference.",
      inputSchema: { id: z.string().describe("The change id from change_propose") },
    },
    changeGuard("verify", async ({ id }: { id: string }) => {
      const p = await changes.verify(id);
      const body = summary(p);
      return p.state === "verify-failed"
        ? failure(
            JSON.stringify(body, null, 2),
            "the build failed (its error is above): fix the configuration on your branch and propose again",
          )
        : ok(body);
    }),
  );

  server.registerTool(
    "change_status",
    {
      description: "One change in full, or every change in one line each.",
      inputSchema: { id: z.string().optional() },
    },
    changeGuard("status", async ({ id }: { id?: string }) => {
      if (id !== undefined) return ok(await changes.get(id));
      return ok((await changes.list()).map(describeProposal).join("\n") || "no changes proposed");
    }),
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
