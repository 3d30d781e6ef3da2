import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type ResolveResult, resolveTown } from "../../src/town/resolve.ts";
import { exampleDeclaration, FIXED_CONTEXT, minimalDeclaration } from "../support/fixtures.ts";

type Decl = Record<string, any>;

function resolveWith(
  change: (decl: Decl) => void,
  base: () => Decl = minimalDeclaration,
): ResolveResult {
  const decl = base();
  change(decl);
  return resolveTown(decl, FIXED_CONTEXT);
}

function problemAt(result: ResolveResult, path: string): string {
  const found = result.errors.find((e) => e.path === path);
  assert.ok(
    found,
    `expected a problem at ${path}, got:\n${result.errors.map((e) => `  ${e.path}: ${e.message}`).join("\n") || "  (none)"}`,
  );
  assert.equal(result.town, undefined, "an invalid declaration must not resolve to a town");
  return found.message;
}

describe("hostile values are rejected with their path", () => {
  // One row per way a value could escape a file we generate.
  const cases: { kind: string; path: string; change: (d: Decl) => void; reason?: RegExp }[] = [
    {
      kind: "runtime: a base URL that would break out of a JSON string",
      path: "agents.ada.runtime.baseUrl",
      change: (d) => (d.agents.ada.runtime = { baseUrl: 'https://x.example/"}' }),
      reason: /expected an http:\/\/ or https:\/\/ URL/,
    },
    {
      kind: "runtime: a base URL that is not http(s)",
      path: "agents.ada.runtime.baseUrl",
      change: (d) => (d.agents.ada.runtime = { baseUrl: "file:///etc/passwd" }),
      reason: /expected an http:\/\/ or https:\/\/ URL/,
    },
    {
      kind: "runtime: a tool list for codex",
      path: "agents.ada.runtime.allowedTools",
      change: (d) => (d.agents.ada.runtime = { kind: "codex", allowedTools: ["Read"] }),
      reason: /only claude-code takes a list of tools; for codex use runtime.sandbox/,
    },
    {
      kind: "runtime: a sandbox for claude-code",
      path: "agents.ada.runtime.sandbox",
      change: (d) => (d.agents.ada.runtime = { kind: "claude-code", sandbox: "read-only" }),
      reason: /only codex has a sandbox mode/,
    },
    {
      kind: "runtime: vendor settings for a command runtime",
      path: "agents.ada.runtime",
      change: (d) => (d.agents.ada.runtime = { kind: "command", command: "/bin/true", model: "m" }),
      reason: /configure the claude-code and codex CLIs/,
    },
    {
      kind: "udev: double quote in a match value",
      path: "agents.ada.devices[0].attrs.product",
      change: (d) =>
        (d.agents.ada.devices = [{ subsystem: "usb", attrs: { product: 'X", RUN+="/bin/sh' } }]),
      reason: /udev/,
    },
    {
      kind: "udev: newline in a match value",
      path: "agents.ada.devices[0].attrs.product",
      change: (d) =>
        (d.agents.ada.devices = [{ subsystem: "usb", attrs: { product: "X\nRUN+=/bin/sh" } }]),
      reason: /newline/,
    },
    {
      kind: "udev: % substitution in a match value",
      path: "agents.ada.devices[0].attrs.serial",
      change: (d) => (d.agents.ada.devices = [{ subsystem: "usb", attrs: { serial: "%k" } }]),
      reason: /%/,
    },
    {
      kind: "udev: $ substitution in a match value",
      path: "agents.ada.devices[0].attrs.serial",
      change: (d) =>
        (d.agents.ada.devices = [{ subsystem: "usb", attrs: { serial: "$env{HOME}" } }]),
      reason: /\$/,
    },
    {
      kind: "udev: backslash in a match value",
      path: "agents.ada.devices[0].attrs.serial",
      change: (d) => (d.agents.ada.devices = [{ subsystem: "usb", attrs: { serial: "a\\" } }]),
      reason: /\\/,
    },
    {
      kind: "udev: an attribute name with a brace",
      path: 'agents.ada.devices[0].attrs["idVendor}==\\"x"]',
      change: (d) =>
        (d.agents.ada.devices = [{ subsystem: "tty", attrs: { 'idVendor}=="x': "0483" } }]),
    },
    {
      kind: "udev: a subsystem with a quote",
      path: "agents.ada.devices[0].subsystem",
      change: (d) => (d.agents.ada.devices = [{ subsystem: 'tty"', attrs: { idVendor: "0483" } }]),
    },
    {
      kind: "udev: a malformed USB id",
      path: "agents.ada.devices[0].attrs.idVendor",
      change: (d) => (d.agents.ada.devices = [{ subsystem: "tty", attrs: { idVendor: "04838" } }]),
      reason: /expected 4 lowercase hex digits, got "04838"/,
    },
    {
      kind: "udev: an ACL permission that is not r/w/x",
      path: "agents.ada.devices[0].permission",
      change: (d) =>
        (d.agents.ada.devices = [
          { subsystem: "tty", attrs: { idVendor: "0483" }, permission: "rw,u:root:rwx" },
        ]),
    },
    {
      kind: "sudoers: a comma in the gate path",
      path: "install.gate",
      change: (d) => (d.install = { gate: "/usr/libexec/gate, /bin/sh" }),
    },
    {
      kind: "sudoers: a colon in the gate path",
      path: "install.gate",
      change: (d) => (d.install = { gate: "/usr/libexec/gate:NOPASSWD" }),
    },
    {
      kind: "sudoers: a space (argument) in the gate path",
      path: "install.gate",
      change: (d) => (d.install = { gate: "/usr/bin/env sh" }),
    },
    {
      kind: "sudoers: a wildcard in the gate path",
      path: "install.gate",
      change: (d) => (d.install = { gate: "/usr/bin/*" }),
    },
    {
      kind: "sudoers: an agent name with a comma",
      path: 'agents["ada,root"]',
      change: (d) => (d.agents["ada,root"] = { uid: 1101 }),
    },
    {
      kind: "unit file: = in an environment variable name",
      path: 'agents.ada.runtime.env["A=B"]',
      change: (d) => (d.agents.ada.runtime = { env: { "A=B": "1" } }),
      reason: /no =/,
    },
    {
      kind: "unit file: newline in an environment value",
      path: "agents.ada.runtime.env.TOKEN",
      change: (d) => (d.agents.ada.runtime = { env: { TOKEN: "x\nExecStartPre=/bin/sh" } }),
      reason: /newline/,
    },
    {
      kind: "unit file: newline in a path written to a unit",
      path: "agentsDir",
      change: (d) => (d.agentsDir = "/agents\nExecStart=/bin/sh"),
    },
    {
      kind: "unit file: = in the nuketown binary path",
      path: "install.bin",
      change: (d) => (d.install = { bin: "/usr/bin/x=y" }),
    },
    {
      kind: "unit file: % specifier in a state dir",
      path: "stateDir",
      change: (d) => (d.stateDir = "/var/lib/%h"),
    },
    {
      kind: "TOML: a control character in a one-line value",
      path: "agents.ada.git.name",
      change: (d) => (d.agents.ada.git = { name: "Ada\u0007" }),
      reason: /U\+0007/,
    },
    {
      kind: "TOML: an escape sequence in free text",
      path: "agents.ada.description",
      change: (d) => (d.agents.ada.description = "hello\u001b[2J"),
      reason: /U\+001B/,
    },
    {
      kind: "TOML: a carriage return in free text",
      path: "agents.ada.runtime.extraPrompt",
      change: (d) => (d.agents.ada.runtime = { extraPrompt: "a\r\nb" }),
      reason: /carriage return/,
    },
    {
      kind: "markdown/TOML: a C1 control character in a role",
      path: "agents.ada.role",
      change: (d) => (d.agents.ada.role = "soft\u0085ware"),
    },
    {
      kind: "git config: a newline in the author name",
      path: "agents.ada.git.name",
      change: (d) => (d.agents.ada.git = { name: "Ada\n[core]\nsshCommand = sh" }),
      reason: /newline/,
    },
    {
      kind: "git: a repo URL that is an option",
      path: "agents.ada.repos[0]",
      change: (d) => (d.agents.ada.repos = ["--upload-pack=touch /tmp/pwned"]),
      reason: /must not start with -/,
    },
    {
      kind: "package manager: a package name that is an option",
      path: "agents.ada.packages[1]",
      change: (d) => (d.agents.ada.packages = ["hello", "-oAPT::Get::AllowUnauthenticated=1"]),
      reason: /expected a package name .*, got "-oAPT/,
    },
    {
      kind: "package manager: a base package that is a local file",
      path: "basePackages[0]",
      change: (d) => (d.basePackages = ["./evil.deb"]),
      reason: /package name/,
    },
    {
      kind: "package manager: two packages in one name",
      path: "agents.ada.packages[0]",
      change: (d) => (d.agents.ada.packages = ["hello sl"]),
      reason: /package name/,
    },
  ];

  for (const c of cases) {
    it(`rejects ${c.kind}`, () => {
      const message = problemAt(resolveWith(c.change), c.path);
      if (c.reason) assert.match(message, c.reason);
    });
  }
});

