/**
 * The secrets layer: decrypts sops (age) and age files with the real tools,
 * into memory only. Plaintext is never written to a temp file, never logged
 * and never part of an error: errors name the file, the key and a reason
 * taken from a fixed list or from the tool's stderr with quoted text removed
 * (age and sops quote fragments of a malformed input file in their errors).
 */

import { constants } from "node:fs";
import { access, lstat, open } from "node:fs/promises";
import path from "node:path";
import { EXIT, MissingToolError, NuketownError, RefusedError } from "../errors.ts";
import { type CommandResult, type Runner, systemRunner } from "../os/process.ts";
import { CHAT_SECRET_FILE, RUNTIME_KEY_FILE } from "../town/rules.ts";
import type { ResolvedAgent, ResolvedSecret, ResolvedTown } from "../town/types.ts";
import { type FileAccess, keyFileProblem } from "./key-file.ts";

/** A secret that cannot be decrypted; the message names file, key and reason. */
export class SecretError extends NuketownError {
  readonly file: string;
  readonly key: string | undefined;
  constructor(
    secret: { readonly file: string; readonly key?: string | undefined },
    reason: string,
  ) {
    super(`${secretLabel(secret)}: ${reason}`, EXIT.refused);
    this.file = secret.file;
    this.key = secret.key;
  }
}

/** `file` or `file: key k`, as secrets are named in messages and plans. */
export function secretLabel(secret: {
  readonly file: string;
  readonly key?: string | undefined;
}): string {
  return secret.key === undefined ? secret.file : `${secret.file}: key ${secret.key}`;
}

export interface SecretDecryptor {
  /** The plaintext bytes: a whole age file, one sops key, or a whole sops document. */
  decrypt(secret: ResolvedSecret): Promise<Buffer>;
}

export interface DecryptorOptions {
  /** The town's age identity file (`secrets.ageKeyFile`); the only key ever used. */
  readonly ageKeyFile: string;
  /** @default systemRunner */
  readonly runner?: Runner;
}

export function createDecryptor(options: DecryptorOptions): SecretDecryptor {
  const { ageKeyFile } = options;
  const runner = options.runner ?? systemRunner;
  return {
    async decrypt(secret) {
      // An age file holds one secret: a key (extra secrets default it to their name) is moot.
      const named = secret.format === "sops" ? secret : { file: secret.file };
      await mustBeReadable(ageKeyFile, named, `age key file ${ageKeyFile}`);
      // Said by plan before anything is applied; checked here again for every other caller.
      const access = await inspectKeyFile(ageKeyFile);
      const problem = access && keyFileProblem(ageKeyFile, access.key, access.dir);
      if (problem) throw new RefusedError(problem);
      await mustBeReadable(secret.file, named, "the file");
      return secret.format === "age"
        ? decryptAge(secret.file, ageKeyFile, runner)
        : decryptSops(secret, ageKeyFile, runner);
    },
  };
}

const AGE_BINARY_HEADER = "age-encryption.org/v1\n";
const AGE_ARMOR_HEADER = "-----BEGIN AGE ENCRYPTED FILE-----";

async function decryptAge(file: string, ageKeyFile: string, runner: Runner): Promise<Buffer> {
  // age quotes the first line of a file that is not age-encrypted in its error.
  if (!(await hasAgeHeader(file))) throw new SecretError({ file }, "not an age-encrypted file");
  const result = await runner.run("age", ["--decrypt", "--identity", ageKeyFile, file], {
    env: toolEnv(),
    allowFailure: true,
  });
  if (result.code !== 0) throw new SecretError({ file }, ageReason(result, ageKeyFile));
  return result.stdoutBytes;
}

async function hasAgeHeader(file: string): Promise<boolean> {
  const handle = await open(file, "r");
  try {
    const head = Buffer.alloc(256);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const text = head.subarray(0, bytesRead).toString("latin1");
    return text.startsWith(AGE_BINARY_HEADER) || text.trimStart().startsWith(AGE_ARMOR_HEADER);
  } finally {
    await handle.close();
  }
}

async function decryptSops(
  secret: ResolvedSecret,
  ageKeyFile: string,
  runner: Runner,
): Promise<Buffer> {
  const extract = secret.key === undefined ? [] : ["--extract", sopsExtractPath(secret)];
  const result = await runner.run("sops", ["--decrypt", ...extract, secret.file], {
    // No HOME: sops would also try ~/.ssh/id_ed25519 and ~/.config/sops/age/keys.txt.
    env: { ...toolEnv(), SOPS_AGE_KEY_FILE: ageKeyFile },
    allowFailure: true,
  });
  if (result.code !== 0) throw new SecretError(secret, sopsReason(result, ageKeyFile));
  return result.stdoutBytes;
}

