/** The dashboard's stylesheet, served as /static/style.css (no inline styles: the CSP forbids them). */
export const STYLE = `
:root { color-scheme: light dark; --bg: #f6f7f9; --fg: #1c2330; --muted: #6a7385; --card: #fff;
  --line: #dde1e8; --accent: #2f6fde; --ok: #1d8a4c; --warn: #b7791f; --bad: #c53030; }
@media (prefers-color-scheme: dark) { :root { --bg: #12151b; --fg: #e4e8ef; --muted: #9aa3b5;
  --card: #1b2029; --line: #2c3340; --accent: #6ea1ff; --ok: #48bb78; --warn: #ecc94b; --bad: #fc8181; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
code, pre { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
header.top { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: center; padding: .6rem 1.2rem;
  background: var(--card); border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 2; }
.brand { font-weight: 700; color: var(--fg); font-size: 1.05rem; }
nav { display: flex; gap: .2rem; flex-wrap: wrap; flex: 1; }
nav a { padding: .3rem .7rem; border-radius: 6px; color: var(--fg); }
nav a[aria-current] { background: var(--accent); color: #fff; }
.count:not(:empty) { margin-left: .35rem; background: var(--bad); color: #fff; border-radius: 9px; padding: 0 .45rem; font-size: .8rem; }
.who small { color: var(--muted); }
.live-state { font-size: .8rem; color: var(--muted); } .live-state[data-ok="true"]::before { content: "● "; color: var(--ok); }
.live-state[data-ok="false"]::before { content: "● "; color: var(--warn); }
form.inline { display: inline; } button.link { background: none; border: 0; color: var(--accent); cursor: pointer; padding: 0; font: inherit; }
main { padding: 1rem 1.2rem 3rem; max-width: 1280px; margin: 0 auto; }
h1 { font-size: 1.35rem; margin: .2rem 0 1rem; }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: .55rem .7rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: .8rem; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
tr:last-child td { border-bottom: 0; }
.badge { display: inline-block; font-size: .78rem; padding: .05rem .5rem; border-radius: 9px; border: 1px solid currentColor; white-space: nowrap; }
.badge.ok, .state-idle { color: var(--ok); } .badge.warn, .state-busy { color: var(--warn); }
.badge.bad { color: var(--bad); } .state-offline { color: var(--muted); }
.muted, small { color: var(--muted); } .empty { color: var(--muted); padding: 1.5rem; text-align: center; background: var(--card); border: 1px dashed var(--line); border-radius: 8px; }
.task .project { font-weight: 600; } .progress { color: var(--warn); font-size: .9rem; }
button { font: inherit; padding: .4rem .9rem; border-radius: 6px; border: 1px solid var(--line); background: var(--card); color: var(--fg); cursor: pointer; }
button.approve { background: var(--ok); border-color: var(--ok); color: #fff; font-weight: 600; }
button.deny { background: var(--bad); border-color: var(--bad); color: #fff; font-weight: 600; }
button:disabled { opacity: .5; cursor: wait; }
input, textarea { font: inherit; padding: .4rem .6rem; border-radius: 6px; border: 1px solid var(--line); background: var(--bg); color: var(--fg); }
.error { color: var(--bad); } .error[data-ok="true"] { color: var(--ok); } .notice { color: var(--ok); }
ul.requests { list-style: none; padding: 0; margin: 0; display: grid; gap: .8rem; }
li.request { background: var(--card); border: 1px solid var(--line); border-left: 4px solid var(--warn); border-radius: 8px; padding: .8rem 1rem; }
li.request .head { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
.deadline { color: var(--muted); font-size: .85rem; margin-left: auto; }
pre.argv, pre.details { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; white-space: pre-wrap; word-break: break-all; margin: .6rem 0; }
.arg { background: color-mix(in srgb, var(--accent) 12%, transparent); border-radius: 3px; padding: 0 .2rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .8rem; margin: .4rem 0 .8rem; font-size: .88rem; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; word-break: break-all; }
.decide { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; }
.decide form { display: flex; gap: .4rem; flex-wrap: wrap; }
.chain { padding: .6rem .9rem; border-radius: 8px; font-weight: 600; } .chain.ok { color: var(--ok); border: 1px solid var(--ok); }
.chain.bad { color: #fff; background: var(--bad); }
form.filters { display: flex; flex-wrap: wrap; gap: .6rem; align-items: end; margin: .8rem 0; }
form.filters label { display: flex; flex-direction: column; font-size: .8rem; color: var(--muted); }
table.audit td.what { word-break: break-word; font-size: .9rem; } .event { font-family: ui-monospace, monospace; font-size: .85rem; }
.chat { display: grid; grid-template-columns: 240px 1fr; gap: 1rem; }
.threads { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .6rem; align-self: start; }
.threads ul { list-style: none; padding: 0; margin: .4rem 0 0; } .threads li a { display: block; padding: .35rem .5rem; border-radius: 6px; color: var(--fg); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.threads li a[aria-current] { background: color-mix(in srgb, var(--accent) 15%, transparent); }
.threads .new { display: block; padding: .35rem .5rem; font-weight: 600; }
.conversation { display: flex; flex-direction: column; min-height: 60vh; }
.conversation .status { margin: 0 0 .5rem; }
.log { flex: 1; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .8rem; overflow-y: auto; max-height: 65vh; min-height: 40vh; }
ol.messages { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: .6rem; }
.msg { max-width: 80%; padding: .5rem .8rem; border-radius: 10px; background: var(--bg); border: 1px solid var(--line); }
.msg.from-human { align-self: flex-end; background: color-mix(in srgb, var(--accent) 14%, var(--card)); }
.msg.progress { color: var(--warn); font-style: italic; }
.msg .who { font-size: .75rem; color: var(--muted); font-weight: 600; display: block; }
.msg .text { white-space: pre-wrap; word-break: break-word; } .msg time { font-size: .7rem; color: var(--muted); }
.typing { color: var(--muted); font-style: italic; margin: .5rem 0 0; }
form.compose { display: flex; gap: .5rem; margin-top: .6rem; align-items: flex-end; flex-wrap: wrap; }
form.compose textarea { flex: 1; min-width: 200px; resize: vertical; }
.picture-frame { overflow-x: auto; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: .5rem; }
svg.picture .edge path { fill: none; stroke: var(--muted); stroke-width: 1.5; opacity: .7; }
svg.picture .edge-deny path { stroke: var(--bad); } svg.picture .edge-allow path { stroke: var(--ok); }
svg.picture .node rect { fill: var(--bg); stroke: var(--line); stroke-width: 1.5; }
svg.picture .node-agent rect { stroke: var(--accent); stroke-width: 2; } svg.picture .node-human rect { stroke: var(--ok); }
svg.picture .node-sudo rect { stroke: var(--warn); } svg.picture text { fill: var(--fg); font-size: 13px; }
svg.picture text.detail { fill: var(--muted); font-size: 11px; }
main.signin { max-width: 520px; margin-top: 10vh; } main.signin pre { background: var(--card); padding: .8rem; border-radius: 6px; border: 1px solid var(--line); }
@media (max-width: 760px) {
  header.top { padding: .5rem .7rem; } main { padding: .7rem; }
  table.roster thead { display: none; } table.roster, table.roster tbody, table.roster tr, table.roster td { display: block; width: 100%; }
  table.roster tr { border-bottom: 1px solid var(--line); padding: .4rem 0; }
  table.roster td { border: 0; padding: .2rem .7rem; } table.roster td[data-label]::before { content: attr(data-label); display: inline-block; min-width: 7.5rem; color: var(--muted); font-size: .8rem; }
  table.audit th:nth-child(1), table.audit td:nth-child(1), table.audit th:nth-child(4), table.audit td:nth-child(4) { display: none; }
  .chat { grid-template-columns: 1fr; } .msg { max-width: 95%; } .deadline { margin-left: 0; width: 100%; }
}
`;
