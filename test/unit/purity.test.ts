import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { REPO_ROOT } from "../support/fixtures.ts";

/** The pure core: validation and every renderer. Only load.ts reads files. */
const PURE_DIRS = ["src/town", "src/host/render"];
const EFFECTFUL_EXCEPTIONS = new Set(["src/town/load.ts"]);
/** Pure modules that live beside effectful ones in their component's folder. */
const PURE_FILES = [
  "src/glob.ts",
  "src/host/plan.ts",
  "src/os/tables.ts",
  "src/approval/protocol.ts",
  "src/approval/policy.ts",
  "src/approval/sudo-args.ts",
  "src/approval/wrappers.ts",
  "src/change/closure.ts",
  "src/change/defaults.ts",
  "src/change/present.ts",
  "src/change/proposal.ts",
  "src/change/protocol.ts",
  "src/change/risk.ts",
  "src/agent/queue.ts",
  "src/agent/cgroup.ts",
  "src/host/key-file.ts",
  "src/host/git-guard.ts",
  "src/portal/fuzzy.ts",
  "src/portal/tmux.ts",
  "src/portal/runtime.ts",
  "src/agent/runtimes/claude.ts",
  "src/agent/runtimes/codex.ts",
  "src/dashboard/auth.ts",
  "src/dashboard/html.ts",
  "src/dashboard/pages.ts",
  "src/dashboard/picture.ts",
];
const FORBIDDEN = /from\s+["'](node:)?(fs|fs\/promises|child_process|net|http|https|dgram)["']/;

function sources(dir: string): string[] {
  return readdirSync(path.join(REPO_ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts"))
    .map((f) => path.join(dir, f));
}

describe("the pure core", () => {
  it("pure modules elsewhere never touch the file system, processes or the network", () => {
    for (const file of PURE_FILES) {
      const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
      assert.doesNotMatch(text, FORBIDDEN, `${file} imports an effectful module`);
    }
  });

  for (const dir of PURE_DIRS) {
    it(`${dir} never touches the file system, processes or the network`, () => {
      const files = sources(dir).filter((f) => !EFFECTFUL_EXCEPTIONS.has(f));
      assert.ok(files.length > 0, `no sources found in ${dir}`);
      for (const file of files) {
        const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
        assert.doesNotMatch(text, FORBIDDEN, `${file} imports an effectful module`);
      }
    });
  }

  it("nor does anything a pure module imports, however deep (type-only imports run nothing)", () => {
    const roots = [
      ...PURE_FILES,
      ...PURE_DIRS.flatMap((dir) => sources(dir).filter((f) => !EFFECTFUL_EXCEPTIONS.has(f))),
    ];
    for (const root of roots) {
      for (const file of importedBy(root)) {
        const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
        assert.doesNotMatch(text, FORBIDDEN, `${root} imports ${file}, which is effectful`);
      }
    }
  });
});

describe("the one seam that runs programs", () => {
  it("is src/os/: no other source imports node:child_process", () => {
    const importers = sources("src").filter(
      (file) =>
        !file.startsWith("src/os/") &&
        /from\s+["'](node:)?child_process["']/.test(
          readFileSync(path.join(REPO_ROOT, file), "utf8"),
        ),
    );
    assert.deepEqual(importers, [], "run programs through src/os/process.ts");
  });
});

/** Every source `file` reaches through value imports (not `import type`), itself excluded. */
function importedBy(file: string, seen = new Set<string>()): Set<string> {
  const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
  const specs = [
    ...text.matchAll(/^import\s+(?!type\s)[^;]*?from\s+"(\.[^"]+\.ts)"/gms),
    ...text.matchAll(/^export\s+(?!type\s)[^;]*?from\s+"(\.[^"]+\.ts)"/gms),
    ...text.matchAll(/import\("(\.[^"]+\.ts)"\)/g),
  ].map((m) => m[1] as string);
  for (const spec of specs) {
    const target = path.normalize(path.join(path.dirname(file), spec));
    if (seen.has(target)) continue;
    seen.add(target);
    importedBy(target, seen);
  }
  return seen;
}
