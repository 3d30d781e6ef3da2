/**
 * The committed JSON Schema and reference page must be what the schema gives
 * now, and must be usable: a real JSON Schema validator accepts the example
 * town with it, and the reference documents every option with its default.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse as parseToml } from "smol-toml";
import {
  generatedFiles,
  type JsonSchema,
  REFERENCE_FILE,
  SCHEMA_FILE,
  townJsonSchema,
} from "../../src/town/reference.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

const read = (file: string) => {
  try {
    return readFileSync(path.join(REPO_ROOT, file), "utf8");
  } catch {
    return undefined;
  }
};

describe("generated files", () => {
  for (const [file, content] of generatedFiles()) {
    test(`${file} is up to date with src/town/schema.ts`, () => {
      assert.ok(read(file) === content, `${file} is stale: run \`npm run generate\` and commit it`);
    });
  }

  test("the generator is deterministic", () => {
    assert.deepEqual(generatedFiles(), generatedFiles());
  });
});

describe("JSON Schema", () => {
  const ajv = new Ajv2020({ allErrors: true });
  ajv.addKeyword("x-default");
  const validate = ajv.compile(JSON.parse(read(SCHEMA_FILE) ?? "{}"));
  const valid = (declaration: unknown) => validate(declaration) === true;

  test("GIVEN examples/town.toml WHEN validated THEN it is accepted", () => {
    const example = parseToml(read("examples/town.toml") ?? "");
    assert.ok(valid(example), ajv.errorsText(validate.errors));
  });

  test("an unknown key is refused, at the top and inside an agent", () => {
    assert.equal(valid({ colour: "red" }), false);
    assert.equal(valid({ agents: { ada: { uid: 1100, colour: "red" } } }), false);
    assert.equal(
      valid({
        agents: {
          ada: { uid: 1100, devices: [{ subsystem: "tty", attrs: { a: "1" }, mode: "rw" }] },
        },
      }),
      false,
    );
  });

  test("a wrong type or a value outside an enum is refused", () => {
    assert.equal(valid({ agents: { ada: { uid: "1100" } } }), false);
    assert.equal(valid({ agents: { ada: { uid: 1100, packages: "git" } } }), false);
    assert.equal(valid({ homes: { backend: "zfs" } }), false);
    assert.equal(valid({ agents: { ada: {} } }), false, "uid is required");
  });

  test("both forms of a secret reference are accepted", () => {
    assert.ok(valid({ agents: { ada: { uid: 1100, secrets: { sshKey: "ada/ssh" } } } }));
    assert.ok(valid({ agents: { ada: { uid: 1100, secrets: { sshKey: { file: "k.age" } } } } }));
    assert.equal(
      valid({ agents: { ada: { uid: 1100, secrets: { sshKey: { key: "x" } } } } }),
      false,
    );
  });
});

/** Every option path of a JSON Schema, found independently of the reference's own walker. */
function leafPaths(node: JsonSchema, at: string, out: Set<string>): void {
  const object = (v: unknown): v is JsonSchema =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (Array.isArray(node.anyOf)) for (const b of node.anyOf) if (object(b)) leafPaths(b, at, out);
  if (object(node.properties)) {
    for (const [key, child] of Object.entries(node.properties)) {
      if (object(child)) leafPaths(child, at === "" ? key : `${at}.${key}`, out);
    }
    return;
  }
  if (object(node.items) && (object(node.items.properties) || Array.isArray(node.items.anyOf))) {
    leafPaths(node.items, `${at}[]`, out);
  }
  if (object(node.additionalProperties) && object(node.additionalProperties.properties)) {
    leafPaths(node.additionalProperties, `${at}.<*>`, out);
  }
  // A list item's plain form (a persist path as a string) is documented by the list itself.
  const plain =
    !Array.isArray(node.anyOf) || node.anyOf.some((b) => object(b) && !object(b.properties));
  if (plain && !at.endsWith("[]")) out.add(at);
}

describe("reference", () => {
  const reference = read(REFERENCE_FILE) ?? "";
  // Headings are `### \`path\``; an entry runs to the next heading.
  const entries = new Map<string, string>();
  for (const chunk of reference.split(/^### /m).slice(1)) {
    const heading = /^`([^`]+)`/.exec(chunk)?.[1];
    if (heading !== undefined) entries.set(heading.replace(/<[^>]+>/g, "<*>"), chunk);
  }

  test("documents every leaf option of the schema", () => {
    const leaves = new Set<string>();
    leafPaths(townJsonSchema(), "", leaves);
    const missing = [...leaves].filter((p) => !entries.has(p.replace(/<[^>]+>/g, "<*>")));
    assert.deepEqual(missing, [], `options missing from ${REFERENCE_FILE}`);
    assert.ok(leaves.size > 100, `expected the whole schema, found ${leaves.size} options`);
  });

  const expected: [path: string, defaultText: string][] = [
    ["agents.<name>.devices[].action", '`"add|bind"`'],
    ["agents.<name>.devices[].permission", '`"rw"`'],
    ["agents.<name>.portal.layout", '`"75/25"`'],
    ["agentsDir", '`"/agents"`'],
    ["persistDir", '`"/persist"`'],
    ["uidRange.min", "`1100`"],
    ["uidRange.max", "`1999`"],
    ["homes.image.size", '`"20G"`'],
    ["agents.<name>.uid", "required"],
    ["agents.<name>.git.email", '`"<name>@<domain>"`'],
    ["agents.<name>.secrets.sshKey.format", '`"age"` when the file ends in .age'],
  ];
  for (const [option, defaultText] of expected) {
    test(`${option} is listed with its default ${defaultText}`, () => {
      const entry = entries.get(option.replace(/<[^>]+>/g, "<*>"));
      assert.ok(entry !== undefined, `${option} is not in ${REFERENCE_FILE}`);
      assert.ok(
        entry.includes(`- Default: ${defaultText}`),
        `${option}: expected default ${defaultText} in\n${entry}`,
      );
    });
  }

  test("shows union, enum and list types", () => {
    assert.match(
      entries.get("agents.<*>.secrets.sshKey") ?? "",
      /`string \| \{ file, key\?, format\? \}`/,
    );
    assert.match(entries.get("homes.backend") ?? "", /`"btrfs" \| "image" \| "directory"`/);
    assert.match(entries.get("agents.<*>.persist") ?? "", /`\(string \| \{ path, type\? \}\)\[\]`/);
  });

  test("is grouped in sections, agent tables apart", () => {
    const sections = [...reference.matchAll(/^## (.+)$/gm)].map((m) => m[1]);
    for (const title of [
      "Town",
      "Homes",
      "Humans",
      "Approval",
      "Chat",
      "Secrets",
      "Hosts",
      "Cloud",
      "Install",
      "Agents",
      "Agents: devices",
      "Agents: sudo",
    ]) {
      assert.ok(sections.includes(title), `no section ${title}`);
    }
  });
});
