/**
 * A whole town online, for the chat end-to-end tests and the chat bench: a
 * real chat server (Synapse or Prosody) on loopback, real accounts for the
 * mayor, a stranger, the agent and the town bot, the town brought up with
 * `nuketown up` (approvald with the chat channel, the agent daemon with a
 * `command` runtime, `nuketown chat` as the agent), and the mayor's and the
 * stranger's own chat clients to talk with.
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { stringify } from "smol-toml";
import type {
  ChatMessage,
  ChatReaction,
  ChatTransport,
  TransportKind,
} from "../../src/chat/transport.ts";
import { REPO_ROOT } from "./fixtures.ts";
import { cleanupHost, makeTempRoot, mustRun, run, stopChild } from "./host.ts";
import { installForTest } from "./install.ts";
import { type ProsodyServer, startProsody } from "./prosody.ts";
import { type SynapseServer, startSynapse } from "./synapse.ts";

export const BIN = path.join(REPO_ROOT, "bin", "nuketown");

export interface ChatTownOptions {
  readonly kind: TransportKind;
  /** Distinguishes parallel towns: names, uids and the sudoers fragment derive from it. */
  readonly label: string;
  readonly agentUid: number;
  readonly mayorUid: number;
  /** Sudo for the agent, with its fragment in /etc/sudoers.d (default true). */
  readonly sudo?: boolean;
  /** Seconds an approval request waits (default 60). */
  readonly approvalTimeout?: number;
}

/** A chat client of a test person, with everything it received. */
export interface Person {
  readonly id: string;
  readonly transport: ChatTransport;
  readonly inbox: ChatMessage[];
  readonly reactions: ChatReaction[];
  /** Called with every message received (a bench's echo bot). */
  readonly listeners: Set<(message: ChatMessage) => void>;
  /** The first message (already received or still to come) that matches, or a timeout error. */
  waitFor(
    what: string,
    match: (message: ChatMessage) => boolean,
    ms?: number,
  ): Promise<ChatMessage>;
}

export interface ChatTown {
  readonly kind: TransportKind;
  readonly root: string;
  readonly manifest: string;
  readonly agent: string;
  readonly agentId: string;
  readonly botId: string;
  readonly mayor: Person;
  readonly stranger: Person;
  /** Two rooms the agent works in, and the room where the bot posts requests. */
  readonly rooms: { readonly one: string; readonly two: string; readonly approvals: string };
  /** The mayor's direct chat with the agent. */
  readonly direct: string;
  /**
   * Over Matrix: the homeserver and the mayor's token, to read what the mayor's
   * client does not show (edits); the agent's, to revoke it.
   */
  readonly matrix?: {
    readonly url: string;
    readonly mayorToken: string;
    readonly agentToken: string;
  };
  /** Every prompt the agent's runtime was called with, one per line. */
  runtimeCalls(): string[];
  /** What `nuketown up` and the daemons logged so far. */
  logs(): string;
  /** Resolves once the agent's chat service has said it is online `count` times in all. */
  chatOnline(count?: number, ms?: number): Promise<void>;
  /** How often the agent's chat service has said it is online so far. */
  chatOnlineCount(): number;
  stop(): Promise<void>;
}

const RUNTIME = (log: string) =>
  [
    "#!/bin/sh",
    "# Stand-in runtime (the command kind): the task as JSON on stdin, JSON lines out.",
    "input=$(cat)",
    'prompt=$(printf "%s" "$input" | sed -n \'s/.*"prompt":"\\([^"]*\\)".*/\\1/p\')',
    `printf '%s\\n' "$prompt" >> ${log}`,
    'case "$prompt" in',
    "  *sudo*) out=$(sudo id -u 2>/dev/null); code=$?",
    '    printf \'{"type":"answer","text":"sudo said: %s (exit %s)"}\\n\' "$out" "$code"; exit 0 ;;',
    '  *slow*) echo \'{"type":"progress","text":"thinking hard"}\'; sleep 4 ;;',
    "esac",
    'printf \'{"type":"answer","text":"you said: %s (uid %s)"}\\n\' "$prompt" "$(id -u)"',
    "",
  ].join("\n");

