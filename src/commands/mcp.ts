/**
 * `nuketown mcp`: the town's MCP server on stdio, for the agent whose
 * account runs it (root may name one with NUKETOWN_AGENT, for tests and
 * debugging). stdout carries the protocol only; diagnostics go to stderr.
 */
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { EXIT, RefusedError } from "../errors.ts";
import { createMcpServer } from "../mcp/server.ts";
import type { Streams } from "../output.ts";
import { townFrom } from "./town-source.ts";

export interface McpCommandOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  readonly stdin?: NodeJS.ReadableStream;
  readonly uid?: number;
}

export async function mcp(opts: McpCommandOptions): Promise<number> {
  const town = await townFrom(opts);
  const uid = opts.uid ?? process.getuid?.() ?? -1;
  const named = process.env.NUKETOWN_AGENT;
  const agent =
    town.agents.find((a) => a.uid === uid) ??
    (uid === 0 && named !== undefined ? town.agents.find((a) => a.name === named) : undefined);
  if (!agent)
    throw new RefusedError(
      `uid ${uid} is not an agent of ${town.name}: nuketown mcp runs as the agent (its runtime starts it)`,
    );
  const server = createMcpServer({ town, agent });
  const transport = new StdioServerTransport(
    (opts.stdin ?? process.stdin) as typeof process.stdin,
    opts.out as typeof process.stdout,
  );
  await server.connect(transport);
  const closed = new Promise<void>((resolve) => {
    server.server.onclose = () => resolve();
    (opts.stdin ?? process.stdin).once("end", () => resolve());
  });
  opts.err.write(`nuketown mcp: serving ${agent.name} on stdio\n`);
  await closed;
  await server.close();
  return EXIT.ok;
}
