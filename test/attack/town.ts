/**
 * The town the attack replay (issue 17) is run against: brought up for real
 * as the README's `npm run up` does, but in a temp dir with test accounts —
 * btrfs homes on a loop image, a sops file of every agent's SSH key and an
 * age key installed as `npm run up` leaves it (0600, root), `nuketown up`
 * supervising approvald and the agent daemons, the town's sudoers fragment
 * where the real sudo reads it. The agents are `nt-test-ada` (sudo like the
 * example's ada: ask by default, `allow systemctl status **`, `deny rm -rf /`)
 * and `nt-test-vox` (no sudo, a claude-code runtime); the mayor answers
 * through `nuketown approve/deny` from a human's account.
 *
 * Everything here acts as someone: `asUser` runs a command as a Unix user
 * (runuser, the user's own uid), `sudoAs` is an agent's sudo through the
 * shim answered by a scripted human, `reset` and `apply` are the
 * operator's (root).
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { runTask, type TaskOutcome, type TaskRequest } from "../../src/agent/client.ts";
import type { PendingRequest } from "../../src/approval/protocol.ts";
import type { AuditRecord } from "../../src/audit/log.ts";
import { type SeededRepo, seededRepo } from "../support/git-repo.ts";
import { mustRun, run } from "../support/host.ts";
import { BIN, openTestTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

export { BIN };

export interface Account {
  readonly name: string;
  readonly uid: number;
}

export const ADA: Account = { name: "nt-test-ada", uid: 60640 };
export const VOX: Account = { name: "nt-test-vox", uid: 60641 };
export const MAYOR: Account = { name: "nt-test-amayor", uid: 60642 };
/** A second name for vox's uid (made and removed by the attempt that needs it). */
export const VOX_ALIAS = "nt-test-vox2";

