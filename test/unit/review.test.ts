import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import {
  agentRefPrefix,
  agentRefspec,
  baseCandidates,
  COMMIT_FORMAT,
  type CommitInfo,
  countSignatures,
  formatDiffStat,
  judgeSignature,
  openpgpFingerprint,
  parseCommits,
  parseLeftRight,
  parseNumstat,
  parseSignatureKinds,
  remoteFor,
} from "../../src/review/git.ts";
import { parsePublicKeys, renderAllowedSigners } from "../../src/review/signers.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

const ADA = "AAAAC3NzaC1lZDI1NTE5AAAAIAdaAdaAdaAdaAdaAdaAdaAdaAdaAdaAdaAdaAdaAda";
const VOX = "AAAAC3NzaC1lZDI1NTE5AAAAIVoxVoxVoxVoxVoxVoxVoxVoxVoxVoxVoxVoxVoxVox";

describe("review: allowed signers", () => {
  it("reads keys from a .pub file, a key list and an allowed-signers file", () => {
    assert.deepEqual(parsePublicKeys(`ssh-ed25519 ${ADA} ada@laptop\n`), [
      { type: "ssh-ed25519", body: ADA },
    ]);
    const allowedSigners = [
      "# written by nuketown",
      `ada@test.local namespaces="git" ssh-ed25519 ${ADA}`,
      `mayor@test.local,*@evil cert-authority ssh-ed25519 ${VOX} comment`,
      "not a key at all",
      "ssh-ed25519 not-base64!",
    ].join("\n");
    assert.deepEqual(parsePublicKeys(allowedSigners), [
      { type: "ssh-ed25519", body: ADA },
      { type: "ssh-ed25519", body: VOX },
    ]);
  });

  it("files every key under its agent's own email, whatever the agent's file claimed", () => {
    const keys = parsePublicKeys(`mayor@test.local namespaces="git" ssh-ed25519 ${ADA}`);
    assert.equal(
      renderAllowedSigners([
        { email: "vox@test.local", keys: [{ type: "ssh-ed25519", body: VOX }] },
        { email: "ada@test.local", keys: [...keys, ...keys] },
        { email: "nobody@test.local", keys: [] },
      ]),
      `ada@test.local namespaces="git" ssh-ed25519 ${ADA}\nvox@test.local namespaces="git" ssh-ed25519 ${VOX}\n`,
    );
  });
});

