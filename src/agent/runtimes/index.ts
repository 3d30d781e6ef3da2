/**
 * The runtimes behind one interface. Each kind says how to call its CLI and
 * how to read what it prints; running it (a process group with a timeout, or
 * a tmux window for interactive tasks) and turning every way it can go wrong
 * into a RuntimeFailure is shared.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { NuketownError } from "../../errors.ts";
import type { Runner } from "../../os/process.ts";
import type { ResolvedAgent } from "../../town/types.ts";
import { clip, MAX_PROGRESS_CHARS, type WorkspaceReport } from "../protocol.ts";
import { conversationKey } from "../sessions.ts";
import { claudeBatchArgs, claudeInteractiveArgs, claudeParser } from "./claude.ts";
import {
  codexBatchArgs,
  codexInteractiveArgs,
  codexParser,
  isUnknownCodexSession,
} from "./codex.ts";
import { commandArgs, commandInput, commandParser, parseCommandLine } from "./command.ts";
import { runProcess } from "./process.ts";
import { runInTmux } from "./tmux.ts";
import { trustClaudeProject } from "./trust.ts";
import {
  type OutputParser,
  type RunContext,
  type Runtime,
  RuntimeFailure,
  type RuntimeOutput,
  type RuntimeResult,
  type RuntimeTask,
  type SessionStore,
  TaskAborted,
} from "./types.ts";

export * from "./types.ts";

export interface RuntimeDeps {
  /** Runs tmux for interactive tasks. */
  readonly runner: Runner;
  readonly sessions: SessionStore;
  /** The environment runtimes start from (the daemon's own). */
  readonly env?: NodeJS.ProcessEnv;
  /** Where an interactive command runtime's task file is written (private to the agent). */
  readonly scratchDir: string;
  /** Between SIGTERM and SIGKILL. */
  readonly killGraceMs?: number;
}

type Agent = Pick<ResolvedAgent, "name" | "home" | "runtime" | "runtimeDir">;

interface Invocation {
  readonly args: string[];
  /** stdin for a batch run. */
  readonly input?: string;
  readonly parser: OutputParser;
}

const INSTALL_HINT: Readonly<Record<string, string>> = {
  "claude-code": "install Claude Code for the agent: npm install -g @anthropic-ai/claude-code",
  codex: "install Codex for the agent: npm install -g @openai/codex",
};

