import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { parse as parseToml } from "smol-toml";
import { parse as parseYaml } from "yaml";
import {
  renderAllowedSigners,
  renderGitConfig,
  renderSshConfig,
} from "../../src/host/render/git.ts";
import { renderIdentityToml } from "../../src/host/render/identity.ts";
import { renderClaudeAgent, renderInstructions } from "../../src/host/render/instructions.ts";
import { inlineCode } from "../../src/host/render/markdown.ts";
import {
  renderClaudeSettings,
  renderClaudeState,
  renderCodexConfig,
  renderRuntimeLinks,
} from "../../src/host/render/runtime-config.ts";
import type { ResolvedAgent, ResolvedTown } from "../../src/town/types.ts";
import { exampleTown, minimalDeclaration, REPO_ROOT, resolveOrThrow } from "../support/fixtures.ts";
import { assertGolden } from "../support/golden.ts";

type Decl = Record<string, unknown>;
type AgentDecl = Record<string, unknown>;

/** A minimal town whose agent `ada` is merged with `overrides`, plus extra agents. */
function townWith(
  overrides: AgentDecl,
  extraAgents: Record<string, AgentDecl> = {},
  top: Decl = {},
) {
  const decl = minimalDeclaration();
  const agents = decl.agents as Record<string, AgentDecl>;
  agents.ada = { ...agents.ada, ...overrides };
  Object.assign(agents, extraAgents);
  return resolveOrThrow({ ...decl, ...top });
}

function agentOf(town: ResolvedTown, name: string): ResolvedAgent {
  const agent = town.agents.find((a) => a.name === name);
  assert.ok(agent, `no agent ${name}`);
  return agent;
}

const headings = (markdown: string) => markdown.split("\n").filter((l) => l.startsWith("## "));

describe("home files of the example town", () => {
  const town = exampleTown();
  for (const agent of town.agents) {
    test(`${agent.name}: every rendered file matches its golden copy`, () => {
      const dir = `home/${agent.name}`;
      assertGolden(`${dir}/identity.toml`, renderIdentityToml(town, agent));
      assertGolden(`${dir}/AGENTS.md`, renderInstructions(town, agent));
      assertGolden(`${dir}/claude-agent.md`, renderClaudeAgent(town, agent));
      assertGolden(`${dir}/gitconfig`, renderGitConfig(town, agent));
      assertGolden(`${dir}/ssh-config`, renderSshConfig(town, agent));
      const signers = renderAllowedSigners(
        agent,
        `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${agent.name} ${agent.name}`,
      );
      if (signers !== undefined) assertGolden(`${dir}/allowed_signers`, signers);
      if (agent.runtime.kind === "claude-code") {
        assertGolden(`${dir}/claude-settings.json`, renderClaudeSettings(agent));
        assertGolden(`${dir}/claude.json`, renderClaudeState(agent));
      }
      if (agent.runtime.kind === "codex")
        assertGolden(`${dir}/codex-config.toml`, renderCodexConfig(agent));
    });
  }

  test("rendering twice gives the same bytes", () => {
    for (const agent of town.agents) {
      for (const render of [
        renderIdentityToml,
        renderInstructions,
        renderClaudeAgent,
        renderGitConfig,
        renderSshConfig,
      ]) {
        assert.equal(
          render(town, agent),
          render(exampleTown(), agentOf(exampleTown(), agent.name)),
        );
      }
    }
  });
});

