/**
 * Opens the town's chat transport for one account. The SDK of the other
 * network is never loaded: matrix-js-sdk alone costs ~45 MB of memory, which
 * an XMPP town's agents should not carry.
 */
import { readFile } from "node:fs/promises";
import { ConfigError } from "../errors.ts";
import type { ResolvedTown } from "../town/types.ts";
import type { ChatTransport, TransportOptions } from "./transport.ts";

export interface ChatAccount {
  /** Matrix user id or bare JID. */
  readonly id: string;
  /** Matrix access token or XMPP password. */
  readonly secret: string;
}

export async function openTransport(
  town: ResolvedTown,
  account: ChatAccount,
  options: TransportOptions,
): Promise<ChatTransport> {
  const { transport, matrix, xmpp } = town.chat;
  if (transport === "matrix" && matrix) {
    const { MatrixTransport } = await import("./matrix/transport.ts");
    return new MatrixTransport({
      ...options,
      homeserver: matrix.homeserver,
      userId: account.id,
      accessToken: account.secret,
    });
  }
  if (transport === "xmpp" && xmpp) {
    const { XmppTransport } = await import("./xmpp/transport.ts");
    return new XmppTransport({
      ...options,
      service: xmpp.service,
      domain: xmpp.domain,
      jid: account.id,
      password: account.secret,
    });
  }
  throw new ConfigError("chat", [
    {
      path: "chat.transport",
      message: `the town chats over "${transport}": there is no chat network to connect to`,
    },
  ]);
}

/** A credential file: its first line, which must not be empty. */
export async function readCredential(file: string): Promise<string> {
  const text = await readFile(file, "utf8");
  const secret = text.split("\n")[0]?.trim() ?? "";
  if (secret === "") throw new Error(`${file} is empty`);
  return secret;
}
