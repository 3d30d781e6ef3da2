import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import { shellQuote } from "../../src/approval/wrappers.ts";
import { fuzzyFilter, fuzzyScore } from "../../src/portal/fuzzy.ts";
import { numberedPick } from "../../src/portal/pick.ts";
import {
  type DirEntry,
  expandProjectDir,
  listProjects,
  projectFor,
} from "../../src/portal/projects.ts";
import { portalCommand } from "../../src/portal/runtime.ts";
import {
  agentLoginArgv,
  agentScript,
  attachArgv,
  findWindow,
  humanPercent,
  insideTmux,
  openArgv,
  type PortalPlan,
  parseWindows,
  serverArgs,
  shellLine,
  showArgvs,
  splitArgv,
  windowName,
} from "../../src/portal/tmux.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

/** A fake directory tree: each key lists its children; names ending in / are directories. */
function tree(entries: Record<string, string[]>) {
  return (dir: string): DirEntry[] =>
    (entries[dir] ?? []).map((name) => ({
      name: name.replace(/\/$/, ""),
      isDirectory: name.endsWith("/"),
    }));
}

describe("portal projects", () => {
  it("expands ~ to the mayor's home and resolves relative dirs from cwd", () => {
    assert.equal(expandProjectDir("~/dev", "/home/josh", "/x"), "/home/josh/dev");
    assert.equal(expandProjectDir("~", "/home/josh", "/x"), "/home/josh");
    assert.equal(expandProjectDir("/srv/code", "/home/josh", "/x"), "/srv/code");
    assert.equal(expandProjectDir("code", "/home/josh", "/x"), "/x/code");
    // Only a leading "~/" is the home: "~josh" is a plain relative name.
    assert.equal(expandProjectDir("~josh/dev", "/home/josh", "/x"), "/x/~josh/dev");
  });

  it("lists directories two levels deep, skipping hidden ones and files", () => {
    const readDir = tree({
      "/h/dev": ["nuketown/", "org/", ".cache/", "notes.txt"],
      "/h/dev/org": ["api/", ".git/", "web/"],
      "/h/dev/org/api": ["src/"],
      "/h/dev/.cache": ["secret/"],
      "/h/dev/nuketown": [".git/", "src/"],
      "/srv": ["tool/"],
    });
    assert.deepEqual(listProjects(["/h/dev", "/srv"], readDir), [
      { dir: "/h/dev/nuketown", name: "nuketown" },
      { dir: "/h/dev/nuketown/src", name: "nuketown/src" },
      { dir: "/h/dev/org", name: "org" },
      { dir: "/h/dev/org/api", name: "org/api" },
      { dir: "/h/dev/org/web", name: "org/web" },
      { dir: "/srv/tool", name: "tool" },
    ]);
  });

  it("lists a directory reachable from two roots once", () => {
    const readDir = tree({ "/a": ["b/"], "/a/b": ["c/"] });
    assert.deepEqual(
      listProjects(["/a", "/a/b"], readDir).map((p) => p.dir),
      ["/a/b", "/a/b/c"],
    );
  });

  it("names a directory from the command line after its projectDir, else its base name", () => {
    assert.deepEqual(projectFor("/h/dev/org/api", ["/h/dev"]), {
      dir: "/h/dev/org/api",
      name: "org/api",
    });
    assert.deepEqual(projectFor("/tmp/scratch", ["/h/dev"]), {
      dir: "/tmp/scratch",
      name: "scratch",
    });
    assert.deepEqual(projectFor("/h/dev", ["/h/dev"]), { dir: "/h/dev", name: "dev" });
  });
});

describe("fuzzy matching", () => {
  it("matches characters in order, case-insensitively for a lower-case query", () => {
    assert.notEqual(fuzzyScore("nkt", "nuketown"), undefined);
    assert.notEqual(fuzzyScore("NT", "NukeTown"), undefined, "upper case: exact case");
    assert.equal(fuzzyScore("NUKE", "nuketown"), undefined);
    assert.notEqual(fuzzyScore("nuke", "NukeTown"), undefined);
    assert.equal(fuzzyScore("tkn", "nuketown"), undefined);
    assert.equal(fuzzyScore("nuketowns", "nuketown"), undefined);
    assert.equal(fuzzyScore("", "anything"), 0);
  });

  it("needs every space-separated term", () => {
    assert.notEqual(fuzzyScore("org api", "org/api"), undefined);
    assert.equal(fuzzyScore("org web", "org/api"), undefined);
  });

  it("ranks consecutive runs and word starts first", () => {
    const names = ["a-p-i-x", "xapi", "work/api", "org/apiary", "lapis"];
    assert.deepEqual(
      fuzzyFilter("api", names, (n) => n),
      ["work/api", "org/apiary", "a-p-i-x", "xapi", "lapis"],
    );
    assert.deepEqual(
      fuzzyFilter("", ["b", "a"], (n) => n),
      ["b", "a"],
    );
    assert.deepEqual(
      fuzzyFilter("zz", ["a", "b"], (n) => n),
      [],
    );
  });
});