describe("identity.toml", () => {
  test("GIVEN a description with quotes, backslashes, triple quotes and newlines THEN it parses back exactly", () => {
    const description =
      'Says "hi" \\ and \\n literally.\nSecond line with """ and \'\'\'.\n\n\tIndented: C:\\path\n';
    const town = townWith({ description });
    const agent = agentOf(town, "ada");
    const parsed = parseToml(renderIdentityToml(town, agent));
    assert.deepEqual(
      { ...parsed },
      {
        name: "ada",
        role: "software",
        email: "ada@test.local",
        domain: "test.local",
        home: "/agents/ada",
        uid: 1100,
        description,
      },
    );
  });

  test("starts with a comment line", () => {
    const town = exampleTown();
    assert.match(renderIdentityToml(town, agentOf(town, "vox")), /^# .*\n/);
  });
});

describe("instructions", () => {
  test("the Sudo section appears only for agents with sudo enabled", () => {
    const town = townWith({ sudo: { enable: true } }, { bob: { uid: 1101 } });
    assert.ok(headings(renderInstructions(town, agentOf(town, "ada"))).includes("## Sudo"));
    assert.ok(!headings(renderInstructions(town, agentOf(town, "bob"))).includes("## Sudo"));
  });

  test("a System configuration section tells how to propose a change, only when change.repo is declared", () => {
    const plain = townWith({});
    assert.ok(
      !headings(renderInstructions(plain, agentOf(plain, "ada"))).includes(
        "## System configuration",
      ),
    );
    const town = townWith({}, {}, { change: { repo: "/etc/nixos", hosts: { tom: {} } } });
    const text = renderInstructions(town, agentOf(town, "ada"));
    assert.ok(headings(text).includes("## System configuration"));
    assert.match(text, /`\/etc\/nixos`/);
    assert.match(text, /`change_propose`.*`change_verify`/s);
  });

  test("the Sudo section names the timeout and the rules that skip the human", () => {
    const town = townWith({
      sudo: {
        enable: true,
        timeout: 42,
        policy: {
          rules: [
            { action: "allow", argv: ["make", "**"] },
            { action: "deny", argv: ["reboot"] },
          ],
        },
      },
    });
    const md = renderInstructions(town, agentOf(town, "ada"));
    assert.match(md, /42 seconds/);
    assert.match(md, /`make \*\*` runs without asking anyone/);
    assert.match(md, /`reboot` is always refused/);
  });

  test("the Hardware section appears only with devices", () => {
    const town = townWith(
      { devices: [{ subsystem: "tty", attrs: { idVendor: "1a86" }, description: "CH340 serial" }] },
      { bob: { uid: 1101 } },
    );
    const ada = renderInstructions(town, agentOf(town, "ada"));
    assert.ok(headings(ada).includes("## Hardware"));
    assert.match(ada, /CH340 serial: subsystem `tty`, `idVendor=1a86`; read and write/);
    assert.ok(!headings(renderInstructions(town, agentOf(town, "bob"))).includes("## Hardware"));
  });

  test("the Extra section appears only with an extra prompt, verbatim", () => {
    const extra = "### Deploys\n\n  - run `make deploy` *only* on Fridays";
    const town = townWith({ runtime: { extraPrompt: extra } }, { bob: { uid: 1101 } });
    const ada = renderInstructions(town, agentOf(town, "ada"));
    assert.ok(headings(ada).includes("## Extra"));
    assert.ok(ada.includes(extra));
    assert.ok(!headings(renderInstructions(town, agentOf(town, "bob"))).includes("## Extra"));
  });

  test("About you is omitted when the description is empty", () => {
    const town = townWith(
      { description: "" },
      { bob: { uid: 1101, description: "Reads papers." } },
    );
    assert.ok(!headings(renderInstructions(town, agentOf(town, "ada"))).includes("## About you"));
    assert.ok(headings(renderInstructions(town, agentOf(town, "bob"))).includes("## About you"));
  });

  test("agents with the same grants get the same sections, whatever their name and role", () => {
    const grants = {
      description: "Does things.",
      sudo: { enable: true },
      devices: [{ subsystem: "usb", attrs: { idVendor: "0483" } }],
      runtime: { extraPrompt: "Be brief." },
    };
    const town = townWith(
      grants,
      {
        zed: {
          ...grants,
          uid: 1105,
          role: "ops",
          git: { name: "Zed Q" },
          secrets: { gpgKey: "zed/gpg" },
        },
      },
      { secrets: { sopsFile: "secrets.yaml" } },
    );
    const ada = headings(renderInstructions(town, agentOf(town, "ada")));
    const zed = headings(renderInstructions(town, agentOf(town, "zed")));
    assert.deepEqual(zed, ada);
    assert.deepEqual(ada, [
      "## Identity",
      "## About you",
      "## Environment",
      "## Collaboration",
      "## Sudo",
      "## Hardware",
      "## Extra",
    ]);
  });

  test("the title uses the git name and role; the implicit state dir is marked as nuketown's", () => {
    const town = townWith({ git: { name: "Ada L" }, persist: ["work"] });
    const md = renderInstructions(town, agentOf(town, "ada"));
    assert.ok(md.startsWith("# Ada L (software)\n"));
    assert.match(md, /`~\/work`\n/);
    assert.match(md, /`~\/\.local\/state\/nuketown`: kept by nuketown/);
  });

  test("a repo outside every persisted directory is flagged; clones go where declared repos live", () => {
    const town = townWith({
      persist: ["notes", "src"],
      repos: [
        "https://example.org/b.git",
        { url: "https://example.org/lost.git", path: "tmp/lost" },
        { url: "https://example.org/a.git", path: "src/a" },
      ],
    });
    const md = renderInstructions(town, agentOf(town, "ada"));
    assert.match(md, /under a persisted directory \(`~\/src`\)/);
    assert.match(md, /`~\/tmp\/lost` \(not persisted: push before the round ends\)/);
    assert.match(md, /`~\/src\/a`\n/);
    const bare = townWith({});
    assert.match(
      renderInstructions(bare, agentOf(bare, "ada")),
      /None of your directories persist/,
    );
  });

  test("the mayor is credited in a Co-authored-by trailer when they have an email", () => {
    const town = townWith({});
    assert.ok(
      renderInstructions(town, agentOf(town, "ada")).includes(
        "`Co-authored-by: Mayor <mayor@test.local>`",
      ),
    );
  });

  test("without a mayor, work is reviewed by the humans and there is no trailer", () => {
    const town = townWith({}, {}, { humans: {} });
    const md = renderInstructions(town, agentOf(town, "ada"));
    assert.ok(!md.includes("Co-authored-by"));
    assert.match(md, /The humans of the town review your branches/);
  });

  test("GIVEN what the host was seen to have THEN only those packages are called installed", () => {
    const town = townWith({ packages: ["sl", "hello"] }, {}, { basePackages: ["git"] });
    const ada = agentOf(town, "ada");
    const line = (present?: readonly string[]) =>
      renderInstructions(town, ada, present)
        .split("\n")
        .find((l) => /[Pp]ackages/.test(l));
    assert.equal(
      line(["git", "sl", "hello", "unrelated"]),
      "- Packages installed for you: `git`, `sl`, `hello`. If you need another one for good, ask for it to be added to your declaration.",
    );
    assert.equal(
      line(["git"]),
      "- Packages installed for you: `git`. Declared but missing on this host: `sl`, `hello`. If you need another one for good, ask for it to be added to your declaration.",
    );
    assert.equal(
      line([]),
      "- Packages declared for you but missing on this host: `git`, `sl`, `hello`. If you need another one for good, ask for it to be added to your declaration.",
    );
    // Rendered without a host (nuketown render): declared, never claimed installed.
    assert.doesNotMatch(line() ?? "", /installed/);
    assert.match(
      line() ?? "",
      /^- Packages declared for you: `git`, `sl`, `hello` \(rendered without checking/,
    );
    assert.match(renderClaudeAgent(town, ada, ["git"]), /Packages installed for you: `git`\./);
    const none = townWith({}, {}, { basePackages: [] });
    assert.match(
      renderInstructions(none, agentOf(none, "ada"), []),
      /No packages are declared for you/,
    );
  });

  test("values in inline code cannot break out of it", () => {
    assert.equal(inlineCode("a`b"), "``a`b``");
    assert.equal(inlineCode("``x"), "``` ``x ```");
    assert.equal(inlineCode(" padded "), "`  padded  `");
    const town = townWith({ git: { name: "Ada `rm -rf` *bold*" } });
    const md = renderInstructions(town, agentOf(town, "ada"));
    assert.ok(md.startsWith("# Ada \\`rm -rf\\` \\*bold\\* (software)\n"));
  });
});

describe("Claude Code agent file", () => {
  test("front matter parses as YAML with the right name and a one-line description", () => {
    const description = "Ships: fast # not a comment\n\"quoted\" and 'single' - yes: no";
    const town = townWith({ description });
    const agent = agentOf(town, "ada");
    const file = renderClaudeAgent(town, agent);
    const match = /^---\n([\s\S]*?)\n---\n\n/.exec(file);
    assert.ok(match?.[1], "front matter");
    const meta = parseYaml(match[1]) as Record<string, unknown>;
    assert.equal(meta.name, "ada-software");
    assert.equal(
      meta.description,
      `Ada, the software agent of the town testtown: Ships: fast # not a comment "quoted" and 'single' - yes: no`,
    );
    assert.match(String(meta.tools), /^Read, Edit, Write, Bash/);
    assert.equal(file.slice(match[0].length), renderInstructions(town, agent));
  });

  test("a long description is shortened to one line in the front matter", () => {
    const town = townWith({ description: `${"word ".repeat(80)}\n\nSecond paragraph.` });
    const meta = parseYaml(
      renderClaudeAgent(town, agentOf(town, "ada")).split("---\n")[1] ?? "",
    ) as {
      description: string;
    };
    assert.ok(meta.description.length < 260);
    assert.ok(meta.description.endsWith("…"));
    assert.ok(!meta.description.includes("\n"));
  });
});

describe("git and SSH config", () => {
  test("SSH signing sets gpg.format ssh and the allowed signers file", () => {
    const town = townWith({});
    const config = renderGitConfig(town, agentOf(town, "ada"));
    assert.match(config, /\[gpg\]\n\tformat = ssh\n/);
    assert.match(
      config,
      /\[gpg "ssh"\]\n\tallowedSignersFile = \/agents\/ada\/\.config\/git\/allowed_signers\n/,
    );
    assert.match(config, /\[commit\]\n\tgpgsign = true\n/);
    assert.match(config, /\tsigningkey = \/agents\/ada\/\.ssh\/id_ed25519\.pub\n/);
  });

  test("an agent with only an OpenPGP key signs with openpgp", () => {
    const town = townWith({ secrets: { gpgKey: { file: "keys/ada-gpg.age" } } });
    const agent = agentOf(town, "ada");
    const config = renderGitConfig(town, agent);
    assert.match(config, /\[gpg\]\n\tformat = openpgp\n/);
    assert.match(config, /\[tag\]\n\tgpgsign = true\n/);
    assert.ok(!config.includes("allowedSignersFile"));
    assert.equal(renderAllowedSigners(agent, "ssh-ed25519 AAAA"), undefined);
    assert.match(renderInstructions(town, agent), /signed with your OpenPGP key/);
  });

  test("no key means no signing", () => {
    const town = townWith({ secrets: {} });
    const agent = agentOf(town, "ada");
    const config = renderGitConfig(town, agent);
    assert.ok(!config.includes("gpgsign"));
    assert.ok(!config.includes("[gpg"));
    assert.ok(!config.includes("signingkey"));
    assert.match(renderInstructions(town, agent), /Your commits are not signed/);
    assert.doesNotMatch(renderSshConfig(town, agent), /IdentityFile/);
  });

  test("allowed signers come from the argument, else the declared public key, else nothing", () => {
    const declared = townWith({ git: { signing: { publicKey: "ssh-ed25519 DECLARED ada" } } });
    const agent = agentOf(declared, "ada");
    assert.equal(
      renderAllowedSigners(agent),
      'ada@test.local namespaces="git" ssh-ed25519 DECLARED ada\n',
    );
    assert.equal(
      renderAllowedSigners(agent, "ssh-ed25519 GIVEN\n"),
      'ada@test.local namespaces="git" ssh-ed25519 GIVEN\n',
    );
    assert.equal(renderAllowedSigners(agentOf(townWith({}), "ada")), undefined);
  });

  test("git values with comment characters and quotes are quoted and escaped", () => {
    const town = townWith({ git: { name: 'Ada "the; #bot" \\ Lovelace' } });
    assert.match(
      renderGitConfig(town, agentOf(town, "ada")),
      /\tname = "Ada \\"the; #bot\\" \\\\ Lovelace"\n/,
    );
  });

  test("the SSH config uses only the agent's key and accepts new host keys", () => {
    const town = townWith({});
    const config = renderSshConfig(town, agentOf(town, "ada"));
    assert.match(config, /^# /);
    assert.match(
      config,
      /Host \*\n {2}IdentityFile ~\/\.ssh\/id_ed25519\n {2}IdentitiesOnly yes\n/,
    );
    assert.match(config, / {2}StrictHostKeyChecking accept-new\n/);
  });
});

test("the renderers stay pure: no file system or process access", () => {
  for (const file of ["identity.ts", "instructions.ts", "git.ts", "markdown.ts"]) {
    const source = readFileSync(path.join(REPO_ROOT, "src", "host", "render", file), "utf8");
    assert.doesNotMatch(source, /from "node:(fs|child_process)/, file);
  }
});

describe("the runtimes' own configuration", () => {
  const claudeTown = (runtime: AgentDecl) =>
    agentOf(
      townWith({
        runtime: { kind: "claude-code", ...runtime },
        repos: ["https://git.example/site.git"],
      }),
      "ada",
    );
  const codexTown = (runtime: AgentDecl) =>
    agentOf(
      townWith({ runtime: { kind: "codex", ...runtime }, repos: ["https://git.example/site.git"] }),
      "ada",
    );

  test("claude runs every tool by default, with no dialog left to answer and no key in the file", () => {
    const agent = claudeTown({
      apiKey: { file: "/secrets/anthropic.age" },
      baseUrl: "https://llm.example",
      model: "sonnet",
      env: { FOO: "bar" },
    });
    const settings = JSON.parse(renderClaudeSettings(agent));
    assert.deepEqual(settings.permissions, { defaultMode: "bypassPermissions" });
    assert.equal(settings.skipDangerousModePermissionPrompt, true);
    assert.equal(settings.disableAutoMode, "disable");
    assert.equal(settings.apiKeyHelper, `cat ${agent.home}/.config/nuketown/runtime-key`);
    assert.equal(settings.model, "sonnet");
    assert.equal(settings.env.ANTHROPIC_BASE_URL, "https://llm.example");
    assert.equal(settings.env.FOO, "bar");
    const state = JSON.parse(renderClaudeState(agent));
    assert.equal(state.hasCompletedOnboarding, true);
    assert.equal(state.bypassPermissionsModeAccepted, true);
    assert.deepEqual(Object.keys(state.projects), [agent.home, `${agent.home}/projects/site`]);
  });

  test("claude narrowed to a list of tools refuses the rest (dontAsk)", () => {
    const settings = JSON.parse(
      renderClaudeSettings(claudeTown({ allowedTools: ["Read", "Bash(git *)"] })),
    );
    assert.deepEqual(settings.permissions, {
      defaultMode: "dontAsk",
      allow: ["Read", "Bash(git *)"],
    });
  });

  test("runtime.settings merge over nuketown's, table by table", () => {
    const settings = JSON.parse(
      renderClaudeSettings(
        claudeTown({
          settings: { permissions: { deny: ["WebFetch"] }, env: { X: "1" }, theme: "light" },
        }),
      ),
    );
    assert.deepEqual(settings.permissions, {
      defaultMode: "bypassPermissions",
      deny: ["WebFetch"],
    });
    assert.equal(settings.env.X, "1");
    assert.equal(settings.env.DISABLE_AUTOUPDATER, "1");
    assert.equal(settings.theme, "light");
  });

  test("codex gets its own provider with a key command, full access and trusted projects", () => {
    const agent = codexTown({
      apiKey: { file: "/secrets/openai.age" },
      baseUrl: "http://127.0.0.1:9/v1",
      settings: { model_reasoning_effort: "high" },
    });
    const config = parseToml(renderCodexConfig(agent)) as Record<string, any>;
    assert.equal(config.approval_policy, "never");
    assert.equal(config.sandbox_mode, "danger-full-access");
    assert.equal(config.model_provider, "nuketown");
    assert.deepEqual(JSON.parse(JSON.stringify(config.model_providers.nuketown)), {
      name: "nuketown",
      base_url: "http://127.0.0.1:9/v1",
      wire_api: "responses",
      auth: { command: "cat", args: [`${agent.home}/.config/nuketown/runtime-key`] },
    });
    assert.equal(config.projects[`${agent.home}/projects/site`].trust_level, "trusted");
    assert.equal(config.model_reasoning_effort, "high");
  });

  test("codex without a declared key or URL keeps its own provider; a narrower sandbox is said", () => {
    const config = parseToml(
      renderCodexConfig(codexTown({ sandbox: "workspace-write" })),
    ) as Record<string, unknown>;
    assert.equal(config.model_provider, undefined);
    assert.equal(config.sandbox_mode, "workspace-write");
  });

  test("the session stores link into the persisted state dir", () => {
    const claude = claudeTown({});
    assert.deepEqual(renderRuntimeLinks(claude), [
      {
        path: `${claude.home}/.claude/projects`,
        target: `${claude.stateDir}/runtimes/claude/projects`,
      },
    ]);
    const codex = codexTown({});
    assert.deepEqual(renderRuntimeLinks(codex), [
      {
        path: `${codex.home}/.codex/sessions`,
        target: `${codex.stateDir}/runtimes/codex/sessions`,
      },
    ]);
  });
});
