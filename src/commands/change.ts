/**
 * `nuketown change propose|verify|approve|apply|rollback|status|log`: thin
 * over src/change/control.ts as root; an agent's propose, verify and status
 * go to approvald's change socket (src/change/service.ts), which knows it
 * by its uid.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { formatRecord } from "../audit/log.ts";
import { askChangeService, ChangeServiceError } from "../change/client.ts";
import { ChangeControl } from "../change/control.ts";
import { describeProposal, type Proposal } from "../change/proposal.ts";
import { changeSocketPath } from "../change/protocol.ts";
import { EXIT, RefusedError } from "../errors.ts";
import { printable, type Streams } from "../output.ts";
import { townFrom } from "./town-source.ts";

interface ChangeOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  readonly json?: boolean;
  /** @default process.getuid() */
  readonly uid?: number;
}

const callerUid = (opts: ChangeOptions) => opts.uid ?? process.getuid?.() ?? 0;

/** The daemon's refusal, with its hint for the human at the terminal. */
async function viaSocket<T>(opts: ChangeOptions, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof ChangeServiceError && error.hint !== "")
      opts.err.write(`nuketown: hint: ${error.hint}\n`);
    throw error;
  }
}

async function control(opts: ChangeOptions): Promise<ChangeControl> {
  const town = await townFrom(opts);
  return new ChangeControl({
    town,
    say: (line) => opts.err.write(`nuketown: ${printable(line)}\n`),
  });
}

async function withControl(
  opts: ChangeOptions,
  work: (c: ChangeControl) => Promise<number>,
): Promise<number> {
  const c = await control(opts);
  try {
    return await work(c);
  } finally {
    await c.close();
  }
}

function show(opts: ChangeOptions, p: Proposal): void {
  if (opts.json) return void opts.out.write(`${JSON.stringify(p, null, 2)}\n`);
  const lines = [
    `change ${p.id}: ${p.state}`,
    `  agent ${p.agent} · host ${p.host} · risk ${p.risk}`,
    `  commit ${p.commit} on ${p.base.slice(0, 12)} (${p.branch})`,
    ...p.explanation.split("\n").map((l) => `  │ ${l}`),
    ...p.diffstat.split("\n").map((l) => `  ${l}`),
    ...p.riskReasons.map((r) => `  risk: ${r}`),
    ...(p.options.length > 0 ? [`  options: ${p.options.join(", ")}`] : []),
  ];
  if (p.verify) {
    lines.push(
      `  verify: ${p.verify.ok ? "built" : "FAILED"} in ${p.verify.seconds.toFixed(1)} s (log ${p.verify.log})`,
    );
    if (p.verify.error) lines.push(...p.verify.error.split("\n").map((l) => `    ${l}`));
    if (p.verify.closure)
      lines.push(
        `  closure (${p.verify.closure.tool}):`,
        ...p.verify.closure.summary
          .split("\n")
          .slice(0, 30)
          .map((l) => `    ${l}`),
      );
  }
  if (p.approval)
    lines.push(
      `  approval: ${p.approval.decision} by ${p.approval.by.kind}${p.approval.by.id ? ` ${p.approval.by.id}` : ""} (${p.approval.reason}) for ${p.approval.commit.slice(0, 12)}`,
    );
  if (p.apply)
    lines.push(
      `  apply: ${p.apply.ok ? "applied" : `failed (${p.apply.error})`}; previous generation ${p.apply.previousGeneration}${p.apply.generation ? `, now ${p.apply.generation}` : ""}${p.apply.rolledBack ? "; rolled back" : ""}`,
    );
  if (p.rollback)
    lines.push(`  rollback: ${p.rollback.ok ? "done" : "FAILED"} to ${p.rollback.to}`);
  opts.out.write(`${lines.map(printable).join("\n")}\n`);
}

const exitFor = (p: Proposal) =>
  ["verify-failed", "denied", "apply-failed", "rolled-back"].includes(p.state) &&
  p.rollback === undefined
    ? EXIT.failed
    : EXIT.ok;

