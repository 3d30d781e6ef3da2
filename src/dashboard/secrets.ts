/**
 * Each declared human's dashboard secret: `<stateDir>/dashboard/humans/<user>`,
 * owned by that Unix user and readable by them alone (0400), in a root-owned
 * directory nobody else can list. Made by the dashboard when missing.
 */
import { lstat, readFile } from "node:fs/promises";
import path from "node:path";
import { ensureDir, writeFileAtomic } from "../os/files.ts";
import { parsePasswd } from "../os/tables.ts";
import type { ResolvedTown } from "../town/types.ts";
import { newSecret } from "./auth.ts";

export const dashboardDir = (town: Pick<ResolvedTown, "stateDir">) =>
  path.join(town.stateDir, "dashboard");

export const secretFile = (town: Pick<ResolvedTown, "stateDir">, unixUser: string) =>
  path.join(dashboardDir(town), "humans", unixUser);

/**
 * Make the missing secrets, fix owner and mode of the others, and return
 * every human's secret by declared name. Humans without a Unix account here
 * get none (and cannot sign in).
 */
export async function humanSecrets(town: ResolvedTown, etc = "/etc"): Promise<Map<string, string>> {
  const passwd = parsePasswd(await readFile(path.join(etc, "passwd"), "utf8"));
  await ensureDir(dashboardDir(town), 0o711);
  await ensureDir(path.join(dashboardDir(town), "humans"), 0o711);
  const secrets = new Map<string, string>();
  for (const human of town.humans) {
    const user = passwd.find((u) => u.name === human.unixUser);
    if (!user) continue;
    const file = secretFile(town, human.unixUser);
    const info = await lstat(file).catch(() => undefined);
    let secret: string | undefined;
    // Only a plain file of theirs is trusted; anything else is replaced.
    if (info?.isFile() && info.uid === user.uid && info.nlink === 1) {
      const text = (await readFile(file, "utf8")).trim();
      if (/^[0-9a-f]{64}$/.test(text)) secret = text;
    }
    if (!secret || (info && (info.mode & 0o777) !== 0o400)) {
      secret ??= newSecret();
      await writeFileAtomic(file, `${secret}\n`, { mode: 0o400, uid: user.uid, gid: user.gid });
    }
    secrets.set(human.name, secret);
  }
  return secrets;
}

/** The calling human's own secret (run as them: `nuketown dashboard url`). */
export async function readOwnSecret(town: ResolvedTown, unixUser: string): Promise<string> {
  const text = (await readFile(secretFile(town, unixUser), "utf8")).trim();
  if (!/^[0-9a-f]{64}$/.test(text))
    throw new Error(`${secretFile(town, unixUser)} holds no secret`);
  return text;
}
