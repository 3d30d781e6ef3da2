/**
 * Who is at the browser. Each declared human has a secret only their Unix
 * account can read; from it they mint a login token that works once and for a
 * few minutes (`nuketown dashboard url`), which the dashboard trades for a
 * session cookie (HttpOnly, SameSite=Strict). Every state change carries the
 * session's CSRF token too. Pure but for randomness; the clock is passed in.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/** How long a minted login token may be used. */
export const TOKEN_TTL_MS = 5 * 60_000;
/** How long a session lasts without being used. */
export const SESSION_IDLE_MS = 12 * 60 * 60_000;
export const SESSION_COOKIE = "nuketown_session";

const TOKEN = /^v1\.([a-z_][a-z0-9_-]{0,31})\.(\d{13})\.([0-9a-f]{32})\.([0-9a-f]{64})$/;

/** A fresh per-human secret, as written to its file. */
export function newSecret(): string {
  return randomBytes(32).toString("hex");
}

function mac(secret: string, human: string, expires: number, nonce: string): string {
  return createHmac("sha256", secret)
    .update(`nuketown-dashboard-login\n${human}\n${expires}\n${nonce}`)
    .digest("hex");
}

/** A login token for `human` (their declared name), made with their secret. */
export function mintToken(human: string, secret: string, now: number): string {
  const expires = now + TOKEN_TTL_MS;
  const nonce = randomBytes(16).toString("hex");
  return `v1.${human}.${expires}.${nonce}.${mac(secret, human, expires, nonce)}`;
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export interface Session {
  readonly id: string;
  /** The declared human's name. */
  readonly human: string;
  readonly csrf: string;
  lastUsed: number;
}

export type SignIn = { ok: true; session: Session } | { ok: false; error: string };

export class Sessions {
  readonly #secretOf: (human: string) => string | undefined;
  readonly #sessions = new Map<string, Session>();
  /** Nonces of tokens already traded, until they expire: a token works once. */
  readonly #used = new Map<string, number>();

  /** `secretOf`: the secret of a declared human, undefined for anyone else. */
  constructor(secretOf: (human: string) => string | undefined) {
    this.#secretOf = secretOf;
  }

  /** Trade a login token for a session. */
  signIn(token: string, now: number): SignIn {
    this.#sweep(now);
    const match = TOKEN.exec(token);
    if (!match) return { ok: false, error: "not a login token" };
    const [, human = "", expiresText = "", nonce = "", given = ""] = match;
    const expires = Number(expiresText);
    const secret = this.#secretOf(human);
    if (!secret || !sameText(mac(secret, human, expires, nonce), given))
      return { ok: false, error: "this token was not made by a human of this town" };
    if (expires <= now) return { ok: false, error: "this token has expired: make a new one" };
    if (expires > now + TOKEN_TTL_MS) return { ok: false, error: "this token lives too long" };
    if (this.#used.has(nonce)) return { ok: false, error: "this token was used already" };
    this.#used.set(nonce, expires);
    const session: Session = {
      id: randomBytes(32).toString("base64url"),
      human,
      csrf: randomBytes(32).toString("base64url"),
      lastUsed: now,
    };
    this.#sessions.set(session.id, session);
    return { ok: true, session };
  }

  /** The session a cookie names, if it is live and its human still declared. */
  find(id: string | undefined, now: number): Session | undefined {
    if (!id) return undefined;
    const session = this.#sessions.get(id);
    if (!session) return undefined;
    if (now - session.lastUsed > SESSION_IDLE_MS || !this.#secretOf(session.human)) {
      this.#sessions.delete(id);
      return undefined;
    }
    session.lastUsed = now;
    return session;
  }

  signOut(id: string): void {
    this.#sessions.delete(id);
  }

  #sweep(now: number): void {
    for (const [nonce, expires] of this.#used) if (expires <= now) this.#used.delete(nonce);
    for (const [id, s] of this.#sessions)
      if (now - s.lastUsed > SESSION_IDLE_MS) this.#sessions.delete(id);
  }
}

/** The CSRF token a state change carries matches its session's. */
export function csrfMatches(session: Session, given: string | undefined): boolean {
  return given !== undefined && sameText(session.csrf, given);
}

/**
 * Whether a state-changing request comes from our own pages: a browser says
 * where a request comes from (Origin, Sec-Fetch-Site); a cross-site one is
 * refused even before its CSRF token is looked at.
 */
export function sameOrigin(headers: Record<string, string | undefined>, origin: string): boolean {
  const site = headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin") return false;
  const from = headers.origin;
  return from === undefined || from === origin;
}

/** The session cookie as set: never readable by scripts, never sent cross-site. */
export function sessionCookie(id: string): string {
  return `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_IDLE_MS / 1000}`;
}

export function clearedCookie(): string {
  return `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`;
}

/** One cookie's value from a Cookie header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const at = part.indexOf("=");
    if (at > 0 && part.slice(0, at).trim() === name) return part.slice(at + 1).trim();
  }
  return undefined;
}

/** The headers every response carries: nothing runs or loads but our own files. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "cache-control": "no-store",
};
