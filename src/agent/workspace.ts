/**
 * Workspace bootstrap: a task names a project, and runs in
 * `<home>/projects/<project>`: the clone already there, or a fresh clone of
 * the declared repo. It works on the branch asked for, or on
 * `<agent>/<topic>`. Uncommitted changes are never discarded: a task that
 * would have to switch branches over them fails and says which files; a task
 * for the branch already checked out runs in place and reports them.
 */

import { mkdir, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { GUARDED_GIT_CONFIG } from "../host/git-guard.ts";
import type { Runner } from "../os/process.ts";
import type { ResolvedAgent } from "../town/types.ts";
import type { FailureReason, WorkspaceReport } from "./protocol.ts";

/** The directory under the home where projects live (persisted by convention). */
export const PROJECTS_DIR = "projects";

export class WorkspaceError extends Error {
  readonly reason: Extract<FailureReason, "unknown-project" | "workspace">;
  readonly report: Partial<WorkspaceReport> | undefined;
  constructor(
    reason: WorkspaceError["reason"],
    message: string,
    report?: Partial<WorkspaceReport>,
  ) {
    super(message);
    this.name = "WorkspaceError";
    this.reason = reason;
    this.report = report;
  }
}

export interface WorkspaceRequest {
  readonly project: string;
  readonly prompt: string;
  readonly branch?: string;
}

export interface WorkspaceDeps {
  readonly runner: Runner;
  /** Environment for git (HOME is set to the agent's home). */
  readonly env?: NodeJS.ProcessEnv;
  /** Daemon log: what is being done (a clone can take a while). */
  readonly log?: (line: string) => void;
  /** Longest a clone may take, in milliseconds. */
  readonly cloneTimeoutMs?: number;
}

type AgentPart = Pick<ResolvedAgent, "name" | "home" | "persist" | "repos">;

export function workspaceDir(agent: Pick<ResolvedAgent, "home">, project: string): string {
  return path.join(agent.home, PROJECTS_DIR, project);
}

/** The last path segment of a git URL without `.git`: `git@h:o/site.git` → `site`. */
export function repoName(url: string): string {
  const last =
    url
      .replace(/[/\\]+$/, "")
      .split(/[/:\\]/)
      .pop() ?? url;
  return last.replace(/\.git$/, "");
}

/** The declared repo for a project: the one cloned to `projects/<project>`, else the one named so. */
export function declaredRepo(
  agent: Pick<ResolvedAgent, "repos">,
  project: string,
): ResolvedAgent["repos"][number] | undefined {
  return (
    agent.repos.find((r) => r.path === `${PROJECTS_DIR}/${project}`) ??
    agent.repos.find((r) => repoName(r.url) === project)
  );
}

/** Projects the declaration names: repos under projects/ by directory, others by repo name. */
export function declaredProjects(agent: Pick<ResolvedAgent, "repos">): string[] {
  const names = agent.repos.map((r) =>
    r.path.startsWith(`${PROJECTS_DIR}/`) && !r.path.slice(PROJECTS_DIR.length + 1).includes("/")
      ? r.path.slice(PROJECTS_DIR.length + 1)
      : repoName(r.url),
  );
  return [...new Set(names)].sort();
}

/** A warning when the workspace is not under a persisted path: its work dies with the round. */
export function persistenceWarning(agent: AgentPart, dir: string): string | undefined {
  const persisted = agent.persist.some(
    (p) => p.type === "directory" && (dir === p.target || dir.startsWith(`${p.target}/`)),
  );
  if (persisted) return undefined;
  return (
    `~/${PROJECTS_DIR} is not a persisted path of ${agent.name}: work in ${dir} that is not ` +
    `pushed is lost at the next reset (add "${PROJECTS_DIR}" to agents.${agent.name}.persist)`
  );
}

/** `fix the login form, please` → `fix-the-login-form-please` (at most six words, 48 characters). */
export function topicSlug(prompt: string): string {
  const words = prompt
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w !== "");
  let slug = "";
  for (const word of words.slice(0, 6)) {
    const next = slug === "" ? word : `${slug}-${word}`;
    if (next.length > 48) break;
    slug = next;
  }
  return slug === "" ? (words[0]?.slice(0, 48) ?? "task") || "task" : slug;
}

