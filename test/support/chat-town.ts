/**
 * A whole town online, for the chat end-to-end tests and the chat bench: a
 * real chat server (Synapse or Prosody) on loopback, real accounts for the
 * mayor, a stranger, the agent and the town bot, the town brought up with
 * `nuketown up` (approvald with the chat channel; the agent daemon with a
 * `command` runtime, and the agent's chat presence in the same process), and
 * the mayor's and the stranger's own chat clients to talk with.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { TransportKind } from "../../src/chat/transport.ts";
import { MatrixPerson, type Person, XmppPerson } from "./chat-people.ts";
import { mustRun, run } from "./host.ts";
import { type ProsodyServer, startProsody } from "./prosody.ts";
import { type SynapseServer, startSynapse } from "./synapse.ts";
import { startTcpCut, type TcpCut } from "./tcp-cut.ts";
import { BIN, openTestTown } from "./town.ts";
import { type Uids, uidsOf } from "./uids.ts";

export type { Heard, Person } from "./chat-people.ts";
export { BIN };

export interface ChatTownOptions {
  readonly kind: TransportKind;
  /** Distinguishes parallel towns: names, the temp root and the sudoers fragment derive from it. */
  readonly label: string;
  readonly agentUid: number;
  readonly mayorUid: number;
  /** The caller's reserved uids (test/support/uids.ts); a bench, outside the registry, leaves it out. */
  readonly uids?: Uids;
  /** Sudo for the agent, with its fragment in /etc/sudoers.d (default true). */
  readonly sudo?: boolean;
  /** Seconds an approval request waits (default 60). */
  readonly approvalTimeout?: number;
  /**
   * The town's daemons reach the chat server through a relay the test can
   * cut (`town.relay`); the people's clients go straight to it.
   */
  readonly relay?: boolean;
}

