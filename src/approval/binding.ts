/**
 * What a human's yes is bound to: the command hash, and how the files the
 * agent could change are shown beside it. Pure and free of zod, so the
 * bundled gate computes the same hash the daemon shows.
 */
import { createHash } from "node:crypto";
import type { WritableFile } from "./writable.ts";

/** The parts of a request the hash covers (protocol.ts's ApprovalRequest has them all). */
export interface HashedRequest {
  readonly agent: { readonly uid: number };
  readonly argv: readonly string[];
  readonly command: string;
  readonly cwd: string;
  readonly runAs: { readonly user: string; readonly group?: string; readonly uid?: number };
  readonly shell?: "login" | "non-login";
  readonly unlock?: { readonly secret: string };
  readonly change?: {
    readonly id: string;
    readonly host: string;
    readonly base: string;
    readonly commit: string;
  };
  readonly writable?: readonly WritableFile[];
}

/**
 * The hash a human approves: of the exact argv, resolved command, cwd and
 * target, and of the contents of every program or file argument the agent
 * could change. Shown in every channel, carried back with the decision and
 * checked by the gate again right before the command runs.
 */
export function commandHash(request: HashedRequest): string {
  const canonical = JSON.stringify([
    request.agent.uid,
    request.argv,
    request.command,
    request.cwd,
    request.runAs.user,
    request.runAs.group ?? null,
    request.shell ?? null,
    request.unlock?.secret ?? null,
    // Each only when present, so the hashes of requests without them stay what they were.
    ...(request.change
      ? [[request.change.id, request.change.host, request.change.base, request.change.commit]]
      : []),
    ...(request.runAs.uid !== undefined ? [["uid", request.runAs.uid]] : []),
    ...(request.writable && request.writable.length > 0
      ? [["writable", request.writable.map((f) => [f.index, f.path, f.sha256])]]
      : []),
  ]);
  return createHash("sha256").update(canonical).digest("hex");
}

/** How much of a content hash is shown: enough to compare with `sha256sum` at a glance. */
export const SHORT_SHA256 = 16;

/**
 * One line per agent-writable file, the same in every channel:
 * `agent-writable program /a/s.sh · sha256 1a2b… (…)`; `show` escapes the
 * path (the agent chose it) for the channel.
 */
export function writableLines(
  request: { readonly writable?: readonly WritableFile[] },
  show: (path: string) => string = (p) => p,
): string[] {
  return (request.writable ?? []).map(
    (f) =>
      `agent-writable ${f.index === 0 ? "program" : `argument ${f.index}`} ${show(f.path)} · sha256 ${f.sha256.slice(0, SHORT_SHA256)} (${
        f.index === 0
          ? "the agent could change it; a root-owned copy of what is hashed here runs"
          : "the agent could change it; checked before the command starts, not while it runs"
      })`,
  );
}
