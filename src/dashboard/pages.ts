/**
 * The dashboard's pages, rendered on the server from plain data. Pure: every
 * page is a function of its model, every value an agent could control goes
 * through `html`'s escaping. Sections marked `data-live` are fetched again
 * (`?fragment=<topic>`) when the server says their topic changed.
 */
import type { AuditRecord, VerifyResult } from "../audit/log.ts";
import { type Html, html, join } from "./html.ts";
import { pictureSvg, type TownPicture } from "./picture.ts";

export interface Viewer {
  /** The declared human at the browser. */
  readonly human: string;
  readonly approver: boolean;
  readonly csrf: string;
}

export interface AgentRow {
  readonly name: string;
  readonly uid: number;
  readonly role: string;
  /** Its daemon answers on its socket. */
  readonly online: boolean;
  readonly running: readonly { prompt: string; project: string; since: string }[];
  readonly queued: number;
  /** The last progress line of the running work, when one was seen. */
  readonly progress?: string;
  readonly lastCommit?: {
    readonly hash: string;
    readonly subject: string;
    readonly when: string;
    /** git's %G? letter: G good, B bad, U unknown key, N none… */
    readonly signature: string;
  };
  readonly lastReset?: string;
  readonly persistedBytes?: number;
  readonly sudo: boolean;
  readonly chat: boolean;
}

/** A request waiting for a human, as the page needs it (command or change). */
export interface ApprovalItem {
  readonly id: string;
  readonly agent: string;
  readonly argv: readonly string[];
  readonly command: string;
  readonly cwd: string;
  readonly runAs: string;
  readonly hash: string;
  readonly expires: string;
  readonly time: string;
  /** What the policy would call it: command, unlock, or a change with its risk. */
  readonly kind: "command" | "unlock" | "change";
  readonly risk: "high" | "low" | "ask";
  /** For a change: its summary lines (explanation, commit, diffstat, reasons). */
  readonly details: readonly string[];
  /** One line per program or file argument the agent could change, with its content hash. */
  readonly agentWritable: readonly string[];
}

export interface ChatLine {
  readonly id: string;
  readonly from: "human" | "agent";
  readonly who: string;
  readonly text: string;
  readonly time: number;
  /** A progress line the agent keeps editing. */
  readonly progress?: boolean;
}

export interface ChatThread {
  readonly id: string;
  readonly title: string;
  readonly lines: readonly ChatLine[];
  /** The agent is working on this thread's last message. */
  readonly typing: boolean;
}

export interface AuditFilters {
  readonly event?: string;
  readonly agent?: string;
  readonly text?: string;
}

const NAV = [
  ["/", "Roster"],
  ["/approvals", "Approvals"],
  ["/audit", "Audit"],
  ["/town", "Town"],
] as const;

/** The whole document around a page's body. */
export function layout(
  town: string,
  viewer: Viewer,
  active: string,
  title: string,
  body: Html,
  pending = 0,
): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="${viewer.csrf}">
<title>${title} · ${town} · nuketown</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top">
  <a class="brand" href="/">☢ ${town}</a>
  <nav>${join(
    NAV.map(
      ([href, label]) =>
        html`<a href="${href}"${active === href ? html` aria-current="page"` : ""}>${label}${href === "/approvals" ? html`<span class="count" data-live="count" data-count="${pending}">${pending > 0 ? pending : ""}</span>` : ""}</a>`,
    ),
  )}</nav>
  <span class="who">${viewer.human}${viewer.approver ? html` <small>approver</small>` : ""}</span>
  <span class="live-state" id="live-state" title="live updates">offline</span>
  <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="${viewer.csrf}"><button class="link">sign out</button></form>
