/**
 * The generated views of the schema: JSON Schema for editors and validators,
 * and the Markdown reference of every option. Both are derived from
 * TownSchema only, so they cannot disagree with what `nuketown check` accepts.
 * Pure: scripts/generate.ts writes the files, a unit test checks them for drift.
 */
import { z } from "zod";
import { NIX_OPTIONS_FILE, renderNixOptions } from "./nix-options.ts";
import { TownSchema } from "./schema.ts";

/** A JSON Schema node, loosely typed: we only read the keywords zod emits. */
export type JsonSchema = { readonly [keyword: string]: unknown };

export const SCHEMA_ID = "urn:nuketown:schema:town";
export const SCHEMA_FILE = "schema/town.schema.json";
export const REFERENCE_FILE = "docs/reference.md";

/**
 * The town declaration as JSON Schema (draft 2020-12), describing what a user
 * may write (`io: "input"`: options with defaults are not required).
 * Keywords come in a fixed order, so the output only changes when the schema does.
 */
export function townJsonSchema(): JsonSchema {
  const generated = z.toJSONSchema(TownSchema, { io: "input" }) as JsonSchema;
  return canonicalSchema({
    ...generated,
    $id: SCHEMA_ID,
    title: "nuketown town declaration",
    description:
      "One town: its humans, agents and host settings. Generated from src/town/schema.ts.",
  });
}

/** Every generated file, by path relative to the repository root, with its exact content. */
export function generatedFiles(): ReadonlyMap<string, string> {
  return new Map([
    [SCHEMA_FILE, `${JSON.stringify(townJsonSchema(), null, 2)}\n`],
    [REFERENCE_FILE, renderReference()],
    [NIX_OPTIONS_FILE, renderNixOptions(townJsonSchema())],
  ]);
}

// Keywords a reader looks for first; any other keyword follows alphabetically.
const KEYWORD_ORDER = [
  "$schema",
  "$id",
  "$ref",
  "title",
  "description",
  "x-default",
  "type",
  "enum",
  "const",
  "default",
  "minLength",
  "maxLength",
  "pattern",
  "format",
  "minimum",
  "exclusiveMinimum",
  "maximum",
  "exclusiveMaximum",
  "minItems",
  "maxItems",
  "items",
  "properties",
  "required",
  "propertyNames",
  "additionalProperties",
  "anyOf",
  "oneOf",
  "allOf",
  "$defs",
];
const SCHEMA_VALUED = new Set([
  "items",
  "propertyNames",
  "additionalProperties",
  "not",
  "contains",
]);
const SCHEMA_LIST_VALUED = new Set(["anyOf", "oneOf", "allOf", "prefixItems"]);
// Declaration order of properties is meaningful (the reference follows it): keep it.
const SCHEMA_MAP_VALUED = new Set(["properties", "$defs", "patternProperties"]);

function keywordRank(key: string): number {
  const rank = KEYWORD_ORDER.indexOf(key);
  return rank === -1 ? KEYWORD_ORDER.length : rank;
}

function canonicalSchema(node: JsonSchema): JsonSchema {
  const keys = Object.keys(node).sort(
    (a, b) => keywordRank(a) - keywordRank(b) || (a < b ? -1 : a > b ? 1 : 0),
  );
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const value = node[key];
    if (SCHEMA_VALUED.has(key) && isObject(value)) out[key] = canonicalSchema(value);
    else if (SCHEMA_LIST_VALUED.has(key) && Array.isArray(value)) {
      out[key] = value.map((v) => (isObject(v) ? canonicalSchema(v) : v));
    } else if (SCHEMA_MAP_VALUED.has(key) && isObject(value)) {
      out[key] = Object.fromEntries(
        Object.entries(value).map(([k, v]) => [k, isObject(v) ? canonicalSchema(v) : v]),
      );
    } else out[key] = value;
  }
  return out;
}

