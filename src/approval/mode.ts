/**
 * Test mode: a file that says "auto-approve" or "auto-deny". Only root and
 * the approvers group may write it (root:approvers, 0660, in a root-owned
 * directory); a file anyone else could have written is ignored.
 */
import { chmod, chown, lstat, open, readFile } from "node:fs/promises";
import { RefusedError } from "../errors.ts";
import type { ResolvedTown } from "../town/types.ts";

export type ApprovalMode = "off" | "auto-approve" | "auto-deny";
export const MODES: readonly ApprovalMode[] = ["off", "auto-approve", "auto-deny"];

export async function readApprovalMode(town: ResolvedTown): Promise<ApprovalMode> {
  const file = town.paths.modeFile;
  const info = await lstat(file).catch(() => undefined);
  if (!info) return "off";
  // Fail safe: a mode file that is not root's, or that others could write, asks humans as usual.
  if (!info.isFile() || info.uid !== 0 || (info.mode & 0o002) !== 0) return "off";
  const text = (await readFile(file, "utf8").catch(() => "")).trim();
  return text === "auto-approve" || text === "auto-deny" ? text : "off";
}

/**
 * Set the mode. Root creates the file (root:approvers 0660); an approver
 * rewrites it in place through the group permission.
 */
export async function writeApprovalMode(
  town: ResolvedTown,
  mode: ApprovalMode,
  approversGid?: number,
): Promise<void> {
  const file = town.paths.modeFile;
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(file, "r+");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EACCES")
      throw new RefusedError(
        `only root and the ${town.approval.approversGroup} group may set the approval mode`,
      );
    if (code !== "ENOENT") throw error;
    if (process.geteuid?.() !== 0)
      throw new RefusedError("the mode file does not exist yet: root must set the mode once");
    handle = await open(file, "wx", 0o660);
    if (approversGid !== undefined) await chown(file, 0, approversGid);
    await chmod(file, 0o660);
  }
  try {
    await handle.truncate(0);
    await handle.write(mode === "off" ? "" : `${mode}\n`, 0);
    await handle.sync();
  } finally {
    await handle.close();
  }
}
