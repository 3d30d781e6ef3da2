/**
 * Which secrets land where in an agent's home: pure, from the resolved town.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  gpgKeyToImport,
  SecretError,
  secretTargets,
  sopsExtractPath,
} from "../../src/host/secrets.ts";
import type { ResolvedAgent } from "../../src/town/types.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

/** The agent `ada` of a minimal town with the given `secrets` declaration. */
function adaWithSecrets(secrets: Record<string, unknown>): ResolvedAgent {
  const decl = minimalDeclaration();
  decl.secrets = { sopsFile: "secrets/agents.yaml" };
  const agents = decl.agents as Record<string, Record<string, unknown>>;
  agents.ada = { ...agents.ada, secrets };
  const agent = resolveOrThrow(decl).agents.find((a) => a.name === "ada");
  assert.ok(agent);
  return agent;
}

describe("secretTargets", () => {
  it("puts the SSH key at .ssh/id_ed25519, 0600", () => {
    const agent = adaWithSecrets({ sshKey: "ada/ssh-key" });
    assert.deepEqual(secretTargets(agent), [
      {
        name: "sshKey",
        secret: { format: "sops", file: "/etc/nuketown/secrets/agents.yaml", key: "ada/ssh-key" },
        target: ".ssh/id_ed25519",
        mode: "0600",
      },
    ]);
  });

  it("lists extra secrets after the SSH key, by name, with their target and mode", () => {
    const agent = adaWithSecrets({
      sshKey: { file: "keys/ada.age" },
      extraSecrets: {
        "matrix-token": { target: ".config/matrix/token", mode: "0400" },
        "aws.credentials": { file: "aws.age", target: ".aws/credentials/" },
      },
    });
    assert.deepEqual(secretTargets(agent), [
      {
        name: "sshKey",
        secret: { format: "age", file: "/etc/nuketown/keys/ada.age" },
        target: ".ssh/id_ed25519",
        mode: "0600",
      },
      {
        name: "aws.credentials",
        secret: { format: "age", file: "/etc/nuketown/aws.age", key: "aws.credentials" },
        target: ".aws/credentials",
        mode: "0600",
      },
      {
        name: "matrix-token",
        secret: {
          format: "sops",
          file: "/etc/nuketown/secrets/agents.yaml",
          key: "matrix-token",
        },
        target: ".config/matrix/token",
        mode: "0400",
      },
    ]);
  });

  it("never makes a file of the GPG key: it is imported into the keyring", () => {
    const agent = adaWithSecrets({ gpgKey: "ada/gpg-key" });
    assert.deepEqual(secretTargets(agent), []);
    assert.deepEqual(gpgKeyToImport(agent), {
      format: "sops",
      file: "/etc/nuketown/secrets/agents.yaml",
      key: "ada/gpg-key",
    });
  });

  it("is empty for an agent without secrets", () => {
    const agent = adaWithSecrets({});
    assert.deepEqual(secretTargets(agent), []);
    assert.equal(gpgKeyToImport(agent), undefined);
  });
});

describe("sopsExtractPath", () => {
  const file = "/s.yaml";

  it("keeps a slash inside one component and splits on dots", () => {
    assert.equal(sopsExtractPath({ file, key: "ada/ssh-key" }), '["ada/ssh-key"]');
    assert.equal(sopsExtractPath({ file, key: "matrix.ada.token" }), '["matrix"]["ada"]["token"]');
  });

  it("quotes components with quotes and brackets sops can still read back", () => {
    assert.equal(sopsExtractPath({ file, key: `it's"]` }), `["it's"]"]`);
    assert.equal(sopsExtractPath({ file, key: "0" }), '["0"]');
  });

  it("refuses keys sops --extract cannot express, naming the key", () => {
    for (const key of ["a..b", ".a", "a.", "a[0]"]) {
      assert.throws(
        () => sopsExtractPath({ file, key }),
        (error: unknown) => {
          assert.ok(error instanceof SecretError);
          assert.match(error.message, /^\/s\.yaml: key .*: invalid key: /);
          return true;
        },
      );
    }
  });
});
