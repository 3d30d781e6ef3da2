/**
 * Where an installed nuketown lives: every path is derived here from one
 * prefix (`/usr/local` by default, `/usr` for the Debian package), so the
 * installer, the renderers of the gate, shim and units, and the packaging
 * all agree. Pure.
 *
 *   <prefix>/lib/nuketown/<version>/   one self-contained, root-owned copy
 *       bin/node                       its own Node runtime
 *       bin/nuketown                   the launcher
 *       dist/                          the build (dist/libexec/gate.cjs: the bundled gate)
 *       node_modules/                  production dependencies only
 *       install.json                   { version, prefix }
 *   <prefix>/lib/nuketown/current      → <version>, switched atomically
 *   <prefix>/lib/nuketown/previous     → the version before, for --rollback
 *   <prefix>/bin/nuketown              → ../lib/nuketown/current/bin/nuketown
 *   <prefix>/libexec/nuketown/         the gate and the shim (rendered by apply per town)
 */
import path from "node:path";

/** The one default install prefix. */
export const DEFAULT_PREFIX = "/usr/local";

/**
 * Where apply puts the `sudo` that sends sudo-enabled agents to the gate: before
 * /usr/bin on every default PATH (Debian's login.defs, sudo's secure_path,
 * systemd's), whatever the prefix, since the package's prefix /usr holds the real sudo.
 */
export const DEFAULT_SUDO_WRAPPER = "/usr/local/bin/sudo";

/** Files inside one installed copy (a version directory), relative to it. */
export const PROGRAM_FILES = {
  node: "bin/node",
  launcher: "bin/nuketown",
  cli: "dist/cli.js",
  gate: "dist/libexec/gate.cjs",
  writer: "dist/host/agent-files-writer.js",
  /** Marks a directory trusted for claude, run as the agent by the portal. */
  trust: "dist/agent/runtimes/trust-main.js",
  info: "install.json",
} as const;

export interface InstallLayout {
  readonly prefix: string;
  /** `<prefix>/lib/nuketown`: one directory per installed version. */
  readonly libDir: string;
  /** The link to the version in use; what every wrapper, unit and daemon runs through. */
  readonly current: string;
  /** The link to the version used before the last switch. */
  readonly previous: string;
  /** The `nuketown` command. */
  readonly bin: string;
  /** The approval gate wrapper (the only NOPASSWD command). */
  readonly gate: string;
  /** Holds the `sudo` shim. */
  readonly shimDir: string;
}

export function installLayout(prefix: string = DEFAULT_PREFIX): InstallLayout {
  const libDir = path.join(prefix, "lib", "nuketown");
  return {
    prefix,
    libDir,
    current: path.join(libDir, "current"),
    previous: path.join(libDir, "previous"),
    bin: path.join(prefix, "bin", "nuketown"),
    gate: path.join(prefix, "libexec", "nuketown", "sudo-gate"),
    shimDir: path.join(prefix, "libexec", "nuketown", "shim"),
  };
}

/** A file of the version in use, through the `current` link. */
export const currentProgram = (
  layout: Pick<InstallLayout, "current">,
  file: keyof typeof PROGRAM_FILES,
) => path.join(layout.current, PROGRAM_FILES[file]);

/** Version directory names: what package.json may call a version, plus a build id. */
export const VERSION_NAME = /^[0-9A-Za-z][0-9A-Za-z.+~-]{0,127}$/;