export async function changePropose(
  opts: ChangeOptions & {
    readonly host: string;
    readonly explain: string;
    readonly branch?: string;
    readonly from?: string;
    readonly patch?: string;
    readonly agent?: string;
  },
): Promise<number> {
  const from = opts.from === undefined ? undefined : path.resolve(opts.cwd, opts.from);
  const done = (p: Proposal) => {
    show(opts, p);
    if (!opts.json) opts.out.write(`next: nuketown change verify ${p.id}\n`);
    return EXIT.ok;
  };
  if (callerUid(opts) !== 0) {
    const town = await townFrom(opts);
    const self = town.agents.find((a) => a.uid === callerUid(opts));
    if (!self)
      throw new RefusedError(
        `uid ${callerUid(opts)} is not an agent of ${town.name}: an agent proposes as itself, root for an agent (--agent)`,
      );
    if (opts.agent !== undefined && opts.agent !== self.name)
      throw new RefusedError(`${self.name} cannot propose as ${opts.agent}`);
    // The patch is read here, as the agent: the daemon never opens a path it is given.
    const patch =
      opts.patch === undefined
        ? undefined
        : await readFile(path.resolve(opts.cwd, opts.patch), "utf8");
    return done(
      await viaSocket(opts, () =>
        askChangeService(changeSocketPath(town), {
          type: "propose",
          host: opts.host,
          explanation: opts.explain,
          ...(opts.branch !== undefined && { branch: opts.branch }),
          ...(from !== undefined && { from }),
          ...(patch !== undefined && { patch }),
        }),
      ),
    );
  }
  return withControl(opts, async (c) =>
    done(
      await c.propose({
        host: opts.host,
        explanation: opts.explain,
        ...(opts.branch !== undefined && { branch: opts.branch }),
        ...(from !== undefined && { from }),
        ...(opts.patch !== undefined && { patch: path.resolve(opts.cwd, opts.patch) }),
        ...(opts.agent !== undefined && { agent: opts.agent }),
      }),
    ),
  );
}

export async function changeStep(
  opts: ChangeOptions & {
    readonly id: string;
    readonly step: "verify" | "approve" | "apply" | "rollback";
  },
): Promise<number> {
  if (opts.step === "verify" && callerUid(opts) !== 0) {
    const town = await townFrom(opts);
    const p = await viaSocket(opts, () =>
      askChangeService(changeSocketPath(town), { type: "verify", id: opts.id }),
    );
    show(opts, p);
    return exitFor(p);
  }
  return withControl(opts, async (c) => {
    let p: Proposal;
    if (opts.step === "verify") p = await c.verify(opts.id);
    else if (opts.step === "approve")
      p = await c.approve(opts.id, (request) =>
        opts.err.write(
          `nuketown: waiting for a human: nuketown approve ${request} (or deny ${request})\n`,
        ),
      );
    else if (opts.step === "apply") p = await c.apply(opts.id);
    else p = await c.rollback(opts.id);
    show(opts, p);
    return opts.step === "approve" && p.state !== "approved" ? EXIT.refused : exitFor(p);
  });
}

export async function changeStatus(
  opts: ChangeOptions & { readonly id?: string },
): Promise<number> {
  if (callerUid(opts) !== 0) {
    const town = await townFrom(opts);
    const socket = changeSocketPath(town);
    if (opts.id !== undefined) {
      const id = opts.id;
      show(opts, await viaSocket(opts, () => askChangeService(socket, { type: "status", id })));
      return EXIT.ok;
    }
    listing(opts, await viaSocket(opts, () => askChangeService(socket, { type: "status" })));
    return EXIT.ok;
  }
  return withControl(opts, async (c) => {
    if (opts.id !== undefined) {
      show(opts, await c.get(opts.id));
      return EXIT.ok;
    }
    listing(opts, await c.list());
    return EXIT.ok;
  });
}

function listing(opts: ChangeOptions, all: readonly Proposal[]): void {
  if (opts.json) opts.out.write(`${JSON.stringify(all, null, 2)}\n`);
  else
    opts.out.write(
      all.length === 0
        ? "no changes proposed\n"
        : `${all.map((p) => printable(describeProposal(p))).join("\n")}\n`,
    );
}

export async function changeLog(opts: ChangeOptions & { readonly count: number }): Promise<number> {
  return withControl(opts, async (c) => {
    const { records, verified } = await c.log(opts.count);
    if (opts.json) opts.out.write(`${JSON.stringify({ verified, records }, null, 2)}\n`);
    else
      opts.out.write(`${records.map((r) => printable(formatRecord(r))).join("\n")}\n${verified}\n`);
    return verified.startsWith("audit log intact") ? EXIT.ok : EXIT.failed;
  });
}
