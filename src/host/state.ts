/**
 * What nuketown did to this host, kept in `<stateDir>/state.json`: the
 * accounts it created (the only ones it will ever change or remove), the
 * files it installed, and each agent's last round.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../os/files.ts";

export interface AgentRecord {
  readonly uid: number;
  /** Digest of everything a round places in the home; a change means reset. */
  readonly roundDigest?: string;
  /** ISO time of the last reset. */
  readonly lastReset?: string;
}

export interface HostState {
  readonly version: 1;
  /** Agents whose user and group nuketown created. */
  readonly agents: Readonly<Record<string, AgentRecord>>;
  /** The approvers group, when nuketown created it. */
  readonly approversGroup?: string;
  /** System files nuketown installed (absolute paths). */
  readonly files: readonly string[];
  /** Where another system owns the udev rules: the rules whose ACLs were last granted. */
  readonly deviceRules?: string;
}

export const EMPTY_STATE: HostState = { version: 1, agents: {}, files: [] };

export const statePath = (stateDir: string) => path.join(stateDir, "state.json");

export async function readState(stateDir: string): Promise<HostState> {
  try {
    const parsed = JSON.parse(await readFile(statePath(stateDir), "utf8")) as HostState;
    return { ...EMPTY_STATE, ...parsed };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return EMPTY_STATE;
    throw error;
  }
}

export async function writeState(stateDir: string, state: HostState): Promise<void> {
  await writeFileAtomic(statePath(stateDir), `${JSON.stringify(state, null, 2)}\n`, {
    mode: 0o600,
    dirMode: 0o755,
  });
}