/** The branch a task works on when the one asked for does not exist yet: `<agent>/<topic>`. */
export function topicBranch(agent: string, request: Pick<WorkspaceRequest, "prompt" | "branch">) {
  const topic = request.branch ?? topicSlug(request.prompt);
  return topic.startsWith(`${agent}/`) ? topic : `${agent}/${topic}`;
}

export async function prepareWorkspace(
  agent: AgentPart,
  request: WorkspaceRequest,
  deps: WorkspaceDeps,
): Promise<WorkspaceReport> {
  const dir = workspaceDir(agent, request.project);
  const warnings: string[] = [];
  const persistence = persistenceWarning(agent, dir);
  if (persistence) warnings.push(persistence);
  const git = gitIn(dir, agent, deps);

  let cloned = false;
  if (!(await isDirectory(path.join(dir, ".git")))) {
    const repo = declaredRepo(agent, request.project);
    if (!repo) {
      const declared = declaredProjects(agent);
      const clones = await existingClones(agent);
      throw new WorkspaceError(
        "unknown-project",
        `unknown project "${request.project}": no clone at ~/${PROJECTS_DIR}/${request.project} ` +
          `and no declared repo for it (declared projects: ${declared.join(", ") || "none"}` +
          `${clones.length > 0 ? `; clones in ~/${PROJECTS_DIR}: ${clones.join(", ")}` : ""})`,
        { workspace: dir, warnings },
      );
    }
    if ((await readdir(dir).catch(() => [])).length > 0) {
      throw new WorkspaceError(
        "workspace",
        `${dir} exists but is not a git clone: not cloning ${repo.url} over it`,
        { workspace: dir, warnings },
      );
    }
    deps.log?.(`cloning ${repo.url} into ${dir}`);
    await mkdir(path.dirname(dir), { recursive: true });
    const result = await deps.runner
      .run(
        "git",
        [
          ...GUARDED_GIT_CONFIG,
          "clone",
          "--quiet",
          ...(repo.branch ? ["--branch", repo.branch] : []),
          "--",
          repo.url,
          dir,
        ],
        {
          cwd: path.dirname(dir),
          env: gitEnv(agent, deps),
          allowFailure: true,
          timeoutMs: deps.cloneTimeoutMs ?? 10 * 60_000,
        },
      )
      .catch(asWorkspaceError(dir));
    if (result.code !== 0)
      throw new WorkspaceError(
        "workspace",
        `cloning ${repo.url} into ${dir} failed: ${lastLines(result.stderr)}`,
        { workspace: dir, warnings },
      );
    cloned = true;
  }

  // Independent questions, asked at once: this is on the path from request to runtime start.
  const [head, dirty, target] = await Promise.all([
    git(["symbolic-ref", "--quiet", "--short", "HEAD"], true),
    dirtyFiles(git),
    targetBranch(git, agent.name, request),
  ]);
  const current = head.stdout.trim();
  const report = (branch: string, created: boolean): WorkspaceReport => ({
    workspace: dir,
    branch,
    created,
    cloned,
    dirty,
    warnings,
  });
  if (current === target.name) {
    if (dirty.length > 0)
      warnings.push(
        `${dirty.length} uncommitted change(s) in ${dir} on ${current}: kept, the task runs with them`,
      );
    return report(current, false);
  }
  if (dirty.length > 0) {
    throw new WorkspaceError(
      "workspace",
      `${dir} has uncommitted changes on ${current || "a detached HEAD"}: not switching to ` +
        `${target.name} over them (commit, stash or discard them first): ${dirty.slice(0, 10).join(", ")}` +
        `${dirty.length > 10 ? `, and ${dirty.length - 10} more` : ""}`,
      { workspace: dir, branch: current, dirty, warnings },
    );
  }
  switch (target.kind) {
    case "local":
      await git(["switch", "--quiet", target.name]);
      return report(target.name, false);
    case "remote":
      await git(["switch", "--quiet", "--create", target.name, "--track", `origin/${target.name}`]);
      return report(target.name, false);
    case "new": {
      const [hasHead, hasOrigin] = await Promise.all([
        verify(git, "HEAD"),
        verify(git, "refs/remotes/origin/HEAD"),
      ]);
      if (!hasHead) {
        // An empty repository: nothing to branch from, so the first commit starts the branch.
        await git(["symbolic-ref", "HEAD", `refs/heads/${target.name}`]);
        return report(target.name, true);
      }
      const base = hasOrigin ? "origin/HEAD" : "HEAD";
      await git(["switch", "--quiet", "--no-track", "--create", target.name, base]);
      return report(target.name, true);
    }
  }
}

