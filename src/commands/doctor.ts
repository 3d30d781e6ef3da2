import { access, readFile } from "node:fs/promises";
import { EXIT } from "../errors.ts";
import { readMountinfo } from "../os/etc.ts";
import type { MountEntry } from "../os/tables.ts";
import { which } from "../os/which.ts";
import { type Streams, table } from "../output.ts";

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  /** A missing optional part is reported, but does not fail doctor. */
  readonly optional?: boolean;
  readonly detail: string;
  readonly fix?: string;
}

/** Programs the host layers run, with what provides them on Debian. */
export const PROGRAMS: readonly {
  program: string;
  purpose: string;
  fix: string;
  optional?: boolean;
}[] = [
  { program: "btrfs", purpose: "snapshot homes", fix: "apt-get install btrfs-progs" },
  { program: "mkfs.btrfs", purpose: "format the home image", fix: "apt-get install btrfs-progs" },
  { program: "losetup", purpose: "loop-mount the home image", fix: "apt-get install mount" },
  { program: "setfacl", purpose: "grant devices to agents", fix: "apt-get install acl" },
  { program: "visudo", purpose: "check the sudoers file", fix: "apt-get install sudo" },
  { program: "sudo", purpose: "the approval gate", fix: "apt-get install sudo" },
  { program: "udevadm", purpose: "reload device rules", fix: "apt-get install udev" },
  {
    program: "loginctl",
    purpose: "lingering for agent services",
    fix: "apt-get install systemd",
    optional: true,
  },
  { program: "git", purpose: "agents' repositories", fix: "apt-get install git" },
  {
    program: "ssh-keygen",
    purpose: "derive agents' public keys",
    fix: "apt-get install openssh-client",
  },
  { program: "age", purpose: "decrypt age secrets", fix: "apt-get install age" },
  {
    program: "sops",
    purpose: "decrypt sops secrets",
    fix: "bash scripts/install-sops.sh (or a release from github.com/getsops/sops)",
    optional: true,
  },
  {
    program: "gpg",
    purpose: "import agents' OpenPGP keys",
    fix: "apt-get install gnupg",
    optional: true,
  },
  { program: "useradd", purpose: "create agent accounts", fix: "apt-get install passwd" },
  { program: "pgrep", purpose: "count agents' processes (status)", fix: "apt-get install procps" },
];

const onPath = (program: string) => which(program);

const HIDEPID_FSTAB = "proc /proc proc defaults,hidepid=invisible 0 0";

/**
 * /proc mounted with hidepid=invisible (or 2): an agent sees only its own
 * processes, not the prompts other agents' runtimes got as arguments
 * (/proc/<pid>/cmdline) nor their environments. Recommended, not required.
 */
export function hidepidCheck(mounts: readonly MountEntry[]): Check {
  const proc = mounts.findLast((m) => m.mountPoint === "/proc" && m.fsType === "proc");
  const options = (proc?.superOptions ?? "").split(",");
  const hidepid = options.find((o) => o.startsWith("hidepid="))?.slice("hidepid=".length);
  const ok = hidepid === "invisible" || hidepid === "2";
  return {
    name: "/proc hidepid",
    ok,
    optional: true,
    detail:
      proc === undefined
        ? "/proc is not mounted: agents' processes cannot be checked"
        : ok
          ? `/proc is mounted with hidepid=${hidepid}: agents see only their own processes`
          : `/proc is mounted ${hidepid === undefined ? "without hidepid" : `with hidepid=${hidepid}`}: every agent can read the others' command lines (prompts) in /proc`,
    fix: `mount -o remount,hidepid=invisible /proc, and in /etc/fstab: ${HIDEPID_FSTAB} (hidepid=2 on kernels before 5.8)`,
  };
}

const read = (file: string) => readFile(file, "utf8").catch(() => "");

/** `nuketown doctor`: every prerequisite of this host, with the exact fix for each missing one. */
export async function doctor(opts: Streams & { readonly json?: boolean }): Promise<number> {
  const checks: Check[] = [];
  const euid = process.geteuid?.() ?? -1;
  checks.push({
    name: "root",
    ok: euid === 0,
    detail: euid === 0 ? "running as root" : `running as uid ${euid}`,
    fix: "run apply, reset and the daemons as root (sudo nuketown ...)",
  });
  const init = (await read("/proc/1/comm")).trim();
  checks.push({
    name: "systemd",
    ok: init === "systemd",
    optional: true,
    detail:
      init === "systemd"
        ? "systemd is PID 1"
        : `PID 1 is ${init || "unknown"}: units are installed but not started`,
    fix: "on a host without systemd, run `nuketown up` to supervise the daemons itself",
  });
  const btrfs = (await read("/proc/filesystems"))
    .split("\n")
    .some((l) => l.trim().endsWith("btrfs"));
  checks.push({
    name: "btrfs (kernel)",
    ok: btrfs,
    detail: btrfs ? "the kernel has btrfs" : "btrfs is not in /proc/filesystems",
    fix: 'modprobe btrfs, or set homes.backend = "directory" (slow resets)',
  });
  const loop = await access("/dev/loop-control").then(
    () => true,
    () => false,
  );
  checks.push({
    name: "loop devices",
    ok: loop,
    detail: loop
      ? "/dev/loop-control exists"
      : "no /dev/loop-control: the home image cannot be mounted",
    fix: "modprobe loop, or give homes.device a btrfs device",
  });
  checks.push(hidepidCheck(await readMountinfo()));
  for (const { program, purpose, fix, optional } of PROGRAMS) {
    const found = await onPath(program);
    checks.push({
      name: program,
      ok: found !== undefined,
      optional,
      detail: found ?? `missing (${purpose})`,
      fix,
    });
  }

  const failed = checks.filter((c) => !c.ok && !c.optional);
  if (opts.json) {
    opts.out.write(`${JSON.stringify({ ok: failed.length === 0, checks }, null, 2)}\n`);
  } else {
    opts.out.write(
      `${table(
        ["check", "status", "detail"],
        checks.map((c) => [c.name, c.ok ? "ok" : c.optional ? "warn" : "MISSING", c.detail]),
      )}\n`,
    );
    const fixes = checks.filter((c) => !c.ok && c.fix);
    if (fixes.length > 0) {
      opts.out.write(`\nTo fix:\n${fixes.map((c) => `  ${c.name}: ${c.fix}`).join("\n")}\n`);
    }
  }
  return failed.length === 0 ? EXIT.ok : EXIT.missing;
}
