/**
 * `nuketown portal [agent] [project]`: a tmux window with the agent's login
 * session on top, running its portal command in the project, and the
 * human's shell below in the same directory. A window is named
 * `<agent>:<project>` and found again by that name, so a second portal to
 * the same place shows the running one and never starts the command twice.
 */

import { existsSync, readdirSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { tmuxSessionName, tmuxSocket } from "../agent/runtimes/tmux.ts";
import { shellQuote } from "../approval/wrappers.ts";
import { ConfigError, EXIT } from "../errors.ts";
import { systemdIsInit } from "../host/observe.ts";
import { PROGRAM_FILES } from "../install/layout.ts";
import { type Runner, runInherit, systemRunner } from "../os/process.ts";
import { parsePasswd } from "../os/tables.ts";
import type { Streams } from "../output.ts";
import { fuzzyFilter } from "../portal/fuzzy.ts";
import { findProgram, type Picker, terminalPicker } from "../portal/pick.ts";
import {
  expandProjectDir,
  listProjects,
  type Project,
  projectFor,
  type ReadDir,
} from "../portal/projects.ts";
import { portalCommand } from "../portal/runtime.ts";
import {
  agentLoginArgv,
  agentScript,
  attachArgv,
  findWindow,
  focusArgv,
  humanPercent,
  insideTmux,
  openArgv,
  PORTAL_SESSION,
  type PortalPlan,
  parseWindows,
  SOCKET_ENV,
  serverArgs,
  shellLine,
  showArgvs,
  splitArgv,
  tagArgvs,
  WINDOW_FORMAT,
  windowName,
} from "../portal/tmux.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { townFrom } from "./town-source.ts";

export interface PortalOptions extends Streams {
  readonly agent?: string;
  /** A directory, or a name (fuzzy) among the projects under `projectDirs`. */
  readonly project?: string;
  readonly config?: string;
  readonly manifest?: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly cwd: string;
  /**
   * The tmux server: a socket name (`tmux -L`) or path (`tmux -S`).
   * @default $NUKETOWN_TMUX_SOCKET, else tmux's default server
   */
  readonly socket?: string;
  /** @default process.env */
  readonly env?: NodeJS.ProcessEnv;
  /** @default systemRunner */
  readonly runner?: Runner;
  /** @default fzf, else a numbered list on stdin/stderr */
  readonly picker?: Picker;
  /** Attach the terminal to a session (outside tmux). @default tmux attach with the terminal */
  readonly attach?: (argv: readonly string[], env: NodeJS.ProcessEnv) => Promise<number>;
  /** @default whether stdin is a terminal */
  readonly interactive?: boolean;
}

export async function portal(opts: PortalOptions): Promise<number> {
  const env = opts.env ?? process.env;
  const runner = opts.runner ?? systemRunner;
  const picker = opts.picker ?? terminalPicker(env, process.stdin, opts.err);
  const town = await townFrom(opts);

  const agent = await chooseAgent(town, opts.agent, picker);
  if (agent === undefined) return nothingPicked("agent");
  if (agent.portal.command.trim() === "")
    throw new ConfigError("portal", [
      {
        path: `agents.${agent.name}.portal.command`,
        message: "no command to run: set portal.command or runtime.command",
      },
    ]);

  const home = await mayorHome(town, runner);
  const roots = town.projectDirs.map((dir) => expandProjectDir(dir, home, opts.cwd));
  const project = await chooseProject(roots, opts.project, opts.cwd, picker);
  if (project === undefined) return nothingPicked("project");

  const socket = opts.socket ?? env[SOCKET_ENV];
  const inside = insideTmux(env.TMUX, socket);
  // Outside the server's panes, a stray $TMUX would make tmux refuse to nest.
  const tmuxEnv = inside ? env : withoutTmux(env);
  const tmux = (args: readonly string[], allowFailure = false) =>
    runner.run("tmux", [...serverArgs(socket), ...args], { env: tmuxEnv, allowFailure });

  const name = windowName(agent.name, project.name);
  // No server yet is not an error: there is simply no window.
  const listed = await tmux(["list-windows", "-a", "-F", WINDOW_FORMAT], true);
  const windows = listed.code === 0 ? parseWindows(listed.stdout) : [];
  const existing = findWindow(windows, name, inside ? undefined : PORTAL_SESSION);
  const interactive = opts.interactive ?? process.stdin.isTTY === true;
  const attach = opts.attach ?? attachWithTerminal;

  if (existing !== undefined) {
    const [select, ...follow] = showArgvs(existing, inside);
    if (select) await tmux(select);
    for (const argv of follow) await tmux(argv, true);
    opts.out.write(`portal ${name}: already open in session ${existing.session}, showing it\n`);
    if (!inside) return finishOutside(existing.sessionId);
    return EXIT.ok;
  }

  const method = {
    systemd: await systemdIsInit(),
    root: process.geteuid?.() === 0,
    runuser: findProgram("runuser", env) !== undefined,
  };
  const plan: PortalPlan = {
    open: inside ? "window" : "session",
    name,
    dir: project.dir,
    agentCommand: shellLine(
      agentLoginArgv(
        agent.name,
        agentScript(
          project.dir,
          portalCommand(agent, {
            node: path.join(town.install.programDir, PROGRAM_FILES.node),
            script: path.join(town.install.programDir, PROGRAM_FILES.trust),
          }),
          // Before the agent's first round there is no runtime dir: run the command in the pane.
          existsSync(agent.runtimeDir)
            ? {
                socket: tmuxSocket(agent),
                name: tmuxSessionName(agent.name, path.basename(project.dir)),
              }
            : undefined,
        ),
        method,
      ),
    ),
    humanPercent: humanPercent(agent.portal.layout),
    ...(process.stdout.columns &&
      process.stdout.rows && {
        size: { columns: process.stdout.columns, rows: process.stdout.rows },
      }),
  };
  const sessionExists = windows.some((w) => w.session === PORTAL_SESSION);
  const pane = (await tmux(openArgv(plan, sessionExists))).stdout.trim();
  for (const argv of tagArgvs(pane, name)) await tmux(argv);
  await tmux(splitArgv(plan, pane));
  await tmux(focusArgv(pane));
  opts.out.write(`portal ${name}: ${agent.name} in ${project.dir}\n`);
  return inside ? EXIT.ok : finishOutside(PORTAL_SESSION);

  function nothingPicked(what: string): number {
    opts.err.write(`nuketown portal: no ${what} picked, nothing opened\n`);
    return EXIT.ok;
  }

  async function finishOutside(session: string): Promise<number> {
    const argv = [...serverArgs(socket), ...attachArgv(session)];
    if (!interactive) {
      opts.out.write(`not a terminal: attach with  tmux ${shellWords(argv)}\n`);
      return EXIT.ok;
    }
    return attach(argv, tmuxEnv);
  }
}

async function chooseAgent(
  town: ResolvedTown,
  wanted: string | undefined,
  picker: Picker,
): Promise<ResolvedAgent | undefined> {
  const enabled = town.agents.filter((a) => a.portal.enable);
  if (wanted !== undefined) {
    const agent = town.agents.find((a) => a.name === wanted);
    if (agent === undefined)
      throw new ConfigError("portal", [
        {
          path: "agent",
          message: `no agent ${wanted} in town ${town.name} (agents: ${town.agents.map((a) => a.name).join(", ") || "none"})`,
        },
      ]);
    if (!agent.portal.enable)
      throw new ConfigError("portal", [
        { path: `agents.${wanted}.portal.enable`, message: "the portal is not enabled" },
      ]);
    return agent;
  }
  if (enabled.length === 0)
    throw new ConfigError("portal", [
      { path: "agents.*.portal.enable", message: "no agent has the portal enabled" },
    ]);
  if (enabled.length === 1) return enabled[0];
  return picker({ title: "agent", items: enabled, label: (a) => `${a.name}  ${a.role}` });
}

async function chooseProject(
  roots: readonly string[],
  wanted: string | undefined,
  cwd: string,
  picker: Picker,
): Promise<Project | undefined> {
  if (wanted !== undefined) {
    const dir = path.resolve(cwd, wanted);
    if (isDirectory(dir)) return projectFor(dir, roots);
  }
  const projects = listProjects(roots, readDirectory);
  if (wanted !== undefined) {
    const exact = projects.filter((p) => p.name === wanted);
    const matches = exact.length > 0 ? exact : fuzzyFilter(wanted, projects, (p) => p.name);
    if (matches.length === 1) return matches[0];
    if (matches.length === 0)
      throw new ConfigError("portal", [
        {
          path: "project",
          message: `${wanted} is not a directory, and no project under ${roots.join(", ")} matches it`,
        },
      ]);
    return picker({ title: "project", items: matches, label: (p) => p.name, query: wanted });
  }
  if (projects.length === 0)
    throw new ConfigError("portal", [
      {
        path: "projectDirs",
        message: `no projects under ${roots.join(", ") || "(none declared)"}: name a directory`,
      },
    ]);
  return picker({ title: "project", items: projects, label: (p) => p.name });
}

/** The mayor's home, for `~/` in projectDirs; the caller's own when there is no mayor account. */
async function mayorHome(town: ResolvedTown, runner: Runner): Promise<string> {
  if (town.mayor !== undefined) {
    // getent, not /etc/passwd: the mayor may come from LDAP or systemd-homed.
    const entry = await runner.run("getent", ["passwd", town.mayor.unixUser], {
      allowFailure: true,
    });
    const home = entry.code === 0 ? parsePasswd(entry.stdout)[0]?.home : undefined;
    if (home) return home;
  }
  return os.homedir();
}

const readDirectory: ReadDir = (dir) => {
  try {
    return readdirSync(dir, { withFileTypes: true }).map((entry) => ({
      name: entry.name,
      isDirectory:
        entry.isDirectory() || (entry.isSymbolicLink() && isDirectory(path.join(dir, entry.name))),
    }));
  } catch {
    return [];
  }
};

function isDirectory(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

function withoutTmux(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { TMUX: _tmux, TMUX_PANE: _pane, ...rest } = env;
  return rest;
}

const shellWords = (argv: readonly string[]) =>
  argv.map((w) => (/^[\w@%+=:,./-]+$/.test(w) ? w : shellQuote(w))).join(" ");

function attachWithTerminal(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return runInherit("tmux", argv, { env });
}
