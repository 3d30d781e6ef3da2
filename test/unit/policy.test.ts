/**
 * The sudo policy: argv patterns, first match wins, and a rule never trusts
 * the command name the agent typed.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import {
  evaluatePolicy,
  isHardDeny,
  matchesPattern,
  type PolicyRequest,
  resolveCommand,
  SECURE_PATH,
} from "../../src/approval/policy.ts";
import type { PolicyAction, PolicyRule } from "../../src/town/types.ts";
import { REPO_ROOT } from "../support/fixtures.ts";

describe("matchesPattern", () => {
  const CASES: readonly (readonly [pattern: string[], argv: string[], expected: boolean])[] = [
    [["ls"], ["ls"], true],
    [["ls"], ["lsblk"], false],
    // globs within one argument
    [["systemctl", "status", "nginx*"], ["systemctl", "status", "nginx.service"], true],
    [["systemctl", "status", "*"], ["systemctl", "status", "a b c"], true],
    [["systemctl", "status", "*"], ["systemctl", "status", ""], true],
    [["systemctl", "status", "*"], ["systemctl", "status", "a", "b"], false],
    [["cat", "/var/log/*.log"], ["cat", "/var/log/syslog.log"], true],
    [["cat", "/var/log/*.log"], ["cat", "/var/log/syslog"], false],
    [["kill", "-?"], ["kill", "-9"], true],
    [["kill", "-?"], ["kill", "-15"], false],
    [["nice", "-n", "[0-9]"], ["nice", "-n", "7"], true],
    [["nice", "-n", "[!0-9]"], ["nice", "-n", "7"], false],
    [["nice", "-n", "[[:digit:]][[:digit:]]"], ["nice", "-n", "19"], true],
    [["x", "[[:nope:]]"], ["x", "a"], false],
    [["x", "[]a]"], ["x", "]"], true],
    [["x", "[ab"], ["x", "[ab"], true],
    [["x", "*"], ["x"], false],
    // a final ** takes zero or more arguments
    [["apt", "install", "**"], ["apt", "install"], true],
    [["apt", "install", "**"], ["apt", "install", "vim", "git"], true],
    [["apt", "install", "**"], ["apt", "remove", "vim"], false],
    [["apt", "install", "**"], ["apt"], false],
    [["**"], ["anything", "at", "all"], true],
    [["**"], [], true],
    // anywhere else ** is a glob within one argument
    [["a", "**", "c"], ["a", "b", "c"], true],
    [["a", "**", "c"], ["a", "b", "b", "c"], false],
    // lengths must be equal without a final **
    [["apt", "update"], ["apt", "update", "-y"], false],
    [["apt", "update", "-y"], ["apt", "update"], false],
    // escapes
    [["echo", "\\*"], ["echo", "*"], true],
    [["echo", "\\*"], ["echo", "x"], false],
    [["echo", "\\**"], ["echo", "**"], true],
    [["echo", "\\**"], ["echo", "x"], false],
    [["echo", "\\**"], ["echo"], false],
    [["echo", "\\**"], ["echo", "a", "b"], false],
    [["echo", "a\\?"], ["echo", "a?"], true],
    [["echo", "a\\?"], ["echo", "ab"], false],
  ];
  for (const [pattern, argv, expected] of CASES) {
    it(`${JSON.stringify(pattern)} ${expected ? "matches" : "does not match"} ${JSON.stringify(argv)}`, () => {
      assert.equal(matchesPattern(pattern, argv), expected);
    });
  }
});

function policy(rules: PolicyRule[], fallback: PolicyAction = "ask") {
  return { default: fallback, rules };
}

/** By default argv[0] resolved as the gate would: a bare name in /usr/bin, a path as is. */
function request(argv: string[], resolvedCommand?: string, runAs = "root"): PolicyRequest {
  const argv0 = argv[0] ?? "";
  const resolved = resolvedCommand ?? (argv0.startsWith("/") ? argv0 : `/usr/bin/${argv0}`);
  return { argv, runAs, resolvedCommand: resolved };
}