describe("declaration rules", () => {
  it("accepts the example town", () => {
    const result = resolveTown(exampleDeclaration(), FIXED_CONTEXT);
    assert.deepEqual(result.errors, []);
    assert.ok(result.town);
  });

  it("accepts package names as Debian, Fedora, Arch and Nix spell them", () => {
    const names = [
      "g++",
      "libc6:amd64",
      "python3.11",
      "NetworkManager",
      "gtk2_engines",
      "lib32-glibc",
    ];
    const result = resolveWith((d) => (d.agents.ada.packages = names));
    assert.deepEqual(result.errors, []);
  });

  it("reports every problem at once, across schema and uid checks", () => {
    const result = resolveWith((d) => {
      d.agents.ada.persist = ["/etc"];
      d.agents.bob = { uid: 1100, colour: "blue" };
      d.agents.eve = { uid: 99 };
    });
    const paths = result.errors.map((e) => e.path).sort();
    assert.deepEqual(paths, [
      "agents.ada.persist[0]",
      "agents.bob.colour",
      "agents.bob.uid",
      "agents.eve.uid",
    ]);
    assert.match(problemAt(result, "agents.bob.uid"), /1100 is already used by agents\.ada/);
    assert.match(problemAt(result, "agents.eve.uid"), /99 is outside uidRange 1100–1999/);
    assert.match(problemAt(result, "agents.bob.colour"), /unknown option/);
  });

  it("keeps a disabled agent's uid reserved", () => {
    const result = resolveWith((d) => (d.agents.old = { uid: 1100, enable: false }));
    assert.match(problemAt(result, "agents.old.uid"), /already used by agents\.ada/);
  });

  it("rejects uids outside a custom range", () => {
    const result = resolveWith((d) => (d.uidRange = { min: 60100, max: 60999 }));
    assert.match(problemAt(result, "agents.ada.uid"), /outside uidRange 60100–60999/);
  });

  it("rejects invalid Unix user names for agents and humans", () => {
    assert.match(
      problemAt(
        resolveWith((d) => (d.agents["9lives"] = { uid: 1101 })),
        'agents["9lives"]',
      ),
      /Unix user name/,
    );
    assert.match(
      problemAt(
        resolveWith((d) => (d.humans.mayor.unixUser = "Mayor Man")),
        "humans.mayor.unixUser",
      ),
      /Unix user name/,
    );
    assert.match(
      problemAt(
        resolveWith((d) => (d.agents.root = { uid: 1101 })),
        "agents.root",
      ),
      /system or nuketown account/,
    );
  });

  it("rejects an agent whose name is a human's account", () => {
    const result = resolveWith((d) => (d.humans.ada = { approver: false }));
    assert.match(problemAt(result, "humans.ada"), /already taken by agents\.ada/);
  });

  it("rejects persist paths that are absolute or climb out", () => {
    for (const [bad, reason] of [
      ["/etc/shadow", /not absolute/],
      ["../josh", /climb out/],
      ["projects/../../josh", /climb out/],
      ["~/projects", /drop the ~/],
      ["a//b", /empty or \. segments/],
      ["", /empty/],
    ] as const) {
      const message = problemAt(
        resolveWith((d) => (d.agents.ada.persist = [bad])),
        "agents.ada.persist[0]",
      );
      assert.match(message, reason, bad);
    }
  });

  it("rejects a persisted path listed twice or nested in another", () => {
    const result = resolveWith(
      (d) => (d.agents.ada.persist = ["projects", "projects/", "projects/a"]),
    );
    assert.match(problemAt(result, "agents.ada.persist[1]"), /listed twice/);
    assert.match(problemAt(result, "agents.ada.persist[2]"), /inside persisted "projects"/);
  });

  it("rejects persisting a file nuketown writes, or a path inside its own state dir", () => {
    const result = resolveWith(
      (d) =>
        (d.agents.ada.persist = [
          { path: ".config/git/config", type: "file" },
          ".local/state/nuketown/sessions",
        ]),
    );
    assert.match(problemAt(result, "agents.ada.persist[0]"), /nuketown writes every round/);
    assert.match(
      problemAt(result, "agents.ada.persist[1]"),
      /inside ".local\/state\/nuketown", which nuketown always persists/,
    );
  });

  it("rejects a sudo-enabled agent when no human may approve", () => {
    const result = resolveWith((d) => {
      d.humans.mayor.approver = false;
      d.agents.ada.sudo = { enable: true };
    });
    assert.match(problemAt(result, "agents.ada.sudo.enable"), /approver = true/);
  });

  it("rejects a secret named by key when the town has no sops file", () => {
    const result = resolveWith((d) => (d.agents.ada.secrets = { sshKey: "ada/ssh-key" }));
    assert.match(problemAt(result, "agents.ada.secrets.sshKey"), /secrets\.sopsFile is not set/);
  });

  it("rejects a layout that does not add up to 100", () => {
    const result = resolveWith((d) => (d.agents.ada.portal = { layout: "75/30" }));
    assert.match(problemAt(result, "agents.ada.portal.layout"), /adding up to 100/);
  });

  it("rejects a command runtime without a command", () => {
    const result = resolveWith((d) => (d.agents.ada.runtime = { kind: "command" }));
    assert.match(problemAt(result, "agents.ada.runtime.command"), /required/);
  });

  it("rejects references to undeclared humans, agents and hosts", () => {
    const result = resolveWith((d) => {
      d.agents.ada.chat = { allow: ["mallory"] };
      d.agents.ada.hosts = ["nowhere"];
      d.mayor = "someone";
    });
    assert.match(
      problemAt(result, "agents.ada.chat.allow[0]"),
      /neither a declared human nor an agent/,
    );
    assert.match(problemAt(result, "agents.ada.hosts[0]"), /not declared in hosts/);
    assert.match(problemAt(result, "mayor"), /not declared in humans/);
  });

  it("rejects cloud storage for a path that is not persisted, and a max tier below the tier", () => {
    const result = resolveWith((d) => {
      d.agents.ada.cloud = {
        resources: "large",
        scaling: { maxResources: "small" },
        storage: { cache: "5Gi" },
      };
    });
    assert.match(problemAt(result, "agents.ada.cloud.storage.cache"), /not a persisted path/);
    assert.match(
      problemAt(result, "agents.ada.cloud.scaling.maxResources"),
      /below resources "large"/,
    );
  });

  it("rejects a declared file that nuketown writes itself", () => {
    const result = resolveWith((d) => (d.agents.ada.files = { "AGENTS.md": { text: "hi" } }));
    assert.match(problemAt(result, 'agents.ada.files["AGENTS.md"]'), /written by nuketown/);
  });

  it("rejects a btrfs backend without a device", () => {
    const result = resolveWith((d) => (d.homes = { backend: "btrfs" }));
    assert.match(problemAt(result, "homes.device"), /needs a device/);
  });

  it("says what type was expected and what was given", () => {
    const result = resolveWith((d) => (d.agents.ada.uid = "1100"));
    assert.match(problemAt(result, "agents.ada.uid"), /expected number, got "1100"/);
    const missing = resolveWith((d) => delete d.agents.ada.uid);
    assert.match(problemAt(missing, "agents.ada.uid"), /required/);
  });
});
