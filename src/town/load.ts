/**
 * The effectful edge of the declaration: read a file (or stdin), learn the
 * host name, then hand everything to the pure parse and resolve steps.
 */
import { readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { ConfigError } from "../errors.ts";
import { runningInstall } from "../sources.ts";
import { type DeclarationFormat, formatFromName, parseDeclaration } from "./parse.ts";
import type { Problem } from "./problems.ts";
import { resolveTown } from "./resolve.ts";
import type { ResolvedTown } from "./types.ts";

export interface LoadOptions {
  /** Overrides the format guessed from the file name; required for stdin. */
  readonly format?: DeclarationFormat;
  /** Defaults to this machine's host name. */
  readonly hostname?: string;
  readonly cwd?: string;
  readonly stdin?: NodeJS.ReadableStream;
  /** Install prefix when the declaration names none; defaults to the running installation's. */
  readonly installPrefix?: string;
}

export interface LoadedTown {
  readonly town: ResolvedTown;
  readonly warnings: readonly Problem[];
  readonly source: string;
}

/** Parse, normalize and validate a declaration; throws ConfigError listing every problem. */
export async function loadTown(file: string, options: LoadOptions = {}): Promise<LoadedTown> {
  const cwd = options.cwd ?? process.cwd();
  const fromStdin = file === "-";
  const source = fromStdin ? "<stdin>" : file;
  const format = options.format ?? (fromStdin ? undefined : formatFromName(file));
  if (format === undefined) {
    throw new ConfigError(source, [
      {
        path: "",
        message: "unknown format: name the file .toml, .json, .yaml, .nix.json, or pass --format",
      },
    ]);
  }
  const text = fromStdin
    ? await readStream(options.stdin ?? process.stdin)
    : await readFile(path.resolve(cwd, file), "utf8").catch((error: NodeJS.ErrnoException) => {
        throw new ConfigError(source, [
          { path: "", message: `cannot read: ${error.code ?? error.message}` },
        ]);
      });
  const raw = parseDeclaration(text, format, source);
  const result = resolveTown(raw, {
    hostname: options.hostname ?? os.hostname(),
    baseDir: fromStdin ? cwd : path.dirname(path.resolve(cwd, file)),
    installPrefix: options.installPrefix ?? runningInstall()?.prefix,
  });
  if (!result.town) throw new ConfigError(source, result.errors);
  return { town: result.town, warnings: result.warnings, source };
}

async function readStream(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
  return Buffer.concat(chunks).toString("utf8");
}
