/**
 * Workspace trust for a directory the rendered runtime configuration does
 * not list (a project cloned after the round began): an interactive claude
 * would otherwise stop at its "do you trust this folder?" dialog. Runs as the
 * agent, on the agent's own `~/.claude.json`.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../../os/files.ts";
import { isObject, type Json } from "./json.ts";

export async function trustClaudeProject(home: string, dir: string): Promise<void> {
  const file = path.join(home, ".claude.json");
  let state: Json = {};
  try {
    const parsed: unknown = JSON.parse(await readFile(file, "utf8"));
    if (isObject(parsed)) state = parsed;
  } catch {
    // Missing or unreadable: claude starts from nothing too.
  }
  const projects = isObject(state.projects) ? state.projects : {};
  const project = isObject(projects[dir]) ? projects[dir] : {};
  if (project.hasTrustDialogAccepted === true) return;
  const next = {
    ...state,
    projects: {
      ...projects,
      [dir]: { ...project, hasTrustDialogAccepted: true, hasCompletedProjectOnboarding: true },
    },
  };
  await writeFileAtomic(file, `${JSON.stringify(next, null, 2)}\n`, { mode: 0o600 });
}