/**
 * The `--extract` expression of a dotted key: `a.b` → `["a"]["b"]`,
 * `ada/ssh-key` → `["ada/ssh-key"]`. sops has no escapes: it splits the
 * expression on `[` and strips one quote character from each end of a
 * component, so any component without `[` round-trips inside double quotes.
 */
export function sopsExtractPath(secret: { readonly file: string; readonly key?: string }): string {
  const components = (secret.key ?? "").split(".");
  for (const component of components) {
    if (component === "")
      throw new SecretError(
        secret,
        "invalid key: empty component (a leading, trailing or double dot)",
      );
    if (component.includes("["))
      throw new SecretError(secret, 'invalid key: sops --extract cannot express "["');
  }
  return components.map((c) => `["${c}"]`).join("");
}

/** PATH and a fixed locale only: no HOME, no SOPS_* or AGE_* of the caller. */
function toolEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin", LC_ALL: "C" };
}

async function mustBeReadable(
  file: string,
  secret: { readonly file: string; readonly key?: string | undefined },
  what: string,
): Promise<void> {
  try {
    await access(file, constants.R_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "does not exist" : `is not readable (${code})`;
    throw new SecretError(secret, `${what} ${reason}`);
  }
}

function noMatchingIdentity(ageKeyFile: string): string {
  return `no identity in ${ageKeyFile} can decrypt it`;
}

function ageReason(result: CommandResult, ageKeyFile: string): string {
  const stderr = result.stderr;
  if (stderr.includes("no identity matched")) return noMatchingIdentity(ageKeyFile);
  if (/failed to read header|parsing age header/.test(stderr)) return "not an age-encrypted file";
  if (/malformed|unexpected EOF|failed to decrypt|invalid/i.test(stderr))
    return `corrupted age file (${toolDetail(result, "age")})`;
  return `age failed (${toolDetail(result, "age")})`;
}

function sopsReason(result: CommandResult, ageKeyFile: string): string {
  const stderr = result.stderr;
  if (/component \[.*\] not found|accesses out of bounds|is integer, but tree part/.test(stderr))
    return "not found";
  // sops panics when a dotted key walks into a value that is not a map.
  if (/interface conversion: .* not sops\.TreeBranch/.test(stderr))
    return "not found (a parent of the key is not a map)";
  if (stderr.includes("sops metadata not found")) return "not a sops-encrypted file";
  if (/Failed to get the data key|no master key was able to decrypt/.test(stderr))
    return noMatchingIdentity(ageKeyFile);
  if (/MAC mismatch|message authentication failed|MAC not found/.test(stderr))
    return "corrupted or tampered with (authentication failed)";
  return `sops failed (${toolDetail(result, "sops")})`;
}

/**
 * The tool's first error line, with anything quoted removed and cut short:
 * both tools quote fragments of the input they could not parse.
 */
function toolDetail(result: CommandResult, tool: string): string {
  const line =
    result.stderr
      .split("\n")
      .map((l) => l.trim())
      .find((l) => l !== "" && !l.includes("report unexpected or unhelpful errors")) ?? "";
  const redacted = line
    .replace(/^age: error: /, "")
    .replace(/`[^`]*`?|'[^']*'?|"[^"]*"?|«[^»]*»?/g, "…")
    .replace(/(invalid character|unexpected intro|intro)\b.*$/i, "$1 …")
    .slice(0, 160);
  return `${tool} exited ${result.code}${redacted ? `: ${redacted}` : ""}`;
}

/** A secret decrypted to a file in the agent's home. */
export interface SecretTarget {
  /** `sshKey`, or the extra secret's name. */
  readonly name: string;
  readonly secret: ResolvedSecret;
  /** Relative to the home. */
  readonly target: string;
  /** Octal, e.g. `0600`. */
  readonly mode: string;
}

export const SSH_KEY_TARGET = ".ssh/id_ed25519";

/**
 * The files the secrets layer installs in an agent's home: the SSH key, the
 * chat credential of the town's transport (read by `nuketown chat`, which runs
 * as the agent), the runtime's API key (read by the runtime's key command),
 * then the extras.
 */
export function secretTargets(
  agent: ResolvedAgent,
  transport: ResolvedTown["chat"]["transport"] = "local",
): SecretTarget[] {
  const targets: SecretTarget[] = [];
  const { sshKey, extra } = agent.secrets;
  if (sshKey)
    targets.push({ name: "sshKey", secret: sshKey, target: SSH_KEY_TARGET, mode: "0600" });
  const chat = agent.chat.enable ? chatCredential(agent, transport) : undefined;
  if (chat) targets.push({ name: "chat", secret: chat, target: CHAT_SECRET_FILE, mode: "0600" });
  if (agent.runtime.apiKey)
    targets.push({
      name: "runtime.apiKey",
      secret: agent.runtime.apiKey,
      target: RUNTIME_KEY_FILE,
      mode: "0600",
    });
  for (const e of extra)
    targets.push({ name: e.name, secret: e.source, target: e.target, mode: e.mode });
  return targets;
}

/** The agent's credential on the town's chat network, if it has an account there. */
export function chatCredential(
  agent: ResolvedAgent,
  transport: ResolvedTown["chat"]["transport"],
): ResolvedSecret | undefined {
  if (transport === "matrix") return agent.chat.matrix?.tokenSecret;
  if (transport === "xmpp") return agent.chat.xmpp?.passwordSecret;
  return undefined;
}

/** The OpenPGP key imported into the agent's keyring (not a file target), if any. */
export function gpgKeyToImport(agent: ResolvedAgent): ResolvedSecret | undefined {
  return agent.secrets.gpgKey;
}

/**
 * Imports an armored OpenPGP secret key into the agent's keyring
 * (`<home>/.gnupg`, created 0700 by the agent), running gpg as the agent with
 * the key on stdin. Stops the gpg-agent that gpg starts, so apply leaves no
 * daemon behind. Importing the same key again changes nothing.
 */
export async function importGpgKey(
  agent: ResolvedAgent,
  armored: Buffer,
  runner: Runner,
): Promise<void> {
  const gnupgHome = path.join(agent.home, ".gnupg");
  const asAgent = {
    uid: agent.uid,
    gid: agent.gid,
    cwd: agent.home,
    env: { ...toolEnv(), HOME: agent.home, GNUPGHOME: gnupgHome },
  };
  await runner.run("install", ["-d", "-m", "0700", gnupgHome], asAgent);
  const result = await runner.run("gpg", ["--batch", "--no-tty", "--import"], {
    ...asAgent,
    input: armored,
    allowFailure: true,
  });
  await runner.run("gpgconf", ["--kill", "gpg-agent"], { ...asAgent, allowFailure: true });
  if (result.code !== 0) {
    const detail = result.stderr
      .split("\n")
      .filter((l) => /^gpg: /.test(l))
      .slice(-3)
      .join("; ");
    throw new SecretError(
      { file: `${agent.name}'s keyring` },
      `gpg --import exited ${result.code}${detail ? `: ${detail}` : ""}`,
    );
  }
}

