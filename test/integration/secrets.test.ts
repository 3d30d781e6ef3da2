/**
 * The secrets layer against the real age, sops, ssh-keygen and gpg: files
 * encrypted here with a fresh age identity decrypt to the exact bytes, and
 * failures name file and key without ever showing plaintext.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { MissingToolError } from "../../src/errors.ts";
import {
  createDecryptor,
  derivePublicKey,
  importGpgKey,
  SecretError,
} from "../../src/host/secrets.ts";
import { systemRunner } from "../../src/os/process.ts";
import type { ResolvedAgent } from "../../src/town/types.ts";
import { exampleTown } from "../support/fixtures.ts";
import { uidsOf } from "../support/uids.ts";

const run = systemRunner.run;

let dir = "";
let identity = "";
let otherIdentity = "";
let recipient = "";
let sshPrivate = Buffer.alloc(0);
let sshPublic = "";
let sopsFile = "";
let sopsPlain = "";
let sopsMissing = "";

/** Binary on purpose: NUL, 0xff and no trailing newline must survive. */
const AGE_PLAINTEXT = Buffer.from([0x73, 0x33, 0x63, 0x72, 0x33, 0x74, 0x00, 0xff, 0x0a, 0x21]);
const TOKEN = "syt_top-level-token-Zq9";
const NESTED = "nested-password-Kp2";

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "nt-test-secrets-"));
  identity = path.join(dir, "age.key");
  otherIdentity = path.join(dir, "other.key");
  await run("age-keygen", ["-o", identity]);
  await run("age-keygen", ["-o", otherIdentity]);
  recipient = (await run("age-keygen", ["-y", identity])).stdout.trim();

  writeFileSync(path.join(dir, "plain.bin"), AGE_PLAINTEXT);
  await run("age", [
    "--encrypt",
    "-r",
    recipient,
    "-o",
    path.join(dir, "token.age"),
    path.join(dir, "plain.bin"),
  ]);
  rmSync(path.join(dir, "plain.bin"));

  const keyFile = path.join(dir, "id_ed25519");
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ada@test", "-f", keyFile]);
  sshPrivate = readFileSync(keyFile);
  sshPublic = readFileSync(`${keyFile}.pub`, "utf8");

  try {
    await run("sops", ["--version", "--disable-version-check"]);
  } catch (error) {
    if (!(error instanceof MissingToolError)) throw error;
    sopsMissing =
      "sops is not installed: run `bash scripts/install-sops.sh`; the sops tests did NOT run";
    return;
  }
  // Written the way sops writes YAML (4-space indent), so the whole document round-trips exactly.
  const indentedKey = sshPrivate
    .toString("utf8")
    .trimEnd()
    .split("\n")
    .map((l) => `    ${l}`)
    .join("\n");
  sopsPlain = [
    `token: ${TOKEN}`,
    "ada/ssh-key: |",
    indentedKey,
    "matrix:",
    "    ada:",
    `        password: ${NESTED}`,
    "",
  ].join("\n");
  const plainFile = path.join(dir, "agents.plain.yaml");
  sopsFile = path.join(dir, "agents.yaml");
  writeFileSync(plainFile, sopsPlain);
  const encrypted = await run("sops", ["--encrypt", "--age", recipient, plainFile], {
    env: { PATH: process.env.PATH },
  });
  writeFileSync(sopsFile, encrypted.stdoutBytes);
  rmSync(plainFile);
});

after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** sops is part of the test environment: missing, it is reported loudly, and fails in CI. */
function needSops(t: TestContext): boolean {
  if (!sopsMissing) return true;
  t.diagnostic(`!!! ${sopsMissing}`);
  if (process.env.CI === "true") assert.fail(sopsMissing);
  t.skip(sopsMissing);
  return false;
}

function decryptor(ageKeyFile = identity) {
  return createDecryptor({ ageKeyFile });
}

