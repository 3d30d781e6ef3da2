/**
 * Runs as an agent (see agent-files.ts): reads [{ path, mode, content }] and
 * [{ path, link }] from stdin, writes each file atomically with its mode from
 * creation, and points each link at its directory (made when missing).
 * Directories it creates are private (0700): they hold keys and config.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  fchmodSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeSync,
} from "node:fs";
import path from "node:path";

type Entry = { path: string; mode: number; content: string } | { path: string; link: string };

const entries = JSON.parse(readFileSync(0, "utf8")) as Entry[];
for (const entry of entries) {
  try {
    writeEntry(entry);
  } catch (error) {
    const { code, path: where } = error as NodeJS.ErrnoException;
    process.stderr.write(
      `cannot write ${entry.path}: ${code ?? String(error)}${where && where !== entry.path ? ` (${where})` : ""}\n`,
    );
    process.exit(1);
  }
}

function writeEntry(entry: Entry): void {
  mkdirSync(path.dirname(entry.path), { recursive: true, mode: 0o700 });
  if ("link" in entry) {
    mkdirSync(entry.link, { recursive: true, mode: 0o700 });
    // A new link renamed over whatever is there: a directory the runtime made is left alone.
    const temp = path.join(path.dirname(entry.path), `.${path.basename(entry.path)}.link.tmp`);
    rmSync(temp, { force: true });
    symlinkSync(entry.link, temp);
    try {
      renameSync(temp, entry.path);
    } catch (error) {
      rmSync(temp, { force: true });
      throw error;
    }
    return;
  }
  const temp = path.join(
    path.dirname(entry.path),
    `.${path.basename(entry.path)}.${randomBytes(6).toString("hex")}.tmp`,
  );
  const fd = openSync(temp, "wx", entry.mode);
  try {
    writeSync(fd, Buffer.from(entry.content, "base64"));
    fchmodSync(fd, entry.mode);
    fsyncSync(fd);
  } catch (error) {
    closeSync(fd);
    rmSync(temp, { force: true });
    throw error;
  }
  closeSync(fd);
  renameSync(temp, entry.path);
}
