/**
 * What nuketown did to this host, kept in `<stateDir>/state.json`: the
 * accounts it created (the only ones it will ever change or remove), the
 * files it installed, and each agent's last round.
 */
import { readFile } from "node:fs/promises";
import path from "node:path";
import { writeFileAtomic } from "../os/files.ts";

/**
 * A secret as the last round placed it: the file it came from and that
 * file's sha256 then, and the sha256 of the value the agent received. The
 * value's digest is what a round's digest counts, so editing another
 * agent's key in a shared sops file does not reset this agent; the file's
 * lets a plan skip decrypting what has not changed.
 */
export interface SecretRecord {
  readonly file: string;
  readonly key?: string;
  readonly fileHash: string;
  readonly valueHash: string;
}

export interface AgentRecord {
  readonly uid: number;
  /** By the secret's place in the home (its target, or `gpg` for the imported key). */
  readonly secrets?: Readonly<Record<string, SecretRecord>>;
  /** Digest of everything a round places in the home; a change means reset. */
  readonly roundDigest?: string;
  /** ISO time of the last reset. */
  readonly lastReset?: string;
}

/** One device rule as far as ACLs go: what it matches and what it grants. */
export interface GrantedDevice {
  readonly subsystem: string;
  readonly attrs: readonly (readonly [string, string])[];
  readonly permission: string;
}

/** The device rules whose ACLs were granted to one agent (by uid: the account may be gone). */
export interface DeviceGrant {
  readonly uid: number;
  readonly devices: readonly GrantedDevice[];
}

export interface HostState {
  readonly version: 1;
  /** Agents whose user and group nuketown created. */
  readonly agents: Readonly<Record<string, AgentRecord>>;
  /** The approvers group, when nuketown created it. */
  readonly approversGroup?: string;
  /** System files nuketown installed (absolute paths). */
  readonly files: readonly string[];
  /** Where another system owns the udev rules: the rules whose ACLs were granted (before deviceGrants; read only). */
  readonly deviceRules?: string;
  /**
   * The device grants whose ACLs were last applied to plugged-in devices, by
   * agent: what a removed grant (or agent) must be revoked from, and what
   * tells a finished devices layer from one a crash interrupted.
   */
  readonly deviceGrants?: Readonly<Record<string, DeviceGrant>>;
  /** sha256 of the udev rules file udev was last told to reload; absent: none was ever loaded. */
  readonly udevReloaded?: string;
  /** Units nuketown enabled (systemctl enable), so a removed one is disabled even after a crash. */
  readonly units?: readonly string[];
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
