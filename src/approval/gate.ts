/**
 * The approval gate: the only command agents may run as root without a
 * password. sudo runs it as root; it takes the agent's identity from sudo
 * (SUDO_UID/SUDO_USER, set by sudo itself), asks the approval daemon, and on
 * yes runs exactly the approved argv as the requested user, in the agent's
 * working directory, never through a shell, with a clean environment. On
 * no, a timeout, or an unreachable daemon it fails closed.
 *
 * A program or file argument the agent could change is flagged
 * (writable.ts) and its contents hashed into the request: the human approves
 * that hash. Right before the command starts the gate derives the request
 * again (program, contents, cwd, target) and refuses (exit 18) unless it
 * hashes the same. An agent-writable program then runs from a root-owned
 * copy made while hashing, so nothing the agent writes after the check
 * (into a script its interpreter is still reading, say) runs as root.
 */
import { existsSync, readFileSync, readlinkSync, statSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { startProcess } from "../os/process.ts";
import {
  parseGroup,
  parsePasswd,
  parseProcStat,
  parseSubordinateIds,
  ttyDeviceName,
} from "../os/tables.ts";
import type { ResolvedTown } from "../town/types.ts";
// Types only from protocol.ts: its zod schemas would weigh down the bundled gate (wire/framing.ts is plain).
import { encodeFrame, LineSplitter } from "../wire/framing.ts";
import { commandHash, SHORT_SHA256 } from "./binding.ts";
import { fileSystemProbe, hashFile, rootCopy } from "./contents.ts";
import { resolveCommand, SECURE_PATH } from "./policy.ts";
import type { ApprovalRequest, Decision } from "./protocol.ts";
import { parseGateArguments, shellArgv } from "./sudo-args.ts";
import {
  type AgentIdentity,
  fileArguments,
  MAX_WRITABLE_FILES,
  sameFiles,
  type WritableFile,
  type WritableProbe,
  whyAgentWritable,
} from "./writable.ts";

/** Distinct exit codes, so an agent (and its runtime) can tell why it did not run. */
export const GATE_EXIT = {
  deniedByHuman: 10,
  deniedByPolicy: 11,
  timeout: 12,
  cancelled: 13,
  unreachable: 14,
  refused: 15,
  testModeDenied: 16,
  /** Too many of the agent's requests wait for a human, or it asked too often: no human said no. */
  tooManyWaiting: 17,
  /** Approved, but what was approved changed before it could start (a script rewritten): nothing ran. */
  changed: 18,
  notFound: 127,
} as const;

export interface GateEnvironment {
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly euid: number;
  readonly cwd: string;
  readonly town: ResolvedTown;
  readonly etc?: string;
  readonly stderr: NodeJS.WritableStream;
  readonly stdout?: NodeJS.WritableStream;
}

class GateExit extends Error {
  readonly code: number;
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}

/** Runs the gate; resolves to the exit code for the process. */
export async function runGate(gate: GateEnvironment): Promise<number> {
  const say = (line: string) => gate.stderr.write(`nuketown: ${line}\n`);
  try {
    if (gate.argv[0] === "--unlock" || gate.argv[0] === "--lock")
      return await secretAccess(gate, say);
    const prepared = await prepare(gate);
    const { request } = prepared;
    const decision = await ask(gate.town.paths.requestSocket, request, (id) => {
      say(
        `waiting for a human to approve request ${id}: ${JSON.stringify(request.argv)} as ${request.runAs.user}`,
      );
      for (const file of request.writable ?? [])
        say(
          `  ${file.index === 0 ? "the program" : `argument ${file.index}`} ${JSON.stringify(file.path)} is agent-writable: approved as sha256 ${file.sha256.slice(0, SHORT_SHA256)}; changed, it will not run`,
        );
    });
    if (decision.by.kind === "test-mode") say(`*** ${decision.reason} ***`);
    if (decision.decision !== "approved") {
      say(`sudo ${decision.decision}: ${decision.reason}${describeBy(decision)}`);
      return exitFor(decision);
    }
    if (decision.by.kind === "policy")
      say(`allowed by policy${decision.by.rule === undefined ? "" : ` rule ${decision.by.rule}`}`);
    return await execute(prepared, decision, gate);
  } catch (error) {
    if (error instanceof GateExit) {
      say(error.message);
      return error.code;
    }
    throw error;
  }
}

/** `--unlock NAME` (asks a human) and `--lock NAME|--all` (never needs to). */
async function secretAccess(gate: GateEnvironment, say: (line: string) => void): Promise<number> {
  const agent = callingAgent(gate, false);
  const [flag, name, ...extra] = gate.argv;
  if (name === undefined || name === "" || extra.length > 0) {
    throw new GateExit(
      GATE_EXIT.refused,
      `usage: ${flag} ${flag === "--lock" ? "NAME|--all" : "NAME"}`,
    );
  }
  const identity = { name: agent.name, uid: agent.uid };
  if (flag === "--lock") {
    const removed = await lockRequest(
      gate.town.paths.requestSocket,
      identity,
      name === "--all" ? undefined : name,
    );
    say(removed.length === 0 ? "nothing was unlocked" : `locked ${removed.join(", ")}`);
    return 0;
  }
  const request: ApprovalRequest = {
    agent: identity,
    argv: ["nuketown", "unlock", name],
    command: "nuketown unlock",
    cwd: gate.cwd,
    runAs: { user: agent.name },
    unlock: { secret: name },
  };
  const decision = await ask(gate.town.paths.requestSocket, request, (id) =>
    say(`waiting for a human to approve request ${id}: unlock the secret ${JSON.stringify(name)}`),
  );
  if (decision.by.kind === "test-mode") say(`*** ${decision.reason} ***`);
  if (decision.decision !== "approved" || decision.path === undefined) {
    say(`unlock ${decision.decision}: ${decision.reason}${describeBy(decision)}`);
    return exitFor(decision);
  }
  say(decision.reason);
  gate.stdout?.write(`${decision.path}\n`);
  return 0;
}

function lockRequest(
  socketPath: string,
  agent: { name: string; uid: number },
  secret?: string,
): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    socket.setEncoding("utf8");
    let reply = "";
    socket.on("connect", () =>
      socket.write(encodeFrame({ type: "lock", agent, ...(secret !== undefined && { secret }) })),
    );
    socket.on("data", (chunk: string) => {
      reply += chunk;
    });
    socket.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        new GateExit(
          GATE_EXIT.unreachable,
          `the approval daemon is unreachable (${error.code ?? error.message})`,
        ),
      ),
    );
    socket.on("close", () => {
      const frame = JSON.parse(reply.split("\n")[0] || "{}") as {
        type?: string;
        removed?: string[];
        error?: string;
      };
      if (frame.type === "locked") resolve(frame.removed ?? []);
      else
        reject(
          new GateExit(
            GATE_EXIT.refused,
            `the approval daemon refused: ${frame.error ?? "no answer"}`,
          ),
        );
    });
  });
}