describe("an allow rule approves no more than it says", () => {
  const rules: PolicyRule[] = [
    { action: "allow", argv: ["systemctl", "status", "**"] },
    { action: "deny", argv: ["shutdown", "**"] },
  ];
  const decide = (argv: string[], runAs = "root") =>
    evaluatePolicy(policy(rules), request(argv, undefined, runAs)).action;

  it("its final ** takes arguments, not options", () => {
    assert.equal(decide(["systemctl", "status", "nginx", "sshd"]), "allow");
    assert.equal(decide(["systemctl", "status", "-H", "vox@127.0.0.1:2222"]), "ask");
    assert.equal(decide(["systemctl", "status", "--image=/home/vox/fs.img"]), "ask");
    assert.equal(decide(["systemctl", "status", "nginx", "--", "-x"]), "ask");
    const everything = [{ action: "allow" as const, argv: ["**"] }];
    assert.equal(evaluatePolicy(policy(everything), request(["ls", "-la"])).action, "allow");
  });

  it("without runAs it approves running as root only; ask and deny rules reach every target", () => {
    assert.equal(decide(["systemctl", "status", "nginx"], "vox"), "ask");
    assert.equal(decide(["shutdown", "now"], "vox"), "deny");
    const asVox = [{ action: "allow" as const, argv: ["id"], runAs: "vox" }];
    assert.equal(evaluatePolicy(policy(asVox), request(["id"], undefined, "vox")).action, "allow");
    assert.equal(evaluatePolicy(policy(asVox), request(["id"], undefined, "root")).action, "ask");
  });
});

describe("targets are matched by uid, not by name", () => {
  // An injected passwd table: toor is a second name of uid 0, vox-alias one of vox's uid.
  const accounts = [
    { name: "root", uid: 0 },
    { name: "toor", uid: 0 },
    { name: "vox", uid: 1101 },
    { name: "vox-alias", uid: 1101 },
    { name: "ada", uid: 1100 },
  ];
  const decide = (rules: PolicyRule[], runAs: string, runAsUid?: number) =>
    evaluatePolicy(
      policy(rules),
      { ...request(["id", "-un"], undefined, runAs), ...(runAsUid !== undefined && { runAsUid }) },
      { accounts },
    ).action;

  it("an allow rule without runAs is root-only by uid: every name of uid 0, no other uid", () => {
    const rootOnly: PolicyRule[] = [{ action: "allow", argv: ["id", "-un"] }];
    assert.equal(decide(rootOnly, "root"), "allow");
    assert.equal(decide(rootOnly, "toor"), "allow", "toor is root");
    assert.equal(decide(rootOnly, "toor", 0), "allow");
    assert.equal(decide(rootOnly, "vox"), "ask");
    assert.equal(decide(rootOnly, "vox-alias", 1101), "ask");
    // A name that is root's by the passwd table but not by the gate's uid (changed meanwhile): the uid counts.
    assert.equal(decide(rootOnly, "root", 1101), "ask");
  });

  it("a deny rule about root catches another name of uid 0", () => {
    const denyRoot: PolicyRule[] = [{ action: "deny", argv: ["**"], runAs: "root" }];
    assert.equal(decide(denyRoot, "toor"), "deny");
    assert.equal(decide(denyRoot, "toor", 0), "deny");
    assert.equal(decide(denyRoot, "ada"), "ask");
  });

  it("a rule written for one name applies to every name of its uid", () => {
    const allowVox: PolicyRule[] = [{ action: "allow", argv: ["id", "-un"], runAs: "vox" }];
    assert.equal(decide(allowVox, "vox-alias", 1101), "allow");
    const denyAlias: PolicyRule[] = [{ action: "deny", argv: ["**"], runAs: "vox-alias" }];
    assert.equal(decide(denyAlias, "vox", 1101), "deny");
    assert.equal(decide(denyAlias, "ada", 1100), "ask");
  });

  it("compares names only where the table knows neither", () => {
    const unknown: PolicyRule[] = [{ action: "deny", argv: ["**"], runAs: "ghost" }];
    assert.equal(decide(unknown, "ghost"), "deny");
    assert.equal(decide(unknown, "ada", 1100), "ask");
  });
});

