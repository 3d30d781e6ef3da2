/**
 * A proposal: what an agent asks to change in the system configuration, and
 * where it stands. Records are plain JSON; the transitions and the approval
 * policy are pure, so the lifecycle is tested without git or root.
 *
 *   proposed ─verify─▶ verified ─approve─▶ approved ─apply─▶ applied ─rollback─▶ rolled-back
 *       │                 │ (failed)          │ (denied)         │ (health failed)
 *       ▼                 ▼                   ▼                  ▼
 *   verify-failed ◀──  (verify again)      denied            rolled-back (automatic)
 */
import type { Risk } from "./risk.ts";

export type ProposalState =
  | "proposed"
  | "verified"
  | "verify-failed"
  | "approved"
  | "denied"
  | "applied"
  | "apply-failed"
  | "rolled-back";

export interface VerifyReport {
  readonly ok: boolean;
  readonly time: string;
  /** The commit that was built: a verify is only good for that exact commit. */
  readonly commit: string;
  readonly log: string;
  /** The last lines of the build's output when it failed (the evaluator's error). */
  readonly error?: string;
  readonly result?: string;
  /** How the closure was compared (nvd, nix store diff-closures, changed paths) and what it said. */
  readonly closure?: { readonly tool: string; readonly summary: string };
  readonly seconds: number;
}

export interface ApprovalRecord {
  readonly id: string;
  readonly decision: "approved" | "denied" | "timeout" | "cancelled";
  readonly by: { readonly kind: string; readonly id?: string; readonly rule?: number };
  readonly reason: string;
  /** The decision holds for this commit and no other. */
  readonly commit: string;
  readonly hash: string;
  readonly time: string;
}

export interface ApplyRecord {
  readonly time: string;
  readonly commit: string;
  /** What rollback returns to: the generation before this change. */
  readonly previousGeneration: string;
  readonly generation?: string;
  readonly steps: readonly {
    readonly step: string;
    readonly argv: readonly string[];
    readonly code: number;
  }[];
  readonly ok: boolean;
  readonly error?: string;
  readonly rolledBack?: boolean;
}

export interface Proposal {
  readonly v: 1;
  readonly id: string;
  readonly agent: string;
  readonly host: string;
  readonly explanation: string;
  readonly created: string;
  /** The configuration the change was made against. */
  readonly base: string;
  /** The change itself; approval and apply are bound to it. */
  readonly commit: string;
  /** The agent's branch it came from (apply refuses when it moved), or the ref made for a patch. */
  readonly branch: string;
  readonly source: "branch" | "patch";
  readonly risk: Risk;
  readonly riskReasons: readonly string[];
  readonly options: readonly string[];
  readonly diffstat: string;
  readonly state: ProposalState;
  readonly verify?: VerifyReport;
  readonly approval?: ApprovalRecord;
  readonly apply?: ApplyRecord;
  readonly rollback?: {
    readonly time: string;
    readonly to: string;
    readonly ok: boolean;
    readonly error?: string;
  };
}

export type Step = "verify" | "approve" | "apply" | "rollback";

/** May `step` run on `proposal` now? The reason when not, naming the command that would help. */
export function canRun(
  proposal: Proposal,
  step: Step,
): { ok: true } | { ok: false; reason: string } {
  const { state, id } = proposal;
  const no = (reason: string) => ({ ok: false as const, reason });
  switch (step) {
    case "verify":
      return ["proposed", "verified", "verify-failed"].includes(state)
        ? { ok: true }
        : no(`change ${id} is ${state}; only a proposal that is not yet approved is verified`);
    case "approve":
      if (state === "proposed" || state === "verify-failed")
        return no(
          `change ${id} is ${state}: run nuketown change verify ${id} first (only a change that builds is approved)`,
        );
      if (state !== "verified") return no(`change ${id} is ${state}, not waiting for approval`);
      if (proposal.verify?.commit !== proposal.commit)
        return no(`change ${id} was verified at another commit: verify it again`);
      return { ok: true };
    case "apply":
      if (state !== "approved")
        return no(
          state === "verified"
            ? `change ${id} is not approved: nuketown change approve ${id}`
            : `change ${id} is ${state}; only an approved change is applied`,
        );
      if (
        proposal.approval?.decision !== "approved" ||
        proposal.approval.commit !== proposal.commit
      )
        return no(`the approval of change ${id} is not for its commit ${proposal.commit}`);
      return { ok: true };
    case "rollback":
      return state === "applied" && proposal.apply?.previousGeneration
        ? { ok: true }
        : no(`change ${id} is ${state}; only an applied change is rolled back`);
  }
}

/** The approval policy of changes: a low-risk change by an agent the town lists passes alone; anything high asks. */
export function changePolicy(
  autoApprove: readonly string[],
  agent: string,
  risk: Risk,
): { action: "allow" | "ask"; reason: string } {
  if (risk === "high") return { action: "ask", reason: "a high-risk change always asks a human" };
  if (autoApprove.includes(agent))
    return { action: "allow", reason: `a low-risk change by ${agent} (change.autoApprove)` };
  return { action: "ask", reason: `${agent} is not in change.autoApprove` };
}

/** A new proposal id: the date and a few hex digits, short enough to type. */
export function proposalId(now: Date, random: string): string {
  const d = now.toISOString().slice(0, 10).replaceAll("-", "");
  return `${d}-${random.slice(0, 6)}`;
}

export const ID_PATTERN = /^[0-9]{8}-[0-9a-f]{6}$/;

/** One line per proposal for `change status`. */
export function describeProposal(p: Proposal): string {
  return `${p.id}  ${p.state.padEnd(13)} ${p.risk.padEnd(4)} ${p.host}  ${p.agent}  ${p.commit.slice(0, 12)}  ${firstLine(p.explanation)}`;
}

export function firstLine(text: string): string {
  const line = text.split("\n")[0] ?? "";
  return line.length > 72 ? `${line.slice(0, 71)}…` : line;
}