interface Target {
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
  readonly user: string;
}

/** A request as asked, with what the gate needs to derive it again before it runs. */
interface Prepared {
  readonly request: ApprovalRequest;
  /** commandHash(request): what the human approves. */
  readonly hash: string;
  readonly target: Target;
  readonly who: AgentIdentity;
  readonly probe: WritableProbe;
  readonly etc: string;
}

/**
 * The agent on the other side of sudo. Trust SUDO_* only when sudo really
 * made us root: an agent running the gate directly is not root, and sudo's
 * env_reset (without SETENV) keeps callers from setting them.
 */
function callingAgent(gate: GateEnvironment, needsSudo: boolean) {
  const sudoUid = gate.env.SUDO_UID;
  const sudoUser = gate.env.SUDO_USER;
  if (gate.euid !== 0 || sudoUid === undefined || sudoUser === undefined) {
    throw new GateExit(GATE_EXIT.refused, "the approval gate must be run through sudo");
  }
  const agent = gate.town.agents.find((a) => a.uid === Number(sudoUid) && a.name === sudoUser);
  if (!agent) throw new GateExit(GATE_EXIT.refused, `${sudoUser} is not an agent of this town`);
  if (needsSudo && !agent.sudo.enable) {
    throw new GateExit(GATE_EXIT.refused, `${sudoUser} may not use sudo in this town`);
  }
  return agent;
}

