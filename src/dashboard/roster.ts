/**
 * The roster's data: each agent's daemon watched on its socket (online, what
 * runs, its progress, live), and what is slower to learn refreshed now and
 * then (the last commit, read as the agent; the persisted size; the last
 * reset from apply's state).
 */
import path from "node:path";
import { AgentClient } from "../agent/client.ts";
import type { AgentStatus, TaskEvent } from "../agent/protocol.ts";
import { clip, isTaskEnd } from "../agent/protocol.ts";
import { readState } from "../host/state.ts";
import { type Runner, systemRunner } from "../os/process.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import type { AgentRow } from "./pages.ts";

interface Watched {
  status?: AgentStatus;
  progress?: string;
  lastCommit?: AgentRow["lastCommit"];
  persistedBytes?: number;
  client?: AgentClient;
}

/** How often the slow facts (commits, sizes, resets) are read again. */
const SLOW_EVERY_MS = 15_000;

export class Roster {
  readonly #town: ResolvedTown;
  readonly #runner: Runner;
  readonly #onChange: () => void;
  readonly #agents = new Map<string, Watched>();
  #resets: Record<string, string | undefined> = {};
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #loops: Promise<void>[] = [];

  constructor(options: { town: ResolvedTown; onChange: () => void; runner?: Runner }) {
    this.#town = options.town;
    this.#onChange = options.onChange;
    this.#runner = options.runner ?? systemRunner;
    for (const agent of this.#town.agents) this.#agents.set(agent.name, {});
  }

  start(): void {
    this.#loops = this.#town.agents.map((agent) => this.#watch(agent));
    const slow = () => {
      this.#slow()
        .catch(() => {})
        .finally(() => {
          if (!this.#stopped) this.#timer = setTimeout(slow, SLOW_EVERY_MS).unref();
        });
    };
    slow();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    for (const w of this.#agents.values()) w.client?.close();
    await Promise.allSettled(this.#loops);
  }

  rows(): AgentRow[] {
    return this.#town.agents.map((agent) => this.row(agent.name)).filter((r) => r !== undefined);
  }

  row(name: string): AgentRow | undefined {
    const agent = this.#town.agents.find((a) => a.name === name);
    const w = this.#agents.get(name);
    if (!agent || !w) return undefined;
    const status = w.status;
    const lastReset = this.#resets[name];
    return {
      name: agent.name,
      uid: agent.uid,
      role: agent.role,
      online: status !== undefined,
      running: (status?.running ?? []).map((t) => ({
        prompt: clip(t.prompt, 160),
        project: t.project,
        since: t.startedAt ?? t.queuedAt,
      })),
      queued: status?.queued.length ?? 0,
      ...(w.progress !== undefined && status?.running.length && { progress: w.progress }),
      ...(w.lastCommit && { lastCommit: w.lastCommit }),
      ...(lastReset !== undefined && { lastReset }),
      ...(w.persistedBytes !== undefined && { persistedBytes: w.persistedBytes }),
      sudo: agent.sudo.enable,
      chat: agent.chat.enable,
    };
  }

  /** Follow one agent daemon: its status, then every task event; reconnect when it goes. */
  async #watch(agent: ResolvedAgent): Promise<void> {
    const w = this.#agents.get(agent.name);
    if (!w) return;
    let delay = 500;
    while (!this.#stopped) {
      try {
        const client = await AgentClient.connect(agent.socket);
        w.client = client;
        const gone = new Promise<void>((resolve) => client.onClose(() => resolve()));
        const refresh = async () => {
          w.status = await client.status();
          this.#onChange();
        };
        await client.subscribe((event: TaskEvent) => {
          if (event.event === "task.progress") w.progress = clip(event.text, 200);
          if (event.event === "task.started") w.progress = undefined;
          if (event.event === "task.answer") return this.#onChange();
          refresh().catch(() => {});
          // The daemon may say a task ended a moment before its status does.
          if (isTaskEnd(event)) setTimeout(() => refresh().catch(() => {}), 300).unref();
        });
        await refresh();
        delay = 500;
        await gone;
      } catch {
        // Not there (yet): offline until it answers.
      }
      w.client = undefined;
      if (w.status !== undefined) {
        w.status = undefined;
        this.#onChange();
      }
      if (this.#stopped) break;
      await new Promise((resolve) => setTimeout(resolve, delay).unref());
      delay = Math.min(delay * 2, 10_000);
    }
  }

  async #slow(): Promise<void> {
    const state = await readState(this.#town.stateDir).catch(() => undefined);
    this.#resets = Object.fromEntries(
      this.#town.agents.map((a) => [a.name, state?.agents[a.name]?.lastReset]),
    );
    await Promise.all(
      this.#town.agents.map(async (agent) => {
        const w = this.#agents.get(agent.name);
        if (!w) return;
        const du = await this.#runner.run("du", ["-sb", agent.persistRoot], {
          allowFailure: true,
          timeoutMs: 10_000,
        });
        if (du.code === 0) w.persistedBytes = Number(du.stdout.split("\t")[0]);
        const commit = await this.#lastCommit(agent);
        if (commit) w.lastCommit = commit;
      }),
    );
    this.#onChange();
  }

  /**
   * The newest commit on any branch of the agent's repos, read as the agent
   * (git never runs as root in a tree an agent controls), with git's verdict
   * on its signature against the agent's own allowed signers.
   */
  async #lastCommit(agent: ResolvedAgent): Promise<AgentRow["lastCommit"]> {
    let newest: AgentRow["lastCommit"] & { epoch: number };
    let best: typeof newest | undefined;
    for (const repo of agent.repos) {
      const dir = path.join(agent.home, repo.path);
      const log = await this.#runner.run(
        "git",
        ["-C", dir, "log", "-1", "--branches", "--format=%H%x00%ct%x00%cI%x00%G?%x00%s"],
        {
          uid: agent.uid,
          gid: agent.gid,
          cwd: agent.home,
          env: { HOME: agent.home, PATH: "/usr/local/bin:/usr/bin:/bin", LANG: "C.UTF-8" },
          allowFailure: true,
          timeoutMs: 10_000,
        },
      );
      if (log.code !== 0) continue;
      const [hash = "", epoch = "0", when = "", signature = "N", subject = ""] = log.stdout
        .trim()
        .split("\0");
      if (!/^[0-9a-f]{40,64}$/.test(hash)) continue;
      newest = { hash, subject: clip(subject, 120), when, signature, epoch: Number(epoch) };
      if (!best || newest.epoch > best.epoch) best = newest;
    }
    if (!best) return undefined;
    const { epoch: _epoch, ...commit } = best;
    return commit;
  }
}