</header>
<main>
<h1>${title}</h1>
${body}
</main>
</body>
</html>
`;
}

function bytes(n: number | undefined): string {
  if (n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

const SIGNATURES: Record<string, string> = {
  G: "signed",
  U: "signed (key not trusted)",
  X: "signed (expired)",
  Y: "signed (expired key)",
  R: "signed (revoked key)",
  E: "signature not checkable",
  B: "BAD signature",
  N: "unsigned",
};

function signatureBadge(letter: string): Html {
  const good = letter === "G" || letter === "U";
  const cls = good ? "ok" : letter === "B" ? "bad" : "warn";
  return html`<span class="badge ${cls}">${SIGNATURES[letter] ?? "signature ?"}</span>`;
}

export function rosterSection(rows: readonly AgentRow[], viewer: Viewer): Html {
  if (rows.length === 0) return html`<p class="empty">No agents are declared in this town.</p>`;
  return html`<table class="roster">
<thead><tr><th>Agent</th><th>uid</th><th>Role</th><th>State</th><th>Working on</th><th>Last commit</th><th>Last reset</th><th>Persisted</th><th></th></tr></thead>
<tbody>${join(
    rows.map((row) => {
      const state = !row.online ? "offline" : row.running.length > 0 ? "busy" : "idle";
      const task = row.running[0];
      return html`<tr data-agent="${row.name}" data-state="${state}">
<td data-label="Agent"><a href="/agents/${encodeURIComponent(row.name)}/chat"><strong>${row.name}</strong></a></td>
<td data-label="uid">${row.uid}</td>
<td data-label="Role">${row.role}</td>
<td data-label="State"><span class="badge state-${state}">${state}</span>${row.queued > 0 ? html` <small>${row.queued} queued</small>` : ""}</td>
<td data-label="Working on">${
        task
          ? html`<div class="task"><span class="project">${task.project}</span> ${task.prompt}</div>${row.progress ? html`<div class="progress">… ${row.progress}</div>` : ""}<small>since ${task.since}</small>`
          : html`<span class="muted">—</span>`
      }</td>
<td data-label="Last commit">${
        row.lastCommit
          ? html`<code>${row.lastCommit.hash.slice(0, 10)}</code> ${row.lastCommit.subject} ${signatureBadge(row.lastCommit.signature)}<br><small>${row.lastCommit.when}</small>`
          : html`<span class="muted">none</span>`
      }</td>
<td data-label="Last reset">${row.lastReset ?? html`<span class="muted">never</span>`}</td>
<td data-label="Persisted">${bytes(row.persistedBytes)}</td>
<td class="actions">${
        row.sudo
          ? html`<form method="post" action="/agents/${encodeURIComponent(row.name)}/reset" data-ajax data-confirm="Reset ${row.name}? Its home goes back to blank (persisted paths stay); a human approves it first."><input type="hidden" name="csrf" value="${viewer.csrf}"><button class="secondary">Reset…</button><span class="error" data-error></span></form>`
          : html`<small class="muted" title="a reset goes through the agent's sudo, which this agent does not have">no reset</small>`
      }</td>
</tr>`;
    }),
  )}</tbody>