async function prepare(gate: GateEnvironment): Promise<Prepared> {
  const agent = callingAgent(gate, true);
  let parsed: ReturnType<typeof parseGateArguments>;
  try {
    parsed = parseGateArguments(gate.argv);
  } catch (error) {
    throw new GateExit(GATE_EXIT.refused, (error as Error).message);
  }
  const etc = gate.etc ?? "/etc";
  const users = parsePasswd(readFileSync(`${etc}/passwd`, "utf8"));
  // As sudo does: -g alone keeps the invoking user and changes only the group.
  const runAsUser = parsed.user ?? (parsed.group !== undefined ? agent.name : "root");
  const target = users.find(
    (u) =>
      u.name === runAsUser || (runAsUser.startsWith("#") && u.uid === Number(runAsUser.slice(1))),
  );
  if (!target) throw new GateExit(GATE_EXIT.refused, `unknown user ${runAsUser}`);
  let gid = target.gid;
  if (parsed.group !== undefined) {
    const group = parseGroup(readFileSync(`${etc}/group`, "utf8")).find(
      (g) => g.name === parsed.group,
    );
    if (!group) throw new GateExit(GATE_EXIT.refused, `unknown group ${parsed.group}`);
    gid = group.gid;
  }
  // Like sudo -i, a login shell starts in the target's home.
  const wanted = path.resolve(gate.cwd, parsed.cwd ?? (parsed.login ? target.home : gate.cwd));
  // Enter the directory now and keep it: the command later runs in this very
  // directory (inherited, never looked up again), so swapping the path for a
  // symlink while the human decides changes nothing. The human sees its real path.
  try {
    process.chdir(wanted);
  } catch (error) {
    throw new GateExit(
      GATE_EXIT.refused,
      `cannot enter ${wanted}: ${(error as NodeJS.ErrnoException).code}`,
    );
  }
  const cwd = process.cwd();
  // Shown to a human: no control, format or bidi characters that could hide where it runs.
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
  if (/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/u.test(cwd)) {
    throw new GateExit(
      GATE_EXIT.refused,
      `refusing to ask from a directory whose name a human cannot read: ${JSON.stringify(cwd)}`,
    );
  }
  // -i / -s: the target's shell (from passwd, never the agent's $SHELL), with sudo's escaping.
  const argv = shellArgv(parsed, target.shell || "/bin/sh");
  const shell: ApprovalRequest["shell"] = parsed.login
    ? "login"
    : parsed.shell
      ? "non-login"
      : undefined;
  if (argv.length === 0) throw new GateExit(GATE_EXIT.refused, "no command to run");
  const command = resolveCommand(argv[0]!, cwd, (p) => existsSync(p));
  if (command === undefined) {
    throw new GateExit(
      GATE_EXIT.notFound,
      `${argv[0]}: command not found in ${SECURE_PATH.join(":")}`,
    );
  }
  // As sudo does: a program named by path must be there now, not appear once a human said yes.
  if (!existsSync(command)) throw new GateExit(GATE_EXIT.notFound, `${argv[0]}: command not found`);
  const sudo = sudoProcess();
  const who = agentIdentity(agent, etc, sudo?.pid);
  const probe = fileSystemProbe(path.join(path.dirname(gate.town.install.setfacl), "getfacl"));
  const writable = await agentFiles(argv, command, cwd, who, probe);
  const tty = sudo && ttyDeviceName(sudo.ttyNr);
  const request: ApprovalRequest = {
    agent: { name: agent.name, uid: agent.uid },
    argv,
    command,
    cwd,
    runAs: {
      user: target.name,
      ...(parsed.group !== undefined && { group: parsed.group }),
      uid: target.uid,
    },
    ...(tty !== undefined && { tty }),
    ...(shell && { shell }),
    ...(writable.length > 0 && { writable }),
  };
  return {
    request,
    hash: commandHash(request),
    target: { uid: target.uid, gid, home: target.home, shell: target.shell, user: target.name },
    who,
    probe,
    etc,
  };
}

/**
 * The sudo the agent ran, as the kernel sees it: the gate's nearest
 * ancestors that are root's processes named sudo (sudo's monitor, then sudo
 * itself), the last of them. Its controlling terminal is where the agent
 * typed, whatever file descriptors it handed on; its groups are the agent's.
 */
function sudoProcess(proc = "/proc"): { pid: number; ttyNr: number } | undefined {
  let found: { pid: number; ttyNr: number } | undefined;
  let pid = process.ppid;
  for (let depth = 0; depth < 8 && pid > 1; depth++) {
    try {
      const info = parseProcStat(readFileSync(`${proc}/${pid}/stat`, "utf8"));
      const exe = readlinkSync(`${proc}/${pid}/exe`);
      // A setuid sudo's /proc entry is root's; an agent's own program called "sudo" is the agent's.
      if (!info || path.basename(exe) !== "sudo" || statSync(`${proc}/${pid}`).uid !== 0) break;
      found = { pid, ttyNr: info.ttyNr };
      pid = info.ppid;
    } catch {
      break;
    }
  }
  return found;
}