export async function startChatTown(options: ChatTownOptions): Promise<ChatTown> {
  const { kind, label } = options;
  const agent = `nt-test-${label}`;
  const mayorUnix = `nt-test-${label}-m`;
  const approvers = `nt-test-${label}-ap`;
  const sudoers = `/etc/sudoers.d/nt-test-${label}-${process.pid}`;
  const root = makeTempRoot(label);
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await Promise.resolve(step()).catch(() => {});
    rmSync(sudoers, { force: true });
    cleanupHost(root, [mayorUnix, approvers]);
  };
  try {
    const server = kind === "matrix" ? await startSynapse() : await startProsody();
    cleanups.push(() => server.stop());
    const accounts = await registerAccounts(kind, server, label);

    // The mayor's Unix account (an approver) and the project the agent works in.
    const mayorHome = path.join(root, "mayor");
    mkdirSync(mayorHome);
    mustRun("useradd", [
      "--uid",
      String(options.mayorUid),
      "--user-group",
      "--home-dir",
      mayorHome,
      mayorUnix,
    ]);
    const repo = path.join(root, "demo.git");
    mustRun("git", ["init", "--quiet", "--bare", "--initial-branch=main", repo]);
    const seed = path.join(root, "seed");
    mustRun("git", ["init", "--quiet", "--initial-branch=main", seed]);
    mustRun("git", [
      "-C",
      seed,
      "-c",
      "user.name=t",
      "-c",
      "user.email=t@t",
      "commit",
      "--quiet",
      "--allow-empty",
      "-m",
      "init",
    ]);
    mustRun("git", ["-C", seed, "push", "--quiet", repo, "main"]);
    const runtimeLog = path.join(root, "runtime-calls.log");
    writeFileSync(runtimeLog, "");
    chmodSync(runtimeLog, 0o666);
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(runtime, RUNTIME(runtimeLog), { mode: 0o755 });

    // Credentials, age-encrypted like any secret of the town.
    const keyFile = path.join(root, "age", "keys.txt");
    mkdirSync(path.dirname(keyFile));
    mustRun("age-keygen", ["-o", keyFile]);
    const recipient = mustRun("age-keygen", ["-y", keyFile]).trim();
    for (const [name, secret] of [
      ["agent", accounts.agent.secret],
      ["bot", accounts.bot.secret],
    ] as const) {
      mustRun(
        "age",
        ["--encrypt", "-r", recipient, "-o", path.join(root, `${name}.age`)],
        `${secret}\n`,
      );
    }

    // The mayor makes the rooms (Matrix: invites the others; XMPP: the first to join makes a MUC),
    // and is online with the stranger before the town comes up.
    const rooms = await makeRooms(kind, server, accounts, label);
    const all = [rooms.one, rooms.two, rooms.approvals];
    const mayor = await person(
      kind,
      server,
      accounts.mayor,
      root,
      "mayor",
      [accounts.agent.id, accounts.bot.id],
      all,
    );
    cleanups.push(() => mayor.transport.stop());
    const stranger = await person(
      kind,
      server,
      accounts.stranger,
      root,
      "stranger",
      [],
      [rooms.one, rooms.approvals],
    );
    cleanups.push(() => stranger.transport.stop());

    const chatAccount =
      kind === "matrix"
        ? { matrix: { userId: accounts.agent.id, tokenSecret: { file: "agent.age" } } }
        : { xmpp: { jid: accounts.agent.id, passwordSecret: { file: "agent.age" } } };
    const chat =
      kind === "matrix"
        ? {
            matrix: {
              homeserver: (server as SynapseServer).url,
              bot: { userId: accounts.bot.id, tokenSecret: { file: "bot.age" } },
            },
          }
        : {
            xmpp: {
              service: (server as ProsodyServer).service,
              domain: (server as ProsodyServer).domain,
              bot: { jid: accounts.bot.id, passwordSecret: { file: "bot.age" } },
            },
          };
    const declaration = {
      name: `nt-test-${label}`,
      domain: "test.local",
      agentsDir: path.join(root, "agents"),
      persistDir: path.join(root, "persist"),
      stateDir: path.join(root, "state"),
      runtimeDir: path.join(root, "run"),
      etcDir: path.join(root, "etc"),
      uidRange: { min: 60100, max: 60999 },
      homes: { backend: "directory" },
      approval: {
        group: approvers,
        timeout: options.approvalTimeout ?? 60,
        channels: ["terminal", "chat"],
      },
      install: { prefix: installForTest(root) },
      secrets: { ageKeyFile: "age/keys.txt" },
      chat: { ...chat, approvalRoom: rooms.approvals },
      humans: { [mayorUnix]: { approver: true, [kind]: accounts.mayor.id } },
      agents: {
        [agent]: {
          uid: options.agentUid,
          persist: ["projects"],
          repos: [repo],
          runtime: { kind: "command", command: runtime },
          sudo: { enable: options.sudo ?? true },
          chat: {
            enable: true,
            ...chatAccount,
            rooms: [rooms.one, rooms.two],
            respondTo: "mentions",
          },
        },
      },
    };
    const config = path.join(root, "town.toml");
    writeFileSync(config, stringify(declaration));
    // apply first, so the sudoers fragment it renders (and checks) is where sudo reads it.
    mustRun(BIN, ["apply", config]);
    if (options.sudo ?? true) {
      copyFileSync(path.join(root, "etc", "sudoers.d", "nuketown"), sudoers);
      chmodSync(sudoers, 0o440);
      mustRun("visudo", ["-c"]);
    }
    let upOutput = "";
    const up: ChildProcess = spawn(BIN, ["up", config], { stdio: ["ignore", "pipe", "pipe"] });
    up.stdout?.on("data", (d) => (upOutput += d));
    up.stderr?.on("data", (d) => (upOutput += d));
    cleanups.push(() => stopChild(up, 10_000));
    const logDir = path.join(root, "state", "logs");
    const logs = () => {
      const files = ["approvald.log", `agent-${agent}.log`, `chat-${agent}.log`];
      return [
        `--- up\n${upOutput}`,
        ...files.map((f) => `--- ${f}\n${readIf(path.join(logDir, f))}`),
      ].join("\n");
    };
    const chatOnlineCount = () =>
      (readIf(path.join(logDir, `chat-${agent}.log`)).match(/online as /g) ?? []).length;
    const chatOnline = async (count = 1, ms = 60_000) => {
      await until(`the agent's chat online (${count})`, () => chatOnlineCount() >= count, ms, logs);
    };
    await chatOnline(1);
    await until(
      "the bot online",
      () => /the town bot .* is online/.test(readIf(path.join(logDir, "approvald.log"))),
      60_000,
      logs,
    );
    const direct = await mayor.transport.directRoom(accounts.agent.id);
    if (kind === "matrix") {
      // A message sent before the agent has joined would be history to it.
      const url = `${(server as SynapseServer).url}/_matrix/client/v3/rooms/${encodeURIComponent(direct)}/joined_members`;
      const joined = async () => {
        const response = await fetch(url, {
          headers: { authorization: `Bearer ${accounts.mayor.secret}` },
        });
        const body = (await response.json()) as { joined?: Record<string, unknown> };
        return Object.keys(body.joined ?? {}).includes(accounts.agent.id);
      };
      const deadline = Date.now() + 30_000;
      while (!(await joined())) {
        if (Date.now() > deadline)
          throw new Error(`the agent never joined the direct chat\n${logs()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    return {
      kind,
      root,
      manifest: path.join(root, "etc", "nuketown", "town.json"),
      agent,
      agentId: accounts.agent.id,
      botId: accounts.bot.id,
      mayor,
      stranger,
      rooms,
      direct,
      ...(kind === "matrix" && {
        matrix: {
          url: (server as SynapseServer).url,
          mayorToken: accounts.mayor.secret,
          agentToken: accounts.agent.secret,
        },
      }),
      runtimeCalls: () =>
        readIf(runtimeLog)
          .split("\n")
          .filter((l) => l !== ""),
      logs,
      chatOnline,
      chatOnlineCount,
      stop: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

interface Account {
  readonly id: string;
  /** Matrix access token, XMPP password. */
  readonly secret: string;
}

interface Accounts {
  readonly mayor: Account;
  readonly stranger: Account;
  readonly agent: Account;
  readonly bot: Account;
}

async function registerAccounts(
  kind: TransportKind,
  server: SynapseServer | ProsodyServer,
  label: string,
): Promise<Accounts> {
  const one = async (name: string): Promise<Account> => {
    const localpart = `${label}-${name}`.replace(/[^a-z0-9._-]/g, "");
    if (kind === "matrix") {
      const user = await (server as SynapseServer).register(localpart);
      return { id: user.userId, secret: user.accessToken };
    }
    const password = `pw-${name}-${process.pid}`;
    return { id: await (server as ProsodyServer).register(localpart, password), secret: password };
  };
  return {
    mayor: await one("mayor"),
    stranger: await one("stranger"),
    agent: await one("agent"),
    bot: await one("bot"),
  };
}

/** Rooms made by the mayor: Matrix rooms with the agent, stranger and bot invited; MUC addresses. */
async function makeRooms(
  kind: TransportKind,
  server: SynapseServer | ProsodyServer,
  accounts: Accounts,
  label: string,
): Promise<ChatTown["rooms"]> {
  if (kind === "xmpp") {
    const muc = (server as ProsodyServer).mucDomain;
    return {
      one: `${label}-one@${muc}`,
      two: `${label}-two@${muc}`,
      approvals: `${label}-approvals@${muc}`,
    };
  }
  const url = (server as SynapseServer).url;
  const create = async (name: string, invite: string[]) => {
    const response = await fetch(`${url}/_matrix/client/v3/createRoom`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${accounts.mayor.secret}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ name, preset: "private_chat", invite }),
    });
    if (!response.ok)
      throw new Error(`createRoom ${name}: ${response.status} ${await response.text()}`);
    return ((await response.json()) as { room_id: string }).room_id;
  };
  return {
    one: await create("one", [accounts.agent.id, accounts.stranger.id]),
    two: await create("two", [accounts.agent.id]),
    approvals: await create("approvals", [accounts.bot.id, accounts.stranger.id]),
  };
}

async function person(
  kind: TransportKind,
  server: SynapseServer | ProsodyServer,
  account: Account,
  root: string,
  name: string,
  inviters: string[],
  rooms: string[] = [],
): Promise<Person> {
  const stateDir = path.join(root, "people", name);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const common = { rooms, inviters: new Set(inviters), stateDir, displayName: name, log: () => {} };
  let transport: ChatTransport;
  if (kind === "matrix") {
    const { MatrixTransport } = await import("../../src/chat/matrix/transport.ts");
    transport = new MatrixTransport({
      ...common,
      homeserver: (server as SynapseServer).url,
      userId: account.id,
      accessToken: account.secret,
    });
  } else {
    const { XmppTransport } = await import("../../src/chat/xmpp/transport.ts");
    const prosody = server as ProsodyServer;
    transport = new XmppTransport({
      ...common,
      service: prosody.service,
      domain: prosody.domain,
      jid: account.id,
      password: account.secret,
    });
  }
  const inbox: ChatMessage[] = [];
  const reactions: ChatReaction[] = [];
  const waiters = new Set<() => void>();
  const listeners = new Set<(message: ChatMessage) => void>();
  await transport.start({
    message: (message) => {
      inbox.push(message);
      for (const wake of waiters) wake();
      for (const listener of listeners) listener(message);
    },
    reaction: (reaction) => {
      reactions.push(reaction);
    },
  });
  const waitFor: Person["waitFor"] = (what, match, ms = 30_000) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const found = inbox.find(match);
        if (!found) return false;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(found);
        return true;
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(
          new Error(
            `${name} timed out waiting for ${what}; received:\n${inbox.map((m) => `${m.sender} in ${m.room}: ${m.body}`).join("\n")}`,
          ),
        );
      }, ms);
      if (!check()) waiters.add(check);
    });
  return { id: account.id, transport, inbox, reactions, listeners, waitFor };
}

function readIf(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8") : "";
}

export async function until(
  what: string,
  probe: () => boolean,
  ms: number,
  context: () => string = () => "",
): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (probe()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}\n${context()}`);
}

/** Kill the agent's chat service hard (a crash); `nuketown up` starts it again. */
export function crashChat(town: ChatTown): void {
  run("pkill", ["-KILL", "-f", `chat ${town.agent} --manifest`]);
}