</table>`;
}

export function rosterPage(
  town: string,
  rows: readonly AgentRow[],
  viewer: Viewer,
  pending: number,
): Html {
  return layout(
    town,
    viewer,
    "/",
    "Roster",
    html`<section data-live="roster">${rosterSection(rows, viewer)}</section>`,
    pending,
  );
}

function riskBadge(item: ApprovalItem): Html {
  if (item.kind === "change")
    return html`<span class="badge ${item.risk === "high" ? "bad" : "warn"}">change · ${item.risk} risk</span>`;
  if (item.kind === "unlock") return html`<span class="badge warn">unlock a secret</span>`;
  return html`<span class="badge ${item.runAs === "root" ? "bad" : "warn"}">sudo as ${item.runAs}</span>`;
}

export function approvalsSection(
  items: readonly ApprovalItem[],
  viewer: Viewer,
  now: number,
): Html {
  if (items.length === 0) return html`<p class="empty">Nothing waits for a human.</p>`;
  return html`<ul class="requests">${join(
    items.map((item) => {
      const left = Math.max(0, Math.round((Date.parse(item.expires) - now) / 1000));
      return html`<li class="request" data-id="${item.id}">
<div class="head"><strong>${item.agent}</strong> ${riskBadge(item)} <span class="deadline" title="${item.expires}">denied in ${left} s unless answered</span></div>
${
  item.kind === "change"
    ? html`<pre class="details">${item.details.join("\n")}</pre>`
    : html`<pre class="argv" aria-label="the exact command">${join(
        item.argv.map((a) => html`<span class="arg">${a}</span>`),
        " ",
      )}</pre>`
}
<dl class="facts"><dt>runs</dt><dd><code>${item.command}</code></dd><dt>in</dt><dd><code>${item.cwd}</code></dd><dt>id</dt><dd><code>${item.id}</code></dd><dt>hash</dt><dd><code title="${item.hash}">${item.hash.slice(0, 16)}…</code></dd></dl>
${
  item.agentWritable.length > 0
    ? html`<ul class="agent-writable">${join(
        item.agentWritable.map(
          (line) =>
            html`<li><span class="badge warn">agent-writable</span> ${line.replace(/^agent-writable /, "")}</li>`,
        ),
        "",
      )}</ul>`
    : ""
}
${
  viewer.approver
    ? html`<div class="decide">
<form method="post" action="/approvals/${item.id}/approve" data-ajax><input type="hidden" name="csrf" value="${viewer.csrf}"><input type="hidden" name="hash" value="${item.hash}"><button class="approve">Approve</button></form>
<form method="post" action="/approvals/${item.id}/deny" data-ajax><input type="hidden" name="csrf" value="${viewer.csrf}"><input type="hidden" name="hash" value="${item.hash}"><input name="reason" placeholder="reason (told to the agent)" maxlength="500" aria-label="reason"><button class="deny">Deny</button></form>
<span class="error" data-error></span>
</div>`
    : html`<p class="muted">${viewer.human} is not an approver in this town: only approvers can decide.</p>`
}
</li>`;
    }),
  )}</ul>`;
}

export function approvalsPage(
  town: string,
  items: readonly ApprovalItem[],
  viewer: Viewer,
  now: number,
): Html {
  return layout(
    town,
    viewer,
    "/approvals",
    "Approvals",
    html`<section data-live="approvals">${approvalsSection(items, viewer, now)}</section>`,
    items.length,
  );
}

function summary(record: AuditRecord): string {
  const d = record.data as Record<string, unknown>;
  const parts: string[] = [];
  if (Array.isArray(d.argv)) parts.push(d.argv.map(String).join(" "));
  for (const key of ["decision", "reason", "by", "room", "from", "state", "channel"]) {
    const value = d[key];
    if (value === undefined) continue;
    parts.push(`${key}: ${typeof value === "object" ? JSON.stringify(value) : String(value)}`);
  }
  return parts.join(" · ");
}

export function auditSection(
  records: readonly AuditRecord[],
  verified: VerifyResult,
  filters: AuditFilters,
): Html {
  const status = verified.ok
    ? html`<p class="chain ok">✓ the chain verifies: ${verified.records} records, head <code>${verified.head.slice(0, 16)}…</code></p>`
    : html`<p class="chain bad">✗ the chain does NOT verify at line ${verified.line}: ${verified.problem} (${verified.records} sound records before it)</p>`;
  return html`${status}