/** The agent's uid, groups (declared, and those its sudo runs with) and subordinate ids. */
function agentIdentity(
  agent: { name: string; uid: number; gid: number },
  etc: string,
  sudoPid: number | undefined,
): AgentIdentity {
  const read = (file: string) => {
    try {
      return readFileSync(file, "utf8");
    } catch {
      return "";
    }
  };
  const gids = new Set([agent.gid]);
  for (const group of parseGroup(read(`${etc}/group`)))
    if (group.members.includes(agent.name)) gids.add(group.gid);
  if (sudoPid !== undefined) {
    const line = /^Groups:(.*)$/m.exec(read(`/proc/${sudoPid}/status`))?.[1] ?? "";
    for (const gid of line.trim().split(/\s+/)) if (/^\d+$/.test(gid)) gids.add(Number(gid));
  }
  return {
    uid: agent.uid,
    gids,
    subuids: parseSubordinateIds(read(`${etc}/subuid`), agent),
    subgids: parseSubordinateIds(read(`${etc}/subgid`), agent),
  };
}

/** The program (index 0) and file arguments that are regular files the agent could change, hashed. */
async function agentFiles(
  argv: readonly string[],
  command: string,
  cwd: string,
  who: AgentIdentity,
  probe: WritableProbe,
): Promise<WritableFile[]> {
  const files: WritableFile[] = [];
  for (const candidate of [{ index: 0, path: command }, ...fileArguments(argv, cwd)]) {
    const info = statSync(candidate.path, { throwIfNoEntry: false });
    if (!info?.isFile()) continue;
    const why = await whyAgentWritable(candidate.path, who, probe);
    if (why === undefined) continue;
    if (files.length === MAX_WRITABLE_FILES)
      throw new GateExit(
        GATE_EXIT.refused,
        `the command names more than ${MAX_WRITABLE_FILES} files the agent could change: too many to show a human`,
      );
    let sha256: string;
    try {
      sha256 = await hashFile(candidate.path);
    } catch (error) {
      throw new GateExit(
        GATE_EXIT.refused,
        `cannot read ${candidate.path}: ${(error as Error).message}`,
      );
    }
    files.push({ ...candidate, sha256, why });
  }
  return files;
}

/**
 * Derive the request again, as it stands now: undefined when it hashes as
 * approved, else what changed, for the agent and the audit.
 */
async function changedSince(prepared: Prepared): Promise<string | undefined> {
  const { request, target } = prepared;
  // The directory is bound by identity: the gate is still in the one the human saw, renamed or
  // not, and the command inherits it. Relative file arguments are derived again against where it is now.
  let cwd: string;
  try {
    cwd = process.cwd();
  } catch {
    return `the working directory ${request.cwd} is gone`;
  }
  const command = resolveCommand(request.argv[0] as string, request.cwd, (p) => existsSync(p));
  if (command !== request.command)
    return `${JSON.stringify(request.argv[0])} now names ${command ?? "nothing"}, not ${request.command}`;
  const account = parsePasswd(readFileSync(`${prepared.etc}/passwd`, "utf8")).find(
    (u) => u.name === target.user,
  );
  if (
    account?.uid !== target.uid ||
    account.home !== target.home ||
    (request.runAs.group === undefined && account.gid !== target.gid)
  )
    return `the account ${target.user} changed`;
  let files: WritableFile[];
  try {
    files = await agentFiles(request.argv, command, cwd, prepared.who, prepared.probe);
  } catch (error) {
    return error instanceof GateExit ? error.message : (error as Error).message;
  }
  const before = request.writable ?? [];
  if (!sameFiles(before, files)) return describeFileChange(before, files);
  return commandHash({ ...request, writable: files.length > 0 ? files : undefined }) ===
    prepared.hash
    ? undefined
    : "the request no longer hashes as approved";
}

