/**
 * `nuketown change propose|verify|approve|apply|rollback|status|log`: thin
 * over src/change/control.ts.
 */
import { formatRecord } from "../audit/log.ts";
import { ChangeControl } from "../change/control.ts";
import { describeProposal, type Proposal } from "../change/proposal.ts";
import { EXIT } from "../errors.ts";
import { printable, type Streams } from "../output.ts";
import { townFrom } from "./town-source.ts";

interface ChangeOptions extends Streams {
  readonly config?: string;
  readonly manifest?: string;
  readonly cwd: string;
  readonly json?: boolean;
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
  return withControl(opts, async (c) => {
    const p = await c.propose({
      host: opts.host,
      explanation: opts.explain,
      ...(opts.branch !== undefined && { branch: opts.branch }),
      ...(opts.from !== undefined && { from: opts.from }),
      ...(opts.patch !== undefined && { patch: opts.patch }),
      ...(opts.agent !== undefined && { agent: opts.agent }),
    });
    show(opts, p);
    if (!opts.json) opts.out.write(`next: nuketown change verify ${p.id}\n`);
    return EXIT.ok;
  });
}

export async function changeStep(
  opts: ChangeOptions & {
    readonly id: string;
    readonly step: "verify" | "approve" | "apply" | "rollback";
  },
): Promise<number> {
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
  return withControl(opts, async (c) => {
    if (opts.id !== undefined) {
      show(opts, await c.get(opts.id));
      return EXIT.ok;
    }
    const all = await c.list();
    if (opts.json) opts.out.write(`${JSON.stringify(all, null, 2)}\n`);
    else
      opts.out.write(
        all.length === 0
          ? "no changes proposed\n"
          : `${all.map((p) => printable(describeProposal(p))).join("\n")}\n`,
      );
    return EXIT.ok;
  });
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
