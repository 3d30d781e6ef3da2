/**
 * How a change request reads on every approval channel (terminal, desktop,
 * chat): who proposes what for which machine, how risky and why, the exact
 * commit the answer is bound to. Pure.
 */
import type { PendingRequest } from "../approval/protocol.ts";

type ChangeRequest = NonNullable<PendingRequest["change"]>;

/** Plain lines; channels escape them for their own markup. */
export function changeLines(agent: string, change: ChangeRequest): string[] {
  const explanation = change.explanation.trim().split("\n").slice(0, 6);
  const diffstat = change.diffstat.trim().split("\n");
  return [
    `${agent} proposes change ${change.id} to ${change.host} — risk ${change.risk.toUpperCase()}`,
    ...explanation.map((l) => `  ${l}`),
    `commit ${change.commit} (on ${change.base.slice(0, 12)})`,
    ...diffstat.slice(-6),
    ...change.reasons.slice(0, 6).map((r) => `risk: ${r}`),
    ...(change.closure ? [`closure: ${change.closure.split("\n").slice(0, 6).join("; ")}`] : []),
  ];
}

/** One short line, for tables. */
export function changeSummary(change: ChangeRequest): string {
  return `change ${change.id} → ${change.host} (${change.risk} risk) ${change.commit.slice(0, 12)}`;
}
