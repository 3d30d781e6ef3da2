/**
 * The allowed-signers file review checks signatures with: each agent's SSH
 * public keys under that agent's own email, and nothing else. Key material
 * read from an agent's home is re-labelled here, so an agent cannot vouch
 * for a key under someone else's name. Pure.
 */

/**
 * Where apply records the SSH public key it derived from an agent's secret
 * (root-owned, readable by all): review's key for an agent that declares none.
 */
export const signerRecordPath = (stateDir: string, agent: string) =>
  `${stateDir}/signers/${agent}.pub`;

/** An SSH public key: its type and base64 body, without the comment. */
export interface SshKey {
  readonly type: string;
  readonly body: string;
}

const KEY_TYPE =
  /^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,3}$/;

/**
 * The keys in any of: `id_ed25519.pub`, an `authorized_keys`-style list, or
 * an allowed-signers file (principals and options before the key are
 * ignored). Comments and malformed lines are skipped.
 */
export function parsePublicKeys(text: string): SshKey[] {
  const keys: SshKey[] = [];
  for (const line of text.split("\n")) {
    const words = line.trim().split(/\s+/);
    if (words[0] === undefined || words[0].startsWith("#")) continue;
    for (let i = 0; i < words.length - 1; i++) {
      const type = words[i] ?? "";
      const body = words[i + 1] ?? "";
      if (KEY_TYPE.test(type) && BASE64.test(body)) {
        keys.push({ type, body });
        break;
      }
    }
  }
  return keys;
}

export interface AgentSigners {
  /** The principal: the agent's git email, what %GS shows for a good signature. */
  readonly email: string;
  readonly keys: readonly SshKey[];
}

/** One `email namespaces="git" type body` line per key, sorted, without duplicates. */
export function renderAllowedSigners(agents: readonly AgentSigners[]): string {
  const lines = new Set<string>();
  for (const agent of agents) {
    for (const key of agent.keys) {
      if (/[\s,"]/.test(agent.email)) continue;
      lines.add(`${agent.email} namespaces="git" ${key.type} ${key.body}`);
    }
  }
  return [...lines]
    .sort()
    .map((line) => `${line}\n`)
    .join("");
}
