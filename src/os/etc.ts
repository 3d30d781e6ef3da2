/**
 * The host's account and mount tables, read: /etc/passwd, /etc/group and
 * /proc/self/mountinfo (parsed by the pure functions in tables.ts). A table
 * that cannot be read reads as empty, as on a host that has none.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import {
  type GroupEntry,
  type MountEntry,
  type PasswdEntry,
  parseGroup,
  parseMountinfo,
  parsePasswd,
} from "./tables.ts";

const text = (file: string) => readFile(file, "utf8").catch(() => "");

/** `etc` is the directory holding passwd and group (tests point it elsewhere). */
export async function readPasswd(etc = "/etc"): Promise<PasswdEntry[]> {
  return parsePasswd(await text(path.join(etc, "passwd")));
}

export async function readGroup(etc = "/etc"): Promise<GroupEntry[]> {
  return parseGroup(await text(path.join(etc, "group")));
}

export async function readMountinfo(file = "/proc/self/mountinfo"): Promise<MountEntry[]> {
  return parseMountinfo(await text(file));
}