describe("a deny rule is not stepped around", () => {
  const deny: PolicyRule[] = [
    { action: "deny", argv: ["rm", "-rf", "/"], reason: "the whole disk" },
  ];
  // [argv, where it resolved, denied?]
  const CASES: readonly (readonly [argv: string[], resolved: string, denied: boolean])[] = [
    [["rm", "-rf", "/"], "/usr/bin/rm", true],
    [["/bin/rm", "-rf", "/"], "/bin/rm", true],
    [["/usr/bin/rm", "-rf", "/"], "/usr/bin/rm", true],
    [["./rm", "-rf", "/"], "/home/a/rm", true],
    [["rm", "-r", "-f", "/"], "/usr/bin/rm", true],
    [["rm", "-fr", "/"], "/usr/bin/rm", true],
    [["rm", "-rfv", "/"], "/usr/bin/rm", true],
    [["rm", "-rf", "//"], "/usr/bin/rm", true],
    [["rm", "-rf", "/."], "/usr/bin/rm", true],
    [["rm", "-rf", "/tmp/.."], "/usr/bin/rm", true],
    [["rm", "--recursive", "--force", "/"], "/usr/bin/rm", true],
    [["rm", "-r", "--force", "--", "/"], "/usr/bin/rm", true],
    [["rm", "-rf", "--no-preserve-root", "/"], "/usr/bin/rm", true],
    // what the rule does not say stays with the default
    [["rm", "-rf", "/tmp/x"], "/usr/bin/rm", false],
    [["rm", "-r", "/"], "/usr/bin/rm", false],
    [["rm", "-rf", "/", "/x"], "/usr/bin/rm", false],
    [["rmdir", "-rf", "/"], "/usr/bin/rmdir", false],
  ];
  for (const [argv, resolved, denied] of CASES) {
    it(`${JSON.stringify(argv)} (${resolved}) is ${denied ? "denied" : "left to the default"}`, () => {
      const decision = evaluatePolicy(policy(deny), request(argv, resolved));
      assert.equal(decision.action, denied ? "deny" : "ask");
    });
  }

  it("an allow rule still matches exactly what it says", () => {
    const allow: PolicyRule[] = [{ action: "allow", argv: ["rm", "-rf", "/tmp/build"] }];
    assert.equal(
      evaluatePolicy(policy(allow), request(["rm", "-rf", "/tmp/build"])).action,
      "allow",
    );
    for (const argv of [
      ["rm", "-fr", "/tmp/build"],
      ["rm", "-rf", "/tmp/build/"],
      ["/bin/rm", "-rf", "/tmp/build"],
    ])
      assert.equal(evaluatePolicy(policy(allow), request(argv)).action, "ask", argv.join(" "));
  });
});

describe("evaluatePolicy", () => {
  const rules: PolicyRule[] = [
    { action: "deny", argv: ["systemctl", "stop", "sshd*"], reason: "keeps the door open" },
    { action: "allow", argv: ["systemctl", "status", "**"] },
    { action: "ask", argv: ["systemctl", "**"], reason: "services change" },
    { action: "allow", argv: ["nix", "build", "**"], runAs: "builder" },
  ];

  it("GIVEN several matching rules THEN the first wins and its index is reported", () => {
    assert.deepEqual(evaluatePolicy(policy(rules), request(["systemctl", "stop", "sshd"])), {
      action: "deny",
      rule: 0,
      reason: "keeps the door open",
      source: "rule",
    });
    assert.deepEqual(evaluatePolicy(policy(rules), request(["systemctl", "status", "nginx"])), {
      action: "allow",
      rule: 1,
      source: "rule",
    });
    assert.deepEqual(evaluatePolicy(policy(rules), request(["systemctl", "restart", "nginx"])), {
      action: "ask",
      rule: 2,
      reason: "services change",
      source: "rule",
    });
  });

  it("GIVEN no rule matches THEN the default decides", () => {
    assert.deepEqual(evaluatePolicy(policy(rules, "deny"), request(["reboot"])), {
      action: "deny",
      source: "default",
    });
    assert.deepEqual(evaluatePolicy(policy([]), request(["ls"])), {
      action: "ask",
      source: "default",
    });
  });

  it("GIVEN a rule with runAs THEN it only matches that target user", () => {
    const build = ["nix", "build", ".#x"];
    assert.equal(evaluatePolicy(policy(rules), request(build, "/usr/bin/nix", "builder")).rule, 3);
    assert.equal(
      evaluatePolicy(policy(rules), request(build, "/usr/bin/nix", "root")).source,
      "default",
    );
  });

  it("a deny from a rule is hard; a default deny is not", () => {
    assert.equal(
      isHardDeny(evaluatePolicy(policy(rules), request(["systemctl", "stop", "sshd"]))),
      true,
    );
    assert.equal(isHardDeny(evaluatePolicy(policy(rules, "deny"), request(["reboot"]))), false);
    assert.equal(
      isHardDeny(evaluatePolicy(policy(rules), request(["systemctl", "start", "x"]))),
      false,
    );
  });
});

