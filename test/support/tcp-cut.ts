/**
 * A TCP relay on loopback that a test can cut: every connection through it
 * is dropped at once, and new ones are refused until it is mended. Put
 * between a daemon and a real server, it is a network outage on demand
 * without touching the server (the test's own clients talk to it directly).
 */
import net from "node:net";

export interface TcpCut {
  /** The relay's port on 127.0.0.1. */
  readonly port: number;
  /** Connections open through the relay now. */
  readonly open: number;
  /** Drop every connection, and refuse new ones until `mend`. */
  cut(): void;
  mend(): void;
  close(): Promise<void>;
}

export async function startTcpCut(target: { host: string; port: number }): Promise<TcpCut> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  let broken = false;
  const server = net.createServer((client) => {
    if (broken) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.createConnection(target);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("the relay has no port");
  return {
    port: address.port,
    get open() {
      return pairs.size;
    },
    cut() {
      broken = true;
      for (const [client, upstream] of [...pairs]) {
        // A reset, as a dead route or a restarted firewall gives: no polite close.
        client.resetAndDestroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    mend() {
      broken = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const [client, upstream] of pairs) {
          client.destroy();
          upstream.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
