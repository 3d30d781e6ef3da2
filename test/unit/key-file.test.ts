/**
 * The town's age key decrypts every agent's secrets: only root may read it
 * or swap it.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { keyFileProblem } from "../../src/host/key-file.ts";

const KEY = "/var/lib/nuketown/age/keys.txt";
const dir = (uid: number, mode: number) => ({ path: "/var/lib/nuketown/age", uid, mode });

describe("the age key file", () => {
  it("may be used when root alone can read it and its directory", () => {
    assert.equal(keyFileProblem(KEY, { uid: 0, mode: 0o100600 }, dir(0, 0o40700)), undefined);
    assert.equal(keyFileProblem(KEY, { uid: 0, mode: 0o100400 }, dir(0, 0o40755)), undefined);
  });

  it("is refused when others can read it, with the chmod that fixes it", () => {
    assert.equal(
      keyFileProblem(KEY, { uid: 0, mode: 0o100644 }, dir(0, 0o40755)),
      `the age key ${KEY} is readable or writable by others (mode 0644): any agent could decrypt every agent's secrets; fix: chmod 600 ${KEY}`,
    );
    assert.match(
      keyFileProblem(KEY, { uid: 0, mode: 0o100640 }, dir(0, 0o40755)) ?? "",
      /mode 0640/,
    );
  });

  it("is refused when root does not own it, or its directory lets another swap it", () => {
    assert.match(
      keyFileProblem(KEY, { uid: 1000, mode: 0o100600 }, dir(0, 0o40755)) ?? "",
      /is owned by uid 1000, not root: .*fix: chown root: /,
    );
    assert.match(
      keyFileProblem(KEY, { uid: 0, mode: 0o100600 }, dir(0, 0o41777)) ?? "",
      /which others may write \(mode 0777\), so the key can be swapped/,
    );
    assert.match(
      keyFileProblem(KEY, { uid: 0, mode: 0o100600 }, dir(1000, 0o40755)) ?? "",
      /which uid 1000 owns/,
    );
  });
});