describe("the numbered picker", () => {
  const run = async (answers: string, query?: string) => {
    const input = new PassThrough();
    const output = new PassThrough();
    let shown = "";
    output.on("data", (d) => (shown += d));
    input.end(answers);
    const items = ["nuketown", "org/api", "org/web"];
    const chosen = await numberedPick(
      { title: "project", items, label: (s) => s, ...(query !== undefined && { query }) },
      input,
      output,
    );
    return { chosen, shown };
  };

  it("picks by number", async () => {
    const { chosen, shown } = await run("2\n");
    assert.equal(chosen, "org/api");
    assert.match(shown, / {2}1\) nuketown\n {2}2\) org\/api\n {2}3\) org\/web\n/);
  });

  it("filters by text, then picks the only match with an empty line", async () => {
    const { chosen, shown } = await run("web\n\n");
    assert.equal(chosen, "org/web");
    assert.match(shown, /now "web"/);
  });

  it("starts from the given query and gives up at the end of input", async () => {
    assert.equal((await run("1\n", "org")).chosen, "org/api");
    assert.equal((await run("9\n")).chosen, undefined);
  });

  it("takes a single match without asking", async () => {
    const { chosen, shown } = await run("", "web");
    assert.equal(chosen, "org/web");
    assert.equal(shown, "");
  });
});

describe("portal tmux commands", () => {
  it("names windows <agent>:<project>", () => {
    assert.equal(windowName("ada", "org/api"), "ada:org/api");
  });

  it("chooses the tmux server by name or by path", () => {
    assert.deepEqual(serverArgs(undefined), []);
    assert.deepEqual(serverArgs("nt-test-1"), ["-L", "nt-test-1"]);
    assert.deepEqual(serverArgs("/run/user/1/tmux.sock"), ["-S", "/run/user/1/tmux.sock"]);
  });

  it("knows when it runs inside the server it talks to", () => {
    const tmux = "/tmp/tmux-1000/default,4242,0";
    assert.equal(insideTmux(undefined, undefined), false);
    assert.equal(insideTmux("", undefined), false);
    assert.equal(insideTmux(tmux, undefined), true);
    assert.equal(insideTmux(tmux, "default"), true);
    assert.equal(insideTmux(tmux, "nt-test-9"), false);
    assert.equal(insideTmux(tmux, "/tmp/tmux-1000/default"), true);
    assert.equal(insideTmux(tmux, "/elsewhere/default"), false);
  });

  it("gives the human the declared share of the height", () => {
    assert.equal(humanPercent({ agent: 75, human: 25 }), 25);
    assert.equal(humanPercent({ agent: 70, human: 30 }), 30);
    assert.equal(humanPercent({ agent: 60, human: 20 }), 25);
    assert.equal(humanPercent({ agent: 99, human: 1 }), 10);
    assert.equal(humanPercent({ agent: 0, human: 0 }), 25);
  });

  it("logs in with machinectl under systemd, runuser or su otherwise, sudo unless root", () => {
    assert.deepEqual(agentLoginArgv("ada", "S", { systemd: true, root: false, runuser: true }), [
      "sudo",
      "--",
      "machinectl",
      "shell",
      "ada@",
      "/bin/bash",
      "-lc",
      "S",
    ]);
    assert.deepEqual(agentLoginArgv("ada", "S", { systemd: false, root: true, runuser: true }), [
      "runuser",
      "-l",
      "ada",
      "-c",
      "S",
    ]);
    assert.deepEqual(agentLoginArgv("ada", "S", { systemd: false, root: false, runuser: false }), [
      "sudo",
      "--",
      "su",
      "-",
      "ada",
      "-c",
      "S",
    ]);
  });

  it("quotes every value in the shell line and the script", () => {
    const dir = "/home/o'neil/dev/$(rm -rf ~) `x`";
    const script = agentScript(dir, "claude --resume");
    assert.ok(script.startsWith(`if cd -- ${shellQuote(dir)}; then\n  claude --resume\n`));
    assert.match(script, /\nexec "\$\{SHELL:-\/bin\/bash\}" -l$/);
    const line = shellLine(["runuser", "-l", "ada", "-c", script]);
    assert.ok(line.startsWith("'runuser' '-l' 'ada' '-c' '"));
    // sh splits the line back into exactly the argv it came from.
    const words = execFileSync("sh", ["-c", `for w in ${line}; do printf '%s\\0' "$w"; done`], {
      encoding: "utf8",
    });
    assert.deepEqual(words.split("\0").slice(0, -1), ["runuser", "-l", "ada", "-c", script]);
  });

  it("opens a window inside tmux, a window in the nuketown session, or the session", () => {
    const plan: PortalPlan = {
      open: "window",
      name: "ada:app",
      dir: "/h/dev/app",
      agentCommand: "'true'",
      humanPercent: 25,
    };
    assert.deepEqual(openArgv(plan, false), [
      "new-window",
      "-P",
      "-F",
      "#{pane_id}",
      "-n",
      "ada:app",
      "-c",
      "/h/dev/app",
      "'true'",
    ]);
    const outside = { ...plan, open: "session" as const, size: { columns: 120, rows: 40 } };
    assert.deepEqual(openArgv(outside, true).slice(0, 6), [
      "new-window",
      "-P",
      "-F",
      "#{pane_id}",
      "-t",
      "=nuketown:",
    ]);
    assert.deepEqual(openArgv(outside, false), [
      "new-session",
      "-d",
      "-P",
      "-F",
      "#{pane_id}",
      "-s",
      "nuketown",
      "-x",
      "120",
      "-y",
      "40",
      "-n",
      "ada:app",
      "-c",
      "/h/dev/app",
      "'true'",
    ]);
    assert.deepEqual(splitArgv(plan, "%7"), [
      "split-window",
      "-v",
      "-t",
      "%7",
      "-l",
      "25%",
      "-c",
      "/h/dev/app",
    ]);
  });

  it("finds an open window by name and shows it without typing anything", () => {
    const windows = parseWindows(
      [
        "work\t$0\t@1\t\tbash",
        "nuketown\t$1\t@4\tada:app\tada:app",
        "work\t$0\t@9\tada:app\tclaude",
        "work\t$0\t@10\tvox:app\tada:app",
        "",
        "garbage",
        "work\t$0\t@11\t\tvox:web",
      ].join("\n"),
    );
    assert.equal(windows.length, 5);
    assert.equal(findWindow(windows, "vox:web")?.id, "@11", "untagged, found by name");
    assert.equal(findWindow(windows, "vox:app")?.id, "@10", "tagged, whatever its name");
    assert.equal(findWindow(windows, "ada:app", "nuketown")?.id, "@4");
    assert.equal(findWindow(windows, "ada:app", "work")?.id, "@9");
    assert.equal(findWindow(windows, "ada:app")?.id, "@4");
    assert.equal(findWindow(windows, "vox:api"), undefined);
    const window = findWindow(windows, "ada:app", "work")!;
    assert.deepEqual(showArgvs(window, true), [
      ["select-window", "-t", "@9"],
      ["switch-client", "-t", "$0:@9"],
    ]);
    assert.deepEqual(showArgvs(window, false), [["select-window", "-t", "@9"]]);
    assert.ok(showArgvs(window, true).every((argv) => argv[0] !== "send-keys"));
    assert.deepEqual(attachArgv("$0"), ["attach-session", "-t", "$0"]);
    assert.deepEqual(attachArgv("nuketown"), ["attach-session", "-t", "=nuketown"]);
  });
});

