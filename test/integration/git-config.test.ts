/**
 * The rendered git config, read back by the real git: escaping is right when
 * git returns hostile values exactly.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { renderAllowedSigners, renderGitConfig } from "../../src/host/render/git.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

function gitConfigGet(file: string, key: string): string {
  // GIT_CONFIG_NOSYSTEM and a blank HOME keep the runner's own config out of the answer.
  return execFileSync("git", ["config", "-f", file, "--get", key], {
    encoding: "utf8",
    env: { ...process.env, GIT_CONFIG_NOSYSTEM: "1", HOME: path.dirname(file) },
  }).replace(/\n$/, "");
}

test("git reads back a name with quotes, ; # and a backslash exactly", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "nuketown-gitconfig-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  const name = 'Ada "the; #bot" \\ Lovelace';
  const decl = minimalDeclaration();
  const agents = decl.agents as Record<string, Record<string, unknown>>;
  agents.ada = { ...agents.ada, git: { name, email: "ada+bot@test.local" } };
  const town = resolveOrThrow(decl);
  const agent = town.agents[0]!;
  const file = path.join(dir, "config");
  writeFileSync(file, renderGitConfig(town, agent));

  assert.equal(gitConfigGet(file, "user.name"), name);
  assert.equal(gitConfigGet(file, "user.email"), "ada+bot@test.local");
  assert.equal(gitConfigGet(file, "user.signingkey"), "/agents/ada/.ssh/id_ed25519.pub");
  assert.equal(gitConfigGet(file, "gpg.format"), "ssh");
  assert.equal(
    gitConfigGet(file, "gpg.ssh.allowedSignersFile"),
    "/agents/ada/.config/git/allowed_signers",
  );
  assert.equal(gitConfigGet(file, "commit.gpgsign"), "true");
  assert.equal(gitConfigGet(file, "pull.ff"), "only");
  assert.equal(gitConfigGet(file, "safe.directory"), "*");
  assert.ok(renderAllowedSigners(agent, "ssh-ed25519 AAAA ada")?.startsWith("ada+bot@test.local "));
});