describe("review: git plumbing", () => {
  it("fetches from a remote named after the agent, else origin", () => {
    assert.equal(remoteFor("ada", ["origin", "ada"]), "ada");
    assert.equal(remoteFor("ada", ["origin", "vox"]), "origin");
    assert.equal(remoteFor("ada", ["upstream"]), undefined);
    assert.equal(remoteFor("ada", ["origin", "ada", "forge"], "forge"), "forge");
    assert.equal(remoteFor("ada", ["origin"], "forge"), undefined);
  });

  it("fetches exactly <agent>/* into the agent's own namespace", () => {
    assert.equal(agentRefspec("ada", "origin"), "+refs/heads/ada/*:refs/remotes/origin/ada/*");
    assert.equal(agentRefPrefix("ada", "ada"), "refs/remotes/ada/ada/");
    assert.deepEqual(baseCandidates("origin", "main"), [
      "refs/remotes/origin/HEAD",
      "refs/remotes/origin/main",
      "refs/heads/main",
      "HEAD",
    ]);
    assert.ok(baseCandidates("ada", "trunk").includes("refs/remotes/ada/trunk"));
  });

  it("reads commits, numstat and ahead/behind counts", () => {
    assert.equal(COMMIT_FORMAT.split("%x1f").length, 10);
    const sha = "a".repeat(40);
    const commits = parseCommits(
      `${sha}\x1fAdd it\x1fAda\x1fada@test.local\x1f2025-01-01T00:00:00Z\x1fG\x1fada@test.local\x1fSHA256:k\n` +
        `${"b".repeat(40)}\x1fNo sig\x1fAda\x1fada@test.local\x1fdate\x1f\x1f\x1f\nnoise\n`,
    );
    assert.equal(commits.length, 2);
    assert.equal(commits[0]?.signer, "ada@test.local");
    assert.equal(commits[1]?.signature, "N");
    assert.deepEqual(countSignatures(commits), { G: 1, N: 1 });
    const stat = parseNumstat("3\t0\tfeature.txt\n-\t-\tlogo.png\n1\t2\tREADME.md\n");
    assert.deepEqual(stat, { files: 3, insertions: 4, deletions: 2 });
    assert.equal(formatDiffStat(stat), "3 files +4 -2");
    assert.equal(formatDiffStat({ files: 1, insertions: 0, deletions: 0 }), "1 file +0 -0");
    assert.deepEqual(parseLeftRight("2\t5\n"), { behind: 2, ahead: 5 });
  });

  it("tells SSH, OpenPGP and X.509 signatures apart by the armor of the raw commit", () => {
    const [a, b, c, d] = ["a", "b", "c", "d"].map((x) => x.repeat(40));
    const raw = [
      `commit ${a}`,
      "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904",
      "author Ada <ada@test.local> 1 +0000",
      "gpgsig -----BEGIN SSH SIGNATURE-----",
      " U1NIU0lH",
      " -----END SSH SIGNATURE-----",
      "",
      "    gpgsig -----BEGIN PGP SIGNATURE----- (a subject, not a header)",
      "",
      `commit ${b}`,
      "gpgsig -----BEGIN PGP SIGNATURE-----",
      "",
      `commit ${c}`,
      "author Ada <ada@test.local> 1 +0000",
      "",
      "    unsigned",
      `commit ${d}`,
      "gpgsig -----BEGIN SIGNED MESSAGE-----",
      "",
    ].join("\n");
    assert.deepEqual(
      [...parseSignatureKinds(raw)],
      [
        [a, "ssh"],
        [b, "openpgp"],
        [c, "none"],
        [d, "x509"],
      ],
    );
  });

  it("counts an OpenPGP signature as an agent's only by the fingerprint the town declares", () => {
    const ADA_FPR = "0123456789ABCDEF0123456789ABCDEF01234567";
    const commit = (signature: string, signer: string, fingerprint = ""): CommitInfo => ({
      commit: "a".repeat(40),
      subject: "s",
      author: "Ada",
      authorEmail: "ada@test.local",
      date: "d",
      signature,
      signer,
      key: "",
      fingerprint,
      primaryFingerprint: fingerprint,
    });
    const signers = [{ email: "ada@test.local", openpgp: ADA_FPR }, { email: "vox@test.local" }];
    // The reviewer's keyring vouches for a key whose user id says ada: not enough.
    const forged = judgeSignature(
      commit("G", "ada@test.local", "F".repeat(40)),
      "openpgp",
      signers,
    );
    assert.equal(forged.status, "P");
    assert.equal(forged.signer, "");
    assert.match(forged.meaning, /^unverifiable: OpenPGP signature by key F{40}, which no agent/);
    // The declared key, even without the keyring's trust (U).
    assert.deepEqual(
      judgeSignature(
        commit("U", "Ada <ada@test.local>", ADA_FPR.toLowerCase()),
        "openpgp",
        signers,
      ),
      {
        status: "G",
        signer: "ada@test.local",
        meaning: "good OpenPGP signature by the declared key",
      },
    );
    assert.equal(judgeSignature(commit("E", "", ""), "openpgp", signers).status, "P");
    assert.equal(judgeSignature(commit("B", "x", ADA_FPR), "openpgp", signers).status, "B");
    assert.equal(judgeSignature(commit("G", "x", ADA_FPR), "x509", signers).status, "P");
    // SSH: what the town's allowed-signers file said stands.
    assert.deepEqual(judgeSignature(commit("G", "vox@test.local"), "ssh", signers), {
      status: "G",
      signer: "vox@test.local",
      meaning: "good signature by the agent's key",
    });
    assert.equal(judgeSignature(commit("N", ""), "none", signers).status, "N");
    assert.equal(openpgpFingerprint(`0x${ADA_FPR.toLowerCase()}`), ADA_FPR);
    assert.equal(
      openpgpFingerprint("ABCDEF0123456789"),
      undefined,
      "a key id is not a fingerprint",
    );
  });

  it("keeps its pure parts away from the file system and processes", () => {
    for (const file of ["git.ts", "signers.ts"]) {
      const text = readFileSync(path.join(REPO_ROOT, "src", "review", file), "utf8");
      assert.doesNotMatch(text, /from\s+["'](node:)?(fs|fs\/promises|child_process|net)["']/, file);
    }
  });
});