function describeFileChange(before: readonly WritableFile[], now: readonly WritableFile[]): string {
  const short = (sha: string) => sha.slice(0, SHORT_SHA256);
  const changes: string[] = [];
  for (const file of before) {
    const again = now.find((f) => f.index === file.index && f.path === file.path);
    if (!again) changes.push(`${file.path} is gone or no longer the same file`);
    else if (again.sha256 !== file.sha256)
      changes.push(
        `${file.path} changed after it was shown (sha256 ${short(file.sha256)} → ${short(again.sha256)})`,
      );
  }
  for (const file of now)
    if (!before.some((f) => f.index === file.index && f.path === file.path))
      changes.push(`${file.path} is a file the agent could change that the human was not shown`);
  return changes.join("; ") || "the agent-writable files changed";
}

/** Send the request; wait for the decision. A dead or silent daemon means no. */
function ask(
  socketPath: string,
  request: ApprovalRequest,
  onPending: (id: string) => void,
): Promise<Decision & { id?: string; hash?: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let decided = false;
    socket.setEncoding("utf8");
    const splitter = new LineSplitter(
      (line) => {
        const frame = JSON.parse(line) as {
          type: string;
          id?: string;
          hash?: string;
          error?: string;
          expires?: string;
        } & Partial<Decision>;
        if (frame.type === "pending" && frame.id) {
          onPending(frame.id);
          // The daemon answers "timeout" itself; if even that never comes, give up a little later.
          const left = frame.expires ? Date.parse(frame.expires) - Date.now() : Number.NaN;
          if (Number.isFinite(left)) {
            setTimeout(() => {
              if (decided) return;
              decided = true;
              reject(
                new GateExit(
                  GATE_EXIT.timeout,
                  "no answer from the approval daemon in time; sudo denied",
                ),
              );
              socket.destroy();
            }, left + 15_000).unref();
          }
        } else if (frame.type === "decision" && frame.decision && frame.by) {
          decided = true;
          resolve({
            decision: frame.decision,
            by: frame.by,
            reason: frame.reason ?? "",
            ...(frame.path !== undefined && { path: frame.path }),
            ...(frame.id !== undefined && { id: frame.id }),
            ...(frame.hash !== undefined && { hash: frame.hash }),
          });
          socket.end();
        } else if (frame.type === "error") {
          decided = true;
          reject(
            new GateExit(
              GATE_EXIT.refused,
              `the approval daemon refused the request: ${frame.error}`,
            ),
          );
          socket.end();
        }
      },
      () => socket.destroy(),
    );
    socket.on("data", (chunk: string) => splitter.push(chunk));
    socket.on("connect", () => socket.write(encodeFrame({ type: "request", request })));
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (!decided)
        reject(
          new GateExit(
            GATE_EXIT.unreachable,
            `the approval daemon is unreachable (${error.code ?? error.message}); sudo denied`,
          ),
        );
    });
    socket.on("close", () => {
      if (!decided)
        reject(
          new GateExit(
            GATE_EXIT.unreachable,
            "the approval daemon went away before deciding; sudo denied",
          ),
        );
    });
  });
}

function describeBy(decision: Decision): string {
  const by = decision.by;
  if (by.kind === "human") return ` (by ${by.id})`;
  if (by.kind === "policy")
    return by.rule === undefined ? " (policy default)" : ` (policy rule ${by.rule})`;
  return "";
}

function exitFor(decision: Decision): number {
  if (decision.decision === "timeout") return GATE_EXIT.timeout;
  if (decision.decision === "cancelled") return GATE_EXIT.cancelled;
  if (decision.by.kind === "policy") return GATE_EXIT.deniedByPolicy;
  if (decision.by.kind === "test-mode") return GATE_EXIT.testModeDenied;
  if (decision.by.kind === "limit") return GATE_EXIT.tooManyWaiting;
  // The daemon itself refused (an agent that may not use sudo): no human was asked.
  if (decision.by.kind === "daemon") return GATE_EXIT.refused;
  return GATE_EXIT.deniedByHuman;
}

/**
 * Tell the daemon an approved command did not run, for the audit. Best
 * effort: the agent is told either way, and nothing waits long for it.
 */
function reportRefused(
  socketPath: string,
  request: ApprovalRequest,
  id: string,
  reason: string,
): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.createConnection(socketPath);
    const done = () => {
      socket.destroy();
      resolve();
    };
    setTimeout(done, 2000).unref();
    socket.on("connect", () =>
      // The protocol's text fields hold 4096 characters: a long list of paths is cut, not lost.
      socket.write(
        encodeFrame({ type: "refused", id, agent: request.agent, reason: reason.slice(0, 4000) }),
      ),
    );
    socket.on("data", done);
    socket.on("error", done);
    socket.on("close", done);
  });
}

