/**
 * Parsers for the system tables the reconciler observes: /etc/passwd,
 * /etc/group and /proc/self/mountinfo. Pure, so they are tested on text.
 */

export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly gecos: string;
  readonly home: string;
  readonly shell: string;
}

export interface GroupEntry {
  readonly name: string;
  readonly gid: number;
  readonly members: readonly string[];
}

export interface MountEntry {
  /** Where it is mounted (octal escapes decoded). */
  readonly mountPoint: string;
  /** The path inside the source filesystem that is mounted (a bind mount's source). */
  readonly root: string;
  readonly fsType: string;
  /** Device or source, e.g. /dev/loop3. */
  readonly source: string;
  /** The file system's own options, e.g. `rw,hidepid=invisible` for proc. */
  readonly superOptions?: string;
}

const lines = (text: string) =>
  text.split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));

export function parsePasswd(text: string): PasswdEntry[] {
  return lines(text).flatMap((line) => {
    const [name, , uid, gid, gecos = "", home = "", shell = ""] = line.split(":");
    if (!name || uid === undefined || gid === undefined) return [];
    return [{ name, uid: Number(uid), gid: Number(gid), gecos, home, shell }];
  });
}

export function parseGroup(text: string): GroupEntry[] {
  return lines(text).flatMap((line) => {
    const [name, , gid, members = ""] = line.split(":");
    if (!name || gid === undefined) return [];
    return [{ name, gid: Number(gid), members: members.split(",").filter((m) => m !== "") }];
  });
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
const decodeOctal = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );

export function parseMountinfo(text: string): MountEntry[] {
  return lines(text).flatMap((line) => {
    const fields = line.split(" ");
    const separator = fields.indexOf("-");
    if (separator < 0) return [];
    const root = fields[3];
    const mountPoint = fields[4];
    const fsType = fields[separator + 1];
    const source = fields[separator + 2];
    const superOptions = fields[separator + 3];
    if (root === undefined || mountPoint === undefined || fsType === undefined) return [];
    return [
      {
        root: decodeOctal(root),
        mountPoint: decodeOctal(mountPoint),
        fsType,
        source: decodeOctal(source ?? ""),
        ...(superOptions !== undefined && { superOptions: decodeOctal(superOptions) }),
      },
    ];
  });
}

/** Mounts at or below `dir`, deepest first: the order to unmount them in. */
export function mountsBelow(mounts: readonly MountEntry[], dir: string): MountEntry[] {
  return mounts
    .filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(`${dir}/`))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
}

/** `/etc/subuid` or `/etc/subgid`: the [first, count] ranges of a user, named by name or uid. */
export function parseSubordinateIds(
  text: string,
  user: { readonly name: string; readonly uid: number },
): [number, number][] {
  return lines(text).flatMap((line) => {
    const [owner, first, count] = line.split(":");
    if (owner !== user.name && owner !== String(user.uid)) return [];
    const range: [number, number] = [Number(first), Number(count)];
    return Number.isSafeInteger(range[0]) && Number.isSafeInteger(range[1]) ? [range] : [];
  });
}

/** The fields of `/proc/<pid>/stat` that say who started a process and on which terminal. */
export interface ProcStat {
  readonly pid: number;
  readonly comm: string;
  readonly ppid: number;
  /** The controlling terminal's device number, 0 for none. */
  readonly ttyNr: number;
}

export function parseProcStat(text: string): ProcStat | undefined {
  // comm is in parentheses and may itself hold ") ": the last one ends it.
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) return undefined;
  const [, ppid, , , ttyNr] = text
    .slice(close + 2)
    .trim()
    .split(" ");
  const pid = Number(text.slice(0, open).trim());
  if (!Number.isInteger(pid) || ppid === undefined || ttyNr === undefined) return undefined;
  return { pid, comm: text.slice(open + 1, close), ppid: Number(ppid), ttyNr: Number(ttyNr) };
}

/** A controlling terminal's device number as the name of its device, as `ps` shows it. */
export function ttyDeviceName(ttyNr: number): string | undefined {
  if (!Number.isInteger(ttyNr) || ttyNr <= 0) return undefined;
  const major = (ttyNr >> 8) & 0xfff;
  const minor = (ttyNr & 0xff) | ((ttyNr >> 12) & 0xfff00);
  if (major >= 136 && major <= 143) return `/dev/pts/${(major - 136) * 256 + minor}`;
  if (major === 4) return minor < 64 ? `/dev/tty${minor}` : `/dev/ttyS${minor - 64}`;
  if (major === 5 && minor === 1) return "/dev/console";
  return `/dev/char/${major}:${minor}`;
}

/** What reset needs to know of a process, from /proc/<pid>/status. */
export interface ProcStatus {
  readonly pid: number;
  /** The command name (`Name:`), for messages. */
  readonly name: string;
  /** One letter: R, S, D, T, t, I, and Z (zombie) or X (dead), which are gone already. */
  readonly state: string;
  /** Real, effective, saved and file-system uid, in that order. */
  readonly uids: readonly number[];
}

/** One `Key:\tvalue` line of a status file (looked up, not split: a scan reads hundreds). */
function statusField(text: string, key: string): string | undefined {
  const line = text.startsWith(`${key}:`) ? 0 : text.indexOf(`\n${key}:`) + 1;
  if (line === 0 && !text.startsWith(`${key}:`)) return undefined;
  const start = line + key.length + 1;
  const end = text.indexOf("\n", start);
  return text.slice(start, end < 0 ? undefined : end).trim();
}

/** /proc/<pid>/status; undefined when it lacks the Uid or State lines. */
export function parseProcStatus(pid: number, text: string): ProcStatus | undefined {
  const state = statusField(text, "State")?.charAt(0);
  const uids = statusField(text, "Uid")?.split(/\s+/).map(Number);
  if (!state || uids === undefined || uids.length < 4 || uids.some(Number.isNaN)) return undefined;
  return { pid, name: statusField(text, "Name") ?? "", state, uids };
}

/**
 * A live process that runs as `uid`: its real, effective or saved uid is it
 * (a setuid program the agent started counts). Zombies and dead processes
 * are gone already: they hold nothing but a pid, and wait for a parent that
 * may be slow to reap them.
 */
export function runsAs(status: ProcStatus, uid: number): boolean {
  if (status.state === "Z" || status.state === "X") return false;
  return status.uids.slice(0, 3).includes(uid);
}
