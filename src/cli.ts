/**
 * The `nuketown` command: routes arguments to commands, imported lazily so
 * `nuketown --help` stays fast, and turns errors into exit codes.
 */
import { Argument, Command, CommanderError, Option } from "commander";
import { EXIT, NuketownError } from "./errors.ts";
import { FORMATS } from "./town/formats.ts";

const EXIT_CODES = `
Exit codes:
  0  success
  1  internal error (a bug: please report it with the stack trace)
  2  invalid configuration or usage; nothing was changed
  3  operation refused for safety
  4  a required tool is missing on this host`;

const formatOption = () =>
  new Option("--format <format>", "declaration format (default: from the file name)").choices(
    FORMATS,
  );
const hostnameOption = () =>
  new Option("--hostname <name>", "host name for derived defaults (default: this machine's)");

export function buildProgram(): Command {
  const program = new Command("nuketown")
    .description("AI agents as Unix users: declare a town, check it, render it, run it.")
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    .addHelpText("after", EXIT_CODES)
    .exitOverride();

  program
    .command("check")
    .description("validate a declaration and list its agents")
    .argument("[config]", "town.toml, town.json, town.yaml, town.nix.json, or - for stdin")
    .addOption(formatOption())
    .addOption(hostnameOption())
    .option("--json", "print the resolved town (or the problems) as JSON")
    .option("--manifest <file>", "check this manifest (what the daemons read) instead")
    .option("--write-manifest <file>", "write the manifest of the valid town to this file")
    .addOption(
      new Option(
        "--managed-by <system>",
        "with --write-manifest: the system that owns packages, accounts, sudoers, udev rules and units",
      ).choices(["nixos"]),
    )
    .addHelpText("after", EXIT_CODES)
    .action(
      async (
        config: string | undefined,
        opts: {
          format?: (typeof FORMATS)[number];
          hostname?: string;
          json?: boolean;
          manifest?: string;
          writeManifest?: string;
          managedBy?: "nixos";
        },
      ) => {
        const { check } = await import("./commands/check.ts");
        process.exitCode = await check({
          config,
          ...opts,
          cwd: process.cwd(),
          out: process.stdout,
          err: process.stderr,
        });
      },
    );

  program
    .command("render")
    .description("write every file the host needs under DIR, laid out as on the host")
    .argument("<config>", "town.toml, town.json, town.yaml, town.nix.json, or - for stdin")
    .requiredOption("--out <dir>", "directory to render into (replaced as a whole)")
    .addOption(formatOption())
    .addOption(hostnameOption())
    .option("--json", "print what was written as JSON")
    .addHelpText("after", EXIT_CODES)
    .action(
      async (
        config: string,
        opts: { out: string; format?: (typeof FORMATS)[number]; hostname?: string; json?: boolean },
      ) => {
        const { render } = await import("./commands/render.ts");
        const { out: outDir, ...rest } = opts;
        process.exitCode = await render({
          config,
          ...rest,
          outDir,
          cwd: process.cwd(),
          out: process.stdout,
          err: process.stderr,
        });
      },
    );

  type HostOpts = {
    format?: (typeof FORMATS)[number];
    hostname?: string;
    json?: boolean;
    root?: string;
    purge?: boolean;
  };
  for (const name of ["plan", "apply"] as const) {
    program
      .command(name)
      .description(
        name === "plan"
          ? "show what apply would change on this host, layer by layer"
          : "make this host match the town (as root); a second run changes nothing",
      )
      .argument("[config]", "the town declaration (default: the installed manifest)")
      .option("--manifest <file>", "the installed manifest (without a declaration)")
      .option(
        "--root <dir>",
        "plan against, and write into, a directory tree instead of the live host",
      )
      .option("--purge", "also delete the persisted data of agents removed from the town")
      .addOption(formatOption())
      .addOption(hostnameOption())
      .option("--json", "machine-readable output")
      .addHelpText("after", EXIT_CODES)
      .action(async (config: string | undefined, opts: HostOpts & { manifest?: string }) => {
        const commands = await import("./commands/plan.ts");
        process.exitCode = await commands[name]({ config, ...opts, ...streams() });
      });
  }

  program
    .command("reset")
    .description("a new round: roll agents' homes back to blank and rebuild them (as root)")
    .argument("[agents...]", "agents to reset")
    .option("--all", "reset every agent (what the boot unit runs)")
    .option("--config <file>", "read this declaration instead of the installed manifest")
    .option("--manifest <file>", "the installed manifest", "/etc/nuketown/town.json")
    .addOption(formatOption())
    .addOption(hostnameOption())
    .option("--json", "machine-readable output")
    .addHelpText("after", EXIT_CODES)
    .action(
      async (
        agents: string[],
        opts: HostOpts & { all?: boolean; config?: string; manifest?: string },
      ) => {
        const { reset } = await import("./commands/reset.ts");
        process.exitCode = await reset({ agents, ...opts, ...streams() });
      },
    );

  program
    .command("status")
    .description(
      "each agent as it is on this host: home, last reset, persisted size, processes, service",
    )
    .option("--config <file>", "read this declaration instead of the installed manifest")
    .option("--manifest <file>", "the installed manifest", "/etc/nuketown/town.json")
    .addOption(formatOption())
    .addOption(hostnameOption())
    .option("--json", "machine-readable output")
    .addHelpText("after", EXIT_CODES)
    .action(async (opts: HostOpts & { config?: string; manifest?: string }) => {
      const { status } = await import("./commands/status.ts");
      process.exitCode = await status({ ...opts, ...streams() });
    });

  program
    .command("doctor")
    .description("check this host's prerequisites and say how to fix what is missing")
    .option("--json", "machine-readable output")
    .addHelpText("after", EXIT_CODES)
    .action(async (opts: { json?: boolean }) => {
      const { doctor } = await import("./commands/doctor.ts");
      process.exitCode = await doctor({ ...opts, ...streams() });
    });

  program
    .command("install")
    .description(
      "install this nuketown as a root-owned copy under <prefix>/lib/nuketown/<version> and make it current; the town's running daemons restart onto it (as root)",
    )
    .option(
      "--prefix <dir>",
      "install prefix (default: the town's install.prefix, else /usr/local)",
    )
    .option("--rollback", "make the previously installed version current again")
    .option("--manifest <file>", "the town whose daemons restart", "/etc/nuketown/town.json")
    .option("--no-restart", "leave running daemons on the version they run")
    .addOption(new Option("--source <dir>", "install this checkout or copy").hideHelp())
    .addOption(new Option("--as-version <name>", "name of the version directory").hideHelp())
    .addOption(new Option("--any-build", "install the build even if sources are newer").hideHelp())
    .addHelpText("after", EXIT_CODES)
    .action(
      async (opts: {
        prefix?: string;
        rollback?: boolean;
        manifest?: string;
        restart: boolean;
        source?: string;
        asVersion?: string;
        anyBuild?: boolean;
      }) => {
        const { install } = await import("./commands/install.ts");
        process.exitCode = await install({
          ...opts,
          ...(opts.asVersion !== undefined && { version: opts.asVersion }),
          noRestart: !opts.restart,
          ...streams(),
        });
      },
    );

  program
    .command("uninstall")
    .description(
      "stop the town's daemons, remove its units, sudoers, gate and shim and the installed program; keep the towns' data unless --purge (as root)",
    )
    .option(
      "--prefix <dir>",
      "install prefix (default: the town's install.prefix, else /usr/local)",
    )
    .option(
      "--purge",
      "also remove the agents, their homes and persisted data, the state and the manifest",
    )
    .option("--manifest <file>", "the installed manifest", "/etc/nuketown/town.json")
    .addHelpText("after", EXIT_CODES)
    .action(async (opts: { prefix?: string; purge?: boolean; manifest?: string }) => {
      const { uninstall } = await import("./commands/install.ts");
      process.exitCode = await uninstall({ ...opts, ...streams() });
    });

  const townOptions = (command: Command) =>
    command
      .option("--config <file>", "read this declaration instead of the installed manifest")
      .option("--manifest <file>", "the installed manifest", "/etc/nuketown/town.json")
      .option("--json", "machine-readable output")
      .addHelpText("after", EXIT_CODES);
  type TownOpts = { config?: string; manifest?: string; json?: boolean };

  townOptions(
    program
      .command("agent")
      .description(
        "run an agent's daemon (as the agent): takes tasks on its socket, runs its runtime, and is the agent online in chat when its chat runs",
      )
      .argument("<name>", "the agent")
      .option("--no-chat", "do not go online, even when the agent's chat runs")
      .option(
        "--secret-file <file>",
        "read the chat credential here (default: ~/.config/nuketown/chat-secret, placed by apply)",
      ),
  ).action(async (name: string, opts: TownOpts & { chat: boolean; secretFile?: string }) => {
    const { agent } = await import("./commands/agent.ts");
    process.exitCode = await agent({ ...opts, name, ...streams() });
  });
  townOptions(
    program
      .command("chat")
      .description(
        "run an agent's chat presence alone (as the agent; nuketown agent runs it for the town): answers its rooms through its daemon",
      )
      .argument("<name>", "the agent")
      .option(
        "--secret-file <file>",
        "read the chat credential here (default: ~/.config/nuketown/chat-secret, placed by apply)",
      ),
  ).action(async (name: string, opts: TownOpts & { secretFile?: string }) => {
    const { chat } = await import("./commands/chat.ts");
    process.exitCode = await chat({ ...opts, name, ...streams() });
  });
  townOptions(program.command("approvald").description("run the approval daemon (as root)")).action(
    async (opts: TownOpts) => {
      const { approvald } = await import("./commands/approval.ts");
      process.exitCode = await approvald({ ...opts, ...streams() });
    },
  );
  const dashboardCommand = program
    .command("dashboard")
    .description("the town hall: a web dashboard for the town's humans");
  townOptions(
    dashboardCommand
      .command("serve", { isDefault: true })
      .description("run the dashboard (as root), on 127.0.0.1 unless told otherwise")
      .option("--address <ip>", "listen on this address", "127.0.0.1")
      .option("--port <port>", "listen on this port (default 7377, else a free one; 0: any)"),
  ).action(async (opts: TownOpts & { address: string; port?: string }) => {
    const { dashboard } = await import("./commands/dashboard.ts");
    const { port, ...rest } = opts;
    process.exitCode = await dashboard({
      ...rest,
      ...(port !== undefined && { port: Number(port) }),
      ...streams(),
    });
  });
  townOptions(
    dashboardCommand
      .command("url")
      .description("print a one-time sign-in link to the dashboard, for you")
      .option("--human <name>", "(root) a link for this declared human"),
  ).action(async (opts: TownOpts & { human?: string }) => {
    const { dashboardUrl } = await import("./commands/dashboard.ts");
    process.exitCode = await dashboardUrl({ ...opts, ...streams() });
  });
  townOptions(
    program
      .command("approvals")
      .description("list the sudo requests waiting for a human")
      .option("--watch", "keep listening and print requests and decisions as they happen"),
  ).action(async (opts: TownOpts & { watch?: boolean }) => {
    const { approvals } = await import("./commands/approval.ts");
    process.exitCode = await approvals({ ...opts, ...streams() });
  });
  townOptions(
    program
      .command("approve")
      .description("approve a waiting request")
      .argument("<id>")
      .option("--reason <text>")
      .option(
        "--hash <hex>",
        "the request's hash as you saw it (8+ hex digits): approve only that",
      ),
  ).action(async (id: string, opts: TownOpts & { reason?: string; hash?: string }) => {
    const { decide } = await import("./commands/approval.ts");
    process.exitCode = await decide({ ...opts, id, approve: true, ...streams() });
  });
  townOptions(
    program
      .command("deny")
      .description("deny a waiting request")
      .argument("<id>")
      .option("--reason <text>", "told to the agent")
      .option("--hash <hex>", "the request's hash as you saw it (8+ hex digits)"),
  ).action(async (id: string, opts: TownOpts & { reason?: string; hash?: string }) => {
    const { decide } = await import("./commands/approval.ts");
    process.exitCode = await decide({ ...opts, id, approve: false, ...streams() });
  });
  townOptions(
    program
      .command("approval-mode")
      .description("test mode: decide every request without a human (root or approvers only)")
      .addArgument(new Argument("<mode>").choices(["off", "auto-approve", "auto-deny"])),
  ).action(async (mode: "off" | "auto-approve" | "auto-deny", opts: TownOpts) => {
    const { approvalMode } = await import("./commands/approval.ts");
    process.exitCode = await approvalMode({ ...opts, mode, ...streams() });
  });
  townOptions(
    program
      .command("audit")
      .description("check or read the approval audit log")
      .addArgument(new Argument("<action>").choices(["verify", "tail"]))
      .option("-n, --count <n>", "records to show (tail)", (v) => Number.parseInt(v, 10))
      .option("--file <path>", "an audit log file instead of the town's"),
  ).action(
    async (action: "verify" | "tail", opts: TownOpts & { count?: number; file?: string }) => {
      const { audit } = await import("./commands/approval.ts");
      process.exitCode = await audit({ ...opts, action, ...streams() });
    },
  );

  townOptions(
    program
      .command("unlock")
      .description("ask a human to decrypt one of your unlockable secrets onto tmpfs (agents)")
      .argument("<secret>"),
  ).action(async (secret: string, opts: TownOpts) => {
    const { unlock } = await import("./commands/approval.ts");
    process.exitCode = await unlock({ ...opts, secret, lock: false, ...streams() });
  });
  townOptions(
    program
      .command("lock")
      .description("remove your unlocked secrets now (agents)")
      .argument("[secret]", "one secret; all of them when omitted"),
  ).action(async (secret: string | undefined, opts: TownOpts) => {
    const { unlock } = await import("./commands/approval.ts");
    process.exitCode = await unlock({
      ...opts,
      ...(secret !== undefined && { secret }),
      lock: true,
      ...streams(),
    });
  });

  program
    .command("up")
    .description(
      "validate, apply, start the approval daemon and every agent daemon, and say where to look (as root)",
    )
    .argument("<config>", "the town declaration")
    .addOption(formatOption())
    .addOption(hostnameOption())
    .addHelpText("after", EXIT_CODES)
    .action(async (config: string, opts: HostOpts) => {
      const { up } = await import("./commands/up.ts");
      process.exitCode = await up({ config, ...opts, ...streams() });
    });

  program
    .command("portal")
    .description(
      "a tmux window: the agent's login session on top running its portal command, your shell below",
    )
    .argument("[agent]", "an agent with portal.enable (default: pick one)")
    .argument("[project]", "a directory, or a name under projectDirs (default: pick one)")
    .option("--config <file>", "read this declaration instead of the installed manifest")
    .option("--manifest <file>", "the installed manifest", "/etc/nuketown/town.json")
    .option(
      "--tmux-socket <name|path>",
      "talk to this tmux server (tmux -L name, or -S path; default: $NUKETOWN_TMUX_SOCKET)",
    )
    .addOption(formatOption())
    .addOption(hostnameOption())
    .addHelpText(
      "after",
      `
Inside tmux the portal opens a window in the current session; outside it
starts (or reuses) the session "nuketown" and attaches. The window is named
<agent>:<project>: running the portal again shows it instead of starting a
second runtime. The agent side is a login session: machinectl shell where
systemd is PID 1, else runuser -l (or su -), behind sudo unless you are root.
Without a project, pick among the directories up to two levels below each of
projectDirs (hidden ones skipped), with fzf when installed.
${EXIT_CODES}`,
    )
    .action(
      async (
        agent: string | undefined,
        project: string | undefined,
        opts: {
          config?: string;
          manifest?: string;
          tmuxSocket?: string;
          format?: (typeof FORMATS)[number];
          hostname?: string;
        },
      ) => {
        const { portal } = await import("./commands/portal.ts");
        const { tmuxSocket, ...rest } = opts;
        process.exitCode = await portal({
          ...rest,
          ...(agent !== undefined && { agent }),
          ...(project !== undefined && { project }),
          ...(tmuxSocket !== undefined && { socket: tmuxSocket }),
          ...streams(),
        });
      },
    );

  program
    .command("review")
    .description(
      "fetch the agents' pushed <agent>/* branches and list them with signature and diffstat",
    )
    .argument("[agent]", "only this agent's branches (default: every agent)")
    .option("--repo <dir>", "the repository to review in (default: the current directory)")
    .option(
      "--remote <name>",
      "fetch from this remote (default: a remote named after the agent, else origin)",
    )
    .option(
      "--base <ref>",
      "compare against this ref (default: origin's HEAD, else the default branch)",
    )
    .option("--no-fetch", "list what was fetched before, without fetching")
    .option("--config <file>", "read this declaration instead of the installed manifest")
    .option("--manifest <file>", "the installed manifest", "/etc/nuketown/town.json")
    .addOption(formatOption())
    .addOption(hostnameOption())
    .option("--json", "machine-readable output")
    .addHelpText(
      "after",
      `
Signatures are checked against the agents' keys only (declared
git.signing.publicKey, else the key in the agent's home), under the agent's
own email: G good, G! good but another agent's key, U a key that is no
agent's, B bad, N unsigned, E cannot be checked. Branches are fetched into
refs/remotes/<remote>/<agent>/*; the diffstat is base...branch.
${EXIT_CODES}`,
    )
    .action(
      async (
        agent: string | undefined,
        opts: {
          repo?: string;
          remote?: string;
          base?: string;
          fetch: boolean;
          config?: string;
          manifest?: string;
          format?: (typeof FORMATS)[number];
          hostname?: string;
          json?: boolean;
        },
      ) => {
        const { review } = await import("./commands/review.ts");
        process.exitCode = await review({
          ...opts,
          ...(agent !== undefined && { agent }),
          ...streams(),
        });
      },
    );

  const change = program
    .command("change")
    .description(
      "propose → verify → approve → apply → rollback a change to the system configuration",
    );
  townOptions(
    change
      .command("propose")
      .description("propose an agent's branch or a patch, with a written explanation")
      .requiredOption("--host <name>", "the machine (change.hosts)")
      .requiredOption("--explain <text>", "what the change does and why")
      .option("--branch <name>", "the agent's branch (in the config repo, or in --from)")
      .option("--from <repo>", "fetch --branch from this repository (the agent's clone)")
      .option("--patch <file>", "a patch (git diff / format-patch) instead of a branch")
      .option("--agent <name>", "who proposes (an agent proposes as itself)"),
  ).action(
    async (
      opts: TownOpts & {
        host: string;
        explain: string;
        branch?: string;
        from?: string;
        patch?: string;
        agent?: string;
      },
    ) => {
      const { changePropose } = await import("./commands/change.ts");
      process.exitCode = await changePropose({ ...opts, ...streams() });
    },
  );
  for (const [step, description] of [
    ["verify", "build the change without switching; report the closure diff"],
    ["approve", "ask a human (or the change policy) through approvald; waits (root)"],
    ["apply", "test-activate, health-check, switch; roll back on failure (root)"],
    ["rollback", "return to the generation recorded before the change (root)"],
  ] as const) {
    townOptions(change.command(step).description(description).argument("<id>")).action(
      async (id: string, opts: TownOpts) => {
        const { changeStep } = await import("./commands/change.ts");
        process.exitCode = await changeStep({ ...opts, id, step, ...streams() });
      },
    );
  }
  townOptions(
    change.command("status").description("list the changes, or show one").argument("[id]"),
  ).action(async (id: string | undefined, opts: TownOpts) => {
    const { changeStatus } = await import("./commands/change.ts");
    process.exitCode = await changeStatus({
      ...opts,
      ...(id !== undefined && { id }),
      ...streams(),
    });
  });
  townOptions(
    change
      .command("log")
      .description("the change audit log, its chain checked")
      .option("-n, --count <n>", "records", "50"),
  ).action(async (opts: TownOpts & { count: string }) => {
    const { changeLog } = await import("./commands/change.ts");
    process.exitCode = await changeLog({ ...opts, count: Number(opts.count), ...streams() });
  });
  townOptions(
    program
      .command("mcp")
      .description("the town's MCP server on stdio, run by an agent's runtime as the agent"),
  ).action(async (opts: TownOpts) => {
    const { mcp } = await import("./commands/mcp.ts");
    process.exitCode = await mcp({ ...opts, ...streams() });
  });

  townOptions(
    program
      .command("talk")
      .description("a terminal conversation with an agent, through its daemon")
      .argument("<agent>")
      .option(
        "--project <name>",
        "the project the conversation is about (default: the agent's first repo)",
      ),
  ).action(async (agent: string, opts: TownOpts & { project?: string }) => {
    const { talk } = await import("./commands/talk.ts");
    process.exitCode = await talk({ ...opts, agent, ...streams() });
  });

  const cloud = program
    .command("cloud")
    .description("the town's cloud agents on Kubernetes: manifests, Argo CD plugin, scaling");
  cloud
    .command("render")
    .description("print every cloud agent's Kubernetes objects (validated offline), sorted")
    .argument("<config>", "the town declaration, or - for stdin")
    .option("--out <dir>", "write one file per object under DIR (replaced) instead")
    .addOption(formatOption())
    .addOption(hostnameOption().default("cloud"))
    .addHelpText("after", EXIT_CODES)
    .action(
      async (
        config: string,
        opts: { out?: string; format?: (typeof FORMATS)[number]; hostname?: string },
      ) => {
        const { cloudRender } = await import("./commands/cloud.ts");
        const { out: outDir, ...rest } = opts;
        process.exitCode = await cloudRender({
          config,
          ...rest,
          ...(outDir !== undefined && { outDir }),
          ...streams(),
        });
      },
    );
  cloud
    .command("generate")
    .description("Argo CD plugin: manifests of the town in the current directory on stdout")
    .addHelpText("after", EXIT_CODES)
    .action(async () => {
      const { cloudGenerate } = await import("./commands/cloud.ts");
      process.exitCode = await cloudGenerate({ env: process.env, ...streams() });
    });
  cloud
    .command("controller")
    .description("turn agents' scale requests into approvals; scale idle agents down")
    .option("--kubeconfig <file>", "default: in-cluster, else $KUBECONFIG or ~/.kube/config")
    .option("--namespace <ns>", "where approval requests live", "nuketown-system")
    .option("--interval <seconds>", "between passes", (v) => Number.parseInt(v, 10), 15)
    .option("--once", "one pass, then exit")
    .option("--audit-file <file>", "also append audit records (JSON lines) here")
    .addHelpText("after", EXIT_CODES)
    .action(
      async (opts: {
        kubeconfig?: string;
        namespace?: string;
        interval?: number;
        once?: boolean;
        auditFile?: string;
      }) => {
        const { cloudController } = await import("./commands/cloud.ts");
        process.exitCode = await cloudController({ ...opts, ...streams() });
      },
    );
  for (const approve of [true, false]) {
    cloud
      .command(approve ? "approve" : "deny")
      .description(`${approve ? "approve" : "deny"} an agent's scale request (scale-<agent>-<id>)`)
      .argument("<request>")
      .option("--by <name>", "who answers (default: $SUDO_USER, else $USER)")
      .option("--reason <text>")
      .option("--kubeconfig <file>")
      .option("--namespace <ns>", "the controller's namespace", "nuketown-system")
      .addHelpText("after", EXIT_CODES)
      .action(
        async (
          id: string,
          opts: { by?: string; reason?: string; kubeconfig?: string; namespace?: string },
        ) => {
          const { cloudDecide } = await import("./commands/cloud.ts");
          process.exitCode = await cloudDecide({ ...opts, id, approve, ...streams() });
        },
      );
  }
  for (const command of cloud.commands) command.exitOverride();

  for (const command of program.commands) command.exitOverride();
  return program;
}

const streams = () => ({ cwd: process.cwd(), out: process.stdout, err: process.stderr });

export async function main(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv as string[], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are successes; every other parse error is a usage error.
      return error.exitCode === 0 ? EXIT.ok : EXIT.invalid;
    }
    if (error instanceof NuketownError) {
      process.stderr.write(`nuketown: ${error.message}\n`);
      return error.exitCode;
    }
    process.stderr.write(
      `nuketown: internal error (please report this with the trace below)\n${(error as Error)?.stack ?? String(error)}\n`,
    );
    return EXIT.internal;
  }
}

if (import.meta.main) {
  // `nuketown … | head`: a reader that leaves early is not an error.
  process.stdout.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  });
  process.exitCode = await main(process.argv.slice(2));
}
