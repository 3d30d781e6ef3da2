/**
 * Approval round trip of an auto-approved request (a policy allow rule):
 * gate-side connect, request frame, policy, audit append (fsynced), decision
 * frame — against a plain Unix-socket echo round trip in the same process.
 * Goal (SPEC §4): single-digit milliseconds. Runs the real daemon in-process
 * on sockets under a temp dir; needs root (it chowns the control socket).
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { ApprovalDaemon } from "../src/approval/daemon.ts";
import { type ApprovalRequest, encodeFrame } from "../src/approval/protocol.ts";
import { AuditLog } from "../src/audit/log.ts";
import { resolveTown } from "../src/town/resolve.ts";

const ROUNDS = 300;
const WARMUP = 30;

function roundTrip(socketPath: string, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let reply = "";
    socket.setEncoding("utf8");
    socket.on("connect", () => socket.write(payload));
    socket.on("data", (chunk: string) => {
      reply += chunk;
      if (reply.includes('"decision"') || reply.endsWith("\n")) {
        socket.destroy();
        resolve(reply);
      }
    });
    socket.on("error", reject);
  });
}

async function time(rounds: number, fn: () => Promise<unknown>): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return samples.sort((a, b) => a - b);
}

const pick = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;

export async function benchApproval(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.log("approval round trip: skipped (needs root to own the control socket)");
    return 0;
  }
  const root = await mkdtemp(path.join(tmpdir(), "nt-test-bench-approval-"));
  const echoServer = net.createServer((s) => s.on("data", (d) => s.end(d)));
  let daemon: ApprovalDaemon | undefined;
  try {
    // The daemon reads the approvers group from <etc>/group: a file of our own, no account needed.
    await writeFile(path.join(root, "group"), "nt-test-bench-approvers:x:0:\n");
    await writeFile(path.join(root, "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    const resolved = resolveTown(
      {
        name: "nt-test-bench",
        stateDir: path.join(root, "state"),
        runtimeDir: path.join(root, "run"),
        etcDir: path.join(root, "etc"),
        uidRange: { min: 60100, max: 60999 },
        approval: { group: "nt-test-bench-approvers" },
        humans: { mayor: { approver: true } },
        agents: {
          "nt-test-bench-a": {
            uid: 60950,
            sudo: { enable: true, policy: { rules: [{ action: "allow", argv: ["id", "**"] }] } },
          },
        },
      },
      { hostname: "bench", baseDir: root },
    );
    if (!resolved.town)
      throw new Error(resolved.errors.map((e) => `${e.path}: ${e.message}`).join("\n"));
    const town = resolved.town;
    daemon = new ApprovalDaemon({ town, audit: new AuditLog(town.paths.auditLog), etc: root });
    await daemon.start();

    const request: ApprovalRequest = {
      agent: { name: "nt-test-bench-a", uid: 60950 },
      argv: ["id", "-u"],
      command: "/usr/bin/id",
      cwd: "/",
      runAs: { user: "root" },
    };
    const frame = encodeFrame({ type: "request", request });
    const echoPath = path.join(root, "echo.sock");
    await new Promise<void>((resolve) => echoServer.listen(echoPath, resolve));

    const approve = () => roundTrip(town.paths.requestSocket, frame);
    const check = await approve();
    if (!check.includes('"decision":"approved"')) throw new Error(`unexpected answer: ${check}`);
    await time(WARMUP, approve);
    await time(WARMUP, () => roundTrip(echoPath, frame));
    const approvals = await time(ROUNDS, approve);
    const echoes = await time(ROUNDS, () => roundTrip(echoPath, frame));

    const ms = (v: number) => v.toFixed(2).padStart(9);
    console.log(`approval round trip (policy allow, audited with fsync): ${ROUNDS} rounds`);
    console.log(`${"".padEnd(22)}${"p50 ms".padStart(9)}${"p99 ms".padStart(9)}`);
    console.log(
      `${"auto-approved request".padEnd(22)}${ms(pick(approvals, 0.5))}${ms(pick(approvals, 0.99))}`,
    );
    console.log(
      `${"socket echo baseline".padEnd(22)}${ms(pick(echoes, 0.5))}${ms(pick(echoes, 0.99))}`,
    );
    const p50 = pick(approvals, 0.5);
    console.log(`approval / echo (p50): ${(p50 / pick(echoes, 0.5)).toFixed(1)}x`);
    console.log(
      `goal: single-digit milliseconds: p50 ${p50.toFixed(2)} ms, ${p50 < 10 ? "met" : "NOT met"}`,
    );
    return 0;
  } finally {
    await daemon?.stop();
    echoServer.close();
    await rm(root, { recursive: true, force: true });
  }
}