/**
 * Check that what runs is what was approved, then run it: argv[0] as
 * approved, the resolved command (an agent-writable one from its root-owned
 * copy), no shell, clean environment.
 */
async function execute(
  prepared: Prepared,
  decision: { id?: string; hash?: string },
  gate: GateEnvironment,
): Promise<number> {
  const { request, target } = prepared;
  const refuse = async (problem: string) => {
    if (decision.id !== undefined)
      await reportRefused(gate.town.paths.requestSocket, request, decision.id, problem);
    return new GateExit(
      GATE_EXIT.changed,
      `not run: ${problem}. What was approved is not what would run now; nothing ran. Ask again.`,
    );
  };
  // The daemon says which hash it approved: never run on a yes to another request.
  if (decision.hash !== undefined && decision.hash !== prepared.hash)
    throw await refuse(
      `approved hash ${decision.hash.slice(0, 12)} is not this request's ${prepared.hash.slice(0, 12)}`,
    );
  const problem = await changedSince(prepared);
  if (problem !== undefined) throw await refuse(problem);
  let program = request.command;
  let removeCopy: (() => Promise<void>) | undefined;
  const approved = request.writable?.find((f) => f.index === 0);
  if (approved) {
    let copy: Awaited<ReturnType<typeof rootCopy>>;
    try {
      copy = await rootCopy(request.command, path.join(gate.town.stateDir, "gate"));
    } catch (error) {
      throw new GateExit(
        GATE_EXIT.refused,
        `cannot copy ${request.command} to run it: ${(error as Error).message}; nothing ran`,
      );
    }
    if (copy.sha256 !== approved.sha256) {
      await copy.remove();
      throw await refuse(
        `${request.command} changed after it was shown (sha256 ${approved.sha256.slice(0, SHORT_SHA256)} → ${copy.sha256.slice(0, SHORT_SHA256)})`,
      );
    }
    program = copy.copy;
    removeCopy = copy.remove;
  }
  try {
    return await run(request, program, target, gate);
  } finally {
    await removeCopy?.();
  }
}

/** Run `program` (the approved command, or its copy) with argv as approved. */
function run(
  request: ApprovalRequest,
  program: string,
  target: Target,
  gate: GateEnvironment,
): Promise<number> {
  const env: NodeJS.ProcessEnv = {
    PATH: SECURE_PATH.join(":"),
    HOME: target.home,
    USER: target.user,
    LOGNAME: target.user,
    SHELL: target.shell || "/bin/sh",
    SUDO_USER: gate.env.SUDO_USER,
    SUDO_UID: gate.env.SUDO_UID,
    SUDO_GID: gate.env.SUDO_GID,
    ...(gate.env.TERM !== undefined && { TERM: gate.env.TERM }),
    ...(gate.env.LANG !== undefined && { LANG: gate.env.LANG }),
  };
  const [first, ...rest] = request.argv;
  const asRoot = target.uid === 0 && target.gid === 0;
  // A login shell is marked by a leading "-" in argv[0]; setpriv cannot set argv[0], so it gets -l.
  const login = request.shell === "login";
  const argv0 = login && asRoot ? `-${path.basename(first ?? "sh")}` : first;
  const args = login && !asRoot ? ["-l", ...rest] : rest;
  // setpriv sets uid, gid and the target's supplementary groups, then execs: still no shell.
  const executable = asRoot ? program : "setpriv";
  const programArgs = asRoot
    ? args
    : [
        "--reuid",
        String(target.uid),
        "--regid",
        String(target.gid),
        "--init-groups",
        "--",
        program,
        ...args,
      ];
  return new Promise((resolve) => {
    const child = startProcess(executable, programArgs, {
      argv0: asRoot ? argv0 : undefined,
      // No cwd: the child inherits the directory the gate entered before asking.
      env,
      stdio: "inherit",
    });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    for (const signal of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const)
      process.on(signal, forward);
    child.on("error", (error: NodeJS.ErrnoException) => {
      gate.stderr.write(
        `nuketown: cannot run ${request.command}: ${error.code ?? error.message}\n`,
      );
      resolve(GATE_EXIT.notFound);
    });
    child.on("close", (code, signal) => resolve(code ?? 128 + (signal ? signalNumber(signal) : 1)));
  });
}

const signalNumber = (signal: NodeJS.Signals) =>
  ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 })[signal as string] ?? 1;
