/**
 * The part of @xmpp/client 0.14 (no bundled types) that src/chat/xmpp/transport.ts
 * uses, typed as the library behaves (checked against its sources).
 */
declare module "@xmpp/client" {
  /** An ltx element: a parsed or built stanza. */
  export interface XmlElement {
    name: string;
    attrs: Record<string, string | undefined>;
    children: (XmlElement | string)[];
    is(name: string, xmlns?: string): boolean;
    getNS(): string | undefined;
    getChild(name: string, xmlns?: string): XmlElement | undefined;
    getChildren(name: string, xmlns?: string): XmlElement[];
    getChildText(name: string, xmlns?: string): string | null;
    getChildElements(): XmlElement[];
    /** The element's own text children, unescaped. */
    getText(): string;
    append(...nodes: (XmlElement | string)[]): XmlElement;
    /** Removes the children of that name (and namespace). */
    remove(name: string, xmlns?: string): XmlElement;
    toString(): string;
  }

  /** A SASL mechanism as saslmechanisms and xmpp.js drive it. */
  export interface SaslMechanism {
    readonly name: string;
    readonly clientFirst: boolean;
    response(credentials: { username?: string | null; password?: string | null }): string;
    challenge(text: string): unknown;
  }

  export type XmlChild = XmlElement | string | undefined | null | false;

  export function xml(
    name: string,
    attrs?: Record<string, string | number | undefined> | null,
    ...children: (XmlChild | XmlChild[])[]
  ): XmlElement;

  /** An XMPP error (stream, SASL, stanza): `condition` is the defined condition's element name. */
  export interface XmppError extends Error {
    readonly condition?: string;
    readonly text?: string;
  }

  export type ClientStatus =
    | "offline"
    | "connecting"
    | "connect"
    | "opening"
    | "open"
    | "online"
    | "closing"
    | "close"
    | "disconnecting"
    | "disconnect";

  export interface ClientSocket {
    /** True once TLS protects the connection (xmpps://, or after STARTTLS). */
    readonly secure?: boolean;
    setNoDelay?(on: boolean): void;
    destroy(): void;
    once(event: "close", listener: () => void): void;
  }

  export interface Emitter {
    on(event: string, listener: (...args: never[]) => void): unknown;
    off(event: string, listener: (...args: never[]) => void): unknown;
  }

  export interface Client extends Emitter {
    status: ClientStatus;
    socket: ClientSocket | null;
    on(event: "stanza", listener: (stanza: XmlElement) => void): Client;
    on(event: "error", listener: (error: XmppError) => void): Client;
    on(event: "online", listener: () => void): Client;
    on(
      event: "disconnect",
      listener: (detail?: { clean?: boolean; reason?: unknown }) => void,
    ): Client;
    off(event: string, listener: (...args: never[]) => void): Client;
    /** Every element read from the stream, before xmpp.js's own handlers (stream features included). */
    prependListener(event: "element", listener: (element: XmlElement) => void): Client;
    removeAllListeners(): Client;
    /** Connects and resolves once online (rejects on any error; no retry). */
    start(): Promise<unknown>;
    /** Opens the socket (resolves on connect). */
    connect(service: string): Promise<void>;
    /** Opens the stream; authentication and binding follow, ending in "online". */
    open(options: { domain: string; lang?: string }): Promise<unknown>;
    /** Closes the stream and the socket (waits up to `timeout` ms for each). */
    stop(): Promise<unknown>;
    send(stanza: XmlElement): Promise<void>;
    /** Reconnects 1 s after each disconnect (a fixed delay; started by client()). */
    reconnect: { stop(): void };
    /** Rejects with an XmppError (StanzaError) when the answer is an error. */
    iqCaller: { request(stanza: XmlElement, timeout?: number): Promise<XmlElement> };
    /** saslmechanisms' Factory: `create` makes the first entry whose name the server offers. */
    saslFactory: { _mechs: { name: string; mech: new () => SaslMechanism }[] };
  }

  export function client(options: {
    service: string;
    domain: string;
    username: string;
    password: string;
    resource?: string;
    /** ms to wait for the stream to open or close (default 2000). */
    timeout?: number;
  }): Client;
}