<form method="get" action="/audit" class="filters">
<label>event <input name="event" value="${filters.event ?? ""}" placeholder="request, decision…"></label>
<label>agent <input name="agent" value="${filters.agent ?? ""}"></label>
<label>text <input name="text" value="${filters.text ?? ""}"></label>
<button>Filter</button> <a href="/audit">clear</a>
</form>
${
  records.length === 0
    ? html`<p class="empty">No records match.</p>`
    : html`<table class="audit"><thead><tr><th>#</th><th>time</th><th>event</th><th>agent</th><th>what</th></tr></thead><tbody>${join(
        records.map(
          (r) =>
            html`<tr><td>${r.seq}</td><td><time>${r.time}</time></td><td><span class="event">${r.event}</span></td><td>${String((r.data as Record<string, unknown>).agent ?? "")}</td><td class="what">${summary(r)}</td></tr>`,
        ),
      )}</tbody></table>`
}`;
}

export function auditPage(
  town: string,
  records: readonly AuditRecord[],
  verified: VerifyResult,
  filters: AuditFilters,
  viewer: Viewer,
  pending: number,
): Html {
  return layout(
    town,
    viewer,
    "/audit",
    "Audit log",
    html`<section data-live="audit">${auditSection(records, verified, filters)}</section>`,
    pending,
  );
}

/** Keep the records that match every filter given, newest first, at most `limit`. */
export function filterAudit(
  records: readonly AuditRecord[],
  filters: AuditFilters,
  limit = 200,
): AuditRecord[] {
  const text = filters.text?.toLowerCase();
  return records
    .filter(
      (r) =>
        (!filters.event || r.event === filters.event || r.event.startsWith(`${filters.event}.`)) &&
        (!filters.agent || (r.data as Record<string, unknown>).agent === filters.agent) &&
        (!text || JSON.stringify(r.data).toLowerCase().includes(text)),
    )
    .reverse()
    .slice(0, limit);
}

export function chatSection(agent: string, thread: ChatThread | undefined): Html {
  if (!thread)
    return html`<p class="empty">Say something to ${agent}: each conversation is its own thread, with its own memory.</p>`;
  return html`<ol class="messages">${join(
    thread.lines.map(
      (line) =>
        html`<li class="msg from-${line.from}${line.progress ? " progress" : ""}" data-id="${line.id}"><span class="who">${line.who}</span><div class="text">${line.text}</div><time>${new Date(line.time).toISOString().slice(11, 19)}</time></li>`,
    ),
  )}</ol>${thread.typing ? html`<p class="typing">${agent} is working…</p>` : ""}`;
}

export function chatPage(
  town: string,
  agent: AgentRow | undefined,
  name: string,
  threads: readonly { id: string; title: string }[],
  current: ChatThread | undefined,
  threadId: string,
  viewer: Viewer,
  pending: number,
  notice?: string,
): Html {
  const state = !agent?.online ? "offline" : agent.running.length > 0 ? "busy" : "idle";
  const body = html`<div class="chat">
<aside class="threads">
<a class="new" href="/agents/${encodeURIComponent(name)}/chat?thread=new">+ New conversation</a>
<ul>${join(
    threads.map(
      (t) =>
        html`<li><a href="/agents/${encodeURIComponent(name)}/chat?thread=${encodeURIComponent(t.id)}"${t.id === threadId ? html` aria-current="true"` : ""}>${t.title}</a></li>`,
    ),
  )}</ul>
</aside>
<div class="conversation">
<p class="status">${name} <span class="badge state-${state}">${state}</span> ${agent?.role ?? ""}</p>
${notice ? html`<p class="notice">${notice}</p>` : ""}
<section data-live="chat" class="log">${chatSection(name, current)}</section>
<form method="post" action="/agents/${encodeURIComponent(name)}/chat" class="compose" data-ajax data-reset>
<input type="hidden" name="csrf" value="${viewer.csrf}">
<input type="hidden" name="thread" value="${threadId}">
<textarea name="text" rows="2" maxlength="8000" required placeholder="Message ${name} (Enter sends, Shift+Enter for a new line; !help for commands)" aria-label="message"></textarea>
<button>Send</button>
<span class="error" data-error></span>
</form>
</div>
</div>`;
  return layout(town, viewer, "", `Chat with ${name}`, body, pending);
}

export function townPage(
  town: string,
  picture: TownPicture,
  viewer: Viewer,
  pending: number,
): Html {
  return layout(
    town,
    viewer,
    "/town",
    "The town",
    html`<p class="muted">From the manifest: who may talk to which agent, and which device, room, repo and sudo rule each agent can reach.</p>
<div class="picture-frame">${pictureSvg(picture)}</div>`,
    pending,
  );
}

/** A page for someone who is not signed in: how to get in. */
export function signInPage(town: string, problem?: string): Html {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · ${town} · nuketown</title><link rel="stylesheet" href="/static/style.css"></head>
<body><main class="signin"><h1>☢ ${town}</h1>
${problem ? html`<p class="error">${problem}</p>` : ""}
<p>The dashboard lets in the town's declared humans only. As yourself, run</p>
<pre>nuketown dashboard url</pre>
<p>and open the link it prints: it works once, for a few minutes.</p></main></body></html>
`;
}
