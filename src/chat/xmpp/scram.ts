/**
 * SASL SCRAM-SHA-1 (RFC 5802) for xmpp.js, in place of the one it bundles
 * (sasl-scram-sha-1 1.3), which derives the key with 4096+ WebCrypto HMAC
 * calls on the thread pool: each pool thread's malloc arena keeps what it
 * touched, about 20 MB of the process's resident memory for the rest of its
 * life. One pbkdf2Sync on the main thread does the same in a few ms. It also
 * checks the server's nonce. (xmpp.js does not hand the mechanism the
 * server's final message, so its signature is not verified here either.)
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from "node:crypto";

/** More than any server uses (Prosody: 4096 by default); enough to refuse a freeze. */
const MAX_ITERATIONS = 1_000_000;

/** Credentials as xmpp.js passes them to a mechanism. */
interface Credentials {
  readonly username?: string | null;
  readonly password?: string | null;
}

export class ScramSha1 {
  /** saslmechanisms reads these from the prototype-less instance too. */
  readonly name = "SCRAM-SHA-1";
  readonly clientFirst = true;
  #stage: "first" | "final" | "done" = "first";
  readonly #makeNonce: () => string;
  #clientNonce = "";
  #clientFirstBare = "";
  #serverFirst = "";

  constructor(makeNonce = () => randomBytes(18).toString("base64")) {
    this.#makeNonce = makeNonce;
  }

  /**
   * The next message to the server, as a "binary" string (xmpp.js base64s
   * it with btoa): UTF-8 bytes, one char each.
   */
  response(credentials: Credentials): string {
    if (this.#stage === "first") {
      this.#stage = "final";
      this.#clientNonce = this.#makeNonce();
      this.#clientFirstBare = `n=${saslName(credentials.username ?? "")},r=${this.#clientNonce}`;
      return binary(`n,,${this.#clientFirstBare}`);
    }
    if (this.#stage === "final") {
      this.#stage = "done";
      return binary(this.#clientFinal(credentials.password ?? ""));
    }
    return "";
  }

  /** The server's challenge, as the "binary" string atob made of it. */
  challenge(text: string): this {
    if (this.#stage === "final") this.#serverFirst = Buffer.from(text, "latin1").toString("utf8");
    return this;
  }

  #clientFinal(password: string): string {
    const fields = parseFields(this.#serverFirst);
    const nonce = fields.get("r") ?? "";
    const salt = Buffer.from(fields.get("s") ?? "", "base64");
    const iterations = Number(fields.get("i"));
    if (!nonce.startsWith(this.#clientNonce) || nonce === this.#clientNonce)
      throw new Error("SCRAM: the server's nonce does not extend ours");
    if (salt.length === 0 || !Number.isInteger(iterations) || iterations < 1)
      throw new Error("SCRAM: the server sent no salt or iteration count");
    // pbkdf2Sync runs on the main thread: a server must not be able to freeze us with it.
    if (iterations > MAX_ITERATIONS)
      throw new Error(
        `SCRAM: the server asks for ${iterations} iterations (at most ${MAX_ITERATIONS})`,
      );
    const withoutProof = `c=${Buffer.from("n,,").toString("base64")},r=${nonce}`;
    const authMessage = `${this.#clientFirstBare},${this.#serverFirst},${withoutProof}`;
    const salted = pbkdf2Sync(password.normalize("NFKC"), salt, iterations, 20, "sha1");
    const clientKey = createHmac("sha1", salted).update("Client Key").digest();
    const storedKey = createHash("sha1").update(clientKey).digest();
    const signature = createHmac("sha1", storedKey).update(authMessage).digest();
    const proof = Buffer.alloc(clientKey.length);
    for (let index = 0; index < proof.length; index++)
      proof[index] = (clientKey[index] ?? 0) ^ (signature[index] ?? 0);
    return `${withoutProof},p=${proof.toString("base64")}`;
  }
}

/** RFC 5802 saslname: "," and "=" escaped. */
function saslName(name: string): string {
  return name.normalize("NFKC").replace(/=/g, "=3D").replace(/,/g, "=2C");
}

function binary(text: string): string {
  return Buffer.from(text, "utf8").toString("latin1");
}

function parseFields(message: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const part of message.split(",")) {
    const equals = part.indexOf("=");
    if (equals > 0) fields.set(part.slice(0, equals), part.slice(equals + 1));
  }
  return fields;
}
