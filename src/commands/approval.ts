import path from "node:path";
import { ControlClient } from "../approval/client.ts";
import { ApprovalDaemon } from "../approval/daemon.ts";
import { approvingMayor, DesktopChannel } from "../approval/desktop.ts";
import { type ApprovalMode, writeApprovalMode } from "../approval/mode.ts";
import { type PendingRequest, writableLines } from "../approval/protocol.ts";
import { AuditLog, formatRecord, tailAudit, verifyAudit } from "../audit/log.ts";
import { changeLines, changeSummary } from "../change/present.ts";
import { ChangeService } from "../change/service.ts";
import { ChatApprovalChannel } from "../chat/approval-channel.ts";
import { openTransport } from "../chat/connect.ts";
import { loadWatchedTown, serveUntilDone } from "../daemon/lifecycle.ts";
import { EXIT, NuketownError, RefusedError } from "../errors.ts";
import { createDecryptor, type SecretDecryptor } from "../host/secrets.ts";
import { readGroup } from "../os/etc.ts";
import { ensureDir } from "../os/files.ts";
import { runInherit } from "../os/process.ts";
import { printable, type Streams, table } from "../output.ts";
import type { ResolvedTown } from "../town/types.ts";
import { requireRoot, townFrom } from "./town-source.ts";

interface TownOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  readonly json?: boolean;
}

/** `nuketown approvald`: serve until SIGTERM/SIGINT. */
export async function approvald(opts: TownOptions): Promise<number> {
  requireRoot("approvald");
  const watched = await loadWatchedTown(opts);
  const { town } = watched;
  const gid = await approversGid(town.approval.approversGroup);
  const decryptor = createDecryptor({ ageKeyFile: town.secrets.ageKeyFile });
  const daemon = new ApprovalDaemon({
    town,
    audit: new AuditLog(town.paths.auditLog, { group: gid }),
    decryptor,
  });
  const log = (line: string) => opts.err.write(`nuketown approvald: ${line}\n`);
  if (town.approval.channels.includes("desktop")) {
    const mayor = approvingMayor(town);
    if (mayor) daemon.addChannel(new DesktopChannel({ mayor, log }));
    else log("desktop: no mayor who may approve (approver = true), so no desktop dialogs");
  }
  if (town.approval.channels.includes("chat")) {
    // The chat channel is one channel among several: its failure must not take sudo down.
    const channel = await chatChannel(town, decryptor, log).catch((error: Error) => {
      log(`chat: no town bot: ${error.message}`);
      return undefined;
    });
    if (channel) daemon.addChannel(channel);
  }
  await daemon.start();
  // Agents propose and verify changes here (always served: without change.repo they hear why not).
  const changes = new ChangeService({ town, log });
  try {
    await changes.start();
  } catch (error) {
    await daemon.stop();
    throw error;
  }
  opts.err.write(
    `nuketown approvald: requests on ${town.paths.requestSocket}, humans on ${town.paths.controlSocket} (group ${town.approval.approversGroup}), agents' changes on ${changes.socketPath}\n`,
  );
  const both = {
    stop: async () => {
      await changes.stop();
      await daemon.stop();
    },
  };
  // A changed town (a revoked rule, a new approver) must not wait for a reboot.
  return serveUntilDone(both, watched, { name: "nuketown approvald", log });
}

/**
 * The town bot on the chat network, when the town chats and declares one.
 * It connects in the background: approvald serves the terminal at once, and
 * a chat server that is down is retried, never fatal.
 */
async function chatChannel(
  town: ResolvedTown,
  decryptor: SecretDecryptor,
  log: (line: string) => void,
): Promise<ChatApprovalChannel | undefined> {
  const kind = town.chat.transport;
  const bot =
    kind === "matrix"
      ? town.chat.matrix?.bot && {
          id: town.chat.matrix.bot.userId,
          secret: town.chat.matrix.bot.tokenSecret,
        }
      : kind === "xmpp"
        ? town.chat.xmpp?.bot && {
            id: town.chat.xmpp.bot.jid,
            secret: town.chat.xmpp.bot.passwordSecret,
          }
        : undefined;
  if (!bot) {
    if (kind !== "local")
      log(`chat: no town bot declared (chat.${kind}.bot): requests are not posted to chat`);
    return undefined;
  }
  const stateDir = path.join(town.stateDir, "chat-bot");
  await ensureDir(stateDir, 0o700);
  const secret =
    (await decryptor.decrypt(bot.secret)).toString("utf8").split("\n")[0]?.trim() ?? "";
  if (secret === "") throw new Error(`the secret of ${bot.id} is empty`);
  const channel = new ChatApprovalChannel({
    town,
    log,
    transport: await openTransport(
      town,
      { id: bot.id, secret },
      {
        rooms: town.chat.approvalRoom ? [town.chat.approvalRoom] : [],
        inviters: new Set(),
        stateDir,
        displayName: `${town.name} approvals`,
        log: (line) => log(`chat: ${line}`),
      },
    ),
  });
  channel.start().then(
    () => log(`chat: the town bot ${bot.id} is online`),
    (error: Error) => log(`chat: the town bot cannot connect: ${error.message}`),
  );
  return channel;
}

async function approversGid(name: string): Promise<number | undefined> {
  const groups = await readGroup();
  return groups.find((g) => g.name === name)?.gid;
}

