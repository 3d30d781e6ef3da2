import { realpath } from "node:fs/promises";
import path from "node:path";
import { createTwoFilesPatch } from "diff";
import { usesGate } from "../approval/wrappers.ts";
import { EXIT, RefusedError } from "../errors.ts";
import { applyPlan } from "../host/apply.ts";
import { observeHost, systemdIsInit } from "../host/observe.ts";
import {
  type Action,
  describeAction,
  type HostPlan,
  LAYERS,
  type ObservedHost,
  planHost,
} from "../host/plan.ts";
import { createDecryptor } from "../host/secrets.ts";
import { refuseWritableByOthers } from "../install/install.ts";
import { PROGRAM_FILES } from "../install/layout.ts";
import { withHostLock } from "../os/lock.ts";
import { systemRunner } from "../os/process.ts";
import { plural, type Streams } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { formatProblem } from "../town/problems.ts";
import type { ResolvedTown } from "../town/types.ts";
import { requireRoot, townFrom } from "./town-source.ts";

export interface PlanOptions extends Streams {
  /** The declaration; absent: the manifest (`--manifest`, else the installed one). */
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  readonly format?: DeclarationFormat;
  readonly hostname?: string;
  /** Plan against (and apply into) a rendered tree instead of the live host. */
  readonly root?: string;
  readonly purge?: boolean;
  readonly json?: boolean;
}

async function makePlan(
  opts: PlanOptions,
  loaded?: ResolvedTown,
): Promise<{ town: ResolvedTown; observed: ObservedHost; plan: HostPlan }> {
  const town = loaded ?? (await townFrom(opts));
  const programs = true;
  const observed = await observeHost(town, { root: opts.root, programs });
  const plan = planHost(town, observed, {
    purge: opts.purge,
    filesOnly: opts.root !== undefined,
    programs,
  });
  return { town, observed, plan };
}

/** `nuketown plan`: what apply would change, layer by layer. */
export async function plan(opts: PlanOptions): Promise<number> {
  const { observed, plan: hostPlan } = await makePlan(opts);
  if (opts.json) {
    opts.out.write(`${JSON.stringify(planJson(hostPlan), null, 2)}\n`);
  } else {
    opts.out.write(renderPlan(hostPlan, observed));
  }
  return hostPlan.errors.length > 0 ? EXIT.refused : EXIT.ok;
}

/** `nuketown apply`: converge the host; a second run reports no changes. */
export async function apply(opts: PlanOptions): Promise<number> {
  if (opts.root === undefined) requireRoot("apply");
  const town = await townFrom(opts);
  return withHostLock(opts.root ?? town.stateDir, "apply", async () => {
    const { observed, plan: hostPlan } = await makePlan(opts, town);
    if (hostPlan.errors.length > 0) {
      if (opts.json) opts.out.write(`${JSON.stringify(planJson(hostPlan), null, 2)}\n`);
      else opts.err.write(renderPlan(hostPlan, observed));
      throw new RefusedError(
        `${plural(hostPlan.errors.length, "conflict")} with this host; nothing was applied`,
      );
    }
    if (!opts.json) opts.out.write(renderPlan(hostPlan, observed));
    if (opts.root === undefined && usesGate(town)) {
      await refuseMissingOrWritableProgram(town);
    }
    const report = await applyPlan(hostPlan, {
      town,
      runner: systemRunner,
      decryptor: createDecryptor({ ageKeyFile: town.secrets.ageKeyFile, runner: systemRunner }),
      systemd: opts.root === undefined && (await systemdIsInit()),
      root: opts.root,
      log: (line) => opts.err.write(`${line}\n`),
    });
    for (const warning of report.warnings) opts.err.write(`warning: ${warning}\n`);
    if (opts.json) {
      opts.out.write(
        `${JSON.stringify({ ...planJson(hostPlan), applied: report.done.length, warnings: report.warnings }, null, 2)}\n`,
      );
    } else if (report.done.length > 0) {
      opts.out.write(`applied ${plural(report.done.length, "change")}\n`);
    }
    return EXIT.ok;
  });
}

function planJson(hostPlan: HostPlan) {
  return {
    changes: hostPlan.actions.length,
    actions: hostPlan.actions.map((a) => ({ ...stripContent(a), summary: describeAction(a) })),
    errors: hostPlan.errors,
    notes: hostPlan.notes,
  };
}

function stripContent(action: Action): object {
  if (action.kind !== "write-file") return action;
  const { content: _content, ...artifact } = action.artifact;
  return { ...action, artifact };
}

/** The plan as text: conflicts first, then each layer's changes, with diffs of updated files. */
export function renderPlan(hostPlan: HostPlan, observed: ObservedHost): string {
  const out: string[] = [];
  for (const error of hostPlan.errors) out.push(`conflict: ${formatProblem(error)}`);
  for (const layer of LAYERS) {
    const actions = hostPlan.actions.filter((a) => a.layer === layer);
    if (actions.length === 0) continue;
    out.push(layer);
    for (const action of actions) {
      out.push(`  ${describeAction(action)}`);
      if (action.kind === "write-file" && action.change === "update") {
        const before = observed.files[action.artifact.path]?.content ?? "";
        out.push(
          indentDiff(
            createTwoFilesPatch(
              action.artifact.path,
              action.artifact.path,
              before,
              action.artifact.content,
              "installed",
              "declared",
            ),
          ),
        );
      }
    }
  }
  for (const note of hostPlan.notes) out.push(`note: ${note}`);
  out.push(
    hostPlan.actions.length === 0
      ? "no changes"
      : `${plural(hostPlan.actions.length, "change")} planned`,
  );
  return `${out.join("\n")}\n`;
}

const indentDiff = (patch: string) =>
  patch
    .split("\n")
    .slice(2)
    .filter((line) => line !== "" && !line.startsWith("\\"))
    .map((line) => `      ${line}`)
    .join("\n");

/**
 * The approval gate runs the installed nuketown as root: refuse to point it
 * there when nothing is installed, or when anyone but root could change
 * what is (a checkout a user or an agent can write to would be a way to root).
 */
async function refuseMissingOrWritableProgram(town: ResolvedTown): Promise<void> {
  const gate = path.join(town.install.programDir, PROGRAM_FILES.gate);
  const node = path.join(town.install.programDir, PROGRAM_FILES.node);
  const real = await Promise.all([realpath(gate), realpath(node)]).catch(() => undefined);
  if (real === undefined) {
    throw new RefusedError(
      `the approval gate runs the installed nuketown, and there is none in ${town.install.programDir}: run \`nuketown install\` first (\`nuketown up\` does)`,
    );
  }
  for (const file of real) await refuseWritableByOthers(file, "let the approval gate run");
}
