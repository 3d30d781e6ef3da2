/**
 * The NixOS option declarations of the town (nix/options.generated.nix),
 * generated from the same JSON Schema as the reference page, so a NixOS
 * `nuketown.*` option has the name, the default and the description of the
 * TOML key. Values are checked by `nuketown check` at build time (the module's
 * manifest derivation), with the same messages as anywhere else; the Nix
 * types catch the shape early. Pure.
 */
import type { JsonSchema } from "./reference.ts";

export const NIX_OPTIONS_FILE = "nix/options.generated.nix";

/**
 * Lists whose items may be written as a plain string: the string becomes
 * this field of the table (`persist = [ "projects" ]` → `{ path = "projects"; }`),
 * as zod accepts both forms. Any other string-or-table value stays
 * `either str (submodule ...)` (a secret named by its key is not a file).
 */
const SHORTHAND_FIELD: Readonly<Record<string, string>> = { persist: "path", repos: "url" };

const SAFE_INT = Number.MAX_SAFE_INTEGER;

/** `{ lib }: { <option> = mkOption { ... }; ... }`: the options under `nuketown`. */
export function renderNixOptions(schema: JsonSchema): string {
  const properties = objectOf(schema.properties);
  const required = new Set(listOf(schema.required));
  const body = Object.entries(properties).map(([key, child]) =>
    key === "enable"
      ? // A NixOS module does nothing until enabled (the TOML file's default is true: it exists).
        `enable = lib.mkEnableOption "nuketown: the town declared in nuketown.*";`
      : option(key, objectOf(child), required.has(key), 1),
  );
  return [
    "# Generated from src/town/schema.ts by `npm run generate`. Do not edit by hand.",
    "# The options under `nuketown`: names, defaults and descriptions are the TOML keys'",
    "# (docs/reference.md); nix/module.nix adds the NixOS-only ones under `nuketown.nixos`.",
    "{ lib }:",
    "let",
    "  inherit (lib) mkOption types literalMD;",
    "in",
    "{",
    ...body.map((line) => indent(line, 1)),
    "}",
    "",
  ].join("\n");
}

function option(key: string, node: JsonSchema, required: boolean, depth: number): string {
  const fields: string[] = [];
  const hasDefault = node.default !== undefined;
  const nullable = !hasDefault && !required;
  const type = typeOf(node, key, depth);
  fields.push(`type = ${nullable ? `types.nullOr ${paren(type)}` : type};`);
  if (hasDefault) fields.push(`default = ${nixValue(node.default)};`);
  else if (nullable) fields.push("default = null;");
  if (typeof node["x-default"] === "string")
    fields.push(`defaultText = literalMD ${nixString(node["x-default"])};`);
  if (typeof node.description === "string")
    fields.push(`description = ${nixString(node.description)};`);
  return `${attrName(key)} = mkOption {\n${fields.map((f) => indent(f, 1)).join("\n")}\n};`;
}

function typeOf(node: JsonSchema, key: string, depth: number): string {
  if (Array.isArray(node.anyOf)) return unionType(node.anyOf.map(objectOf), key, depth);
  if (Array.isArray(node.enum)) return `types.enum [ ${node.enum.map(nixValue).join(" ")} ]`;
  switch (node.type) {
    case "boolean":
      return "types.bool";
    case "integer":
      return intType(node);
    case "string":
      return "types.str";
    case "array": {
      const items = objectOf(node.items);
      const shorthand = SHORTHAND_FIELD[key];
      if (Array.isArray(items.anyOf) && shorthand !== undefined) {
        const table = items.anyOf.map(objectOf).find((b) => b.type === "object");
        if (table === undefined) throw new Error(`${key}: a shorthand needs a table form`);
        return `types.listOf (types.coercedTo types.str (${attrName(shorthand)}: { inherit ${attrName(shorthand)}; }) ${paren(submodule(table, depth))})`;
      }
      return `types.listOf ${paren(typeOf(items, key, depth))}`;
    }
    case "object": {
      if (isObject(node.properties)) return submodule(node, depth);
      const values = objectOf(node.additionalProperties);
      return `types.attrsOf ${paren(Object.keys(values).length === 0 ? "types.anything" : typeOf(values, key, depth))}`;
    }
    default:
      if (Object.keys(node).every((k) => k === "description")) return "types.anything";
      throw new Error(`${key}: no Nix type for ${JSON.stringify(node).slice(0, 120)}`);
  }
}

function unionType(branches: JsonSchema[], key: string, depth: number): string {
  const types = branches.map((b) => typeOf(b, key, depth));
  return types.reduce((acc, t) => `types.either ${paren(acc)} ${paren(t)}`);
}

function intType(node: JsonSchema): string {
  const num = (k: string) => {
    const v = node[k];
    return typeof v === "number" && Math.abs(v) < SAFE_INT ? v : undefined;
  };
  const above = num("exclusiveMinimum");
  const lo = num("minimum") ?? (above === undefined ? undefined : above + 1);
  const hi = num("maximum");
  if (lo !== undefined && hi !== undefined) return `types.ints.between ${lo} ${hi}`;
  if (lo === 0) return "types.ints.unsigned";
  if (lo === 1) return "types.ints.positive";
  if (lo !== undefined) return `types.addCheck types.int (n: n >= ${lo})`;
  return "types.int";
}

function submodule(node: JsonSchema, depth: number): string {
  const properties = objectOf(node.properties);
  const required = new Set(listOf(node.required));
  const options = Object.entries(properties).map(([k, child]) =>
    option(k, objectOf(child), required.has(k), depth + 1),
  );
  return `types.submodule {\n${indent("options = {", 1)}\n${options.map((o) => indent(o, 2)).join("\n")}\n${indent("};", 1)}\n}`;
}

/** A JSON value as a Nix expression. */
export function nixValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return nixString(value);
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  if (Array.isArray(value))
    return value.length === 0 ? "[ ]" : `[ ${value.map(nixValue).join(" ")} ]`;
  if (isObject(value)) {
    const entries = Object.entries(value);
    return entries.length === 0
      ? "{ }"
      : `{ ${entries.map(([k, v]) => `${attrName(k)} = ${nixValue(v)};`).join(" ")} }`;
  }
  throw new Error(`no Nix value for ${String(value)}`);
}

/** A double-quoted Nix string: `\`, `"` and `${` escaped, control characters spelled. */
export function nixString(value: string): string {
  const escaped = value
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/\$\{/g, "\\${")
    .replace(/\n/g, "\\n")
    .replace(/\r/g, "\\r")
    .replace(/\t/g, "\\t");
  return `"${escaped}"`;
}

function attrName(key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_'-]*$/.test(key) ? key : nixString(key);
}

const paren = (type: string) => (/^[\w.]+$/.test(type) ? type : `(${type})`);

function indent(text: string, levels: number): string {
  const pad = "  ".repeat(levels);
  return text
    .split("\n")
    .map((line) => (line === "" ? line : pad + line))
    .join("\n");
}

function objectOf(value: unknown): JsonSchema {
  return isObject(value) ? value : {};
}

function listOf(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
