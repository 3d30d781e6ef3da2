/**
 * Debian's nix-bin, hermetic: a store, state and configuration in a temp dir
 * (no daemon, no build users, no sandbox, no substituters, so nothing is
 * fetched), and the real nixpkgs library from ../shared/nixpkgs-lib. Used to
 * evaluate nix/module.nix with the stand-ins in test/nix and to build the
 * derivations that need no binary cache (the manifest runs nuketown itself).
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO_ROOT } from "./fixtures.ts";

/** The nixpkgs library the tests evaluate with, beside the checkout (never copied into it). */
export const NIXPKGS_LIB = path.resolve(REPO_ROOT, "..", "shared", "nixpkgs-lib");
export const EVAL_NIX = path.join(REPO_ROOT, "test", "nix", "eval.nix");

export interface NixResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Nix {
  readonly dir: string;
  run(tool: "nix-instantiate" | "nix-build", args: readonly string[]): NixResult;
  /** `nix-instantiate --eval --strict --json` of test/nix/eval.nix's `attr` for a town file. */
  evalTown(town: string, attr?: string): NixResult;
  /** `nix-build` of the module's manifest derivation for a town file; stdout is its path. */
  buildManifest(town: string): NixResult;
  cleanup(): Promise<void>;
}

/** Fails (never skips) with what to install when nix-bin or the nixpkgs library is missing. */
export async function hermeticNix(): Promise<Nix> {
  const probe = spawnSync("nix-instantiate", ["--version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    throw new Error(
      "nix-instantiate is missing: install Debian's nix-bin (bash scripts/install-system-packages.sh)",
    );
  }
  if (!existsSync(path.join(NIXPKGS_LIB, "lib", "default.nix"))) {
    throw new Error(
      `the nixpkgs library is missing at ${NIXPKGS_LIB} (../shared/nixpkgs-lib, beside the checkout)`,
    );
  }
  const dir = await mkdtemp(path.join(tmpdir(), "nt-test-nix-"));
  await mkdir(path.join(dir, "conf"));
  await writeFile(
    path.join(dir, "conf", "nix.conf"),
    "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features =\n",
  );
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: dir,
    NIX_STORE_DIR: path.join(dir, "store"),
    NIX_STATE_DIR: path.join(dir, "state"),
    NIX_LOG_DIR: path.join(dir, "log"),
    NIX_CONF_DIR: path.join(dir, "conf"),
    NIX_PATH: "",
  };
  const run = (tool: string, args: readonly string[]): NixResult => {
    const result = spawnSync(tool, args, { encoding: "utf8", env, cwd: REPO_ROOT });
    return { code: result.status, stdout: result.stdout, stderr: result.stderr };
  };
  const common = (town: string) => [
    EVAL_NIX,
    "--arg",
    "nixpkgsLib",
    NIXPKGS_LIB,
    "--arg",
    "root",
    REPO_ROOT,
    "--arg",
    "town",
    path.resolve(town),
  ];
  return {
    dir,
    run,
    evalTown: (town, attr = "result") =>
      run("nix-instantiate", ["--eval", "--strict", "--json", ...common(town), "-A", attr]),
    buildManifest: (town) => run("nix-build", ["--no-out-link", ...common(town), "-A", "manifest"]),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
