/**
 * The change socket (`<runtimeDir>/change.sock`, served by approvald): how
 * an agent proposes, verifies and reads changes without any write access
 * to the change store. One JSON frame per line (src/wire/framing.ts), one
 * request per connection. A request never says who asks: the daemon takes
 * that from the connection's peer credentials (SO_PEERCRED). Pure.
 */
import { z } from "zod";
import type { ResolvedTown } from "../town/types.ts";
import { MAX_FRAME_BYTES, PROTOCOL_VERSION } from "../wire/framing.ts";
import type { Proposal } from "./proposal.ts";

export const changeSocketPath = (town: ResolvedTown) => `${town.runtimeDir}/change.sock`;

const text = z.string().max(4096);

/** What an agent may ask; strict, so an `agent` field (a claim of who asks) is refused. */
export const ChangeFrameSchema = z.discriminatedUnion("type", [
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("propose"),
    host: text,
    explanation: z.string().min(1).max(16384),
    branch: text.optional(),
    /** The agent's clone, an absolute path; read as the agent. */
    from: text.optional(),
    /** A patch's text (never a path: root would read it). */
    patch: z
      .string()
      .max(MAX_FRAME_BYTES - 20 * 1024)
      .optional(),
  }),
  z.strictObject({ v: z.literal(PROTOCOL_VERSION), type: z.literal("verify"), id: text }),
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    type: z.literal("status"),
    id: text.optional(),
  }),
]);
export type ChangeFrame = z.infer<typeof ChangeFrameSchema>;

/** What the daemon answers. */
export type ChangeReply =
  | { readonly type: "proposal"; readonly proposal: Proposal }
  | { readonly type: "proposals"; readonly proposals: readonly Proposal[] }
  | {
      readonly type: "error";
      readonly error: string;
      /** The exit code the CLI would use (src/errors.ts). */
      readonly code: number;
      readonly hint: string;
    };

/** What an agent can do about an error, by what was asked and what went wrong. */
export function changeHint(
  type: ChangeFrame["type"] | "connect" | "frame",
  message: string,
): string {
  if (/change\.repo is not declared/.test(message))
    return "no change.repo declared in this town: ask the mayor to declare the config repo (change.repo)";
  const hosts = /is not in change\.hosts \(declared: (.*)\)/.exec(message)?.[1];
  if (hosts !== undefined) return `name one of the machines declared in change.hosts: ${hosts}`;
  if (/branch .* not found/.test(message))
    return "push or commit the branch in your clone and name the clone (from) by its absolute path";
  if (/not based on|nothing on top/.test(message))
    return "rebase your branch on the config repo's main branch, then propose again";
  if (/uncommitted changes/.test(message))
    return "the config repo has uncommitted changes: ask the mayor to commit or remove them";
  if (/holds .*lock|wait for it/.test(message))
    return "another change step is running: try again in a minute";
  if (/peer's credentials/.test(message))
    return "approvald cannot tell who you are (it reads SO_PEERCRED with perl): ask the mayor to check its log";
  if (/not an agent of/.test(message))
    return "the change socket serves the town's agents; root runs nuketown change directly";
  if (/verifies only its own/.test(message)) return "verify the changes you proposed";
  if (/no change \d|is not a change id/.test(message))
    return "change_status lists the changes and their ids";
  switch (type) {
    case "connect":
      return "approvald is not running: ask the mayor to start it (systemctl start nuketown-approvald, or nuketown up)";
    case "frame":
      return "the request was malformed: use the MCP tools or nuketown change, which speak this socket";
    case "propose":
      return "check the host, the branch and the clone; change_status shows what exists";
    case "verify":
      return "fix the configuration on your branch and propose again";
    case "status":
      return "change_status without an id lists every change";
  }
}
