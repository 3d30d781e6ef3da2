/**
 * The Matrix transport's restart-safety state file, written in place before
 * each delivery. The transport itself is tested against Synapse
 * (test/integration/chat-matrix.test.ts).
 */
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { loadSyncFile, StateWriter, SYNC_STATE_FILE } from "../../src/chat/matrix/transport.ts";

const dirs: string[] = [];
after(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function stateFile(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), "nt-test-matrix-state-"));
  dirs.push(dir);
  return path.join(dir, "state", SYNC_STATE_FILE);
}

const user = "@agent:example.org";
const state = (since: string, handled: string[]) => ({
  userId: user,
  since,
  watermark: 7,
  handled,
});

describe("Matrix sync state file", () => {
  it("is overwritten in place, 0600, and a shorter state after a longer one reads back whole", async () => {
    const file = await stateFile();
    const writer = new StateWriter(file);
    const lines: string[] = [];
    writer.save(state("s1_long_token_0", ["$a", "$b", "$c"]));
    const { ino, mode } = await stat(file);
    assert.equal(mode & 0o777, 0o600);
    writer.save(state("s2", ["$é"]));
    assert.equal((await stat(file)).ino, ino, "the same file, not a renamed copy");
    assert.deepEqual(
      loadSyncFile(file, user, (line) => lines.push(line)),
      state("s2", ["$é"]),
    );
    writer.close();
    // A new writer (a restart) pads to what the file already holds.
    const again = new StateWriter(file);
    again.save(state("s3", []));
    again.close();
    assert.deepEqual(
      loadSyncFile(file, user, (line) => lines.push(line)),
      state("s3", []),
    );
    assert.deepEqual(lines, []);
  });

  it("takes over a file an earlier version wrote, making it private", async () => {
    const file = await stateFile();
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, `${JSON.stringify(state("s9_old", ["$x", "$y"]))}\n`, { mode: 0o644 });
    const writer = new StateWriter(file);
    writer.save(state("s10", ["$x", "$y", "$z"]));
    writer.close();
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.deepEqual(JSON.parse(await readFile(file, "utf8")), state("s10", ["$x", "$y", "$z"]));
  });
});
