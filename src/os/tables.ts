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
    if (root === undefined || mountPoint === undefined || fsType === undefined) return [];
    return [
      {
        root: decodeOctal(root),
        mountPoint: decodeOctal(mountPoint),
        fsType,
        source: decodeOctal(source ?? ""),
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
