/**
 * Compiles src/ to dist/ (plain JavaScript) and stamps it. bin/nuketown runs
 * dist/ while no source is newer than the stamp, else src/ directly; what
 * `nuketown install` copies is this build. The approval gate, which runs as
 * root on every sudo, is also bundled by esbuild into one file,
 * dist/libexec/gate.cjs, that imports nothing but Node's own modules: one
 * file read instead of a module graph, no type stripping, nothing resolved
 * from node_modules. Each chat transport is bundled with its network's SDK
 * in the same way, in place of tsc's copy (our own modules stay apart).
 */
import { spawnSync } from "node:child_process";
import { rmSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";

const root = path.join(import.meta.dirname, "..");
const dist = path.join(root, "dist");
rmSync(dist, { recursive: true, force: true });
// The stamp carries the time the build began: a source saved while tsc runs is newer than it.
const began = new Date();
const tsc = spawnSync(
  path.join(root, "node_modules", ".bin", "tsc"),
  ["-p", path.join(root, "tsconfig.build.json")],
  { stdio: "inherit" },
);
if ((tsc.error as NodeJS.ErrnoException | undefined)?.code === "ENOENT") {
  // An install without dev dependencies (npm ci --omit=dev): bin/nuketown runs src/.
  console.log("build: TypeScript is not installed; nuketown runs from src/");
  process.exit(0);
}
if (tsc.status !== 0) {
  rmSync(dist, { recursive: true, force: true });
  process.exit(tsc.status ?? 1);
}
const { build } = await import("esbuild");
type Plugin = import("esbuild").Plugin;
await build({
  entryPoints: [path.join(root, "src", "approval", "gate-main.ts")],
  outfile: path.join(dist, "libexec", "gate.cjs"),
  bundle: true,
  platform: "node",
  // CommonJS: Node loads it with ~4 MB less than an ES module (no ESM loader), and it needs none.
  format: "cjs",
  target: "node22",
  // Nothing from node_modules: a bare import would be resolved (from a writable place) at run time.
  external: [],
  legalComments: "none",
  logLevel: "warning",
});
// The dashboard's browser script: one file, for browsers, served by the dashboard itself
// (nothing is loaded from elsewhere at run time). It replaces tsc's copy of it.
await build({
  entryPoints: [path.join(root, "src", "dashboard", "client", "app.ts")],
  outfile: path.join(dist, "dashboard", "client", "app.js"),
  bundle: true,
  platform: "browser",
  format: "iife",
  target: ["chrome110", "firefox110", "safari16"],
  minify: true,
  legalComments: "none",
  logLevel: "warning",
  allowOverwrite: true,
});
// Each chat transport with its network's SDK in one file, replacing tsc's copy: an online agent's
// daemon (run under --lite-mode) then reads and compiles one file instead of the SDK's hundreds of
// modules at every start (Matrix: ~200 of them). Our own modules stay imports of their own, so the
// rest of the program shares them (one CredentialRefused class, one transport.ts).
const ownModulesApart: Plugin = {
  name: "own-modules-apart",
  setup(build) {
    build.onResolve({ filter: /^\.\.?\// }, (args) =>
      args.kind === "entry-point" || args.importer.includes(`${path.sep}node_modules${path.sep}`)
        ? undefined
        : { path: args.path, external: true },
    );
  },
};
for (const network of ["matrix", "xmpp"]) {
  const transport = path.join(dist, "chat", network, "transport.js");
  await build({
    entryPoints: [transport],
    outfile: transport,
    allowOverwrite: true,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node22",
    plugins: [ownModulesApart],
    // The SDKs' CommonJS parts require Node's modules: an ES module has no require of its own.
    banner: {
      js: 'import { createRequire as nuketownRequire } from "node:module"; const require = nuketownRequire(import.meta.url);',
    },
    legalComments: "none",
    logLevel: "warning",
  });
}
const stamp = path.join(dist, ".built");
writeFileSync(stamp, `${began.toISOString()}\n`);
utimesSync(stamp, began, began);