/**
 * The OpenSSH public key (`type base64 [comment]`) of a private key, by
 * ssh-keygen. Node hands a child its stdin as a socket, which ssh-keygen
 * cannot open as `/dev/stdin` (ENXIO), so `cat` puts a real pipe in between:
 * the key never touches a file.
 */
export async function derivePublicKey(privateKey: Buffer, runner: Runner): Promise<string> {
  const result = await runner.run("sh", ["-c", "cat | ssh-keygen -y -P '' -f /dev/stdin"], {
    input: privateKey,
    env: toolEnv(),
    allowFailure: true,
  });
  if (result.code === 127) throw new MissingToolError("ssh-keygen", "openssh-client");
  const publicKey = result.stdout.trim();
  if (result.code !== 0 || !/^[a-z0-9@.-]+ [A-Za-z0-9+/=]+/.test(publicKey)) {
    throw new NuketownError(
      "cannot derive the public key: not a private key ssh-keygen reads, or protected by a passphrase",
      EXIT.refused,
    );
  }
  return publicKey;
}

/** Who owns the key file and its directory, and their modes; null when there is no key file. */
export async function inspectKeyFile(
  file: string,
): Promise<{ key: FileAccess; dir: { path: string } & FileAccess } | null> {
  const key = await lstat(file).catch(() => undefined);
  if (!key) return null;
  const dir = path.dirname(file);
  const parent = await lstat(dir);
  return {
    key: { uid: key.uid, mode: key.mode },
    dir: { path: dir, uid: parent.uid, mode: parent.mode },
  };
}