describe("a rule never trusts the name the agent typed", () => {
  const allowStatus = policy([{ action: "allow", argv: ["systemctl", "status", "**"] }]);
  const home = "/home/ada";
  const onlyAgentCopy = (p: string) => p === "/home/ada/bin/systemctl";

  it("GIVEN ./systemctl THEN it resolves into the agent's directory and only the default applies", () => {
    const resolved = resolveCommand("./systemctl", home, () => true);
    assert.equal(resolved, "/home/ada/systemctl");
    const decision = evaluatePolicy(allowStatus, request(["./systemctl", "status"], resolved));
    assert.deepEqual(decision, { action: "ask", source: "default" });
  });

  it("GIVEN ./systemctl typed in /usr/bin THEN a bare rule still does not match: the name had a /", () => {
    const resolved = resolveCommand("./systemctl", "/usr/bin", () => true);
    assert.equal(resolved, "/usr/bin/systemctl");
    assert.equal(
      evaluatePolicy(allowStatus, request(["./systemctl", "status"], resolved)).source,
      "default",
    );
  });

  it("GIVEN /tmp/systemctl THEN a bare rule does not match", () => {
    const resolved = resolveCommand("/tmp/systemctl", home, () => true);
    assert.equal(resolved, "/tmp/systemctl");
    assert.equal(
      evaluatePolicy(allowStatus, request(["/tmp/systemctl", "status"], resolved)).source,
      "default",
    );
  });

  it("GIVEN a bare systemctl that exists only in the agent's ~/bin THEN it does not resolve at all", () => {
    assert.equal(resolveCommand("systemctl", home, onlyAgentCopy), undefined);
  });

  it("GIVEN a resolved command outside the secure path THEN a bare rule does not match", () => {
    const decision = evaluatePolicy(
      allowStatus,
      request(["systemctl", "status"], "/home/ada/bin/systemctl"),
    );
    assert.equal(decision.source, "default");
  });

  it("GIVEN a resolved path that is not canonical THEN no rule on the command matches", () => {
    for (const resolved of [
      "/usr/bin/../../home/ada/systemctl",
      "/usr/bin/./systemctl",
      "systemctl",
      "",
    ]) {
      assert.equal(
        evaluatePolicy(allowStatus, request(["systemctl", "status"], resolved)).source,
        "default",
      );
    }
  });

  it("GIVEN a resolved name that differs from the typed one THEN a bare rule does not match", () => {
    assert.equal(
      evaluatePolicy(allowStatus, request(["systemctl", "status"], "/usr/bin/evil")).source,
      "default",
    );
  });

  it("GIVEN an absolute pattern THEN it matches the resolved path, however it was typed", () => {
    const absolute = policy([{ action: "allow", argv: ["/usr/bin/systemctl", "status", "**"] }]);
    assert.equal(evaluatePolicy(absolute, request(["systemctl", "status"])).rule, 0);
    assert.equal(evaluatePolicy(absolute, request(["/usr/bin/systemctl", "status"])).rule, 0);
    assert.equal(
      evaluatePolicy(absolute, request(["./systemctl", "status"], "/usr/bin/systemctl")).rule,
      0,
    );
    assert.equal(
      evaluatePolicy(absolute, request(["systemctl", "status"], "/home/ada/systemctl")).source,
      "default",
    );
  });

  it("GIVEN an absolute pattern with a glob THEN * stays within one path component", () => {
    const scripts = policy([{ action: "allow", argv: ["/opt/scripts/*.sh"] }]);
    assert.equal(
      evaluatePolicy(scripts, request(["/opt/scripts/a.sh"], "/opt/scripts/a.sh")).rule,
      0,
    );
    assert.equal(
      evaluatePolicy(scripts, request(["/opt/scripts/x/a.sh"], "/opt/scripts/x/a.sh")).source,
      "default",
    );
  });

  it("GIVEN a bare glob pattern THEN it matches names in the secure path only", () => {
    const glob = policy([{ action: "allow", argv: ["systemd-*", "**"] }]);
    assert.equal(evaluatePolicy(glob, request(["systemd-analyze", "verify"])).rule, 0);
    assert.equal(
      evaluatePolicy(glob, request(["systemd-analyze"], "/home/ada/bin/systemd-analyze")).source,
      "default",
    );
  });

  it("GIVEN a relative pattern with a / THEN it matches nothing", () => {
    const relative = policy([{ action: "allow", argv: ["bin/systemctl", "**"] }]);
    assert.equal(
      evaluatePolicy(relative, request(["systemctl"], "/bin/systemctl")).source,
      "default",
    );
  });
});

