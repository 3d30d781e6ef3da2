/**
 * `npm run package`: build/nuketown_<version>_amd64.deb with dpkg-deb. The
 * payload is what `nuketown install --prefix /usr` lays out (one version
 * directory with its own Node, the build and production dependencies, the
 * `current` link, /usr/bin/nuketown), owned by root. Depends come from what
 * `nuketown doctor` requires (Recommends: what it calls optional). The
 * maintainer scripts never start, reset or apply a town: on upgrade,
 * postinst restarts only daemons that are already running, onto the new
 * version; removal leaves the towns' data. Then lintian runs on the package
 * when it is installed: its findings are printed, an error fails.
 *
 * Options (the .deb test builds its own package in a temp dir, from what
 * `npm test` built): `--out DIR` (default build/), `--any-build` (package
 * the build even if sources changed since).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { PROGRAMS } from "../src/commands/doctor.ts";
import { installProgram } from "../src/install/install.ts";

const root = path.join(import.meta.dirname, "..");
const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8"));
const version: string = pkg.version;
const { values: args } = parseArgs({
  options: { out: { type: "string" }, "any-build": { type: "boolean" } },
});
const out = path.resolve(args.out ?? path.join(root, "build"));
const stage = path.join(out, "deb");
rmSync(stage, { recursive: true, force: true });
mkdirSync(stage, { recursive: true });
chmodSync(stage, 0o755);

await installProgram({
  source: root,
  prefix: "/usr",
  destdir: stage,
  version,
  keepOwner: true,
  anyBuild: args["any-build"] === true,
});

const debianPackage = (fix: string) => /^apt-get install (\S+)$/.exec(fix)?.[1];
const unique = (names: (string | undefined)[]) =>
  [...new Set(names.filter((n): n is string => n !== undefined))].sort();
// libc6: the bundled Node binary links glibc (2.28 or later).
const depends = [
  "libc6 (>= 2.28)",
  ...unique(PROGRAMS.filter((p) => !p.optional).map((p) => debianPackage(p.fix))),
];
const recommends = unique(
  PROGRAMS.filter((p) => p.optional).map((p) => debianPackage(p.fix)),
).filter((n) => !depends.includes(n));

const doc = path.join(stage, "usr", "share", "doc", "nuketown");
mkdirSync(doc, { recursive: true });
writeFileSync(
  path.join(doc, "copyright"),
  [
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
    "Upstream-Name: nuketown",
    "",
    "Files: *",
    "Copyright: 2025 the nuketown authors",
    `License: ${pkg.license}`,
    " Permission is hereby granted, free of charge, to any person obtaining a copy",
    " of this software, to deal in the Software without restriction, subject to",
    " the MIT license. Bundled Node.js and npm dependencies keep their own licenses,",
    " installed beside them under /usr/lib/nuketown.",
    "",
  ].join("\n"),
);
const date = spawnSync("date", ["-R"], { encoding: "utf8" }).stdout.trim();
writeFileSync(
  path.join(doc, "changelog.gz"),
  gzipSync(
    `nuketown (${version}) unstable; urgency=medium\n\n  * Release ${version}.\n\n -- Nuketown maintainers <maintainers@nuketown.org>  ${date}\n`,
    { level: 9 },
  ),
);

// Overrides, each with its reason: the pinned official Node binary is shipped as built
// (its zlib, symbols and non-PIE link are upstream's), and dependencies' own scripts with a
// node shebang are never run as programs (no bin links), so they need no nodejs package.
const overrides = path.join(stage, "usr", "share", "lintian", "overrides");
mkdirSync(overrides, { recursive: true });
writeFileSync(
  path.join(overrides, "nuketown"),
  [
    "nuketown: embedded-library zlib [usr/lib/nuketown/*/bin/node]",
    "nuketown: unstripped-binary-or-object [usr/lib/nuketown/*/bin/node]",
    "nuketown: hardening-no-pie [usr/lib/nuketown/*/bin/node]",
    "nuketown: missing-dep-for-interpreter node (does not satisfy nodejs:any) [usr/lib/nuketown/*/node_modules/*]",
    "nuketown: privacy-breach-generic * [usr/lib/nuketown/*/node_modules/*]",
    "",
  ].join("\n"),
);

const files: string[] = [];
const walk = (dir: string) => {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(file);
    else if (entry.isFile()) files.push(file);
  }
};
walk(path.join(stage, "usr"));
let bytes = 0;
for (const file of files) bytes += statSync(file).size;

const control = path.join(stage, "DEBIAN");
mkdirSync(control, { recursive: true });
writeFileSync(
  path.join(control, "control"),
  [
    "Package: nuketown",
    `Version: ${version}`,
    "Architecture: amd64",
    "Maintainer: Nuketown maintainers <maintainers@nuketown.org>",
    `Installed-Size: ${Math.ceil(bytes / 1024)}`,
    `Depends: ${depends.join(", ")}`,
    ...(recommends.length > 0 ? [`Recommends: ${recommends.join(", ")}`] : []),
    "Section: admin",
    "Priority: optional",
    "Description: AI agents as Unix users, with a human-approved sudo",
    " Nuketown runs AI agents as Unix users reconciled from one declared town:",
    " accounts, ephemeral homes, keys, devices, a sudo gate that asks a human,",
    " and daemons that answer in chat. Carries its own Node.js runtime.",
    "",
  ].join("\n"),
);
writeFileSync(
  path.join(control, "md5sums"),
  files
    .sort()
    .map(
      (f) =>
        `${createHash("md5").update(readFileSync(f)).digest("hex")}  ${path.relative(stage, f)}\n`,
    )
    .join(""),
);
// Daemons already running move onto the new version; nothing is started, reset or applied.
writeFileSync(
  path.join(control, "postinst"),
  [
    "#!/bin/sh",
    "set -e",
    'if [ "$1" = configure ] && [ -n "$2" ] && [ -f /etc/nuketown/town.json ]; then',
    "  nuketown install --prefix /usr >/dev/null 2>&1 || true",
    "fi",
    "exit 0",
    "",
  ].join("\n"),
  { mode: 0o755 },
);
chmodSync(path.join(control, "postinst"), 0o755);

const deb = path.join(out, `nuketown_${version}_amd64.deb`);
const built = spawnSync("dpkg-deb", ["--root-owner-group", "-Zxz", "--build", stage, deb], {
  stdio: "inherit",
});
if (built.status !== 0) process.exit(built.status ?? 1);
console.log(
  `built ${deb.startsWith(`${root}/`) ? path.relative(root, deb) : deb} (Depends: ${depends.join(", ")})`,
);

const lintian = spawnSync("lintian", ["--no-tag-display-limit", deb], { encoding: "utf8" });
if (lintian.error) {
  console.log("lintian is not installed (apt-get install lintian): the package was not checked");
} else {
  process.stdout.write(lintian.stdout || "lintian: no findings\n");
  const errors = lintian.stdout.split("\n").filter((l) => l.startsWith("E: "));
  if (errors.length > 0) {
    console.error(`lintian: ${errors.length} errors`);
    process.exit(1);
  }
}
