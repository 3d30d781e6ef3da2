import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  AuditLog,
  type AuditRecord,
  canonicalJson,
  formatRecord,
  tailAudit,
  verifyAudit,
  ZERO_HASH,
} from "../../src/audit/log.ts";
import { RefusedError } from "../../src/errors.ts";

let root: string;
let cases = 0;

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "nt-test-audit-"));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A fresh log path in its own folder, and a clock that ticks one second per call. */
function fresh(): { file: string; clock: () => Date } {
  cases++;
  let tick = Date.UTC(2026, 0, 1);
  return {
    file: path.join(root, `case-${cases}`, "audit.jsonl"),
    clock: () => {
      tick += 1000;
      return new Date(tick);
    },
  };
}

/** A log with `count` records, closed again. */
async function logWith(count: number): Promise<{ file: string; records: AuditRecord[] }> {
  const { file, clock } = fresh();
  const log = new AuditLog(file, { clock });
  const records: AuditRecord[] = [];
  for (let i = 1; i <= count; i++) {
    records.push(
      await log.append("request", { id: `r${i}`, agent: "bob", argv: ["apt", "update"] }),
    );
  }
  await log.close();
  return { file, records };
}

async function lines(file: string): Promise<string[]> {
  return (await readFile(file, "utf8")).split("\n").slice(0, -1);
}

async function writeLines(file: string, content: string[]): Promise<void> {
  await writeFile(file, `${content.join("\n")}\n`);
}