export interface ChatTown {
  readonly kind: TransportKind;
  readonly root: string;
  readonly manifest: string;
  readonly agent: string;
  readonly agentId: string;
  readonly botId: string;
  /** The mayor and a stranger, each in a chat client that is not nuketown's (chat-people.ts). */
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
  /** Over XMPP: the agent's account deleted from the server (its next login is refused). */
  readonly xmpp?: {
    unregisterAgent(): Promise<void>;
  };
  /** Every prompt the agent's runtime was called with, one per line. */
  runtimeCalls(): string[];
  /** What `nuketown up` and the daemons logged so far. */
  logs(): string;
  /** Between the town's daemons and the chat server, when asked for (`relay`). */
  readonly relay?: TcpCut;
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
  const town = await openTestTown({
    label,
    uids: options.uids ?? unregistered([options.agentUid, options.mayorUid]),
    // The mayor's Unix account (an approver).
    accounts: { [mayorUnix]: { uid: options.mayorUid, makeHome: true } },
    install: true,
  });
  const root = town.root;
  try {
    const server = kind === "matrix" ? await startSynapse() : await startProsody();
    town.defer(() => server.stop());
    const accounts = await registerAccounts(kind, server, label);

    // The project the agent works in.
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
    town.ageKey(path.join("age", "keys.txt"));
    town.encrypt("agent.age", `${accounts.agent.secret}\n`);
    town.encrypt("bot.age", `${accounts.bot.secret}\n`);

    // The mayor makes the rooms (Matrix: invites the others; XMPP: the first to join makes a MUC),
    // and is online with the stranger before the town comes up.
    const rooms = await makeRooms(kind, server, accounts, label);
    const mayor = await person(kind, server, accounts.mayor, "mayor", {
      rooms: [rooms.one, rooms.two, rooms.approvals],
      inviters: [accounts.agent.id, accounts.bot.id],
    });
    town.defer(() => mayor.stop());
    const stranger = await person(kind, server, accounts.stranger, "stranger", {
      rooms: [rooms.one, rooms.approvals],
      inviters: [],
    });
    town.defer(() => stranger.stop());

    // The daemons' way to the server: straight, or through a relay the test can cut.
    const target = new URL(
      kind === "matrix" ? (server as SynapseServer).url : (server as ProsodyServer).service,
    );
    const relay = options.relay
      ? await startTcpCut({ host: target.hostname, port: Number(target.port) })
      : undefined;
    if (relay) town.defer(() => relay.close());
    const via = (url: string) => {
      if (!relay) return url;
      const through = new URL(url);
      through.port = String(relay.port);
      return through.toString().replace(/\/$/, "");
    };
    const chatAccount =
      kind === "matrix"
        ? { matrix: { userId: accounts.agent.id, tokenSecret: { file: "agent.age" } } }
        : { xmpp: { jid: accounts.agent.id, passwordSecret: { file: "agent.age" } } };
    const chat =
      kind === "matrix"
        ? {
            matrix: {
              homeserver: via((server as SynapseServer).url),
              bot: { userId: accounts.bot.id, tokenSecret: { file: "bot.age" } },
            },
          }
        : {
            xmpp: {
              service: via((server as ProsodyServer).service),
              domain: (server as ProsodyServer).domain,
              bot: { jid: accounts.bot.id, passwordSecret: { file: "bot.age" } },
            },
          };
    town.declare({
      domain: "test.local",
      approval: {
        timeout: options.approvalTimeout ?? 60,
        channels: ["terminal", "chat"],
      },
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
    });
    // apply first, so the sudoers fragment it renders (and checks) is where sudo reads it.
    town.apply();
    if (options.sudo ?? true) town.sudoers();
    const up = town.up();
    const logDir = path.join(root, "state", "logs");
    const logs = () => {
      const files = ["approvald.log", `agent-${agent}.log`];
      return [
        `--- up\n${up.output()}`,
        ...files.map((f) => `--- ${f}\n${readIf(path.join(logDir, f))}`),
      ].join("\n");
    };
    // The agent's daemon is its chat presence too: one process, one log.
    const chatOnlineCount = () =>
      (readIf(path.join(logDir, `agent-${agent}.log`)).match(/online as /g) ?? []).length;
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
    const direct = await mayor.directRoom(accounts.agent.id);
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
      manifest: town.manifest,
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
          mayorToken: (mayor as MatrixPerson).accessToken,
          agentToken: accounts.agent.secret,
        },
      }),
      ...(kind === "xmpp" && {
        xmpp: {
          unregisterAgent: () => (server as ProsodyServer).unregister(accounts.agent.localpart),
        },
      }),
      ...(relay && { relay }),
      runtimeCalls: () =>
        readIf(runtimeLog)
          .split("\n")
          .filter((l) => l !== ""),
      logs,
      chatOnline,
      chatOnlineCount,
      stop: () => town.cleanup(),
    };
  } catch (error) {
    await town.cleanup().catch(() => {});
    throw error;
  }
}

/** Uids outside the registry (a bench's): exactly these, for this call only. */
function unregistered(uids: readonly number[]): Uids {
  return uidsOf(
    import.meta.filename,
    uids.map((uid) => ({ min: uid, max: uid })),
  );
}

interface Account {
  readonly id: string;
  readonly localpart: string;
  /** Matrix access token (what the town's accounts use), XMPP password. */
  readonly secret: string;
  /** What a person's client logs in with. */
  readonly password: string;
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
      return { id: user.userId, localpart, secret: user.accessToken, password: user.password };
    }
    const password = `pw-${name}-${process.pid}`;
    const id = await (server as ProsodyServer).register(localpart, password);
    return { id, localpart, secret: password, password };
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

/** A person logged in with a third-party client (chat-people.ts), in `rooms`. */
async function person(
  kind: TransportKind,
  server: SynapseServer | ProsodyServer,
  account: Account,
  name: string,
  options: { rooms: string[]; inviters: string[] },
): Promise<Person> {
  if (kind === "matrix")
    return MatrixPerson.login({
      homeserver: (server as SynapseServer).url,
      localpart: account.localpart,
      password: account.password,
      name,
      ...options,
    });
  const prosody = server as ProsodyServer;
  return XmppPerson.login({
    service: prosody.service,
    domain: prosody.domain,
    localpart: account.localpart,
    password: account.password,
    name,
    rooms: options.rooms,
  });
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

/** Kill the agent's process (its daemon and chat) hard, a crash; `nuketown up` starts it again. */
export function crashChat(town: ChatTown): void {
  run("pkill", ["-KILL", "-f", `agent ${town.agent} --manifest`]);
}