describe("resolveCommand", () => {
  it("looks a bare name up in the secure path, in order, never in the caller's PATH", () => {
    const present = new Set(["/usr/bin/ls", "/bin/ls", "/home/ada/bin/ls"]);
    assert.equal(
      resolveCommand("ls", "/home/ada", (p) => present.has(p)),
      "/usr/bin/ls",
    );
    const seen: string[] = [];
    resolveCommand("nothere", "/", (p) => {
      seen.push(p);
      return false;
    });
    assert.deepEqual(
      seen,
      SECURE_PATH.map((dir) => `${dir}/nothere`),
    );
  });

  it("keeps an absolute path, resolves a relative one against cwd", () => {
    assert.equal(
      resolveCommand("/usr/sbin/nft", "/home/ada", () => false),
      "/usr/sbin/nft",
    );
    assert.equal(
      resolveCommand("/usr/bin/../../tmp/x", "/", () => false),
      "/tmp/x",
    );
    assert.equal(
      resolveCommand("bin/tool", "/home/ada", () => false),
      "/home/ada/bin/tool",
    );
    assert.equal(
      resolveCommand("../x", "/home/ada/src", () => false),
      "/home/ada/x",
    );
  });

  it("resolves nothing for empty, . and .. names", () => {
    for (const name of ["", ".", ".."])
      assert.equal(
        resolveCommand(name, "/", () => true),
        undefined,
      );
  });

  it("takes another secure path when given one", () => {
    const nixos = ["/run/wrappers/bin", "/run/current-system/sw/bin"];
    assert.equal(
      resolveCommand("ls", "/", (p) => p === "/run/current-system/sw/bin/ls", nixos),
      "/run/current-system/sw/bin/ls",
    );
  });

  it("refuses a relative cwd rather than reading the process's own", () => {
    assert.throws(() => resolveCommand("./x", "relative", () => true), TypeError);
  });
});

describe("the approval core is pure", () => {
  for (const file of ["src/approval/policy.ts", "src/approval/sudo-args.ts"]) {
    it(`${file} never touches the file system, processes or the network`, () => {
      const text = readFileSync(path.join(REPO_ROOT, file), "utf8");
      assert.doesNotMatch(
        text,
        /from\s+["'](node:)?(fs|fs\/promises|child_process|net|http|https|dgram)["']/,
      );
    });
  }
});