export interface Outcome {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface SudoResult extends Outcome {
  /** What the mayor was shown (the `nuketown approvals` row), when a human was asked. */
  readonly shown?: string;
  /** The human's answer, when asked. */
  readonly answered?: "approve" | "deny";
  /** The audit's decision record for the request, if one was written. */
  readonly decision?: { decision: string; by: { kind: string; rule?: number; id?: string } };
  /** The audit's request record. */
  readonly request?: Record<string, unknown>;
}

/** What a scripted human decides, shown a request as `nuketown approvals` prints it. */
export type Human = (shown: string, request: PendingRequest) => "approve" | "deny";

/** A human who says no to everything. */
export const denyAll: Human = () => "deny";

export interface AttackTown {
  readonly root: string;
  readonly config: string;
  readonly manifest: string;
  readonly prefix: string;
  /** The installed nuketown (what humans and agents run). */
  readonly installedBin: string;
  readonly gate: string;
  readonly shimDir: string;
  /** The staged sudo wrapper's directory (usr/local/bin beside etcDir's root). */
  readonly wrapperDir: string;
  readonly keyFile: string;
  readonly sopsFile: string;
  readonly auditLog: string;
  readonly logsDir: string;
  readonly repo: SeededRepo;
  /** A directory every account may write in (sticky), where attacks leave their evidence. */
  readonly evidence: string;
  readonly approvers: string;
  home(agent: Account): string;
  socket(agent: Account): string;
  upOutput(): string;
  stop(): Promise<void>;
}

const AUTHOR = ["-c", "user.name=t", "-c", "user.email=t@t"];

/** A stand-in for the claude CLI: it holds a while, so a task is seen running, then answers. */
const FAKE_CLAUDE = `#!/bin/sh
# Stand-in for the claude CLI (what nuketown starts, with the arguments it gives).
case " $* " in *" -p "*) cat >/dev/null ;; esac
sleep 4
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"00000000-0000-4000-8000-000000000001"}'
`;

/** The command runtime of ada: reads the task, answers. */
const ADA_RUNTIME = `#!/bin/sh
cat >/dev/null
echo '{"type":"answer","text":"done"}'
`;

/**
 * Bring the town up (test/support/town.ts's builder: the temp root, the
 * mayor's account, the installed copy, the declaration, `nuketown up`, the
 * sudoers fragment, one cleanup). Throws, after cleaning up, when it does not
 * come up. `log` hears progress.
 */
export async function bringUpTown(log: (line: string) => void = () => {}): Promise<AttackTown> {
  const town = await openTestTown({
    label: "attack",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR.name]: MAYOR.uid },
    install: true,
  });
  const root = town.root;
  // Run last at cleanup (after up stopped): whatever an attack left running as the agents
  // (a churner that outlived a reset) goes in one sweep each, and the second name goes.
  town.defer(() => {
    for (const agent of [ADA, VOX]) killAllOf(agent);
    run("userdel", ["--force", VOX_ALIAS]);
  });
  try {
    const evidence = path.join(root, "evidence");
    mkdirSync(evidence);
    chmodSync(evidence, 0o1777);
    const repo = seededRepo(root, "site");

    // The age key as `npm run up` leaves the example's: root's, 0600, beside the config.
    const keyFile = town.ageKey(path.join("keys", "age.key"));
    chmodSync(path.dirname(keyFile), 0o755);
    chmodSync(keyFile, 0o600);
    const recipient = mustRun("age-keygen", ["-y", keyFile]).trim();
    const plain: string[] = [];
    for (const agent of [ADA, VOX]) {
      const file = path.join(root, `${agent.name}-ssh`);
      mustRun("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", agent.name, "-f", file]);
      const key = readFileSync(file, "utf8");
      rmSync(file);
      rmSync(`${file}.pub`);
      plain.push(`${agent.name}/ssh-key: |\n${indent(key, "  ")}`);
    }
    const secretsDir = path.join(root, "secrets");
    mkdirSync(secretsDir, { mode: 0o755 });
    const sopsFile = path.join(secretsDir, "agents.yaml");
    const plainFile = path.join(root, "agents.plain.yaml");
    writeFileSync(plainFile, `${plain.join("\n")}\n`, { mode: 0o600 });
    writeFileSync(
      sopsFile,
      mustRun("sops", [
        "--encrypt",
        "--age",
        recipient,
        "--input-type",
        "yaml",
        "--output-type",
        "yaml",
        plainFile,
      ]),
    );
    rmSync(plainFile);

    const runtimes = path.join(root, "runtimes");
    mkdirSync(runtimes, { mode: 0o755 });
    writeFileSync(path.join(runtimes, "ada.sh"), ADA_RUNTIME, { mode: 0o755 });
    writeFileSync(path.join(runtimes, "claude"), FAKE_CLAUDE, { mode: 0o755 });

    town.declare({
      domain: "attack.test",
      homes: { backend: "image", image: { size: "256M" } },
      basePackages: ["git"],
      secrets: { sopsFile: "secrets/agents.yaml", ageKeyFile: "keys/age.key" },
      approval: { timeout: 120 },
      humans: { [MAYOR.name]: { approver: true } },
      agents: {
        [ADA.name]: {
          uid: ADA.uid,
          role: "software",
          persist: ["projects"],
          repos: [repo.bare],
          secrets: { sshKey: `${ADA.name}/ssh-key` },
          runtime: { kind: "command", command: path.join(runtimes, "ada.sh") },
          sudo: {
            enable: true,
            policy: {
              default: "ask",
              rules: [
                // The example's two rules, as written there.
                { action: "allow", argv: ["systemctl", "status", "**"] },
                { action: "deny", argv: ["rm", "-rf", "/"], reason: "never" },
                // A rule about one target user, for the second-name attempt.
                {
                  action: "deny",
                  argv: ["cat", "**"],
                  runAs: VOX.name,
                  reason: "nothing is read as vox",
                },
              ],
            },
          },
        },
        [VOX.name]: {
          uid: VOX.uid,
          role: "research",
          persist: ["projects"],
          repos: [repo.bare],
          secrets: { sshKey: `${VOX.name}/ssh-key` },
          runtime: { kind: "claude-code", command: path.join(runtimes, "claude"), timeout: 60 },
        },
      },
    });
    if (process.env.KEEP_LOGS) {
      const keep = process.env.KEEP_LOGS;
      town.defer(() => run("cp", ["-r", path.join(root, "state", "logs"), keep]));
    }
    const socket = (agent: Account) => town.socket(agent.name);
    log(`bringing up the town in ${root}`);
    const up = town.up();
    await until(
      "both agent daemons",
      () => {
        if (up.child.exitCode !== null || up.child.signalCode !== null)
          throw new Error("nuketown up ended");
        return existsSync(socket(ADA)) && existsSync(socket(VOX));
      },
      180_000,
    ).catch((error: Error) => {
      throw new Error(`${error.message}\nup:\n${up.output().slice(-4000)}`);
    });
    // The fragment apply rendered (and checked with visudo) goes where sudo reads it.
    town.sudoers();
    log("the town is up");
    return {
      root,
      config: town.config,
      manifest: town.manifest,
      prefix: town.prefix,
      installedBin: town.installedBin,
      gate: path.join(town.prefix, "libexec", "nuketown", "sudo-gate"),
      shimDir: town.shimDir,
      wrapperDir: path.join(root, "usr", "local", "bin"),
      keyFile,
      sopsFile,
      auditLog: path.join(root, "state", "audit.jsonl"),
      logsDir: path.join(root, "state", "logs"),
      repo,
      evidence,
      approvers: town.approvers,
      home: (agent) => town.home(agent.name),
      socket,
      upOutput: () => up.output(),
      stop: () => town.cleanup(),
    };
  } catch (error) {
    await town.cleanup().catch(() => {});
    throw error;
  }
}

