/**
 * Who is on the other end of a Unix socket, as the kernel says: SO_PEERCRED,
 * the pid, uid and gid of the process that connected, taken at connect()
 * and not forgeable by anything the peer sends. Node has no getsockopt, so
 * a three-line perl (on every Debian as perl-base, and in the NixOS module's
 * service path) is handed the connection as its fd 3 and prints them.
 */
import { spawn } from "node:child_process";
import type net from "node:net";
import { MissingToolError, NuketownError } from "../errors.ts";

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

const SCRIPT = [
  'open(my $s, "+<&=", 3) or die "fd 3: $!\\n";',
  'my $c = getsockopt($s, SOL_SOCKET, SO_PEERCRED) or die "getsockopt SO_PEERCRED: $!\\n";',
  'print join(" ", unpack("iII", $c)), "\\n";',
].join(" ");

/**
 * The peer's credentials. Node stops reading a stream it hands to a child,
 * so the socket is left paused: the caller attaches its listeners, then
 * calls `socket.resume()`. Give it a socket from a server made with
 * `pauseOnConnect`, so nothing is read before.
 */
export function peerCredentials(socket: net.Socket, perl = "perl"): Promise<PeerCredentials> {
  return new Promise((resolve, reject) => {
    const child = spawn(perl, ["-MSocket=SOL_SOCKET,SO_PEERCRED", "-e", SCRIPT], {
      stdio: ["ignore", "pipe", "pipe", socket],
      // Nothing of the caller's environment (PERL5OPT, PERL5LIB) reaches it.
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    });
    let out = "";
    let err = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        error.code === "ENOENT"
          ? new MissingToolError(perl, "perl-base")
          : new NuketownError(`cannot read a peer's credentials: ${error.message}`, 5),
      ),
    );
    child.on("close", (code) => {
      const fields = out.trim().split(" ").map(Number);
      const [pid, uid, gid] = fields;
      if (
        code !== 0 ||
        fields.length !== 3 ||
        !fields.every((n) => Number.isInteger(n) && n >= 0) ||
        pid === undefined ||
        uid === undefined ||
        gid === undefined
      )
        return reject(
          new NuketownError(`cannot read a peer's credentials: ${err.trim() || out.trim()}`, 5),
        );
      resolve({ pid, uid, gid });
    });
  });
}