describe("decrypting an age file", () => {
  it("returns the exact bytes of the whole file", async () => {
    const plain = await decryptor().decrypt({ format: "age", file: path.join(dir, "token.age") });
    assert.deepEqual(plain, AGE_PLAINTEXT);
  });

  it("ignores a key: an age file is one secret", async () => {
    const file = path.join(dir, "token.age");
    const plain = await decryptor().decrypt({ format: "age", file, key: "token" });
    assert.deepEqual(plain, AGE_PLAINTEXT);
  });

  it("refuses with the wrong identity, naming the file and not the plaintext", async () => {
    const file = path.join(dir, "token.age");
    const error = await decryptor(otherIdentity)
      .decrypt({ format: "age", file })
      .then(
        () => assert.fail("decrypted with the wrong identity"),
        (e: unknown) => e,
      );
    assert.ok(error instanceof SecretError, String(error));
    assert.equal(error.message, `${file}: no identity in ${otherIdentity} can decrypt it`);
    assert.ok(!error.message.includes("s3cr3t"));
  });

  it("refuses a plaintext file without quoting it (age itself would)", async () => {
    const file = path.join(dir, "oops.age");
    writeFileSync(file, "hunter2-plaintext\n");
    const error = await decryptor()
      .decrypt({ format: "age", file })
      .then(
        () => assert.fail("decrypted a plaintext file"),
        (e: unknown) => e,
      );
    assert.ok(error instanceof SecretError, String(error));
    assert.equal(error.message, `${file}: not an age-encrypted file`);
  });

  it("refuses when the age key file is missing", async () => {
    const file = path.join(dir, "token.age");
    const missing = path.join(dir, "nope.key");
    await assert.rejects(decryptor(missing).decrypt({ format: "age", file }), {
      name: "SecretError",
      message: `${file}: age key file ${missing} does not exist`,
    });
  });

  it("refuses when the encrypted file is missing", async () => {
    const file = path.join(dir, "gone.age");
    await assert.rejects(decryptor().decrypt({ format: "age", file }), {
      name: "SecretError",
      message: `${file}: the file does not exist`,
    });
  });
});

describe("decrypting a sops file", () => {
  it("returns a top-level key's exact bytes", async (t) => {
    if (!needSops(t)) return;
    const plain = await decryptor().decrypt({ format: "sops", file: sopsFile, key: "token" });
    assert.equal(plain.toString("utf8"), TOKEN);
  });

  it("reads a key containing a slash as one key, multi-line value intact", async (t) => {
    if (!needSops(t)) return;
    const plain = await decryptor().decrypt({ format: "sops", file: sopsFile, key: "ada/ssh-key" });
    assert.deepEqual(plain, sshPrivate);
  });

  it("follows dots into nested maps", async (t) => {
    if (!needSops(t)) return;
    const key = "matrix.ada.password";
    const plain = await decryptor().decrypt({ format: "sops", file: sopsFile, key });
    assert.equal(plain.toString("utf8"), NESTED);
  });

  it("returns the whole document without a key", async (t) => {
    if (!needSops(t)) return;
    const plain = await decryptor().decrypt({ format: "sops", file: sopsFile });
    assert.equal(plain.toString("utf8"), sopsPlain);
  });

  it("names the key that is not there", async (t) => {
    if (!needSops(t)) return;
    for (const key of ["ada/gpg-key", "matrix.vox.password", "token.deeper"]) {
      const error = await decryptor()
        .decrypt({ format: "sops", file: sopsFile, key })
        .then(
          () => assert.fail(`found ${key}`),
          (e: unknown) => e,
        );
      assert.ok(error instanceof SecretError, String(error));
      assert.match(error.message, new RegExp(`^${sopsFile}: key ${key}: not found`));
      assert.ok(!error.message.includes(TOKEN), error.message);
    }
  });

  it("refuses with the wrong identity, naming file and key and not the plaintext", async (t) => {
    if (!needSops(t)) return;
    const error = await decryptor(otherIdentity)
      .decrypt({ format: "sops", file: sopsFile, key: "token" })
      .then(
        () => assert.fail("decrypted with the wrong identity"),
        (e: unknown) => e,
      );
    assert.ok(error instanceof SecretError, String(error));
    assert.equal(
      error.message,
      `${sopsFile}: key token: no identity in ${otherIdentity} can decrypt it`,
    );
    assert.ok(!error.message.includes(TOKEN) && !error.message.includes(NESTED));
    assert.equal(error.exitCode, 3);
  });

  it("refuses a file that sops did not encrypt, without quoting it", async (t) => {
    if (!needSops(t)) return;
    const file = path.join(dir, "plain.yaml");
    writeFileSync(file, "hunter2 plaintext, not yaml map\n");
    const error = await decryptor()
      .decrypt({ format: "sops", file, key: "token" })
      .then(
        () => assert.fail("decrypted a plaintext file"),
        (e: unknown) => e,
      );
    assert.ok(error instanceof SecretError, String(error));
    assert.match(error.message, new RegExp(`^${file}: key token: `));
    assert.ok(!error.message.includes("hunter2"), error.message);
  });
});

describe("deriving an SSH public key", () => {
  it("equals the .pub ssh-keygen wrote, from the key in memory", async () => {
    const derived = (await derivePublicKey(sshPrivate, systemRunner)).split(" ");
    const written = sshPublic.trim().split(" ");
    assert.deepEqual(derived.slice(0, 2), written.slice(0, 2));
  });

  it("derives it from the key decrypted out of sops", async (t) => {
    if (!needSops(t)) return;
    const key = await decryptor().decrypt({ format: "sops", file: sopsFile, key: "ada/ssh-key" });
    const derived = await derivePublicKey(key, systemRunner);
    assert.deepEqual(derived.split(" ").slice(0, 2), sshPublic.trim().split(" ").slice(0, 2));
  });

  it("refuses what is not a private key", async () => {
    await assert.rejects(derivePublicKey(Buffer.from("not a key\n"), systemRunner), {
      message: /cannot derive the public key/,
    });
  });
});