const requestRow = (r: PendingRequest) => [
  r.id,
  r.agent.name,
  r.runAs.group === undefined ? r.runAs.user : `${r.runAs.user}:${r.runAs.group}`,
  printable(
    r.change
      ? changeSummary(r.change)
      : r.argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(" "),
  ),
  printable(r.cwd),
  r.hash.slice(0, 12),
  r.expires,
];

/** The warnings under a request: each program or file argument the agent could change. */
const writableNotes = (r: PendingRequest) =>
  writableLines(r, printable).map((line) => `  ${r.id}: ⚠ ${line}\n`);

/** `nuketown approvals [--watch]`: what waits for a human. */
export async function approvals(opts: TownOptions & { readonly watch?: boolean }): Promise<number> {
  const town = await townFrom(opts);
  const client = await ControlClient.connect(town.paths.controlSocket);
  const print = (requests: PendingRequest[]) => {
    if (opts.json) return void opts.out.write(`${JSON.stringify(requests, null, 2)}\n`);
    opts.out.write(
      requests.length === 0
        ? "no requests waiting\n"
        : `${table(["id", "agent", "as", "command", "cwd", "hash", "expires"], requests.map(requestRow))}\n${requests.flatMap(writableNotes).join("")}`,
    );
  };
  if (!opts.watch) {
    print(await client.list());
    client.close();
    return EXIT.ok;
  }
  print(
    await client.subscribe((event) => {
      if (opts.json) return void opts.out.write(`${JSON.stringify(event)}\n`);
      if (event.event === "request") {
        const r = event.request as PendingRequest;
        opts.out.write(
          `request ${requestRow(r).join("  ")}\n${
            r.change
              ? `${changeLines(r.agent.name, r.change)
                  .map((l) => `  ${printable(l)}\n`)
                  .join("")}`
              : ""
          }${writableNotes(r).join("")}  approve: nuketown approve ${r.id} --hash ${r.hash.slice(0, 12)}   deny: nuketown deny ${r.id} --reason ...\n`,
        );
      } else {
        opts.out.write(`${event.id}: ${event.decision} — ${event.reason}\n`);
      }
    }),
  );
  await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
  client.close();
  return EXIT.ok;
}

/**
 * `nuketown approve ID [--hash H]` / `nuketown deny ID --reason R`. With
 * `--hash` (the hash `approvals` showed, 8 to 64 hex digits) the answer counts
 * only if the request still has that hash.
 */
export async function decide(
  opts: TownOptions & {
    readonly id: string;
    readonly approve: boolean;
    readonly reason?: string;
    readonly hash?: string;
  },
): Promise<number> {
  const hash = opts.hash?.toLowerCase();
  if (hash !== undefined && !/^[0-9a-f]{8,64}$/.test(hash))
    throw new NuketownError(
      `--hash ${JSON.stringify(opts.hash)}: give 8 to 64 hex digits of the request's hash`,
      EXIT.invalid,
    );
  const town = await townFrom(opts);
  const client = await ControlClient.connect(town.paths.controlSocket);
  try {
    await client.decide(opts.id, opts.approve, opts.reason, "terminal", hash);
  } finally {
    client.close();
  }
  opts.out.write(`${opts.approve ? "approved" : "denied"} ${opts.id} as ${client.as}\n`);
  return EXIT.ok;
}

/** `nuketown approval-mode [off|auto-approve|auto-deny]`. */
export async function approvalMode(
  opts: TownOptions & { readonly mode: ApprovalMode },
): Promise<number> {
  const town = await townFrom(opts);
  await writeApprovalMode(town, opts.mode, await approversGid(town.approval.approversGroup));
  opts.out.write(
    opts.mode === "off"
      ? "approval mode: off (humans decide)\n"
      : `approval mode: ${opts.mode.toUpperCase()} — every request is now decided without a human, and marked so in the audit log\n`,
  );
  return EXIT.ok;
}

/** `nuketown audit verify` / `nuketown audit tail [-n N]`. */
export async function audit(
  opts: TownOptions & {
    readonly action: "verify" | "tail";
    readonly count?: number;
    readonly file?: string;
  },
): Promise<number> {
  const file = opts.file ?? (await townFrom(opts)).paths.auditLog;
  if (opts.action === "tail") {
    const records = await tailAudit(file, opts.count ?? 20);
    opts.out.write(
      opts.json
        ? `${JSON.stringify(records, null, 2)}\n`
        : records.map((r) => `${formatRecord(r)}\n`).join(""),
    );
    return EXIT.ok;
  }
  const result = await verifyAudit(file);
  if (opts.json) opts.out.write(`${JSON.stringify(result, null, 2)}\n`);
  if (!result.ok) {
    throw new RefusedError(
      `${path.basename(file)} line ${result.line}: ${result.problem} (${result.records} records verified before it)`,
    );
  }
  if (!opts.json)
    opts.out.write(
      `audit log intact: ${result.records} records, head ${result.head.slice(0, 16)}\n`,
    );
  return EXIT.ok;
}

/**
 * `nuketown unlock NAME` / `nuketown lock [NAME]`, run by an agent: through
 * sudo to the gate, like any request; the plaintext's path is printed.
 */
export async function unlock(
  opts: TownOptions & { readonly secret?: string; readonly lock: boolean },
): Promise<number> {
  const town = await townFrom(opts);
  const args = opts.lock ? ["--lock", opts.secret ?? "--all"] : ["--unlock", opts.secret ?? ""];
  // The real sudo: the shim (first on a sudo agent's PATH) would treat the gate as a command to approve.
  return runInherit("/usr/bin/sudo", ["-n", town.install.gate, ...args]).catch(() => EXIT.missing);
}
