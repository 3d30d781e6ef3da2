/**
 * The vendor stand-ins (test/support/vendor-stub.ts) as a server the test
 * owns, alone in a new network namespace with loopback only: whatever the
 * test runs there (`inNetns`) reaches the stand-ins on 127.0.0.1 and nothing
 * else, so no request of the real CLIs can leave the machine.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./fixtures.ts";
import { type ServerProcess, startServerProcess, waitUntilReady } from "./server-process.ts";
import type { LoggedRequest, StubScript } from "./vendor-stub.ts";

export const AGENT_CLIS = process.env.NUKETOWN_AGENT_CLIS ?? "/opt/nuketown-test/agent-clis";
export const CLAUDE = path.join(AGENT_CLIS, "node_modules", ".bin", "claude");
export const CODEX = path.join(AGENT_CLIS, "node_modules", ".bin", "codex");

/** Fails (never skips) when the pinned CLIs are not installed. */
export function requireAgentClis(): void {
  for (const cli of [CLAUDE, CODEX]) {
    if (!existsSync(cli))
      throw new Error(`${cli} is missing: run bash scripts/install-agent-clis.sh (as root)`);
  }
}

export interface VendorStub {
  readonly port: number;
  /** `http://127.0.0.1:<port>`, as the CLIs are given it. */
  readonly url: string;
  /** argv prefix that runs a command in the stand-ins' network namespace. */
  readonly inNetns: readonly string[];
  script(script: StubScript): void;
  requests(): LoggedRequest[];
  stop(): Promise<void>;
}

export async function startVendorStub(dir: string): Promise<VendorStub> {
  mkdirSync(dir, { recursive: true });
  const logFile = path.join(dir, "stub.log");
  const script = (s: StubScript) => writeFileSync(path.join(dir, "script.json"), JSON.stringify(s));
  script({});
  const server: ServerProcess = startServerProcess({
    command: "unshare",
    // One process all along (unshare and sh exec): its pid names the namespace.
    args: [
      "--net",
      "sh",
      "-c",
      'ip link set lo up && exec "$0" "$1" "$2"',
      process.execPath,
      path.join(REPO_ROOT, "test", "support", "vendor-stub.ts"),
      dir,
    ],
    cwd: dir,
    dir,
    logFile,
  });
  const portFile = path.join(dir, "port");
  await waitUntilReady(server, async () => existsSync(portFile), {
    what: "the vendor stand-ins",
    timeoutMs: 15_000,
    logFile,
  });
  const port = Number(readFileSync(portFile, "utf8"));
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    inNetns: ["nsenter", `--net=/proc/${server.pid}/ns/net`, "--"],
    script,
    requests() {
      const file = path.join(dir, "requests.jsonl");
      if (!existsSync(file)) return [];
      return readFileSync(file, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as LoggedRequest);
    },
    stop: () => server.stop(2000),
  };
}
