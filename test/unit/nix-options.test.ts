/**
 * The generated NixOS options: the TOML keys' names and defaults, shorthands
 * as coercedTo, values that cannot break out of a Nix string.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { nixString, nixValue, renderNixOptions } from "../../src/town/nix-options.ts";
import { townJsonSchema } from "../../src/town/reference.ts";

describe("NixOS options from the schema", () => {
  const text = renderNixOptions(townJsonSchema());

  it("declares every top-level key of the town under its TOML name", () => {
    for (const key of Object.keys(townJsonSchema().properties as object))
      assert.match(text, new RegExp(`^  ${key} = `, "m"), key);
  });

  it("keeps the TOML defaults, and makes enable a NixOS enable option (off until set)", () => {
    assert.match(text, /agentsDir = mkOption \{\n\s+type = types\.str;\n\s+default = "\/agents";/);
    assert.match(text, /default = \[ "git" "ripgrep" "jq" "curl" "tree" \];/);
    assert.match(text, /^ {2}enable = lib\.mkEnableOption /m);
  });

  it("accepts the string shorthands of persist and repos as coercedTo, and secrets as either", () => {
    assert.match(text, /types\.coercedTo types\.str \(path: \{ inherit path; \}\)/);
    assert.match(text, /types\.coercedTo types\.str \(url: \{ inherit url; \}\)/);
    assert.match(text, /sshKey = mkOption \{\n\s+type = types\.nullOr \(types\.either types\.str/);
  });

  it("escapes what Nix would interpolate or end a string on", () => {
    const dollar = "$";
    assert.equal(nixString(`a "b" ${dollar}{c} \\ d\n`), `"a \\"b\\" \\${dollar}{c} \\\\ d\\n"`);
    assert.equal(
      nixValue({ "a-b": [1, true, null], "x y": {} }),
      '{ a-b = [ 1 true null ]; "x y" = { }; }',
    );
  });
});