/** One documented option of the reference. */
export interface ReferenceOption {
  /** Full dotted path: `agents.<name>.devices[].action`. */
  readonly path: string;
  /** Section heading the option is listed under. */
  readonly section: string;
  /** Markdown: the type in a code span, plus bounds when there are some. */
  readonly type: string;
  /** Markdown: a default value in a code span, derived-default prose, or "required"/"optional". */
  readonly default: string;
  readonly description?: string;
}

// Top-level tables with a section of their own; any other top-level option is listed under Town.
const SECTION_TITLES: Readonly<Record<string, string>> = {
  uidRange: "Town",
  homes: "Homes",
  humans: "Humans",
  approval: "Approval",
  chat: "Chat",
  secrets: "Secrets",
  hosts: "Hosts",
  cloud: "Cloud",
  install: "Install",
  agents: "Agents",
};

// What a record's keys are, shown as the placeholder in paths: `files.<path>.mode`.
const KEY_PLACEHOLDERS: Readonly<Record<string, string>> = {
  files: "<path>",
  storage: "<path>",
  attrs: "<attr>",
  env: "<var>",
  settings: "<key>",
};

/**
 * Every option of the schema in declaration order, with the path, type,
 * default and description the reference shows.
 */
export function referenceOptions(schema: JsonSchema = townJsonSchema()): ReferenceOption[] {
  const walker = new OptionWalker(schema);
  walker.visitProperties(schema, [], "Town");
  return walker.options;
}

interface Segment {
  readonly text: string;
  /** The property name (for records and lists, of the record or list itself). */
  readonly key: string;
}

class OptionWalker {
  readonly options: ReferenceOption[] = [];
  private readonly root: JsonSchema;

  constructor(root: JsonSchema) {
    this.root = root;
  }

  visitProperties(node: JsonSchema, at: readonly Segment[], section: string): void {
    const properties = isObject(node.properties) ? node.properties : {};
    const required = new Set(Array.isArray(node.required) ? node.required : []);
    const isAgent = at.length === 2 && at[0]?.key === "agents";
    for (const [key, child] of Object.entries(properties)) {
      if (!isObject(child)) continue;
      let childSection = section;
      if (at.length === 0) {
        childSection = SECTION_TITLES[key] ?? (this.holdsOptions(child) ? key : section);
      } else if (isAgent && this.holdsOptions(child)) {
        // Each agent table (git, devices, sudo...) gets a section; plain agent options stay under Agents.
        childSection = `Agents: ${key}`;
      }
      const text = at.length === 0 ? key : `.${key}`;
      this.visitOption(child, [...at, { text, key }], required.has(key), childSection);
    }
  }

  private visitOption(
    raw: JsonSchema,
    at: readonly Segment[],
    required: boolean,
    section: string,
  ): void {
    const node = this.deref(raw);
    // A table that is always there (it has a default of {}) and says nothing
    // itself is only a heading for its options: no entry of its own.
    const silentTable =
      isObject(node.properties) && node.default !== undefined && node.description === undefined;
    if (!silentTable) this.add(node, at, required, section);
    this.visitInside(node, at, section);
  }

  /** The options nested in a value: table fields, record entries, list items, union branches. */
  private visitInside(raw: JsonSchema, at: readonly Segment[], section: string): void {
    const node = this.deref(raw);
    const key = at.at(-1)?.key ?? "";
    if (isObject(node.properties)) this.visitProperties(node, at, section);
    if (Array.isArray(node.anyOf)) {
      for (const branch of node.anyOf) if (isObject(branch)) this.visitInside(branch, at, section);
    }
    if (node.type === "array" && isObject(node.items) && this.holdsTable(node.items)) {
      this.visitInside(node.items, [...at, { text: "[]", key }], section);
    }
    const values = node.additionalProperties;
    if (!isObject(node.properties) && isObject(values) && this.holdsTable(values)) {
      const placeholder = KEY_PLACEHOLDERS[key] ?? "<name>";
      this.visitInside(values, [...at, { text: `.${placeholder}`, key }], section);
    }
  }