function indent(text: string, prefix: string): string {
  return text
    .trimEnd()
    .split("\n")
    .map((line) => `${prefix}${line}`)
    .join("\n");
}

export async function until(
  what: string,
  probe: () => boolean | Promise<boolean>,
  ms = 30_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface AsOptions {
  readonly input?: string;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  readonly timeoutMs?: number;
}

/** Start `argv` as a Unix user (runuser: that user's uid, gid and groups), without waiting. */
export function startAs(
  user: string,
  argv: readonly string[],
  options: AsOptions = {},
): { child: ChildProcess; done: Promise<Outcome> } {
  const env = Object.entries(options.env ?? {}).map(([k, v]) => `${k}=${v}`);
  const child = spawn("runuser", ["-u", user, "--", "env", ...env, ...argv], {
    cwd: options.cwd ?? "/",
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d) => (stdout += d));
  child.stderr?.on("data", (d) => (stderr += d));
  // A command that exits before reading its input is not an error here.
  child.stdin?.on("error", () => {});
  child.stdin?.end(options.input ?? "");
  const timer =
    options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => child.kill("SIGKILL"), options.timeoutMs);
  const done = new Promise<Outcome>((resolve) => {
    child.on("error", (error) => resolve({ code: -1, stdout, stderr: String(error) }));
    child.on("close", (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done };
}

export const asUser = (user: string, argv: readonly string[], options: AsOptions = {}) =>
  startAs(user, argv, { timeoutMs: 60_000, ...options }).done;

/** A shell command as the user. */
export const shAs = (user: string, script: string, options: AsOptions = {}) =>
  asUser(user, ["/bin/sh", "-c", script], options);

/** The agent's PATH as its daemon has it: the sudo shim first. */
export const agentPath = (town: AttackTown) => `${town.shimDir}:/usr/bin:/bin`;

/** The installed nuketown as the mayor (a human may not enter the checkout). */
export const mayorSays = (town: AttackTown, args: readonly string[]) =>
  asUser(MAYOR.name, [town.installedBin, ...args, "--manifest", town.manifest], {
    env: { HOME: path.join(town.root, "humans", MAYOR.name) },
  });

/** What waits for a human, as the mayor's `nuketown approvals --json` lists it. */
export async function pendingRequests(town: AttackTown): Promise<PendingRequest[]> {
  const listed = await mayorSays(town, ["approvals", "--json"]);
  if (listed.code !== 0) throw new Error(`nuketown approvals failed: ${listed.stderr}`);
  return JSON.parse(listed.stdout) as PendingRequest[];
}

/** The row the mayor sees for one request in `nuketown approvals`. */
export async function shownRow(town: AttackTown, id: string): Promise<string> {
  const listed = await mayorSays(town, ["approvals"]);
  return listed.stdout
    .split("\n")
    .filter((line) => line.includes(id))
    .join("\n");
}

/**
 * The human's decision, carried out with `nuketown approve|deny` from the
 * mayor's account. Whatever the attempt's human says, nothing that names
 * `rm` is ever approved: a deny rule that fails must not delete anything.
 */
export async function decide(
  town: AttackTown,
  request: PendingRequest,
  shown: string,
  human: Human,
  /** Runs after the human has looked and before the answer reaches approvald. */
  meanwhile?: () => Promise<void>,
): Promise<"approve" | "deny"> {
  const wanted = human(shown, request);
  await meanwhile?.();
  const answer = wanted === "approve" && !mentionsRm(request, shown) ? "approve" : "deny";
  const said = await mayorSays(town, [
    answer,
    request.id,
    ...(answer === "deny" ? ["--reason", "no (scripted human)"] : []),
  ]);
  if (said.code !== 0 && !/no pending request/.test(said.stderr))
    throw new Error(`nuketown ${answer} failed: ${said.stderr}`);
  return answer;
}

function mentionsRm(request: PendingRequest, shown: string): boolean {
  const words = [...request.argv, request.command, ...shown.split(/\s+/)];
  return words.some((w) => /(^|\/)rm$/.test(w) || /(^|[\s/"])rm(\s|$)/.test(w));
}

/** Every audit record (the hash-chained JSONL the approval daemon writes). */
export function auditRecords(town: AttackTown): AuditRecord[] {
  if (!existsSync(town.auditLog)) return [];
  return readFileSync(town.auditLog, "utf8")
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as AuditRecord);
}

/**
 * The agent's `sudo ARGV` through its shim (as its daemon's PATH has it),
 * a human answering if one is asked. Resolves once sudo has exited, with
 * the audit's request and decision records for it.
 */
export async function sudoAs(
  town: AttackTown,
  agent: Account,
  argv: readonly string[],
  human: Human,
  options: {
    /** `sudo -u USER`: ARGV is then what runs as USER. */
    user?: string;
    cwd?: string;
    /** Run this shell command (which calls sudo) instead of `sudo ARGV`; ARGV is what it asks. */
    shell?: string;
    env?: Record<string, string>;
    /** What the agent does while the human decides. */
    meanwhile?: () => Promise<void>;
  } = {},
): Promise<SudoResult> {
  const seqBefore = auditRecords(town).at(-1)?.seq ?? 0;
  const command =
    options.shell !== undefined
      ? ["/bin/sh", "-c", options.shell]
      : ["sudo", ...(options.user !== undefined ? ["-u", options.user] : []), ...argv];
  const started = startAs(agent.name, command, {
    cwd: options.cwd ?? town.home(agent),
    env: { PATH: agentPath(town), HOME: town.home(agent), ...options.env },
    timeoutMs: 150_000,
  });
  let exited = false;
  void started.done.then(() => (exited = true));
  let shown: string | undefined;
  let answered: "approve" | "deny" | undefined;
  const handled = new Set<string>();
  while (!exited) {
    const mine = (await pendingRequests(town)).filter(
      (r) => r.agent.name === agent.name && !handled.has(r.id),
    );
    for (const request of mine) {
      handled.add(request.id);
      shown = await shownRow(town, request.id);
      answered = await decide(town, request, shown, human, options.meanwhile);
    }
    if (!exited) await sleep(150);
  }
  const result = await started.done;
  const records = auditRecords(town).filter((r) => r.seq > seqBefore);
  const request = records.find(
    (r) => r.event === "request" && r.data.agent === agent.name && sameArgv(r.data.argv, argv),
  );
  const decision = request
    ? records.find((r) => r.event === "decision" && r.data.id === request.data.id)
    : undefined;
  return {
    ...result,
    ...(shown !== undefined && { shown }),
    ...(answered !== undefined && { answered }),
    ...(request && { request: request.data }),
    ...(decision && { decision: decision.data as SudoResult["decision"] & object }),
  };
}

function sameArgv(recorded: unknown, argv: readonly string[]): boolean {
  return Array.isArray(recorded) && JSON.stringify(recorded) === JSON.stringify(argv);
}

/**
 * How the gate says a request ended, from what the agent sees (its exit code
 * and the gate's words) and whether a human was asked: the audit may keep
 * less than one record per request (a rate limit), the agent's side always
 * tells. `unreached`: the gate never spoke (sudo itself refused).
 */
export type GateOutcome =
  | "allowed-by-policy"
  | "denied-by-policy"
  | "asked-a-human"
  | "refused"
  | "unreached";

/** The gate's exit code when a policy rule denies (src/approval/gate.ts). */
const DENIED_BY_POLICY = 11;

export function gateOutcome(result: SudoResult): GateOutcome {
  if (result.shown !== undefined) return "asked-a-human";
  if (/nuketown: allowed by policy/.test(result.stderr)) return "allowed-by-policy";
  if (result.code === DENIED_BY_POLICY && /nuketown: sudo denied/.test(result.stderr))
    return "denied-by-policy";
  return /nuketown: /.test(result.stderr) ? "refused" : "unreached";
}

/** How a request ended, in a few words, for evidence lines. */
export function describeDecision(result: SudoResult): string {
  const outcome = gateOutcome(result);
  const d = result.decision;
  const by = !d
    ? ""
    : d.by.kind === "policy"
      ? d.by.rule === undefined
        ? " by policy default"
        : ` by policy rule ${d.by.rule}`
      : d.by.kind === "human"
        ? ` by the human (${d.by.id})`
        : ` by ${d.by.kind}`;
  const audited = d ? `${d.decision}${by}` : "not audited";
  const human = outcome === "asked-a-human" ? `, the human said ${result.answered}` : "";
  return `${outcome}${human} (${audited}), exit ${result.code}${outcome === "refused" || outcome === "unreached" ? `: ${lastLine(result.stderr).slice(0, 100)}` : ""}`;
}

export const lastLine = (text: string) =>
  text
    .trim()
    .split("\n")
    .filter((l) => l.trim() !== "")
    .at(-1) ?? "";

/** The operator's `nuketown reset AGENT`, then the agent's daemon back (the supervisor restarts it). */
export async function reset(
  town: AttackTown,
  agent: Account,
  timeoutMs = 120_000,
): Promise<Outcome & { hung?: boolean }> {
  const before = Date.now();
  let hung = false;
  const outcome = await new Promise<Outcome>((resolve) => {
    const child = spawn(BIN, ["reset", agent.name, "--config", town.config], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    // A reset an agent's process holds up: free it (everything of the agent's uid, at
    // once), say so, and let the reset finish.
    const timer = setTimeout(() => {
      hung = true;
      killAllOf(agent);
    }, timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  if (outcome.code === 0) await daemonBack(town, agent, before);
  return hung ? { ...outcome, hung } : outcome;
}

/** kill(-1) as the agent: every process of its uid in one sweep, a fork cannot slip through. */
export function killAllOf(agent: Account): void {
  run("setpriv", [`--reuid=${agent.uid}`, "kill", "-KILL", "-1"]);
}

/** Wait until the agent's daemon listens again on a socket made after `since`. */
export async function daemonBack(town: AttackTown, agent: Account, since: number): Promise<void> {
  const socket = town.socket(agent);
  await until(
    `${agent.name}'s daemon after the reset`,
    () => existsSync(socket) && lstatSync(socket).ctimeMs > since,
    90_000,
  );
}

/** A task for an agent, sent as root (who may reach every agent socket). */
export function task(town: AttackTown, agent: Account, request: TaskRequest): Promise<TaskOutcome> {
  return runTask(town.socket(agent), request);
}

/** git as the agent, in a directory. */
export const gitAs = (agent: Account, dir: string, args: readonly string[]) =>
  asUser(agent.name, ["git", ...AUTHOR, "-C", dir, ...args], {
    env: { HOME: "/nonexistent" },
  });

/** Processes (pid and command line) whose command line contains `marker`. */
export function processesWith(marker: string): { pid: number; uid: number; args: string }[] {
  const listed = run("ps", ["-eo", "pid=,uid=,args="]).stdout;
  return listed
    .split("\n")
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), uid: Number(m[2]), args: m[3] ?? "" }))
    .filter((p) => p.args.includes(marker) && !p.args.includes("ps -eo"));
}
