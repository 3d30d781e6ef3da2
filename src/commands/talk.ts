import { appendFile, mkdir, readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { AgentClient } from "../agent/client.ts";
import type { TaskEvent } from "../agent/protocol.ts";
import { ConfigError, EXIT } from "../errors.ts";
import { printable, type Streams } from "../output.ts";
import type { ResolvedAgent } from "../town/types.ts";
import { townFrom } from "./town-source.ts";

export interface TalkOptions extends Streams {
  readonly agent: string;
  readonly project?: string;
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  readonly input?: NodeJS.ReadableStream;
  /** Where the conversation is kept (default: ~/.local/state/nuketown/talk, which persists for the human). */
  readonly historyDir?: string;
}

const HELP = [
  "Type a message and press Enter; the agent answers when its runtime is done.",
  "  /project NAME   talk about another project     /status   what the agent is doing",
  "  /cancel         cancel the running answer       /quit     leave (Ctrl-D too)",
].join("\n");

/**
 * `nuketown talk <agent>`: a terminal conversation with an agent through its
 * daemon — the default transport, so a single machine with no chat server
 * works out of the box. Each line is a task in the chosen project, in one
 * conversation (`replyTo`), so the runtime resumes its session.
 */
export async function talk(opts: TalkOptions): Promise<number> {
  const town = await townFrom(opts);
  const agent = town.agents.find((a) => a.name === opts.agent);
  if (!agent) {
    throw new ConfigError("talk", [
      {
        path: opts.agent,
        message: `no such agent (known: ${town.agents.map((a) => a.name).join(", ")})`,
      },
    ]);
  }
  const chosen = opts.project ?? defaultProject(agent);
  if (!chosen) {
    throw new ConfigError("talk", [
      {
        path: "--project",
        message: `${agent.name} declares no repos: name a project with --project`,
      },
    ]);
  }
  let project: string = chosen;
  const me = os.userInfo().username;
  const historyDir =
    opts.historyDir ?? path.join(os.homedir(), ".local", "state", "nuketown", "talk");
  const history = path.join(historyDir, `${agent.name}.jsonl`);
  await mkdir(historyDir, { recursive: true, mode: 0o700 });

  const client = await AgentClient.connect(agent.socket);
  const say = (line: string) => opts.out.write(`${line}\n`);
  say(`talking to ${agent.name} (${agent.role}) about ${project}; /help for commands`);
  for (const line of await recentHistory(history, 6)) say(line);

  const rl = readline.createInterface({
    input: opts.input ?? process.stdin,
    output: opts.out,
    terminal: false,
  });
  let running: AbortController | undefined;
  const prompt = () => opts.out.write(`${me}> `);
  const failed = (error: unknown) => say(`error: ${printable((error as Error).message)}`);

  /** Sends one message and shows the answer; never throws (a refused request is said). */
  const ask = async (line: string) => {
    const controller = new AbortController();
    running = controller;
    try {
      await appendFile(
        history,
        `${JSON.stringify({ time: new Date().toISOString(), from: me, project, text: line })}\n`,
        { mode: 0o600 },
      );
      const outcome = await client.run(
        { project, prompt: line, source: "talk", replyTo: `talk:${me}:${project}` },
        { signal: controller.signal, onEvent: (event) => showProgress(event, say) },
      );
      const text =
        outcome.state === "finished"
          ? outcome.answer.trimEnd()
          : `(${outcome.state}${"error" in outcome.end ? `: ${String(outcome.end.error)}` : ""})`;
      say(`${agent.name}> ${printable(text)}`);
      await appendFile(
        history,
        `${JSON.stringify({ time: new Date().toISOString(), from: agent.name, project, text })}\n`,
      );
    } catch (error) {
      failed(error);
    } finally {
      if (running === controller) running = undefined;
    }
  };

  // Lines are read as they come, also while an answer is awaited: /cancel must be seen.
  await new Promise<void>((resolve) => {
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      process.off("SIGINT", onInterrupt);
      running?.abort();
      resolve();
    };
    // Ctrl-C cancels the running answer; with nothing running, it leaves.
    const onInterrupt = () => {
      if (running) {
        say("\n(cancelling)");
        running.abort();
      } else rl.close();
    };
    process.on("SIGINT", onInterrupt);
    rl.on("close", finish);
    prompt();
    rl.on("line", (raw) => {
      const line = raw.trim();
      if (line === "") {
        if (!running) prompt();
        return;
      }
      if (line === "/quit" || line === "/exit") return void rl.close();
      if (line === "/help") say(HELP);
      else if (line === "/cancel") {
        if (running) running.abort();
        else say("nothing is running");
        return;
      } else if (line === "/status") {
        client.status().then(
          (status) => say(printable(JSON.stringify(status))),
          (error: unknown) => failed(error),
        );
        return;
      } else if (running) {
        say("(the agent is still answering: wait, or /cancel)");
        return;
      } else if (line.startsWith("/project ")) {
        project = line.slice("/project ".length).trim();
        say(`now talking about ${project}`);
      } else {
        void ask(line).then(() => {
          if (!done) prompt();
        });
        return;
      }
      prompt();
    });
  });
  rl.close();
  client.close();
  opts.out.write("\n");
  return EXIT.ok;
}

function showProgress(event: TaskEvent, say: (line: string) => void): void {
  if (event.event === "task.queued" && event.position > 0)
    say(`  … queued behind ${event.position} task(s)`);
  else if (event.event === "task.progress") say(`  … ${printable(event.text)}`);
  else if (event.event === "task.started") {
    for (const warning of event.report.warnings) say(`  ! ${printable(warning)}`);
    if (event.report.dirty.length > 0)
      say(`  ! uncommitted changes in ${printable(event.report.workspace)}`);
  }
}

/** The first declared repo's project (its directory under ~/projects). */
function defaultProject(agent: ResolvedAgent): string | undefined {
  const repo = agent.repos.find((r) => r.path.startsWith("projects/"));
  return repo?.path.slice("projects/".length).split("/")[0];
}

async function recentHistory(file: string, count: number): Promise<string[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  return text
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .flatMap((l) => {
      // A corrupt line (a crash mid-write, an edit) is skipped, not fatal.
      try {
        const entry = JSON.parse(l) as { from?: unknown; text?: unknown };
        if (typeof entry?.from !== "string" || typeof entry.text !== "string") return [];
        return [`  (earlier) ${printable(entry.from)}> ${printable(entry.text)}`];
      } catch {
        return [];
      }
    })
    .slice(-count);
}