/** What the workspace looks like after a task: its branch, HEAD and uncommitted changes. */
export async function inspectWorkspace(
  agent: AgentPart,
  dir: string,
  deps: WorkspaceDeps,
): Promise<{ branch: string; commit?: string; dirty: string[] }> {
  const git = gitIn(dir, agent, deps);
  const branch = (await git(["symbolic-ref", "--quiet", "--short", "HEAD"], true)).stdout.trim();
  const head = await git(["rev-parse", "--verify", "--quiet", "HEAD"], true);
  return {
    branch,
    ...(head.code === 0 && { commit: head.stdout.trim() }),
    dirty: await dirtyFiles(git),
  };
}

type Git = (
  args: string[],
  allowFailure?: boolean,
) => Promise<{ code: number; stdout: string; stderr: string }>;

function gitEnv(agent: AgentPart, deps: WorkspaceDeps): NodeJS.ProcessEnv {
  return { ...(deps.env ?? process.env), HOME: agent.home, GIT_TERMINAL_PROMPT: "0" };
}

function gitIn(dir: string, agent: AgentPart, deps: WorkspaceDeps): Git {
  const env = gitEnv(agent, deps);
  return async (args, allowFailure = false) => {
    const result = await deps.runner
      .run("git", [...GUARDED_GIT_CONFIG, "-C", dir, ...args], {
        env,
        allowFailure: true,
        timeoutMs: 60_000,
      })
      .catch(asWorkspaceError(dir));
    if (result.code !== 0 && !allowFailure)
      throw new WorkspaceError(
        "workspace",
        `git ${args.join(" ")} in ${dir} failed: ${lastLines(result.stderr || result.stdout)}`,
        { workspace: dir },
      );
    return result;
  };
}

async function targetBranch(
  git: Git,
  agent: string,
  request: WorkspaceRequest,
): Promise<{ name: string; kind: "local" | "remote" | "new" }> {
  const candidates = request.branch ? [request.branch, topicBranch(agent, request)] : [];
  if (!request.branch) candidates.push(topicBranch(agent, request));
  const found = await Promise.all(
    candidates.map(async (name) => {
      const [local, remote] = await Promise.all([
        verify(git, `refs/heads/${name}`),
        verify(git, `refs/remotes/origin/${name}`),
      ]);
      return local ? "local" : remote ? "remote" : undefined;
    }),
  );
  for (const [index, kind] of found.entries()) {
    if (kind) return { name: candidates[index]!, kind };
  }
  return { name: topicBranch(agent, request), kind: "new" };
}

async function verify(git: Git, ref: string): Promise<boolean> {
  return (await git(["rev-parse", "--verify", "--quiet", ref], true)).code === 0;
}

async function dirtyFiles(git: Git): Promise<string[]> {
  const status = await git(["status", "--porcelain=v1", "--untracked-files=normal"]);
  return status.stdout.split("\n").filter((line) => line.trim() !== "");
}

async function existingClones(agent: AgentPart): Promise<string[]> {
  const dir = path.join(agent.home, PROJECTS_DIR);
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  const clones: string[] = [];
  for (const entry of entries) {
    if (entry.isDirectory() && (await isDirectory(path.join(dir, entry.name, ".git"))))
      clones.push(entry.name);
  }
  return clones.sort();
}

/** Projects the agent can work on: declared ones and existing clones. */
export async function knownProjects(agent: AgentPart): Promise<string[]> {
  return [...new Set([...declaredProjects(agent), ...(await existingClones(agent))])].sort();
}

async function isDirectory(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

/** git missing (or not startable) is the workspace's failure, said plainly, not a daemon bug. */
function asWorkspaceError(dir: string) {
  return (error: Error): never => {
    throw new WorkspaceError("workspace", `cannot run git for ${dir}: ${error.message}`, {
      workspace: dir,
    });
  };
}

function lastLines(text: string, count = 3): string {
  return (
    text
      .trim()
      .split("\n")
      .filter((l) => l.trim() !== "")
      .slice(-count)
      .join(" / ") || "no output"
  );
}