describe("importing a GPG key as the agent", () => {
  const name = `nt-test-gpg-${randomBytes(3).toString("hex")}`;
  let created = false;
  let agent: ResolvedAgent | undefined;
  let gnupgRoot = "";

  function asAgent(a: ResolvedAgent) {
    return {
      uid: a.uid,
      gid: a.gid,
      env: { PATH: process.env.PATH, HOME: a.home, GNUPGHOME: path.join(a.home, ".gnupg") },
    };
  }

  before(async () => {
    if (process.getuid?.() !== 0) return;
    const taken = new Set(
      readFileSync("/etc/passwd", "utf8")
        .split("\n")
        .map((l) => Number(l.split(":")[2])),
    );
    // The first of this file's uids (test/support/uids.ts) no account holds.
    const uids = uidsOf(import.meta.filename);
    const uid = uids.all().find((candidate) => !taken.has(candidate)) ?? 0;
    assert.ok(uid !== 0, `no free uid in ${uids.describe()}`);
    await run("useradd", [
      "--create-home",
      "--uid",
      String(uid),
      "--user-group",
      "--shell",
      "/usr/sbin/nologin",
      "--comment",
      "nuketown secrets test",
      name,
    ]);
    created = true;
    const gid = Number((await run("id", ["-g", name])).stdout.trim());
    const home = (await run("getent", ["passwd", name])).stdout.split(":")[5] ?? "";
    assert.ok(home.startsWith("/"), `no home for ${name}`);
    const base = exampleTown().agents[0];
    assert.ok(base);
    agent = { ...base, name, uid, gid, group: name, home };
    gnupgRoot = path.join(dir, "gnupg");
  });

  after(async () => {
    if (!created) return;
    if (agent) await run("gpgconf", ["--kill", "all"], { ...asAgent(agent), allowFailure: true });
    if (gnupgRoot)
      await run("gpgconf", ["--kill", "all"], {
        env: { PATH: process.env.PATH, GNUPGHOME: gnupgRoot },
        allowFailure: true,
      });
    await run("userdel", ["-r", name], { allowFailure: true });
  });

  it("imports an armored secret key that gpg then lists in the agent's keyring", async (t) => {
    if (!agent) {
      t.diagnostic("not root: cannot create a test user; gpg import NOT tested");
      t.skip("needs root");
      return;
    }
    // The key is made by root in a private GNUPGHOME inside the test dir.
    const env = { PATH: process.env.PATH, GNUPGHOME: gnupgRoot };
    await run("install", ["-d", "-m", "0700", gnupgRoot]);
    const gpg = ["--batch", "--pinentry-mode", "loopback", "--passphrase", ""];
    await run(
      "gpg",
      [...gpg, "--quick-gen-key", "Ada Test <ada@test.local>", "ed25519", "sign", "never"],
      { env },
    );
    const listing = (await run("gpg", ["--batch", "--with-colons", "--list-secret-keys"], { env }))
      .stdout;
    const fingerprint = /^fpr:(?:[^:]*:){8}([0-9A-F]{40}):/m.exec(listing)?.[1];
    assert.ok(fingerprint, listing);
    const armored = (
      await run("gpg", [...gpg, "--armor", "--export-secret-keys", fingerprint], { env })
    ).stdoutBytes;
    assert.match(armored.toString("utf8"), /BEGIN PGP PRIVATE KEY BLOCK/);
    await run("gpgconf", ["--kill", "all"], { env });

    await importGpgKey(agent, armored, systemRunner);
    await importGpgKey(agent, armored, systemRunner); // again: nothing changes, no error

    const gnupgHome = path.join(agent.home, ".gnupg");
    const stat = statSync(gnupgHome);
    assert.equal(stat.mode & 0o777, 0o700);
    assert.equal(stat.uid, agent.uid);
    const theirs = await run(
      "gpg",
      ["--batch", "--with-colons", "--list-secret-keys"],
      asAgent(agent),
    );
    assert.ok(theirs.stdout.includes(`:${fingerprint}:`), theirs.stdout);
    await run("gpgconf", ["--kill", "all"], asAgent(agent));
  });

  it("refuses what is not an OpenPGP key, naming the agent's keyring", async (t) => {
    if (!agent) {
      t.skip("needs root");
      return;
    }
    await assert.rejects(importGpgKey(agent, Buffer.from("not a key\n"), systemRunner), {
      name: "SecretError",
      message: new RegExp(`^${name}'s keyring: gpg --import exited 2`),
    });
  });
});