describe("the audit log", () => {
  it("appends hash-chained records that verify", async () => {
    const { file, records } = await logWith(5);
    const written = await lines(file);
    assert.equal(written.length, 5);
    assert.deepEqual(
      written.map((l) => JSON.parse(l)),
      records,
    );
    assert.equal(records[0]!.prev, ZERO_HASH);
    assert.deepEqual(
      records.map((r) => r.seq),
      [1, 2, 3, 4, 5],
    );
    for (const [i, r] of records.entries()) {
      const { v, seq, time, event, data, prev } = r;
      const expected = createHash("sha256")
        .update(prev + canonicalJson({ v, seq, time, event, data }))
        .digest("hex");
      assert.equal(r.hash, expected);
      if (i > 0) assert.equal(r.prev, records[i - 1]!.hash);
    }
    const head = JSON.parse(await readFile(`${file}.head`, "utf8"));
    assert.deepEqual(head, { v: 1, seq: 5, hash: records[4]!.hash });
    assert.deepEqual(await verifyAudit(file), { ok: true, records: 5, head: records[4]!.hash });
  });

  it("fails verification at the line of an edited record", async () => {
    const { file } = await logWith(5);
    const content = await lines(file);
    content[2] = content[2]!.replace('"agent":"bob"', '"agent":"eve"');
    await writeLines(file, content);
    const result = await verifyAudit(file);
    assert.equal(result.ok, false);
    assert.ok(!result.ok);
    assert.equal(result.line, 3);
    assert.equal(result.records, 2);
    assert.match(result.problem, /hash mismatch/);
  });

  it("fails verification where a middle record was deleted", async () => {
    const { file } = await logWith(5);
    const content = await lines(file);
    content.splice(2, 1);
    await writeLines(file, content);
    const result = await verifyAudit(file);
    assert.ok(!result.ok);
    assert.equal(result.line, 3);
    assert.match(result.problem, /expected seq 3, found seq 4: record 3 is missing/);
  });

  it("fails verification where two records were swapped", async () => {
    const { file } = await logWith(5);
    const content = await lines(file);
    [content[1], content[2]] = [content[2]!, content[1]!];
    await writeLines(file, content);
    const result = await verifyAudit(file);
    assert.ok(!result.ok);
    assert.equal(result.line, 2);
    assert.match(result.problem, /expected seq 2, found seq 3/);
  });

  it("detects a truncated log through the head, and refuses to append to it", async () => {
    const { file } = await logWith(5);
    await writeLines(file, (await lines(file)).slice(0, 4));
    const result = await verifyAudit(file);
    assert.ok(!result.ok);
    assert.equal(result.line, 5);
    assert.equal(result.records, 4);
    assert.match(result.problem, /truncated: .*seq 5 but the log ends at seq 4/);

    const log = new AuditLog(file);
    await assert.rejects(log.append("request", { id: "after" }), RefusedError);
    await log.close();
    assert.equal((await lines(file)).length, 4, "nothing appended to a truncated log");
  });

  it("detects a chain rebuilt after an edit through the head", async () => {
    const { file } = await logWith(4);
    let prev = ZERO_HASH;
    const forged = (await lines(file)).map((line) => {
      const r = JSON.parse(line) as AuditRecord & { data: Record<string, unknown> };
      if (r.seq === 2) r.data.agent = "eve";
      const { v, seq, time, event, data } = r;
      const hash = createHash("sha256")
        .update(prev + canonicalJson({ v, seq, time, event, data }))
        .digest("hex");
      const line2 = JSON.stringify({
        v,
        seq,
        time,
        event,
        data: JSON.parse(canonicalJson(data)),
        prev,
        hash,
      });
      prev = hash;
      return line2;
    });
    await writeLines(file, forged);
    const result = await verifyAudit(file);
    assert.ok(!result.ok);
    assert.equal(result.line, 4);
    assert.match(result.problem, /does not match .*\.head/);
  });

  it("reports a malformed line with its number", async () => {
    const { file } = await logWith(4);
    const content = await lines(file);
    content[2] = "not json";
    await writeLines(file, content);
    const result = await verifyAudit(file);
    assert.ok(!result.ok);
    assert.equal(result.line, 3);
    assert.match(result.problem, /not valid JSON/);
  });

  it("continues the chain after reopening", async () => {
    const { file, records } = await logWith(2);
    const log = new AuditLog(file);
    const third = await log.append("decision", { id: "r2", approved: true });
    await log.close();
    assert.equal(third.seq, 3);
    assert.equal(third.prev, records[1]!.hash);
    assert.deepEqual(await verifyAudit(file), { ok: true, records: 3, head: third.hash });
  });

  it("cuts off a torn last line on open and records the repair", async () => {
    const { file } = await logWith(3);
    const torn = '{"v":1,"seq":4,"time":"2026-01-01T00:00:09.000Z","ev';
    await appendFile(file, torn);
    const before = await verifyAudit(file);
    assert.ok(!before.ok);
    assert.equal(before.line, 4);
    assert.match(before.problem, /incomplete last line/);

    const log = new AuditLog(file);
    const next = await log.append("daemon.started", { pid: 42 });
    await log.close();
    const records = (await lines(file)).map((l) => JSON.parse(l) as AuditRecord);
    assert.equal(records.length, 5);
    assert.equal(records[3]!.event, "audit.repaired");
    assert.equal(records[3]!.data.afterSeq, 3);
    assert.equal(records[3]!.data.bytes, Buffer.byteLength(torn));
    assert.deepEqual(records[4], next);
    assert.equal(next.seq, 5);
    assert.deepEqual(await verifyAudit(file), { ok: true, records: 5, head: next.hash });
  });

  it("keeps 200 concurrent appends in call order with a sound chain", async () => {
    const { file, clock } = fresh();
    const log = new AuditLog(file, { clock });
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => log.append("request", { i })),
    );
    await log.close();
    const written = (await lines(file)).map((l) => JSON.parse(l) as AuditRecord);
    assert.equal(written.length, 200);
    for (let i = 0; i < 200; i++) {
      assert.equal(written[i]!.seq, i + 1);
      assert.equal(written[i]!.data.i, i);
      assert.deepEqual(results[i], written[i]);
    }
    assert.deepEqual(await verifyAudit(file), { ok: true, records: 200, head: results[199]!.hash });
  });

  it("creates the log and its head 0640 in the given group, whatever the umask", async () => {
    const { file } = fresh();
    const gid = process.getgid!();
    const old = process.umask(0o077);
    try {
      const log = new AuditLog(file, { group: gid });
      await log.append("daemon.started", { pid: 1 });
      await log.close();
    } finally {
      process.umask(old);
    }
    for (const f of [file, `${file}.head`]) {
      const info = await stat(f);
      assert.equal(info.mode & 0o777, 0o640, f);
      assert.equal(info.gid, gid, f);
    }
  });

  it("refuses data with a key named like a secret", async () => {
    const { file } = fresh();
    const log = new AuditLog(file);
    await assert.rejects(log.append("request", { id: "r1", token: "abc" }), (error) => {
      assert.ok(error instanceof RefusedError);
      assert.match(error.message, /data\.token/);
      return true;
    });
    await assert.rejects(
      log.append("request", { env: [{ name: "x", Password: "p" }] }),
      /data\.env\[0\]\.Password/,
    );
    await log.close();
    await assert.rejects(stat(file), { code: "ENOENT" }, "nothing was written");
  });

  it("tails the last records and formats each on one line", async () => {
    const { file, clock } = fresh();
    const log = new AuditLog(file, { clock });
    await log.append("daemon.started", { pid: 7 });
    await log.append("request", {
      id: "r1",
      agent: "bob",
      command: "apt-get install jq\n\u001b[2J",
      // Invisible characters that would hide or fake a word on the terminal.
      note: "a\u2060b\u3164c\u00a0d\u202ee\u2028f",
    });
    const last = await log.append("decision", { id: "r1", approved: true, by: "alice" });
    await log.close();

    const tail = await tailAudit(file, 2);
    assert.deepEqual(
      tail.map((r) => r.seq),
      [2, 3],
    );
    assert.deepEqual(await tailAudit(file, 10).then((t) => t.length), 3);
    assert.deepEqual(await tailAudit(path.join(root, "absent.jsonl"), 5), []);

    assert.equal(
      formatRecord(last),
      `2026-01-01T00:00:03.000Z #3 decision approved=true by=alice id=r1 [${last.hash.slice(0, 12)}]`,
    );
    const request = formatRecord(tail[0]!);
    assert.ok(!request.includes("\n") && !request.includes("\u001b"), request);
    assert.match(request, /command="apt-get install jq\\n\\u001b\[2J"/);
    assert.match(request, /note="a\\u2060b\\u3164c\\u00a0d\\u202ee\\u2028f"/);
  });
});
