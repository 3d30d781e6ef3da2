/**
 * Workspace bootstrap: a task names a project, and runs in
 * `<home>/projects/<project>`: the clone already there, or a fresh clone of
 * the declared repo. It works on the branch asked for, or on
 * `<agent>/<topic>`. Uncommitted changes are never discarded: a task that
 * would have to switch branches over them fails and says which files; a task
 * for the branch already checked out runs in place and reports them.
 *
 * The topic comes from the prompt, and every user can read every command
 * line in /proc: a branch name never goes into git's argv. Refs are looked up
 * and created on git's stdin, and HEAD and the branch's upstream are written
 * the way git writes them (under its `.lock` files).
 */

import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import {
  FILTER_NAMES_ARGS,
  filterNames,
  filterOverrides,
  GUARDED_GIT_CONFIG,
} from "../host/git-guard.ts";
import type { Runner } from "../os/process.ts";
import type { ResolvedAgent } from "../town/types.ts";
import { type FailureReason, isBranchName, type WorkspaceReport } from "./protocol.ts";

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
    // The checkout would run filters the agent's global config declares for the repo's attributes.
    const filters = await configuredFilters(path.dirname(dir), agent, deps);
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
          env: { ...gitEnv(agent, deps), ...filterOverrides(filters) },
          allowFailure: true,
          timeoutMs: deps.cloneTimeoutMs ?? 10 * 60_000,
          untrustedChildren: { exitGraceMs: 2000 },
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

  const names = candidateBranches(agent.name, request);
  // Checked here, not by git: the name stays out of git's argv.
  const invalid = names.find((name) => !isBranchName(name));
  if (invalid !== undefined)
    throw new WorkspaceError("workspace", `${JSON.stringify(invalid)} is not a valid branch name`, {
      workspace: dir,
      warnings,
    });
  // Independent questions, asked at once: this is on the path from request to runtime start.
  const [head, dirty, refs] = await Promise.all([
    git(["symbolic-ref", "--quiet", "--short", "HEAD"], true),
    dirtyFiles(git),
    resolveCommits(git, [
      "HEAD",
      "refs/remotes/origin/HEAD",
      ...names.flatMap((name) => [`refs/heads/${name}`, `refs/remotes/origin/${name}`]),
    ]),
  ]);
  const target = targetBranch(names, refs);
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
  const gitDir = path.join(dir, ".git");
  const ref = `refs/heads/${target.name}`;
  if (target.kind === "local") {
    await switchTo(git, gitDir, ref, target.commit);
    return report(target.name, false);
  }
  const base =
    target.kind === "remote"
      ? target.commit
      : (refs.get("refs/remotes/origin/HEAD") ?? refs.get("HEAD"));
  if (base === undefined) {
    // An empty repository: nothing to branch from, so the first commit starts the branch.
    await writeUnderLock(gitDir, "HEAD", `ref: ${ref}\n`);
    return report(target.name, true);
  }
  // Checked out first: when that fails (files in the way), no branch was made.
  await git(["switch", "--quiet", "--detach", base]);
  await git(
    ["update-ref", "--stdin", "-m", "nuketown: task branch"],
    false,
    `create ${ref} ${base}\n`,
  );
  if (target.kind === "remote") await setUpstream(gitDir, target.name);
  await writeUnderLock(gitDir, "HEAD", `ref: ${ref}\n`);
  return report(target.name, target.kind === "new");
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
  input?: string,
) => Promise<{ code: number; stdout: string; stderr: string }>;

function gitEnv(agent: AgentPart, deps: WorkspaceDeps): NodeJS.ProcessEnv {
  return { ...(deps.env ?? process.env), HOME: agent.home, GIT_TERMINAL_PROMPT: "0" };
}

/** Filter drivers configured for git run in `cwd` (repo, global and system config). */
async function configuredFilters(
  cwd: string,
  agent: AgentPart,
  deps: WorkspaceDeps,
): Promise<string[]> {
  const listed = await deps.runner
    .run("git", [...GUARDED_GIT_CONFIG, "-C", cwd, ...FILTER_NAMES_ARGS], {
      env: gitEnv(agent, deps),
      allowFailure: true,
      timeoutMs: 60_000,
      untrustedChildren: { exitGraceMs: 2000 },
    })
    .catch(asWorkspaceError(cwd));
  // 1: none configured. Anything else: the config cannot be read, and git would fail on it too.
  if (listed.code > 1)
    throw new WorkspaceError(
      "workspace",
      `reading the git config in ${cwd} failed: ${lastLines(listed.stderr)}`,
      { workspace: cwd },
    );
  return filterNames(listed.stdout);
}