  /** Whether a value has options of its own below it. */
  private holdsOptions(raw: JsonSchema): boolean {
    const node = this.deref(raw);
    if (this.holdsTable(node)) return true;
    if (node.type === "array" && isObject(node.items)) return this.holdsTable(node.items);
    const values = node.additionalProperties;
    return !isObject(node.properties) && isObject(values) && this.holdsTable(values);
  }

  /** Whether a value is a table, or a union with a table among its forms. */
  private holdsTable(raw: JsonSchema): boolean {
    const node = this.deref(raw);
    if (isObject(node.properties)) return true;
    return (
      Array.isArray(node.anyOf) &&
      node.anyOf.some((b) => isObject(b) && isObject(this.deref(b).properties))
    );
  }

  private add(node: JsonSchema, at: readonly Segment[], required: boolean, section: string): void {
    const description = typeof node.description === "string" ? node.description : undefined;
    this.options.push({
      path: at.map((s) => s.text).join(""),
      section,
      type: this.typeMarkdown(node, at.at(-1)?.key ?? ""),
      default: defaultMarkdown(node, required),
      ...(description !== undefined && { description }),
    });
  }

  private typeMarkdown(node: JsonSchema, key: string): string {
    const bounds = boundsText(node);
    const type = `\`${this.typeText(node, key)}\``;
    return bounds === "" ? type : `${type}, ${bounds}`;
  }

  private typeText(raw: JsonSchema, key: string): string {
    const node = this.deref(raw);
    if (Array.isArray(node.enum)) return node.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (node.const !== undefined) return JSON.stringify(node.const);
    if (Array.isArray(node.anyOf)) {
      return node.anyOf
        .filter(isObject)
        .map((branch) => this.typeText(branch, key))
        .join(" | ");
    }
    if (Array.isArray(node.type)) return node.type.join(" | ");
    switch (node.type) {
      case "array": {
        const items = isObject(node.items) ? this.typeText(node.items, key) : "any";
        return items.includes(" | ") ? `(${items})[]` : `${items}[]`;
      }
      case "object": {
        if (isObject(node.properties)) return this.shapeText(node);
        const values = isObject(node.additionalProperties)
          ? this.typeText(node.additionalProperties, key)
          : "any";
        return `{ ${KEY_PLACEHOLDERS[key] ?? "<name>"}: ${values} }`;
      }
      case undefined:
        return "any";
      default:
        return String(node.type);
    }
  }

  /** `{ file, key?, format? }`; a table with many fields is just `table`. */
  private shapeText(node: JsonSchema): string {
    const properties = isObject(node.properties) ? Object.keys(node.properties) : [];
    if (properties.length > 5) return "table";
    const required = new Set(Array.isArray(node.required) ? node.required : []);
    return `{ ${properties.map((p) => (required.has(p) ? p : `${p}?`)).join(", ")} }`;
  }

  private deref(node: JsonSchema): JsonSchema {
    const ref = node.$ref;
    if (typeof ref !== "string") return node;
    if (ref === "#") return this.root;
    const name = /^#\/\$defs\/(.+)$/.exec(ref)?.[1];
    const defs = this.root.$defs;
    const target = name !== undefined && isObject(defs) ? defs[name] : undefined;
    if (!isObject(target)) throw new Error(`cannot follow $ref ${ref}`);
    return target;
  }
}

// zod writes the safe-integer range on every z.int(); that is no bound worth telling.
const UNBOUNDED = Number.MAX_SAFE_INTEGER;

