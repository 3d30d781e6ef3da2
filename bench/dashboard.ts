/**
 * An approval clicked in the dashboard, end to end: a test agent's `sudo`
 * waits in approvald, shows up live in the mayor's page (Debian's chromium
 * through playwright-core), the bench clicks Approve, and the time is taken
 * until the approved command starts (it prints the moment it starts). The
 * baseline, in the same run and the same town: the same request approved
 * from the terminal (`nuketown approve ID`). 50 rounds each.
 * Needs root and chromium: it makes test accounts (nt-test-*, uids
 * 60991–60993), installs a copy under a temp prefix and a sudoers
 * fragment, brings the town up, and removes them all.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { stringify } from "smol-toml";
import { cleanupHost, makeTempRoot } from "../test/support/host.ts";
import { installForTest, testPrefix } from "../test/support/install.ts";

const REPO = path.join(import.meta.dirname, "..");
const BIN = path.join(REPO, "bin", "nuketown");
const CHROMIUM = "/usr/bin/chromium";
const AGENT = "nt-test-benchdash";
const MAYOR = "nt-test-benchmayor";
const APPROVERS = `nt-test-bdap-${process.pid}`;
const SUDOERS = `/etc/sudoers.d/nt-test-benchdash-${process.pid}`;
const ROUNDS = 50;
const WARMUP = 3;

const must = (program: string, args: string[]) => {
  const r = spawnSync(program, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${program} ${args.join(" ")}: ${r.stderr}${r.error ?? ""}`);
  return r.stdout;
};

const pick = (sorted: readonly number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? Number.NaN;

async function until(what: string, probe: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function benchDashboard(): Promise<number> {
  if (process.getuid?.() !== 0) {
    console.log("dashboard approval: skipped (needs root)");
    return 0;
  }
  if (!existsSync(CHROMIUM)) {
    console.log("dashboard approval: skipped (needs chromium: apt-get install chromium)");
    return 0;
  }
  const root = makeTempRoot("bench-dash");
  let up: ChildProcess | undefined;
  let upOutput = "";
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    must("useradd", [
      "--uid",
      "60991",
      "--user-group",
      "--no-create-home",
      "--home-dir",
      `${root}/humans/${MAYOR}`,
      MAYOR,
    ]);
    mkdirSync(path.join(root, "agents"), { mode: 0o755 });
    const config = path.join(root, "town.toml");
    writeFileSync(
      config,
      stringify({
        name: "nt-test-benchdash",
        agentsDir: path.join(root, "agents"),
        persistDir: path.join(root, "persist"),
        stateDir: path.join(root, "state"),
        runtimeDir: path.join(root, "run"),
        etcDir: path.join(root, "etc"),
        install: { prefix: installForTest(root) },
        uidRange: { min: 60100, max: 60999 },
        homes: { backend: "directory" },
        basePackages: ["git"],
        approval: { group: APPROVERS, timeout: 60, channels: ["terminal", "web"] },
        humans: { [MAYOR]: { approver: true } },
        agents: {
          [AGENT]: {
            uid: 60992,
            runtime: { kind: "command", command: "/bin/true" },
            sudo: { enable: true, policy: { default: "ask" } },
          },
        },
      }),
    );
    const manifest = path.join(root, "etc", "nuketown", "town.json");
    up = spawn(BIN, ["up", config], { stdio: ["ignore", "pipe", "pipe"] });
    up.stdout?.on("data", (d) => (upOutput += d));
    up.stderr?.on("data", (d) => (upOutput += d));
    const urlFile = path.join(root, "run", "dashboard.json");
    await until("the town and its dashboard", () => existsSync(urlFile), 120_000).catch(
      (error: Error) => {
        throw new Error(`${error.message}\n${upOutput.slice(-2000)}`);
      },
    );
    copyFileSync(path.join(root, "etc", "sudoers.d", "nuketown"), SUDOERS);
    must("chmod", ["0440", SUDOERS]);
    const shimDir = path.join(testPrefix(root), "libexec", "nuketown", "shim");
    const asMayor = (args: string[]) =>
      spawnSync("runuser", ["-u", MAYOR, "--", BIN, ...args, "--manifest", manifest], {
        encoding: "utf8",
      });

    /** The agent's sudo of a command that prints when it started (ms since the epoch). */
    const agentSudo = () =>
      new Promise<number>((resolve, reject) => {
        const child = spawn(
          "runuser",
          ["-u", AGENT, "--", "env", `PATH=${shimDir}:/usr/bin:/bin`, "sudo", "date", "+%s%N"],
          { cwd: "/" },
        );
        let out = "";
        let err = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (err += d));
        child.on("close", (code) =>
          code === 0
            ? resolve(Number(out.trim()) / 1e6)
            : reject(new Error(`sudo: ${code} ${err}`)),
        );
      });

    const page = await (await browser.newContext()).newPage();
    page.on("dialog", (dialog) => void dialog.accept());
    await page.goto(asMayor(["dashboard", "url"]).stdout.trim());
    await page.waitForSelector("#live-state[data-ok='true']");
    await page.click("nav a[href='/approvals']");

    const web = async () => {
      const started = agentSudo();
      const button = page.locator("li.request button.approve").first();
      await button.waitFor();
      const clicked = Date.now();
      await button.click();
      const at = await started;
      await page.locator("li.request").first().waitFor({ state: "detached" });
      return at - clicked;
    };
    const terminal = async () => {
      const started = agentSudo();
      let id: string | undefined;
      await until("the request in approvals", () => {
        const listed = asMayor(["approvals", "--json"]);
        id = (JSON.parse(listed.stdout || "[]") as { id: string }[])[0]?.id;
        return id !== undefined;
      });
      const asked = Date.now();
      const approved = asMayor(["approve", id as string]);
      if (approved.status !== 0) throw new Error(`approve: ${approved.stderr}`);
      return (await started) - asked;
    };
    const rounds = async (one: () => Promise<number>) => {
      for (let i = 0; i < WARMUP; i++) await one();
      const samples: number[] = [];
      for (let i = 0; i < ROUNDS; i++) samples.push(await one());
      return samples.sort((a, b) => a - b);
    };
    const clicked = await rounds(web);
    const typed = await rounds(terminal);
    const row = (name: string, s: number[]) =>
      `  ${name.padEnd(34)} p50 ${pick(s, 0.5).toFixed(1).padStart(7)} ms   p99 ${pick(s, 0.99).toFixed(1).padStart(7)} ms`;
    console.log(
      `dashboard approval: approve → the agent's command starts, ${ROUNDS} rounds each (same town, same run)`,
    );
    console.log(row("clicked in the page (chromium)", clicked));
    console.log(row("baseline: nuketown approve ID", typed));
    console.log(
      `  ratio (p50): ${(pick(clicked, 0.5) / pick(typed, 0.5)).toFixed(2)}x the terminal approval`,
    );
    return 0;
  } finally {
    await browser.close().catch(() => {});
    if (up && up.exitCode === null) {
      up.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 2000));
      up.kill("SIGKILL");
    }
    rmSync(SUDOERS, { force: true });
    cleanupHost(root, [MAYOR, APPROVERS]);
  }
}

if (import.meta.main) process.exitCode = await benchDashboard();