/**
 * git in the workspace, with the repo's executable config switched off: the
 * guard's settings, and no filter driver (listed once, before the first
 * command that could check anything out).
 */
function gitIn(dir: string, agent: AgentPart, deps: WorkspaceDeps): Git {
  let env: Promise<NodeJS.ProcessEnv> | undefined;
  return async (args, allowFailure = false, input = undefined) => {
    env ??= configuredFilters(dir, agent, deps).then((names) => ({
      ...gitEnv(agent, deps),
      ...filterOverrides(names),
    }));
    const result = await deps.runner
      .run("git", [...GUARDED_GIT_CONFIG, "-C", dir, ...args], {
        env: await env,
        allowFailure: true,
        timeoutMs: 60_000,
        untrustedChildren: { exitGraceMs: 2000 },
        ...(input !== undefined && { input }),
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

/** The branches a task may mean, in order: the one asked for, then `<agent>/<topic>`. */
function candidateBranches(agent: string, request: WorkspaceRequest): string[] {
  const topic = topicBranch(agent, request);
  return request.branch && request.branch !== topic ? [request.branch, topic] : [topic];
}

type Target =
  | { name: string; kind: "local" | "remote"; commit: string }
  | { name: string; kind: "new" };

function targetBranch(names: readonly string[], refs: ReadonlyMap<string, string>): Target {
  for (const name of names) {
    const local = refs.get(`refs/heads/${name}`);
    if (local) return { name, kind: "local", commit: local };
    const remote = refs.get(`refs/remotes/origin/${name}`);
    if (remote) return { name, kind: "remote", commit: remote };
  }
  return { name: names.at(-1)!, kind: "new" };
}

/** The commits these refs point at, asked on stdin; a ref that names no commit is left out. */
async function resolveCommits(git: Git, refs: readonly string[]): Promise<Map<string, string>> {
  const answer = await git(
    ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
    false,
    refs.map((ref) => `${ref}\n`).join(""),
  );
  const lines = answer.stdout.split("\n");
  const found = new Map<string, string>();
  for (const [index, ref] of refs.entries()) {
    const [commit, type] = (lines[index] ?? "").split(" ");
    if (type === "commit" && commit && /^[0-9a-f]{40,64}$/.test(commit)) found.set(ref, commit);
  }
  return found;
}

/** Check out `commit` (detached), then make HEAD the branch `ref` that points at it. */
async function switchTo(git: Git, gitDir: string, ref: string, commit: string): Promise<void> {
  await git(["switch", "--quiet", "--detach", commit]);
  await writeUnderLock(gitDir, "HEAD", `ref: ${ref}\n`);
}

/** `branch.<name>.remote = origin`, `.merge = refs/heads/<name>`, as `switch --track` sets. */
async function setUpstream(gitDir: string, name: string): Promise<void> {
  const quoted = (text: string) => `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  const config = await readFile(path.join(gitDir, "config"), "utf8");
  await writeUnderLock(
    gitDir,
    "config",
    `${config}${config.endsWith("\n") || config === "" ? "" : "\n"}[branch ${quoted(name)}]\n` +
      `\tremote = origin\n\tmerge = ${quoted(`refs/heads/${name}`)}\n`,
  );
}

/** Writes a file of the git dir as git does: `<file>.lock` made exclusively, then renamed over. */
async function writeUnderLock(gitDir: string, file: string, content: string): Promise<void> {
  const target = path.join(gitDir, file);
  const lock = `${target}.lock`;
  const handle = await open(lock, "wx", 0o644).catch((error: NodeJS.ErrnoException) => {
    throw new WorkspaceError(
      "workspace",
      error.code === "EEXIST"
        ? `${lock} exists: another git is changing ${file} (or died doing so: remove it)`
        : `cannot write ${target}: ${error.message}`,
      { workspace: path.dirname(gitDir) },
    );
  });
  try {
    await handle.writeFile(content);
    await handle.sync();
    await handle.close();
    await rename(lock, target);
  } catch (error) {
    await handle.close().catch(() => {});
    await rm(lock, { force: true });
    throw error;
  }
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