function boundsText(node: JsonSchema): string {
  const num = (k: string) => {
    const v = node[k];
    return typeof v === "number" && Math.abs(v) < UNBOUNDED ? v : undefined;
  };
  const min = num("minimum");
  const max = num("maximum");
  const above = num("exclusiveMinimum");
  const parts: string[] = [];
  if (min !== undefined && max !== undefined) parts.push(`${min} to ${max}`);
  else if (min !== undefined) parts.push(`at least ${min}`);
  else if (max !== undefined) parts.push(`at most ${max}`);
  if (above !== undefined) parts.push(`above ${above}`);
  const minItems = num("minItems");
  if (minItems !== undefined && minItems > 0)
    parts.push(`at least ${minItems} item${minItems === 1 ? "" : "s"}`);
  return parts.join(", ");
}

function defaultMarkdown(node: JsonSchema, required: boolean): string {
  const derived =
    typeof node["x-default"] === "string" ? prose(codeQuoted(node["x-default"])) : undefined;
  if (node.default !== undefined) {
    const value = `\`${valueText(node.default)}\``;
    return derived === undefined ? value : `${value} (${derived})`;
  }
  if (derived !== undefined) return derived;
  return required ? "required" : "optional";
}

/** A default as a reader would write it: `["git", "jq"]`, `{}`, `"rw"`, `1100`. */
function valueText(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(valueText).join(", ")}]`;
  if (isObject(value)) {
    const entries = Object.entries(value).map(([k, v]) => `${k} = ${valueText(v)}`);
    return entries.length === 0 ? "{}" : `{ ${entries.join(", ")} }`;
  }
  return JSON.stringify(value);
}

/** Quoted values inside derived-default prose become code: `"<name>@<domain>"`. */
function codeQuoted(text: string): string {
  return text.replace(/"[^"`]*"/g, (quoted) => `\`${quoted}\``);
}

/** Escape what Markdown would take for HTML or emphasis, outside code spans. */
function prose(text: string): string {
  return text
    .split(/(`[^`]*`)/)
    .map((part, i) => (i % 2 === 1 ? part : part.replace(/[<*]/g, (ch) => `\\${ch}`)))
    .join("");
}

function anchor(title: string): string {
  return title
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, "")
    .replace(/ /g, "-");
}

/**
 * The Markdown reference page (docs/reference.md): every option grouped by
 * section, each with its full path, type, default and description.
 */
export function renderReference(): string {
  const sections = new Map<string, ReferenceOption[]>();
  for (const option of referenceOptions()) {
    const list = sections.get(option.section) ?? [];
    list.push(option);
    sections.set(option.section, list);
  }
  const out: string[] = [
    "# Town declaration reference",
    "",
    "<!-- Generated from src/town/schema.ts by `npm run generate`. Do not edit by hand. -->",
    "",
    "Every option of a town declaration. This page is generated from the schema in",
    "`src/town/schema.ts` by `npm run generate`, along with the JSON Schema",
    "`schema/town.schema.json`; a test fails when either is stale.",
    "",
    "A declaration may be written as TOML (`town.toml`), JSON (`town.json`) or YAML",
    "(`town.yaml`), or be the JSON that `nix eval --json` prints for the NixOS",
    "module's options (`town.nix.json`). The structure is the same in all of them.",
    "",
    "In paths, `<name>` (or `<path>`, `<attr>`...) stands for a key you choose, and `[]`",
    "for each item of a list. A default in code is used as written; a default in words is",
    "derived from other options when the declaration is resolved. *required* options must",
    "be set whenever their table is; *optional* ones may be left out.",
    "",
    "## Contents",
    "",
    ...[...sections.keys()].map((title) => `- [${title}](#${anchor(title)})`),
  ];
  for (const [title, options] of sections) {
    out.push("", `## ${title}`);
    for (const option of options) {
      out.push(
        "",
        `### \`${option.path}\``,
        "",
        `- Type: ${option.type}`,
        `- Default: ${option.default}`,
      );
      if (option.description !== undefined) out.push("", prose(option.description));
    }
  }
  return `${out.join("\n")}\n`;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