export function createRuntime(agent: Agent, deps: RuntimeDeps): Runtime {
  const { kind, command } = agent.runtime;
  const batch = (task: RuntimeTask, workspace: WorkspaceReport, session?: string): Invocation => {
    switch (kind) {
      case "claude-code":
        return {
          args: claudeBatchArgs(agent, session),
          input: task.prompt,
          parser: claudeParser(),
        };
      case "codex":
        return { args: codexBatchArgs(agent, session), input: task.prompt, parser: codexParser() };
      case "command":
        return {
          args: commandArgs(agent),
          input: `${JSON.stringify(commandInput(task, workspace, session))}\n`,
          parser: commandParser(),
        };
    }
  };
  const interactive = (cwd: string, session?: string): string[] => {
    switch (kind) {
      case "claude-code":
        return claudeInteractiveArgs(agent, session);
      case "codex":
        return codexInteractiveArgs(agent, session, cwd);
      case "command":
        return commandArgs(agent);
    }
  };
  const missing = (detail: string) =>
    new RuntimeFailure(
      "missing-runtime",
      `the ${kind} runtime cannot start: ${detail} (${
        INSTALL_HINT[kind] ?? `check agents.${agent.name}.runtime.command`
      })`,
    );
  const timedOut = (stderr?: string) =>
    new RuntimeFailure(
      "timeout",
      `the runtime ran longer than its timeout (${agent.runtime.timeout} s) and was stopped`,
      stderr === undefined ? {} : { stderr },
    );

  return {
    kind,
    async run(context: RunContext): Promise<RuntimeResult> {
      const { task, workspace, signal } = context;
      const emit = (text: string) => context.emit(clip(text, MAX_PROGRESS_CHARS));
      const key = conversationKey(kind, task.project, task.replyTo ?? task.source);
      const session = key === undefined ? undefined : await deps.sessions.get(key);
      if (session !== undefined) emit(`resuming session ${session}`);
      const env = runtimeEnv(agent, task, workspace);

      if (task.mode === "interactive") {
        const commandRuntime = kind === "command";
        const taskFile = path.join(deps.scratchDir, `${task.id}.json`);
        if (kind === "claude-code") await trustClaudeProject(agent.home, workspace.workspace);
        if (commandRuntime) {
          await mkdir(deps.scratchDir, { recursive: true, mode: 0o700 });
          await writeFile(taskFile, JSON.stringify(commandInput(task, workspace, session)), {
            mode: 0o600,
          });
        }
        try {
          const outcome = await runInTmux({
            agent,
            project: task.project,
            taskId: task.id,
            cwd: workspace.workspace,
            command,
            args: interactive(workspace.workspace, session),
            ...(!commandRuntime && { typed: task.prompt }),
            env: { ...agent.runtime.env, ...env },
            ...(commandRuntime && { stdinFile: taskFile }),
            timeoutMs: agent.runtime.timeout * 1000,
            signal,
            runner: deps.runner,
            ...(deps.killGraceMs !== undefined && { killGraceMs: deps.killGraceMs }),
            ...(context.processes && { processes: context.processes }),
          }).catch((error: unknown) => {
            if (error instanceof NuketownError) throw missing(error.message);
            throw error;
          });
          emit(`ran in tmux session ${outcome.session}`);
          if (outcome.kind === "aborted") throw new TaskAborted();
          if (outcome.kind === "timeout") throw timedOut(tail(outcome.output));
          if (outcome.code === 127 || outcome.code === 126)
            throw missing(`${command}: ${outcome.code === 127 ? "not found" : "not executable"}`);
          if (outcome.code !== 0)
            throw new RuntimeFailure(
              "crashed",
              outcome.code === null
                ? `the tmux window of the task was closed before ${command} finished`
                : `${command} exited ${outcome.code}`,
              { exitCode: outcome.code, stderr: tail(outcome.output) },
            );
          return { answer: interactiveAnswer(kind, outcome.output), tmuxSession: outcome.session };
        } finally {
          if (commandRuntime) await rm(taskFile, { force: true });
        }
      }

      const attempt = async (resume: string | undefined) => {
        const invocation = batch(task, workspace, resume);
        const answers: string[] = [];
        const errors: Extract<RuntimeOutput, { type: "error" }>[] = [];
        let sessionId: string | undefined;
        const take = (outputs: readonly RuntimeOutput[]) => {
          for (const output of outputs) {
            if (output.type === "progress") emit(output.text);
            else if (output.type === "answer") answers.push(output.text);
            else if (output.type === "session") sessionId = output.id;
            else errors.push(output);
          }
        };
        const outcome = await runProcess({
          command,
          args: invocation.args,
          cwd: workspace.workspace,
          env: {
            ...(deps.env ?? process.env),
            ...agent.runtime.env,
            ...env,
            GIT_TERMINAL_PROMPT: "0",
          },
          ...(invocation.input !== undefined && { input: invocation.input }),
          timeoutMs: agent.runtime.timeout * 1000,
          signal,
          ...(deps.killGraceMs !== undefined && { killGraceMs: deps.killGraceMs }),
          ...(context.processes && { processes: context.processes }),
          onLine: (line) => take(invocation.parser.line(line)),
        });
        take(invocation.parser.end?.() ?? []);
        const unknownSession =
          resume !== undefined &&
          (errors.some((e) => e.why === "unknown-session") ||
            (outcome.kind === "exited" &&
              kind === "codex" &&
              isUnknownCodexSession(outcome.stderr)));
        return { outcome, answers, errors, sessionId, unknownSession };
      };
      let result = await attempt(session);
      // A stored session the runtime no longer knows (its store was lost, or it expired)
      // would fail every later task of the conversation: forget it and start afresh, once.
      if (session !== undefined && key !== undefined && result.unknownSession && !signal.aborted) {
        emit(`session ${session} is unknown to ${command}: starting a new one`);
        await deps.sessions.forget?.(key);
        result = await attempt(undefined);
      }
      const { outcome, answers, errors, sessionId } = result;
      if (sessionId !== undefined && key !== undefined && !result.unknownSession)
        await deps.sessions.set(key, sessionId);
      switch (outcome.kind) {
        case "missing":
          throw missing(outcome.error);
        case "aborted":
          throw new TaskAborted();
        case "timeout":
          throw timedOut(outcome.stderr);
        case "exited": {
          const details = {
            exitCode: outcome.code,
            signal: outcome.signal,
            stderr: outcome.stderr,
          };
          // What the runtime said of its failure comes first: claude exits 1 on a refused
          // key, and its words say more than the exit code.
          const told = errors.find((e) => e.why === "auth" || e.why === "refused");
          if (told)
            throw new RuntimeFailure(told.why === "auth" ? "auth" : "refused", told.text, details);
          if (outcome.code !== 0) {
            const how =
              outcome.signal !== null
                ? `was killed by ${outcome.signal}`
                : `exited ${outcome.code}`;
            const why = errors[0]?.text ?? lastLine(outcome.stderr);
            throw new RuntimeFailure(
              "crashed",
              `${command} ${how}${why ? `: ${why}` : ""}`,
              details,
            );
          }
          if (errors.length > 0)
            throw new RuntimeFailure(
              "runtime-error",
              errors.map((e) => e.text).join("\n"),
              details,
            );
          return {
            answer: answers.join("\n"),
            ...(sessionId !== undefined && { sessionId }),
          };
        }
      }
    },
  };
}

/** What a runtime finds in its environment, besides the daemon's own. */
function runtimeEnv(
  agent: Agent,
  task: RuntimeTask,
  workspace: WorkspaceReport,
): Record<string, string> {
  return {
    HOME: agent.home,
    USER: agent.name,
    LOGNAME: agent.name,
    NUKETOWN_AGENT: agent.name,
    NUKETOWN_TASK_ID: task.id,
    NUKETOWN_PROJECT: task.project,
    NUKETOWN_WORKSPACE: workspace.workspace,
    NUKETOWN_BRANCH: workspace.branch,
  };
}

function interactiveAnswer(kind: string, output: string): string {
  if (kind === "command") {
    const answers = output
      .split("\n")
      .map((line) => parseCommandLine(line.trim()))
      .filter((o) => o.type === "answer")
      .map((o) => o.text);
    if (answers.length > 0) return answers.join("\n");
  }
  return tail(output) ?? "";
}

function tail(text: string, lines = 40): string | undefined {
  const kept = text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(-lines)
    .join("\n");
  return kept === "" ? undefined : kept;
}

function lastLine(text: string): string | undefined {
  return text
    .split("\n")
    .filter((l) => l.trim() !== "")
    .pop();
}
