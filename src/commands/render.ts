import path from "node:path";
import { EXIT, RefusedError } from "../errors.ts";
import { renderArtifacts } from "../host/render/index.ts";
import { writeTree } from "../host/tree.ts";
import { verifySudoers } from "../host/verify.ts";
import { plural, type Streams, table } from "../output.ts";
import { loadTown } from "../town/load.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { writeWarnings } from "./check.ts";

export interface RenderOptions extends Streams {
  readonly config: string;
  /** Directory to render into; replaced as a whole. */
  readonly outDir: string;
  readonly cwd: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  readonly json?: boolean;
}

/**
 * `nuketown render`: every artifact under a directory, laid out as it would
 * land on the host. A declaration that fails validation, or a sudoers file
 * that visudo rejects, writes nothing.
 */
export async function render(opts: RenderOptions): Promise<number> {
  const { town, warnings } = await loadTown(opts.config, opts);
  writeWarnings(opts.err, warnings);
  const artifacts = renderArtifacts(town, true);

  const sudoers = artifacts.find((a) => a.path === town.paths.sudoers);
  if (sudoers) {
    const verdict = await verifySudoers(sudoers.content);
    if ("skipped" in verdict) opts.err.write(`warning: sudoers not checked: ${verdict.skipped}\n`);
    else if (!verdict.ok)
      throw new RefusedError(`visudo rejects the rendered sudoers file:\n${verdict.output}`);
  }

  const target = path.resolve(opts.cwd, opts.outDir);
  const written = await writeTree(target, artifacts, town.name);
  if (opts.json) {
    opts.out.write(`${JSON.stringify({ out: target, files: written }, null, 2)}\n`);
    return EXIT.ok;
  }
  opts.out.write(
    `rendered ${plural(written.length, "file")} for town ${town.name} into ${target}\n\n` +
      `${table(
        ["layer", "mode", "owner", "path"],
        written.map((w) => [w.layer, w.mode, w.owner, w.path]),
      )}\n`,
  );
  return EXIT.ok;
}
