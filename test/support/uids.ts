/**
 * The registry of test uids: which test file owns which uids in
 * TEST_UID_MIN–TEST_UID_MAX (host.ts). Test files run at the same time, each making
 * real accounts, so no two may use the same uid; a file uses only its own
 * rows (test/unit/uids.test.ts fails otherwise). A new test takes free uids
 * here first. The benches (bench/) run one after another, never beside the
 * tests: they keep to BENCH_UIDS, which no row may touch.
 */
import path from "node:path";

export interface UidRange {
  readonly min: number;
  readonly max: number;
}

export interface UidReservation extends UidRange {
  /** The test file that owns the range, relative to the repository. */
  readonly file: string;
  /** What the uids are for. */
  readonly use: string;
}

const row = (file: string, min: number, max: number, use: string): UidReservation => ({
  file: `test/${file}`,
  min,
  max,
  use,
});

/** The benches' uids (bench/*.ts); test/unit/uids.test.ts holds them to it. */
export const BENCH_UIDS: UidRange = { min: 60900, max: 60999 };

export const UID_REGISTRY: readonly UidReservation[] = [
  row("integration/host.test.ts", 60101, 60104, "agents nt-test-a to -d"),
  row("integration/host.test.ts", 60150, 60150, "an account nuketown did not make"),
  row("integration/approval.test.ts", 60201, 60204, "agents, mayor, stranger"),
  row("integration/agent.test.ts", 60301, 60304, "two agents, mayor, stranger"),
  row("integration/portal.test.ts", 60401, 60402, "agent, mayor"),
  row("integration/review.test.ts", 60410, 60411, "declared agents (no accounts)"),
  row("integration/approval-binding.test.ts", 60420, 60424, "mayor, agent, a target with an alias"),
  row(
    "integration/reset-containment.test.ts",
    60430,
    60431,
    "agent, another uid whose files stay (no account)",
  ),
  row("integration/review.test.ts", 60462, 60463, "an agent with an account, a declared one"),
  row("integration/host-repair.test.ts", 60460, 60461, "agents a and b"),
  row(
    "integration/host-repair.test.ts",
    60464,
    60464,
    "the agent of the town under new directories",
  ),
  row("integration/up.test.ts", 60465, 60465, "the agent of the town nobody can approve in"),
  row("integration/chat-one-process.test.ts", 60490, 60493, "Matrix, XMPP towns: agent, mayor"),
  row("integration/up.test.ts", 60501, 60502, "agent, mayor"),
  row(
    "integration/change-agent.test.ts",
    60530,
    60533,
    "agent, another agent, approver, a non-agent",
  ),
  row("integration/install.test.ts", 60561, 60562, "agent, mayor"),
  row("integration/devices.test.ts", 60570, 60574, "one agent, the first free uid"),
  row("integration/secrets.test.ts", 60575, 60579, "one agent, the first free uid"),
  row("integration/talk.test.ts", 60601, 60602, "agent, mayor"),
  row("integration/agent-clis.test.ts", 60610, 60613, "three agents, mayor"),
  row("attack/town.ts", 60640, 60642, "issue 17's attack town: agents ada and vox, the mayor"),
  row("integration/agent-containment.test.ts", 60701, 60701, "agent"),
  row("integration/packages.test.ts", 60710, 60710, "agent"),
  row("integration/chat.test.ts", 60711, 60712, "Matrix town: agent, mayor"),
  row("integration/chat.test.ts", 60721, 60722, "XMPP town: agent, mayor"),
  row("integration/desktop.test.ts", 60731, 60732, "mayor, agent"),
  row("integration/reset-git.test.ts", 60741, 60741, "agent"),
  row("integration/change.test.ts", 60801, 60802, "agents"),
  row("integration/change.test.ts", 60810, 60810, "mayor"),
  row("integration/deb.test.ts", 60811, 60812, "agent, mayor"),
  row("integration/sudo-sessions.test.ts", 60821, 60822, "agent, mayor"),
  row("integration/dashboard.test.ts", 60861, 60863, "mayor, another human, agent"),
];

const REPO = path.join(import.meta.dirname, "..", "..");

/** The uids a test file owns; `file` is its path (import.meta.filename). */
export class Uids {
  readonly file: string;
  readonly ranges: readonly UidRange[];

  /** `ranges`: given outright, for a caller outside test/ (a bench) that the registry does not cover. */
  constructor(file: string, ranges?: readonly UidRange[]) {
    this.file = path.relative(REPO, file);
    this.ranges = ranges ?? UID_REGISTRY.filter((r) => r.file === this.file);
    if (this.ranges.length === 0)
      throw new Error(`${this.file} owns no uids: reserve some in test/support/uids.ts`);
  }

  has(uid: number): boolean {
    return this.ranges.some((r) => uid >= r.min && uid <= r.max);
  }

  /** `uid`, or an error naming the file and the registry when it is not this file's. */
  check(uid: number, what: string): number {
    if (!this.has(uid))
      throw new Error(
        `${what}: uid ${uid} is not reserved for ${this.file} (${this.describe()}); see test/support/uids.ts`,
      );
    return uid;
  }

  /** Every uid owned, lowest first. */
  all(): number[] {
    return this.ranges.flatMap((r) =>
      Array.from({ length: r.max - r.min + 1 }, (_, i) => r.min + i),
    );
  }

  describe(): string {
    return this.ranges.map((r) => (r.min === r.max ? `${r.min}` : `${r.min}-${r.max}`)).join(", ");
  }
}

export function uidsOf(file: string, ranges?: readonly UidRange[]): Uids {
  return new Uids(file, ranges);
}
