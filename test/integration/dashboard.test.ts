/**
 * The dashboard for real: a town brought up with `nuketown up` (real
 * accounts, approvald, the agent daemon with a `command` runtime, the
 * dashboard), driven in Debian's chromium through playwright-core. Takes a
 * screenshot of each page at desktop and phone widths: into docs/screenshots/
 * with UPDATE_SCREENSHOTS=1 (to refresh the docs' pictures), else into the
 * test's temp dir, so a test run leaves the checkout as it was.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, it } from "node:test";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { REPO_ROOT } from "../support/fixtures.ts";
import { isRoot, mustRun, run } from "../support/host.ts";
import { BIN, type Daemon, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const CHROMIUM = "/usr/bin/chromium";
const AGENT = "nt-test-clerk";
const MAYOR = "nt-test-dmayor";
const OTHER = "nt-test-dother";
const SHOTS =
  process.env.UPDATE_SCREENSHOTS === "1"
    ? path.join(REPO_ROOT, "docs", "screenshots")
    : path.join(tmpdir(), `nt-test-dashboard-shots-${process.pid}`);
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

const skip = !isRoot() ? "needs root" : !existsSync(CHROMIUM) ? "needs chromium" : false;

describe("the dashboard in a real browser", { skip }, () => {
  const town = testTown({
    label: "dashboard",
    uids: uidsOf(import.meta.filename),
    accounts: { [MAYOR]: 60861, [OTHER]: 60862 },
    install: true,
  });
  let root = "";
  let manifest = "";
  let shimDir = "";
  let url = "";
  let upProcess: Daemon | undefined;
  const upOutput = () => upProcess?.output() ?? "";
  let browser: Browser | undefined;
  const contexts: BrowserContext[] = [];
  town.defer(async () => {
    for (const context of contexts) await context.close().catch(() => {});
    await browser?.close().catch(() => {});
    if (process.env.KEEP_LOGS)
      run("cp", ["-r", path.join(root, "state", "logs"), process.env.KEEP_LOGS]);
    if (process.env.UPDATE_SCREENSHOTS !== "1") rmSync(SHOTS, { recursive: true, force: true });
  });

  async function until(what: string, probe: () => boolean | Promise<boolean>, ms = 30_000) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (await probe()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}\nup:\n${upOutput().slice(-4000)}`);
  }

  /** The agent runs a command through its sudo shim, like its service would. */
  const agentSudo = (argv: string[]): Promise<Outcome> =>
    new Promise((resolve) => {
      const child = spawn(
        "runuser",
        ["-u", AGENT, "--", "env", `PATH=${shimDir}:/usr/bin:/bin`, "sudo", ...argv],
        { cwd: "/" },
      );
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("close", (code) => resolve({ code, stdout, stderr }));
    });

  /** A one-time sign-in link, made by the human themself. */
  const linkFor = (user: string) => {
    const made = run("runuser", [
      "-u",
      user,
      "--",
      BIN,
      "dashboard",
      "url",
      "--manifest",
      manifest,
    ]);
    assert.equal(made.code, 0, made.stderr);
    return made.stdout.trim();
  };

  async function signedIn(user: string, viewport = DESKTOP): Promise<Page> {
    assert.ok(browser);
    const context = await browser.newContext({ viewport });
    contexts.push(context);
    const page = await context.newPage();
    page.on("dialog", (dialog) => void dialog.accept());
    await page.goto(linkFor(user));
    await page.waitForSelector("#live-state[data-ok='true']");
    return page;
  }

  async function cookieOf(page: Page): Promise<string> {
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === "nuketown_session");
    assert.ok(session, "a session cookie");
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
    return `nuketown_session=${session.value}`;
  }

  const shoot = async (page: Page, name: string) => {
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  };

  before(async () => {
    root = town.root;
    mustRun("git", ["init", "--quiet", "--bare", "--initial-branch=main", `${root}/demo.git`]);
    const seed = path.join(root, "seed");
    mustRun("git", ["init", "--quiet", "--initial-branch=main", seed]);
    mustRun("git", [
      "-C",
      seed,
      "-c",
      "user.name=t",
      "-c",
      "user.email=t@t",
      "commit",
      "--quiet",
      "--allow-empty",
      "-m",
      "first commit",
    ]);
    mustRun("git", ["-C", seed, "push", "--quiet", `${root}/demo.git`, "main"]);
    const runtime = path.join(root, "runtime.sh");
    writeFileSync(
      runtime,
      [
        "#!/bin/sh",
        "# Stand-in runtime (the command kind): the task as JSON on stdin, JSON lines out.",
        'prompt=$(sed -n \'s/.*"prompt":"\\([^"]*\\)".*/\\1/p\')',
        'echo "{\\"type\\":\\"progress\\",\\"text\\":\\"thinking about it\\"}"',
        'case "$prompt" in *slow*) sleep 3 ;; esac',
        'printf \'{"type":"answer","text":"you said: %s (uid %s)"}\\n\' "$prompt" "$(id -u)"',
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    town.declare({
      name: "nt-test-hall",
      approval: { timeout: 60, channels: ["terminal", "web"] },
      humans: { [MAYOR]: { approver: true }, [OTHER]: { approver: false } },
      agents: {
        [AGENT]: {
          uid: 60863,
          role: "clerk",
          persist: ["projects"],
          repos: [path.join(root, "demo.git")],
          runtime: { kind: "command", command: runtime },
          sudo: { enable: true, policy: { default: "ask" } },
          chat: { allow: [MAYOR] },
        },
      },
    });
    manifest = town.manifest;
    shimDir = town.shimDir;
    upProcess = town.up();
    await until("the agent daemon", () => existsSync(town.socket(AGENT)), 90_000);
    // The fragment apply rendered (and checked with visudo) goes where sudo reads it.
    town.sudoers();
    await until("the mayor's sign-in link from up", () => /\/login\?token=v1\./.test(upOutput()));
    url = (
      JSON.parse(readFileSync(path.join(root, "run", "dashboard.json"), "utf8")) as {
        url: string;
      }
    ).url;
    // 7377, or a free port when another town on this machine holds it.
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  it("keeps each human's secret to them, and lets nobody in without a token", async () => {
    const secret = path.join(root, "state", "dashboard", "humans", MAYOR);
    const other = run("runuser", ["-u", OTHER, "--", "cat", secret]);
    assert.notEqual(other.code, 0, "another human cannot read the mayor's secret");
    assert.match(mustRun("stat", ["-c", "%U %a", secret]), new RegExp(`^${MAYOR} 400`));
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 401);
    assert.match(await page.text(), /nuketown dashboard url/);
    const post = await fetch(`${url}/approvals/0123/approve`, { method: "POST" });
    assert.equal(post.status, 401);
    const events = await fetch(`${url}/events`);
    assert.equal(events.status, 401);
    const csp = page.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'none'/);
    // A token works once.
    const link = linkFor(MAYOR);
    const first = await fetch(link, { redirect: "manual" });
    assert.equal(first.status, 303);
    assert.match(first.headers.get("set-cookie") ?? "", /HttpOnly; SameSite=Strict/);
    const second = await fetch(link, { redirect: "manual" });
    assert.equal(second.status, 401);
    // Another human's token, relabelled as the mayor's, is not the mayor's.
    const forged = linkFor(OTHER).replace(`.${OTHER}.`, `.${MAYOR}.`);
    assert.equal((await fetch(forged, { redirect: "manual" })).status, 401);
    // A page elsewhere cannot reach it through a name it controls.
    const rebound = await new Promise<number>((resolve, reject) => {
      const parsed = new URL(url);
      http
        .get(
          {
            host: parsed.hostname,
            port: parsed.port,
            path: "/",
            headers: { host: "evil.example" },
          },
          (response) => {
            response.resume();
            resolve(response.statusCode ?? 0);
          },
        )
        .on("error", reject);
    });
    assert.equal(rebound, 421);
  });

  it("shows a sudo request live, runs it on approve, tells the agent the reason on deny", async () => {
    const mayor = await signedIn(MAYOR);
    await mayor.click("nav a[href='/approvals']");
    await mayor.waitForSelector("text=Nothing waits for a human");
    const approved = agentSudo(["id", "-u"]);
    const request = mayor.locator("li.request");
    await Promise.race([
      request.waitFor(),
      approved.then((r) => {
        throw new Error(`sudo ended before it was shown: ${JSON.stringify(r)}`);
      }),
    ]);
    assert.equal(await request.locator("pre.argv").innerText(), "id -u");
    assert.match(await mayor.locator(".count").innerText(), /^1$/);
    await shoot(mayor, "approvals-desktop");
    await mayor.setViewportSize(PHONE);
    await shoot(mayor, "approvals-phone");
    await mayor.setViewportSize(DESKTOP);
    await request.locator("button.approve").click();
    const result = await approved;
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), "0");
    await mayor.waitForSelector("text=Nothing waits for a human");
    // Audited as the mayor's decision, made on the web.
    const decisions = readFileSync(path.join(root, "state", "audit.jsonl"), "utf8")
      .split("\n")
      .filter((l) => l.includes('"event":"decision"'))
      .map((l) => JSON.parse(l) as { data: { channel?: string; by?: { id?: string } } });
    const last = decisions.at(-1);
    assert.equal(last?.data.channel, "web", JSON.stringify(last));

    const denied = agentSudo(["id", "-u"]);
    await request.waitFor();
    await request.locator("input[name=reason]").fill("not during the demo");
    await request.locator("button.deny").click();
    const no = await denied;
    assert.equal(no.code, 10);
    assert.match(no.stderr, /not during the demo/);

    const audit = readFileSync(path.join(root, "state", "audit.jsonl"), "utf8");
    assert.match(audit, new RegExp(`"by":\\{"id":"${MAYOR}","kind":"human"\\}`));
  });

  it("lets a human who is no approver see a request but not decide it (the server refuses)", async () => {
    const other = await signedIn(OTHER);
    await other.goto(`${url}/approvals`);
    const pending = agentSudo(["echo", "<script>window.pwned=1</script>"]);
    const request = other.locator("li.request");
    await request.waitFor();
    // The argv renders as text, and nothing of it ran.
    assert.equal(
      await request.locator("pre.argv").innerText(),
      "echo <script>window.pwned=1</script>",
    );
    assert.equal(
      await other.evaluate(() => (window as unknown as { pwned?: number }).pwned),
      undefined,
    );
    assert.equal(await request.locator("button.approve").count(), 0);
    assert.match(await request.innerText(), /not an approver/);
    const id = await request.getAttribute("data-id");
    const csrf = await other.locator('meta[name="csrf-token"]').getAttribute("content");
    const refused = await fetch(`${url}/approvals/${id}/approve`, {
      method: "POST",
      headers: {
        cookie: await cookieOf(other),
        "x-csrf-token": csrf ?? "",
        origin: url,
        "content-type": "application/x-www-form-urlencoded",
        accept: "application/json",
      },
    });
    assert.equal(refused.status, 403);
    assert.match(await refused.text(), /not an approver/);

    // The mayor's session without the CSRF token, or from another site, is refused too.
    const mayor = await signedIn(MAYOR);
    const cookie = await cookieOf(mayor);
    const noToken = await fetch(`${url}/approvals/${id}/approve`, {
      method: "POST",
      headers: { cookie, origin: url, "content-type": "application/x-www-form-urlencoded" },
    });
    assert.equal(noToken.status, 403);
    const mayorCsrf = await mayor.locator('meta[name="csrf-token"]').getAttribute("content");
    const crossSite = await fetch(`${url}/approvals/${id}/approve`, {
      method: "POST",
      headers: {
        cookie,
        origin: "http://evil.example",
        "sec-fetch-site": "cross-site",
        "content-type": "application/x-www-form-urlencoded",
      },
      body: `csrf=${encodeURIComponent(mayorCsrf ?? "")}`,
    });
    assert.equal(crossSite.status, 403);
    // Still waiting: nobody decided it. The mayor denies it.
    await mayor.goto(`${url}/approvals`);
    await mayor.locator("li.request button.deny").click();
    assert.equal((await pending).code, 10);
  });

  it("chats with the agent: the answer and the busy roster show live", async () => {
    const roster = await signedIn(MAYOR);
    const row = roster.locator(`tr[data-agent="${AGENT}"]`);
    await until("the agent online", async () => (await row.getAttribute("data-state")) === "idle");
    const chat = await signedIn(MAYOR);
    await chat.goto(`${url}/agents/${AGENT}/chat`);
    await chat.fill("textarea[name=text]", "hello <b>there</b>");
    await chat.press("textarea[name=text]", "Enter");
    const answer = chat.locator(".msg.from-agent .text", {
      hasText: "you said: hello <b>there</b> (uid 60863)",
    });
    await answer.waitFor({ timeout: 20_000 });
    await chat.fill("textarea[name=text]", "a slow one");
    await chat.press("textarea[name=text]", "Enter");
    await until(
      "the roster to show the slow one running",
      async () =>
        (await row.getAttribute("data-state")) === "busy" &&
        /a slow one/.test(await row.innerText()),
    );
    await shoot(roster, "roster-busy-desktop");
    await chat
      .locator(".msg.from-agent .text", { hasText: "you said: a slow one" })
      .waitFor({ timeout: 20_000 });
    await until(
      "the roster to show idle again",
      async () => (await row.getAttribute("data-state")) === "idle",
    );
    await shoot(chat, "chat-desktop");
    await chat.setViewportSize(PHONE);
    await shoot(chat, "chat-phone");

    // Someone chat.allow does not name is refused, once.
    const other = await signedIn(OTHER);
    await other.goto(`${url}/agents/${AGENT}/chat`);
    await other.fill("textarea[name=text]", "do my work");
    await other.press("textarea[name=text]", "Enter");
    await other.locator(".msg.from-agent", { hasText: "I only take requests" }).waitFor();
  });

  it("shows the roster, audit log and town picture at desktop and phone widths", async () => {
    const page = await signedIn(MAYOR);
    const row = page.locator(`tr[data-agent="${AGENT}"]`);
    await until("the last commit", async () => /first commit/.test(await row.innerText()), 40_000);
    await shoot(page, "roster-desktop");
    await page.setViewportSize(PHONE);
    await shoot(page, "roster-phone");
    await page.setViewportSize(DESKTOP);
    await page.goto(`${url}/audit`);
    assert.match(await page.locator(".chain").innerText(), /the chain verifies/);
    await page.goto(`${url}/audit?event=decision`);
    // The approval daemon's log: the decisions this test's humans made.
    assert.ok((await page.locator("table.audit tbody tr").count()) >= 3);
    await shoot(page, "audit-desktop");
    await page.setViewportSize(PHONE);
    await shoot(page, "audit-phone");
    await page.setViewportSize(DESKTOP);
    await page.goto(`${url}/town`);
    assert.match(await page.locator("svg.picture").innerHTML(), new RegExp(AGENT));
    await shoot(page, "town-desktop");
    await page.setViewportSize(PHONE);
    await shoot(page, "town-phone");
  });
});
