/**
 * Text → raw declaration, for each supported format. Pure: the caller reads
 * the file. Syntax errors name the source, line and column.
 */
import { parse as parseToml, TomlError } from "smol-toml";
import { parseDocument } from "yaml";
import { ConfigError } from "../errors.ts";

import type { DeclarationFormat } from "./formats.ts";

export { type DeclarationFormat, FORMATS } from "./formats.ts";

/** Guess the format from a file name; `.nix.json` is `nix eval --json` output. */
export function formatFromName(file: string): DeclarationFormat | undefined {
  if (file.endsWith(".nix.json")) return "nix";
  if (file.endsWith(".toml")) return "toml";
  if (file.endsWith(".json")) return "json";
  if (file.endsWith(".yaml") || file.endsWith(".yml")) return "yaml";
  return undefined;
}

export function parseDeclaration(text: string, format: DeclarationFormat, source: string): unknown {
  switch (format) {
    case "toml":
      return parseTomlText(text, source);
    case "yaml":
      return parseYamlText(text, source);
    case "json":
      return parseJsonText(text, source);
    case "nix":
      // `nix eval --json` prints unset nullable options as null: same as absent.
      return withoutNixosOptions(dropNulls(parseJsonText(text, source)));
  }
}

function parseTomlText(text: string, source: string): unknown {
  try {
    return parseToml(text);
  } catch (error) {
    if (error instanceof TomlError) {
      const first = error.message.split("\n")[0] ?? error.message;
      throw syntaxError(
        source,
        error.line,
        error.column,
        first.replace(/^Invalid TOML document: /, ""),
      );
    }
    throw error;
  }
}

function parseYamlText(text: string, source: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true });
  const [first] = doc.errors;
  if (first) {
    const pos = first.linePos?.[0];
    // Pretty messages repeat the position and quote the source; keep the reason.
    const reason = first.message.split(/ at line \d+|\n/)[0] ?? first.message;
    throw syntaxError(source, pos?.line, pos?.col, reason);
  }
  return doc.toJS({ maxAliasCount: 100 });
}

function parseJsonText(text: string, source: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(source, [
      { path: "", message: `not valid JSON: ${(error as Error).message}` },
    ]);
  }
  // JSON.parse keeps the last of two equal keys silently; a town must not.
  const doc = parseDocument(text, { uniqueKeys: true });
  const duplicate = doc.errors.find((e) => e.code === "DUPLICATE_KEY");
  if (duplicate) {
    const pos = duplicate.linePos?.[0];
    throw syntaxError(source, pos?.line, pos?.col, "duplicate key");
  }
  return value;
}

function syntaxError(
  source: string,
  line: number | undefined,
  column: number | undefined,
  message: string,
) {
  const where = line === undefined ? source : `${source}:${line}:${column ?? 1}`;
  return new ConfigError(where, [{ path: "", message: `syntax error: ${message}` }]);
}

/** `nuketown.nixos` holds the NixOS module's own options (package, manifest), not the town's. */
function withoutNixosOptions(value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  const { nixos: _nixos, ...town } = value as Record<string, unknown>;
  return town;
}

function dropNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(dropNulls);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== null)
        .map(([k, v]) => [k, dropNulls(v)]),
    );
  }
  return value;
}