describe("the portal's pure parts", () => {
  it("never touch the file system or processes", () => {
    for (const file of ["fuzzy.ts", "projects.ts", "tmux.ts"]) {
      const text = readFileSync(path.join(REPO_ROOT, "src", "portal", file), "utf8");
      assert.doesNotMatch(text, /from\s+["'](node:)?(fs|fs\/promises|child_process|net)["']/, file);
    }
  });
});

describe("the agent pane's runtime line", () => {
  const trust = { node: "/opt/nt/bin/node", script: "/opt/nt/dist/agent/runtimes/trust-main.js" };
  const agent = (kind: string, extra: Record<string, unknown> = {}) =>
    ({
      portal: { command: kind === "codex" ? "codex" : "claude" },
      runtime: {
        kind,
        command: kind === "codex" ? "codex" : "claude",
        args: ["--model", "m"],
        env: { FOO: "a b" },
        sandbox: "danger-full-access",
        ...extra,
      },
    }) as never;

  it("claude: trusts the chosen directory as the agent, then runs with its tasks' permission mode", () => {
    assert.equal(
      portalCommand(agent("claude-code"), trust),
      `'/opt/nt/bin/node' '/opt/nt/dist/agent/runtimes/trust-main.js' "$PWD"; 'claude' '--permission-mode' 'bypassPermissions' '--model' 'm'`,
    );
  });

  it("codex: no shared daemon, its sandbox, the directory trusted, its environment", () => {
    const line = portalCommand(agent("codex"), trust);
    assert.equal(
      line,
      `env FOO='a b' 'codex' '--no-daemon' '--sandbox' 'danger-full-access' -c "projects.\\"$PWD\\".trust_level=\\"trusted\\"" '--model' 'm'`,
    );
    // What sh makes of it in /srv/site: the -c value codex reads.
    const words = execFileSync(
      "sh",
      [
        "-c",
        `cd / && PWD=/srv/site; for w in ${line.replace(/^env FOO='a b' /, "")}; do printf '%s\\n' "$w"; done`,
      ],
      {
        encoding: "utf8",
      },
    ).split("\n");
    assert.ok(words.includes('projects."/srv/site".trust_level="trusted"'), words.join(" | "));
  });

  it("takes a declared command as it is", () => {
    const declared = {
      ...(agent("claude-code") as object),
      portal: { command: "my-agent --flag" },
    } as never;
    assert.equal(portalCommand(declared, trust), "my-agent --flag");
  });
});
