/**
 * `nuketown dashboard`: the town hall. An HTTP server on 127.0.0.1 (by
 * default) that reads only the manifest, watches approvald and the agent
 * daemons through their sockets, and lets the town's declared humans act:
 * decide requests (the web approval channel), talk to agents (the web chat
 * transport, when the town has no chat server), ask for a reset, read the
 * audit log. Every state change needs a session, a same-origin request and
 * the session's CSRF token; every action is audited as the human's.
 */
import { existsSync, unwatchFile, watchFile } from "node:fs";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { stripTypeScriptTypes } from "node:module";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { AuditLog, type AuditRecord, verifyAudit } from "../audit/log.ts";
import { ChatResident } from "../chat/resident.ts";
import { startProcess } from "../os/process.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { WebApprovals } from "./approvals.ts";
import {
  clearedCookie,
  cookieValue,
  csrfMatches,
  SECURITY_HEADERS,
  SESSION_COOKIE,
  type Session,
  Sessions,
  sameOrigin,
  sessionCookie,
} from "./auth.ts";
import { WebChat } from "./chat.ts";
import { type Html, htmlText } from "./html.ts";
import {
  type AuditFilters,
  approvalsPage,
  approvalsSection,
  auditPage,
  auditSection,
  chatPage,
  chatSection,
  filterAudit,
  rosterPage,
  rosterSection,
  signInPage,
  townPage,
  type Viewer,
} from "./pages.ts";
import { townPicture } from "./picture.ts";
import { Roster } from "./roster.ts";
import { dashboardDir, humanSecrets } from "./secrets.ts";
import { STYLE } from "./style.ts";

export interface DashboardOptions {
  readonly town: ResolvedTown;
  /** @default "127.0.0.1" */
  readonly address?: string;
  /** 0 picks a free port. @default 7377, or a free port when 7377 is taken */
  readonly port?: number;
  readonly etc?: string;
  readonly log: (line: string) => void;
  readonly clock?: () => number;
}

export const DEFAULT_PORT = 7377;
const MAX_BODY = 64 * 1024;
const HEARTBEAT_MS = 20_000;

