/**
 * Directories held open, and their entries reached through the open
 * descriptor (`/proc/self/fd/<fd>/<name>`: the kernel resolves it to the
 * very directory that was opened, as openat(2) would), never through a path
 * that someone could change meanwhile. Every directory is opened with
 * O_NOFOLLOW, so root walking a tree that others can write follows no
 * symlink they planted, before or during the walk. Node has no openat,
 * mkdirat or renameat; this is how to get them.
 */
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  fstatSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  renameSync,
  rmdirSync,
  type Stats,
  symlinkSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import path from "node:path";

const DIRECTORY = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** A single path component: no slash, not `.` or `..`. */
function checkName(name: string): string {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0"))
    throw new Error(`not a plain file name: ${JSON.stringify(name)}`);
  return name;
}

/** Errors name the logical path, not /proc/self/fd/N. */
function named<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    if (typeof e.code === "string" && typeof e.syscall === "string") {
      e.message = `${e.code}: ${e.syscall} ${where}`;
      e.path = where;
    }
    throw error;
  }
}

export class AnchoredDir {
  readonly fd: number;
  /** Where it was opened, for messages (the descriptor, not this, is what is used). */
  readonly path: string;
  readonly stats: Stats;

  private constructor(fd: number, where: string) {
    this.fd = fd;
    this.path = where;
    try {
      this.stats = fstatSync(fd);
    } catch (error) {
      closeSync(fd);
      throw error;
    }
  }

  /**
   * Open `dir`; its last component must not be a symlink (ELOOP or ENOTDIR
   * otherwise). The components above it are followed: pass a path whose
   * parents only root can change.
   */
  static open(dir: string): AnchoredDir {
    return new AnchoredDir(
      named(dir, () => openSync(dir, DIRECTORY)),
      dir,
    );
  }

  /** The entry `name` of this directory, as a path that resolves through the descriptor. */
  at(name: string): string {
    return `/proc/self/fd/${this.fd}/${checkName(name)}`;
  }

  #where(name: string): string {
    return path.join(this.path, name);
  }

  /** The entry's own lstat, or undefined when it is not there. */
  lstat(name: string): Stats | undefined {
    return named(this.#where(name), () => lstatSync(this.at(name), { throwIfNoEntry: false }));
  }

  names(): string[] {
    return named(this.path, () => readdirSync(`/proc/self/fd/${this.fd}`));
  }

  /** Open a directory entry without following it (ELOOP/ENOTDIR for a symlink or a file). */
  openDir(name: string): AnchoredDir {
    const where = this.#where(name);
    return new AnchoredDir(
      named(where, () => openSync(this.at(name), DIRECTORY)),
      where,
    );
  }

  mkdir(name: string, mode: number): void {
    named(this.#where(name), () => mkdirSync(this.at(name), { mode }));
  }

  unlink(name: string): void {
    named(this.#where(name), () => unlinkSync(this.at(name)));
  }

  rmdir(name: string): void {
    named(this.#where(name), () => rmdirSync(this.at(name)));
  }

  /** Rename an entry of this directory to another name in it (replacing what is there). */
  rename(from: string, to: string): void {
    named(this.#where(to), () => renameSync(this.at(from), this.at(to)));
  }

  /** A new symlink `name` → `target`, owned by uid:gid (never follows anything). */
  symlink(target: string, name: string, uid: number, gid: number): void {
    const where = this.#where(name);
    named(where, () => symlinkSync(target, this.at(name)));
    // lchown(2) changes the link itself, never what it points at.
    named(where, () => lchownSync(this.at(name), uid, gid));
  }

  /**
   * A new file `name` (it must not exist: O_EXCL, O_NOFOLLOW) with `content`,
   * owned by uid:gid with `mode` before anything is written to it.
   */
  createFile(name: string, content: Buffer, mode: number, uid: number, gid: number): void {
    const where = this.#where(name);
    const fd = named(where, () => openSync(this.at(name), NEW_FILE, 0o600));
    try {
      named(where, () => {
        fchownSync(fd, uid, gid);
        fchmodSync(fd, mode);
        for (let offset = 0; offset < content.length; ) {
          offset += writeSync(fd, content, offset);
        }
      });
    } catch (error) {
      closeSync(fd);
      try {
        unlinkSync(this.at(name));
      } catch {}
      throw error;
    }
    closeSync(fd);
  }

  /** Set owner and mode of this directory (through its descriptor). */
  own(uid: number, gid: number, mode: number): void {
    named(this.path, () => {
      fchownSync(this.fd, uid, gid);
      fchmodSync(this.fd, mode);
    });
  }

  close(): void {
    closeSync(this.fd);
  }
}
