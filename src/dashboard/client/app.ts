/// <reference lib="dom" />
/**
 * The dashboard's only script, bundled by esbuild (scripts/build.ts) and
 * served from the dashboard itself. The pages are whole without it; with it,
 * sections marked `data-live` are fetched again when the server's event
 * stream names their topic, and forms marked `data-ajax` post without a
 * reload. The server renders and escapes every byte of HTML; this only
 * swaps sections in.
 */

const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? "";
const state = document.getElementById("live-state");

function setState(text: string, ok: boolean): void {
  if (!state) return;
  state.textContent = text;
  state.dataset.ok = String(ok);
}

function fragmentUrl(topic: string): string {
  const url = new URL(window.location.href);
  url.searchParams.set("fragment", topic);
  return url.pathname + url.search;
}

async function refresh(section: HTMLElement): Promise<void> {
  const topic = section.dataset.live ?? "";
  const response = await fetch(fragmentUrl(topic), {
    credentials: "same-origin",
    headers: { accept: "text/html" },
  });
  if (response.status === 401) return window.location.reload();
  if (!response.ok) return;
  const text = await response.text();
  const atBottom = section.scrollTop + section.clientHeight >= section.scrollHeight - 40;
  if (topic === "count") {
    section.textContent = text === "0" ? "" : text;
    section.dataset.count = text;
    return;
  }
  // Server-rendered, every value escaped there.
  section.innerHTML = text;
  if (section.classList.contains("log") && atBottom) section.scrollTop = section.scrollHeight;
}

function refreshTopics(topics: readonly string[] | "all"): void {
  for (const section of document.querySelectorAll<HTMLElement>("[data-live]")) {
    const topic = section.dataset.live ?? "";
    if (topics === "all" || topics.includes(topic)) refresh(section).catch(() => {});
  }
}

/** The event stream; the browser reconnects on its own, and we catch up on every (re)open. */
function connect(): void {
  const events = new EventSource(
    `/events${window.location.pathname.startsWith("/agents/") ? `?chat=${encodeURIComponent(window.location.pathname.split("/")[2] ?? "")}` : ""}`,
  );
  let opened = false;
  events.addEventListener("open", () => {
    setState("live", true);
    if (opened) refreshTopics("all");
    opened = true;
  });
  events.addEventListener("update", (event) => {
    const topics = JSON.parse((event as MessageEvent<string>).data) as string[];
    refreshTopics(topics);
  });
  events.addEventListener("error", () => {
    setState("reconnecting…", false);
    if (events.readyState === EventSource.CLOSED) {
      events.close();
      setTimeout(connect, 2000);
    }
  });
}

function ajaxForms(): void {
  document.addEventListener("submit", (event) => {
    const form = event.target as HTMLFormElement;
    if (!form.matches("form[data-ajax]")) return;
    event.preventDefault();
    const question = form.dataset.confirm;
    if (question && !window.confirm(question)) return;
    const error = form.querySelector<HTMLElement>("[data-error]");
    const body = new URLSearchParams();
    for (const [key, value] of new FormData(form)) body.append(key, String(value));
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": csrf, accept: "application/json" },
      body,
    })
      .then(async (response) => {
        const reply = (await response.json().catch(() => ({}))) as {
          error?: string;
          notice?: string;
          location?: string;
        };
        if (error)
          error.textContent = response.ok
            ? (reply.notice ?? "")
            : (reply.error ?? `error ${response.status}`);
        if (error) error.dataset.ok = String(response.ok);
        if (response.ok && form.dataset.reset !== undefined) form.reset();
        if (response.ok && reply.location) window.history.replaceState(null, "", reply.location);
        if (response.ok && reply.location?.includes("thread=")) {
          const thread = new URL(reply.location, window.location.href).searchParams.get("thread");
          const input = form.querySelector<HTMLInputElement>('input[name="thread"]');
          if (input && thread) input.value = thread;
        }
        refreshTopics("all");
      })
      .catch((e: Error) => {
        if (error) error.textContent = e.message;
      })
      .finally(() => {
        for (const button of form.querySelectorAll("button")) button.disabled = false;
      });
  });
  // Enter sends, Shift+Enter is a new line.
  document.addEventListener("keydown", (event) => {
    const target = event.target as HTMLElement;
    if (event.key !== "Enter" || event.shiftKey || !target.matches("form.compose textarea")) return;
    event.preventDefault();
    (target.closest("form") as HTMLFormElement).requestSubmit();
  });
}

ajaxForms();
connect();
for (const log of document.querySelectorAll<HTMLElement>(".log")) log.scrollTop = log.scrollHeight;
