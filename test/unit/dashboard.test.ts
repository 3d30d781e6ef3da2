/**
 * The dashboard's pure parts: escaping, sign-in tokens, sessions and CSRF,
 * the pages as strings, and the picture of the town from the manifest.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PendingRequest } from "../../src/approval/protocol.ts";
import { approvalItem } from "../../src/dashboard/approvals.ts";
import {
  cookieValue,
  csrfMatches,
  mintToken,
  SECURITY_HEADERS,
  Sessions,
  sameOrigin,
  sessionCookie,
  TOKEN_TTL_MS,
} from "../../src/dashboard/auth.ts";
import { escapeHtml, html, htmlText, join } from "../../src/dashboard/html.ts";
import {
  approvalsSection,
  auditSection,
  chatSection,
  filterAudit,
  rosterSection,
  type Viewer,
} from "../../src/dashboard/pages.ts";
import { pictureSvg, townPicture } from "../../src/dashboard/picture.ts";
import { minimalDeclaration, resolveOrThrow } from "../support/fixtures.ts";

const MAYOR_SECRET = "a".repeat(64);
const OTHER_SECRET = "b".repeat(64);
const secrets = new Map([
  ["mayor", MAYOR_SECRET],
  ["bob", OTHER_SECRET],
]);
const NOW = 1_800_000_000_000;
const mayor: Viewer = { human: "mayor", approver: true, csrf: "tok" };
const bob: Viewer = { human: "bob", approver: false, csrf: "tok2" };

function request(overrides: Partial<PendingRequest> = {}): PendingRequest {
  return {
    agent: { name: "ada", uid: 1100 },
    argv: ["id", "-u"],
    command: "/usr/bin/id",
    cwd: "/agents/ada",
    runAs: { user: "root" },
    id: "0123456789abcdef",
    time: new Date(NOW).toISOString(),
    hash: "f".repeat(64),
    expires: new Date(NOW + 60_000).toISOString(),
    ...overrides,
  };
}

describe("html", () => {
  it("escapes every interpolated value, and only those", () => {
    const evil = `<script>alert("x")</script>&'\``;
    const out = htmlText(html`<p title="${evil}">${evil}</p>`);
    assert.equal(
      out,
      '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;&#96;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;&#96;</p>',
    );
    assert.equal(htmlText(html`<b>${html`<i>${"<"}</i>`}</b>`), "<b><i>&lt;</i></b>");
    assert.equal(htmlText(join(["<a>", html`<br>`], ", ")), "&lt;a&gt;, <br>");
    assert.equal(htmlText(html`${null}${undefined}${false}${0}`), "0");
    assert.equal(escapeHtml("a&b"), "a&amp;b");
  });
});

describe("sign-in tokens and sessions", () => {
  it("trades a fresh token for a session once, and never again", () => {
    const sessions = new Sessions((h) => secrets.get(h));
    const token = mintToken("mayor", MAYOR_SECRET, NOW);
    const first = sessions.signIn(token, NOW + 1000);
    assert.ok(first.ok);
    assert.equal(first.session.human, "mayor");
    assert.match(first.session.id, /^[A-Za-z0-9_-]{43}$/);
    const again = sessions.signIn(token, NOW + 2000);
    assert.deepEqual(again, { ok: false, error: "this token was used already" });
    assert.equal(sessions.find(first.session.id, NOW + 3000)?.human, "mayor");
  });

  it("refuses an expired token, a forged one, and another human's secret passed off as the mayor's", () => {
    const sessions = new Sessions((h) => secrets.get(h));
    const late = sessions.signIn(mintToken("mayor", MAYOR_SECRET, NOW), NOW + TOKEN_TTL_MS + 1);
    assert.equal(late.ok, false);
    // bob signs a token that claims to be the mayor's with bob's own secret.
    const claimed = sessions.signIn(mintToken("mayor", OTHER_SECRET, NOW), NOW);
    assert.deepEqual(claimed, {
      ok: false,
      error: "this token was not made by a human of this town",
    });
    const stranger = sessions.signIn(mintToken("eve", OTHER_SECRET, NOW), NOW);
    assert.equal(stranger.ok, false);
    assert.equal(sessions.signIn("v1.mayor.garbage", NOW).ok, false);
    const token = mintToken("mayor", MAYOR_SECRET, NOW);
    const tampered = token.replace(/.$/, (c) => (c === "0" ? "1" : "0"));
    assert.equal(sessions.signIn(tampered, NOW).ok, false);
    // A token claiming to live longer than tokens do was not made by us.
    const bobs = sessions.signIn(mintToken("bob", OTHER_SECRET, NOW + TOKEN_TTL_MS), NOW);
    assert.deepEqual(bobs, { ok: false, error: "this token lives too long" });
  });

  it("ends a session on sign-out, after idling, and when its human is no longer declared", () => {
    const known = new Map(secrets);
    const sessions = new Sessions((h) => known.get(h));
    const a = sessions.signIn(mintToken("mayor", MAYOR_SECRET, NOW), NOW);
    const b = sessions.signIn(mintToken("bob", OTHER_SECRET, NOW), NOW);
    assert.ok(a.ok && b.ok);
    sessions.signOut(a.session.id);
    assert.equal(sessions.find(a.session.id, NOW), undefined);
    known.delete("bob");
    assert.equal(sessions.find(b.session.id, NOW), undefined);
    assert.equal(sessions.find(undefined, NOW), undefined);
    assert.equal(sessions.find("nope", NOW), undefined);
  });

  it("checks CSRF tokens and where a state change comes from", () => {
    const sessions = new Sessions((h) => secrets.get(h));
    const signed = sessions.signIn(mintToken("mayor", MAYOR_SECRET, NOW), NOW);
    assert.ok(signed.ok);
    assert.ok(csrfMatches(signed.session, signed.session.csrf));
    assert.ok(!csrfMatches(signed.session, undefined));
    assert.ok(!csrfMatches(signed.session, `${signed.session.csrf}x`));
    const origin = "http://127.0.0.1:7377";
    assert.ok(sameOrigin({ origin, "sec-fetch-site": "same-origin" }, origin));
    assert.ok(sameOrigin({}, origin), "a client that names no origin relies on the CSRF token");
    assert.ok(!sameOrigin({ origin: "http://evil.example" }, origin));
    assert.ok(!sameOrigin({ "sec-fetch-site": "cross-site" }, origin));
    assert.ok(!sameOrigin({ "sec-fetch-site": "same-site", origin }, origin));
  });

  it("sets cookies no script can read and no other site can send, and a strict CSP", () => {
    const cookie = sessionCookie("abc");
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Strict/);
    assert.match(cookie, /; Path=\//);
    assert.equal(cookieValue("a=1; nuketown_session=xyz; b=2", "nuketown_session"), "xyz");
    assert.equal(cookieValue(undefined, "nuketown_session"), undefined);
    const csp = SECURITY_HEADERS["content-security-policy"] ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.match(csp, /frame-ancestors 'none'/);
  });
});

describe("pages", () => {
  it("renders an argv containing <script> as text, and approve/deny only for approvers", () => {
    const item = approvalItem(request({ argv: ["echo", "<script>alert(1)</script>"] }));
    const forMayor = htmlText(approvalsSection([item], mayor, NOW));
    assert.ok(!forMayor.includes("<script>"));
    assert.match(forMayor, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.match(forMayor, /action="\/approvals\/0123456789abcdef\/approve"/);
    assert.match(forMayor, /name="csrf" value="tok"/);
    assert.match(forMayor, /denied in 60 s/);
    const forBob = htmlText(approvalsSection([item], bob, NOW));
    assert.doesNotMatch(forBob, /\/approve"/);
    assert.match(forBob, /bob is not an approver/);
    assert.match(htmlText(approvalsSection([], mayor, NOW)), /Nothing waits/);
  });

  it("shows a change request with its risk and summary", () => {
    const change = {
      id: "c1",
      host: "box",
      commit: "1".repeat(40),
      base: "2".repeat(40),
      risk: "high" as const,
      reasons: ["touches users"],
      explanation: "add a <user>",
      diffstat: " users.nix | 2 +",
      closure: "",
    };
    const item = approvalItem(request({ change } as Partial<PendingRequest>));
    assert.equal(item.kind, "change");
    assert.equal(item.risk, "high");
    const out = htmlText(approvalsSection([item], mayor, NOW));
    assert.match(out, /change · high risk/);
    assert.match(out, /add a &lt;user&gt;/);
    assert.match(out, /risk: touches users/);
  });

  it("renders the roster's states, tasks and signatures, agent text escaped", () => {
    const out = htmlText(
      rosterSection(
        [
          {
            name: "ada",
            uid: 1100,
            role: "software",
            online: true,
            running: [{ prompt: "fix <b>it</b>", project: "site", since: "12:00" }],
            queued: 2,
            progress: "reading <files>",
            lastCommit: { hash: "a".repeat(40), subject: "<i>x</i>", when: "now", signature: "G" },
            lastReset: "2026-01-01T00:00:00Z",
            persistedBytes: 3 * 1024 * 1024,
            sudo: true,
            chat: true,
          },
          {
            name: "vox",
            uid: 1101,
            role: "ops",
            online: false,
            running: [],
            queued: 0,
            sudo: false,
            chat: false,
          },
        ],
        mayor,
      ),
    );
    assert.match(out, /data-agent="ada" data-state="busy"/);
    assert.match(out, /data-agent="vox" data-state="offline"/);
    assert.match(out, /fix &lt;b&gt;it&lt;\/b&gt;/);
    assert.match(out, /reading &lt;files&gt;/);
    assert.match(out, /&lt;i&gt;x&lt;\/i&gt;/);
    assert.match(out, /badge ok">signed</);
    assert.match(out, /3\.0 MiB/);
    assert.match(out, /2 queued/);
    assert.match(out, /action="\/agents\/ada\/reset"/);
    assert.doesNotMatch(out, /action="\/agents\/vox\/reset"/);
  });

  it("filters the audit log and says whether the chain verifies", () => {
    const records = [1, 2, 3].map((seq) => ({
      v: 1 as const,
      seq,
      time: "t",
      event: seq === 2 ? "decision" : "request",
      data: { agent: seq === 3 ? "vox" : "ada", argv: ["<x>"] },
      prev: "0".repeat(64),
      hash: "1".repeat(64),
    }));
    assert.deepEqual(
      filterAudit(records, { event: "request" }).map((r) => r.seq),
      [3, 1],
    );
    assert.deepEqual(
      filterAudit(records, { agent: "ada" }).map((r) => r.seq),
      [2, 1],
    );
    const broken = htmlText(
      auditSection(records, { ok: false, records: 1, line: 2, problem: "the chain is broken" }, {}),
    );
    assert.match(broken, /does NOT verify at line 2: the chain is broken/);
    assert.match(broken, /&lt;x&gt;/);
    const fine = htmlText(auditSection([], { ok: true, records: 0, head: "0".repeat(64) }, {}));
    assert.match(fine, /the chain verifies: 0 records/);
  });

  it("shows a conversation with the agent's words escaped", () => {
    const out = htmlText(
      chatSection("ada", {
        id: "t1",
        title: "x",
        typing: true,
        lines: [
          { id: "1", from: "human", who: "mayor", text: "hi", time: NOW },
          { id: "2", from: "agent", who: "ada", text: "<img src=x onerror=alert(1)>", time: NOW },
        ],
      }),
    );
    assert.match(out, /&lt;img src=x onerror=alert\(1\)&gt;/);
    assert.match(out, /ada is working…/);
  });
});

describe("the picture of the town", () => {
  it("draws who may talk to whom and what each agent reaches, from the manifest alone", () => {
    const decl = minimalDeclaration();
    (decl.humans as Record<string, unknown>).bob = { approver: false };
    (decl.agents as Record<string, Record<string, unknown>>).ada = {
      uid: 1100,
      devices: [{ subsystem: "tty", attrs: { idVendor: "0483" }, description: "<probe>" }],
      repos: ["https://example.org/site.git"],
      chat: { enable: true, rooms: ["#ops:example.org"], allow: ["mayor"] },
      sudo: {
        enable: true,
        policy: { default: "ask", rules: [{ action: "deny", argv: ["rm", "**"] }] },
      },
    };
    const picture = townPicture(resolveOrThrow(decl));
    const edges = picture.edges.map((e) => `${e.from} -${e.label}-> ${e.to}`);
    assert.deepEqual(edges, [
      "human:mayor -may talk to-> agent:ada",
      "agent:ada -rw-> device:tty:idVendor=0483",
      "agent:ada -in-> room:#ops:example.org",
      "agent:ada -clones-> repo:https://example.org/site.git",
      "agent:ada -deny-> sudo:ada:0",
      "agent:ada -ask-> sudo:ada:default",
    ]);
    assert.deepEqual(
      picture.nodes.filter((n) => n.kind === "human").map((n) => `${n.label} ${n.detail}`),
      ["bob human", "mayor approver"],
    );
    const svg = htmlText(pictureSvg(picture));
    assert.match(svg, /^<svg class="picture"/);
    assert.match(svg, /&lt;probe&gt;/);
    assert.equal((svg.match(/<path /g) ?? []).length, edges.length);
  });
});
