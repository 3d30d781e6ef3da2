/**
 * The web approval channel: the dashboard watches approvald's control socket
 * (as root, which may watch) and decides as the human signed in at the
 * browser — it proves that human's uid to the daemon, so the daemon itself
 * checks that they are an approver, and audits the decision as theirs.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { ControlClient } from "../approval/client.ts";
import { type PendingRequest, writableLines } from "../approval/protocol.ts";
import { parsePasswd } from "../os/tables.ts";
import type { ResolvedTown } from "../town/types.ts";
import type { ApprovalItem } from "./pages.ts";

/** The parts of a change request the page shows (src/change/ sends them). */
interface ChangeView {
  readonly id: string;
  readonly host: string;
  readonly commit: string;
  readonly base: string;
  readonly risk: "high" | "low";
  readonly reasons: readonly string[];
  readonly explanation: string;
  readonly diffstat: string;
}

/** A pending request as the page shows it. Pure. */
export function approvalItem(request: PendingRequest): ApprovalItem {
  const change = (request as { change?: ChangeView }).change;
  const base = {
    id: request.id,
    agent: request.agent.name,
    argv: request.argv,
    command: request.command,
    cwd: request.cwd,
    runAs: request.runAs.group
      ? `${request.runAs.user}:${request.runAs.group}`
      : request.runAs.user,
    hash: request.hash,
    expires: request.expires,
    time: request.time,
    agentWritable: [] as string[],
  };
  if (change)
    return {
      ...base,
      kind: "change",
      risk: change.risk,
      details: [
        `change ${change.id} to ${change.host}`,
        ...change.explanation.trim().split("\n").slice(0, 12),
        `commit ${change.commit} (on ${change.base.slice(0, 12)})`,
        ...change.diffstat.trim().split("\n").slice(-20),
        ...change.reasons.map((r) => `risk: ${r}`),
      ],
    };
  if (request.unlock)
    return {
      ...base,
      kind: "unlock",
      risk: "ask",
      details: [`unlock the secret ${request.unlock.secret}`],
    };
  return {
    ...base,
    kind: "command",
    risk: "ask",
    details: [],
    agentWritable: writableLines(request),
  };
}

export type DecideOutcome = { ok: true } | { ok: false; status: number; error: string };

export class WebApprovals {
  readonly #town: ResolvedTown;
  readonly #etc: string;
  readonly #onChange: () => void;
  readonly #log: (line: string) => void;
  readonly #pending = new Map<string, PendingRequest>();
  #client: ControlClient | undefined;
  #stopped = false;
  #connected = false;
  #loop: Promise<void> = Promise.resolve();

  constructor(options: {
    town: ResolvedTown;
    onChange: () => void;
    log: (line: string) => void;
    etc?: string;
  }) {
    this.#town = options.town;
    this.#onChange = options.onChange;
    this.#log = options.log;
    this.#etc = options.etc ?? "/etc";
  }

  /** Whether the approval daemon is being watched right now. */
  get connected(): boolean {
    return this.#connected;
  }

  get items(): ApprovalItem[] {
    return [...this.#pending.values()].sort((a, b) => (a.time < b.time ? -1 : 1)).map(approvalItem);
  }

  get count(): number {
    return this.#pending.size;
  }

  start(): void {
    this.#loop = this.#watch();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#client?.close();
    await this.#loop;
  }

  /** Watch the daemon, reconnecting (1 s, doubling to 30 s) whenever it goes away. */
  async #watch(): Promise<void> {
    let delay = 1000;
    while (!this.#stopped) {
      try {
        const client = await ControlClient.connect(this.#town.paths.controlSocket);
        this.#client = client;
        const current = await client.subscribe((frame) => {
          if (frame.event === "request") {
            const request = frame.request as PendingRequest;
            this.#pending.set(request.id, request);
          } else if (frame.event === "decision") this.#pending.delete(String(frame.id));
          this.#onChange();
        });
        this.#pending.clear();
        for (const request of current) this.#pending.set(request.id, request);
        this.#connected = true;
        delay = 1000;
        this.#onChange();
        await client.closed;
        this.#connected = false;
        this.#pending.clear();
        this.#onChange();
        if (!this.#stopped) this.#log("the approval daemon went away: watching for it again");
      } catch (error) {
        if (delay === 1000)
          this.#log(`cannot watch the approval daemon: ${(error as Error).message}`);
      }
      if (this.#stopped) break;
      await new Promise((resolve) => setTimeout(resolve, delay).unref());
      delay = Math.min(delay * 2, 30_000);
    }
  }

  /**
   * `human` (declared name) approves or denies. Refused here when they are no
   * approver, and again by the daemon, which checks the uid we prove.
   */
  async decide(
    human: string,
    id: string,
    approve: boolean,
    reason?: string,
    /** The hash the page showed with the buttons. */
    hash?: string,
  ): Promise<DecideOutcome> {
    const declared = this.#town.humans.find((h) => h.name === human);
    if (!declared?.approver)
      return { ok: false, status: 403, error: `${human} is not an approver in this town` };
    const passwd = parsePasswd(await readFile(path.join(this.#etc, "passwd"), "utf8"));
    const uid = passwd.find((u) => u.name === declared.unixUser)?.uid;
    if (uid === undefined)
      return { ok: false, status: 403, error: `${declared.unixUser} has no Unix account here` };
    let client: ControlClient | undefined;
    try {
      client = await ControlClient.connect(this.#town.paths.controlSocket, { proveAs: uid });
      await client.decide(id, approve, reason, "web", hash);
      return { ok: true };
    } catch (error) {
      return { ok: false, status: 409, error: (error as Error).message };
    } finally {
      client?.close();
    }
  }
}