interface Stream {
  readonly response: http.ServerResponse;
  readonly session: Session;
  /** The agent whose chat this page shows. */
  readonly chat?: string;
}

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export class Dashboard {
  readonly #o: DashboardOptions;
  readonly #town: ResolvedTown;
  readonly #clock: () => number;
  readonly #streams = new Set<Stream>();
  readonly #chats = new Map<string, WebChat>();
  readonly #residents: ChatResident[] = [];
  #secrets = new Map<string, string>();
  #sessions: Sessions;
  #server: http.Server | undefined;
  #approvals: WebApprovals;
  #roster: Roster;
  #audit: AuditLog;
  #heartbeat: NodeJS.Timeout | undefined;
  #origin = "";
  #hosts = new Set<string>();
  #clientJs: string | undefined;
  #auditWatch: (() => void) | undefined;
  #pendingTopics = new Set<string>();
  #flushTimer: NodeJS.Timeout | undefined;

  constructor(options: DashboardOptions) {
    this.#o = options;
    this.#town = options.town;
    this.#clock = options.clock ?? Date.now;
    this.#sessions = new Sessions((human) => this.#secrets.get(human));
    this.#approvals = new WebApprovals({
      town: this.#town,
      onChange: () => this.#notify(["approvals", "count"]),
      log: (line) => this.#o.log(`approvals: ${line}`),
      ...(options.etc !== undefined && { etc: options.etc }),
    });
    this.#roster = new Roster({ town: this.#town, onChange: () => this.#notify(["roster"]) });
    this.#audit = new AuditLog(path.join(dashboardDir(this.#town), "audit.jsonl"), {
      mode: 0o600,
    });
  }

  /** The URL it listens on, once started. */
  get url(): string {
    return this.#origin;
  }

  /** Whether this town chats on the dashboard (no chat server declared). */
  get webChat(): boolean {
    return this.#town.chat.transport === "local";
  }

  async start(): Promise<void> {
    this.#secrets = await humanSecrets(this.#town, this.#o.etc);
    this.#clientJs = await loadClient();
    if (this.webChat) {
      for (const agent of this.#town.agents) await this.#startChat(agent);
    }
    this.#approvals.start();
    this.#roster.start();
    const auditFile = this.#town.paths.auditLog;
    const onAudit = () => this.#notify(["audit"]);
    watchFile(auditFile, { interval: 1000, persistent: false }, onAudit);
    this.#auditWatch = () => unwatchFile(auditFile, onAudit);

    const server = http.createServer((request, response) => {
      this.#handle(request, response).catch((error: Error) => {
        const status = error instanceof HttpError ? error.status : 500;
        if (status === 500) this.#o.log(`${request.method} ${request.url}: ${error.stack}`);
        if (!response.headersSent) this.#send(response, status, "text/plain", error.message);
        else response.end();
      });
    });
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    this.#server = server;
    const address = this.#o.address ?? "127.0.0.1";
    const listen = (port: number) =>
      new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, address, () => {
          server.off("error", reject);
          resolve();
        });
      });
    try {
      await listen(this.#o.port ?? DEFAULT_PORT);
    } catch (error) {
      // The default port is taken (another town on this machine): any free one will do, since
      // `dashboard url` and `up` read the address from <runtimeDir>/dashboard.json. A port asked for is kept.
      if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE" || this.#o.port !== undefined)
        throw error;
      this.#o.log(`port ${DEFAULT_PORT} is taken: listening on a free port instead`);
      await listen(0);
    }
    const port = (server.address() as AddressInfo).port;
    const host = address.includes(":") ? `[${address}]` : address;
    this.#origin = `http://${host}:${port}`;
    // Requests must name us: a page elsewhere cannot reach us through a DNS name it controls.
    this.#hosts = new Set([`${host}:${port}`]);
    if (address === "127.0.0.1" || address === "::1") this.#hosts.add(`localhost:${port}`);
    this.#heartbeat = setInterval(() => {
      for (const s of this.#streams) s.response.write(": keep-alive\n\n");
    }, HEARTBEAT_MS);
    this.#heartbeat.unref();
    await this.#audit.append("dashboard.started", { url: this.#origin, pid: process.pid });
  }

  async stop(): Promise<void> {
    clearInterval(this.#heartbeat);
    clearTimeout(this.#flushTimer);
    this.#auditWatch?.();
    for (const s of this.#streams) s.response.end();
    this.#streams.clear();
    await Promise.allSettled(this.#residents.map((r) => r.stop()));
    await this.#approvals.stop();
    await this.#roster.stop();
    await Promise.allSettled([...this.#chats.values()].map((c) => c.flush()));
    const server = this.#server;
    if (server) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  async #startChat(agent: ResolvedAgent): Promise<void> {
    const stateDir = path.join(dashboardDir(this.#town), "chat", agent.name);
    const chat = await WebChat.open(agent.name, path.join(stateDir, "history.json"), (a, human) =>
      this.#notify(human === "" ? ["roster", "chat"] : ["chat"], { agent: a, human }),
    );
    this.#chats.set(agent.name, chat);
    const resident = new ChatResident({
      town: this.#town,
      agent,
      transport: chat.transport(),
      stateDir,
      log: (line) => this.#o.log(`chat ${agent.name}: ${line}`),
      reset: () => this.#askReset(agent),
    });
    await resident.start();
    this.#residents.push(resident);
  }

  /**
   * A reset through the agent's own sudo: the approval daemon asks a human,
   * exactly as when the agent asks for it in chat. Never run by the dashboard itself.
   */
  #askReset(agent: ResolvedAgent): Promise<{ code: number; output: string }> {
    const town = this.#town;
    return new Promise((resolve) => {
      const child = startProcess(
        "runuser",
        [
          "-u",
          agent.name,
          "--",
          "env",
          `PATH=${town.install.shimDir}:/usr/local/bin:/usr/bin:/bin`,
          `HOME=${agent.home}`,
          "sudo",
          town.install.bin,
          "reset",
          agent.name,
          "--manifest",
          town.paths.manifest,
        ],
        { cwd: "/", stdio: ["ignore", "pipe", "pipe"] },
      );
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr.on("data", (d: Buffer) => (output += d.toString()));
      child.on("error", (error) => resolve({ code: 127, output: error.message }));
      child.on("close", (code) => resolve({ code: code ?? 1, output }));
    });
  }

  // ---- live updates --------------------------------------------------------

  /** Topics changed: tell the pages, batched over a few milliseconds. */
  #notify(topics: readonly string[], chat?: { agent: string; human: string }): void {
    if (chat && topics.includes("chat")) {
      // A conversation is its human's: only their pages hear of it.
      for (const s of this.#streams)
        if (s.chat === chat.agent && (chat.human === "" || s.session.human === chat.human))
          s.response.write(`event: update\ndata: ${JSON.stringify(["chat"])}\n\n`);
      topics = topics.filter((t) => t !== "chat");
    }
    for (const t of topics) this.#pendingTopics.add(t);
    if (this.#flushTimer || this.#pendingTopics.size === 0) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      const line = `event: update\ndata: ${JSON.stringify([...this.#pendingTopics])}\n\n`;
      this.#pendingTopics.clear();
      for (const s of this.#streams) s.response.write(line);
    }, 30);
  }

  // ---- HTTP ------------------------------------------------------------------

  #send(
    response: http.ServerResponse,
    status: number,
    type: string,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    response.writeHead(status, {
      ...SECURITY_HEADERS,
      "content-type": `${type}; charset=utf-8`,
      ...headers,
    });
    response.end(body);
  }

  #page(response: http.ServerResponse, body: Html, status = 200): void {
    this.#send(response, status, "text/html", htmlText(body));
  }

  async #handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    if (!this.#hosts.has(request.headers.host ?? ""))
      throw new HttpError(421, "this dashboard answers only to its own address");
    const url = new URL(request.url ?? "/", this.#origin);
    const method = request.method ?? "GET";

    if (method === "GET" && url.pathname === "/static/style.css")
      return this.#send(response, 200, "text/css", STYLE);
    if (method === "GET" && url.pathname === "/static/app.js")
      return this.#send(response, 200, "text/javascript", this.#clientJs ?? "");
    if (method === "GET" && url.pathname === "/login") return this.#login(url, response);

    const session = this.#sessions.find(
      cookieValue(request.headers.cookie, SESSION_COOKIE),
      this.#clock(),
    );
    if (!session) {
      if (method === "GET" && !url.searchParams.has("fragment") && url.pathname !== "/events")
        return this.#page(response, signInPage(this.#town.name), 401);
      throw new HttpError(401, "sign in first: run `nuketown dashboard url` as yourself");
    }
    const viewer: Viewer = {
      human: session.human,
      approver: this.#town.humans.some((h) => h.name === session.human && h.approver),
      csrf: session.csrf,
    };
    if (method === "GET") return this.#get(url, session, viewer, response, request);
    if (method !== "POST") throw new HttpError(405, "only GET and POST");

    // A state change: from our own pages, with the session's CSRF token.
    const headers = request.headers as Record<string, string | undefined>;
    if (!sameOrigin(headers, this.#origin))
      throw new HttpError(403, "refused: the request does not come from this dashboard's pages");
    const form = await readForm(request);
    const token = headers["x-csrf-token"] ?? form.get("csrf") ?? undefined;
    if (!csrfMatches(session, token))
      throw new HttpError(403, "refused: missing or wrong CSRF token");
    const wantsJson = (request.headers.accept ?? "").includes("application/json");
    const done = (location: string, notice: string, status = 200) => {
      const cookie: Record<string, string> =
        url.pathname === "/logout" ? { "set-cookie": clearedCookie() } : {};
      if (wantsJson)
        this.#send(
          response,
          status,
          "application/json",
          JSON.stringify({ notice, location }),
          cookie,
        );
      else this.#send(response, 303, "text/plain", notice, { location, ...cookie });
    };
    const fail = (status: number, error: string) => {
      if (wantsJson) this.#send(response, status, "application/json", JSON.stringify({ error }));
      else this.#send(response, status, "text/plain", error);
    };
    return this.#post(url, session, form, done, fail);
  }

  #login(url: URL, response: http.ServerResponse): void {
    const result = this.#sessions.signIn(url.searchParams.get("token") ?? "", this.#clock());
    if (!result.ok) {
      this.#o.log(`refused a sign-in: ${result.error}`);
      this.#page(response, signInPage(this.#town.name, result.error), 401);
      return;
    }
    this.#record("dashboard.signed-in", { human: result.session.human });
    this.#send(response, 303, "text/plain", "signed in", {
      location: "/",
      "set-cookie": sessionCookie(result.session.id),
    });
  }

  #record(event: string, data: Record<string, unknown>): void {
    this.#audit
      .append(event, data)
      .catch((error: Error) => this.#o.log(`audit: cannot record ${event}: ${error.message}`));
  }

  async #get(
    url: URL,
    session: Session,
    viewer: Viewer,
    response: http.ServerResponse,
    request: http.IncomingMessage,
  ): Promise<void> {
    const fragment = url.searchParams.get("fragment");
    const town = this.#town.name;
    const pending = this.#approvals.count;
    if (url.pathname === "/events") return this.#events(url, session, response, request);
    if (fragment === "count") return this.#send(response, 200, "text/plain", String(pending));
    if (url.pathname === "/") {
      const rows = this.#roster.rows();
      if (fragment) return this.#page(response, rosterSection(rows, viewer));
      return this.#page(response, rosterPage(town, rows, viewer, pending));
    }
    if (url.pathname === "/approvals") {
      const items = this.#approvals.items;
      const now = this.#clock();
      if (fragment) return this.#page(response, approvalsSection(items, viewer, now));
      return this.#page(response, approvalsPage(town, items, viewer, now));
    }
    if (url.pathname === "/audit") {
      const filters: AuditFilters = {
        ...(url.searchParams.get("event") && { event: url.searchParams.get("event") ?? "" }),
        ...(url.searchParams.get("agent") && { agent: url.searchParams.get("agent") ?? "" }),
        ...(url.searchParams.get("text") && { text: url.searchParams.get("text") ?? "" }),
      };
      const file = this.#town.paths.auditLog;
      const [records, verified] = await Promise.all([readAudit(file), verifyAudit(file)]);
      const shown = filterAudit(records, filters);
      if (fragment) return this.#page(response, auditSection(shown, verified, filters));
      return this.#page(response, auditPage(town, shown, verified, filters, viewer, pending));
    }
    if (url.pathname === "/town")
      return this.#page(response, townPage(town, townPicture(this.#town), viewer, pending));
    const chatMatch = /^\/agents\/([^/]+)\/chat$/.exec(url.pathname);
    if (chatMatch) {
      const name = decodeURIComponent(chatMatch[1] ?? "");
      const agent = this.#town.agents.find((a) => a.name === name);
      if (!agent) throw new HttpError(404, `no agent ${name} in this town`);
      const chat = this.#chats.get(name);
      const threads = chat?.threads(session.human) ?? [];
      let thread = url.searchParams.get("thread") ?? threads[0]?.id ?? "new";
      if (!/^(new|t[0-9a-f]{12})$/.test(thread)) thread = "new";
      const current = thread === "new" ? undefined : chat?.thread(session.human, thread);
      if (fragment) return this.#page(response, chatSection(name, current));
      const notice = chat
        ? undefined
        : `This town chats on ${this.#town.chat.transport}: talk to ${name} there (or with nuketown talk).`;
      return this.#page(
        response,
        chatPage(
          town,
          this.#roster.row(name),
          name,
          threads,
          current,
          thread,
          viewer,
          pending,
          notice,
        ),
      );
    }
    throw new HttpError(404, "not found");
  }

  #events(
    url: URL,
    session: Session,
    response: http.ServerResponse,
    request: http.IncomingMessage,
  ): void {
    response.writeHead(200, {
      ...SECURITY_HEADERS,
      "content-type": "text/event-stream; charset=utf-8",
      connection: "keep-alive",
    });
    response.write("retry: 2000\n\n");
    const chat = url.searchParams.get("chat");
    const stream: Stream = {
      response,
      session,
      ...(chat && this.#chats.has(chat) && { chat }),
    };
    this.#streams.add(stream);
    request.on("close", () => this.#streams.delete(stream));
  }

  async #post(
    url: URL,
    session: Session,
    form: URLSearchParams,
    done: (location: string, notice: string, status?: number) => void,
    fail: (status: number, error: string) => void,
  ): Promise<void> {
    const human = session.human;
    if (url.pathname === "/logout") {
      this.#sessions.signOut(session.id);
      this.#record("dashboard.signed-out", { human });
      done("/", "signed out");
      return;
    }
    const decide = /^\/approvals\/([0-9a-f]{1,64})\/(approve|deny)$/.exec(url.pathname);
    if (decide) {
      const [, id = "", verb] = decide;
      const approve = verb === "approve";
      const reason = form.get("reason")?.trim().slice(0, 500) || undefined;
      // The hash the page showed: an answer counts only for the request the human saw.
      const hash = /^[0-9a-f]{8,64}$/.exec(form.get("hash") ?? "")?.[0];
      const outcome = await this.#approvals.decide(human, id, approve, reason, hash);
      this.#record("dashboard.decide", {
        human,
        id,
        decision: approve ? "approve" : "deny",
        ...(reason && { reason }),
        result: outcome.ok ? "ok" : outcome.error,
      });
      if (!outcome.ok) return fail(outcome.status, outcome.error);
      return done("/approvals", approve ? `approved ${id}` : `denied ${id}`);
    }
    const agentAction = /^\/agents\/([^/]+)\/(chat|reset)$/.exec(url.pathname);
    if (agentAction) {
      const name = decodeURIComponent(agentAction[1] ?? "");
      const agent = this.#town.agents.find((a) => a.name === name);
      if (!agent) return fail(404, `no agent ${name} in this town`);
      if (agentAction[2] === "reset") {
        if (!agent.sudo.enable)
          return fail(409, `${name} has no sudo: a reset through approval is not possible`);
        this.#record("dashboard.reset-asked", { human, agent: name });
        this.#askReset(agent)
          .then((result) =>
            this.#record("dashboard.reset-answered", {
              human,
              agent: name,
              code: result.code,
              output: result.output.trim().split("\n").slice(-3).join(" ").slice(0, 400),
            }),
          )
          .catch(() => {});
        return done(
          "/approvals",
          `asked to reset ${name}: a human approves it under Approvals`,
          202,
        );
      }
      const chat = this.#chats.get(name);
      if (!chat) return fail(409, `this town chats on ${this.#town.chat.transport}, not here`);
      const text = (form.get("text") ?? "").trim();
      if (text === "") return fail(400, "say something");
      if (text.length > 8000) return fail(413, "a message is at most 8000 characters");
      let thread = form.get("thread") ?? "new";
      if (!/^t[0-9a-f]{12}$/.test(thread)) thread = WebChat.newThread();
      chat.say(human, thread, text);
      return done(`/agents/${encodeURIComponent(name)}/chat?thread=${thread}`, "sent");
    }
    return fail(404, "not found");
  }
}

async function readForm(request: http.IncomingMessage): Promise<URLSearchParams> {
  const type = request.headers["content-type"] ?? "";
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, "request too large");
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return new URLSearchParams();
  if (!type.startsWith("application/x-www-form-urlencoded"))
    throw new HttpError(415, "send a form (application/x-www-form-urlencoded)");
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

async function readAudit(file: string): Promise<AuditRecord[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  const records: AuditRecord[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    try {
      records.push(JSON.parse(line) as AuditRecord);
    } catch {
      // verifyAudit says where the log is broken.
    }
  }
  return records;
}

/**
 * The browser script: the bundle scripts/build.ts made beside this file, or,
 * running from the sources, the TypeScript with its types stripped.
 */
async function loadClient(): Promise<string> {
  const built = path.join(import.meta.dirname, "client", "app.js");
  if (existsSync(built)) return readFile(built, "utf8");
  const source = await readFile(path.join(import.meta.dirname, "client", "app.ts"), "utf8");
  return stripTypeScriptTypes(source);
}
