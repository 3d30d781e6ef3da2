/**
 * The picture of the town, drawn from the manifest alone: who may talk to
 * which agent, and what each agent can reach (devices, chat rooms, repos,
 * sudo rules). Pure: `townPicture` is the graph, `pictureSvg` draws it.
 */
import type { ResolvedTown } from "../town/types.ts";
import { type Html, html, join } from "./html.ts";

export type NodeKind = "human" | "agent" | "device" | "room" | "repo" | "sudo";

export interface PictureNode {
  readonly id: string;
  readonly kind: NodeKind;
  readonly label: string;
  /** A second line: the role, the permission, the rule's action. */
  readonly detail?: string;
}

export interface PictureEdge {
  readonly from: string;
  readonly to: string;
  /** What the line means: talks to, reads/writes, may ask, may run… */
  readonly label: string;
}

export interface TownPicture {
  readonly nodes: readonly PictureNode[];
  readonly edges: readonly PictureEdge[];
}

/** The graph of the town: humans → agents → what they reach. Nodes shared by agents appear once. */
export function townPicture(town: ResolvedTown): TownPicture {
  const nodes = new Map<string, PictureNode>();
  const edges: PictureEdge[] = [];
  const add = (node: PictureNode) => {
    if (!nodes.has(node.id)) nodes.set(node.id, node);
  };
  for (const human of town.humans)
    add({
      id: `human:${human.name}`,
      kind: "human",
      label: human.name,
      detail: human.approver ? "approver" : "human",
    });
  for (const agent of town.agents) {
    const id = `agent:${agent.name}`;
    add({ id, kind: "agent", label: agent.name, detail: `${agent.role} · uid ${agent.uid}` });
    // chat.allow holds on any chat the agent is on: its network's, or the dashboard's.
    const chats = agent.chat.enable || town.chat.transport === "local";
    for (const name of chats ? agent.chat.allow : []) {
      const from = town.humans.some((h) => h.name === name) ? `human:${name}` : `agent:${name}`;
      if (from !== id) edges.push({ from, to: id, label: "may talk to" });
    }
    for (const device of agent.devices) {
      const attrs = device.attrs.map(([k, v]) => `${k}=${v}`).join(" ");
      const device_id = `device:${device.subsystem}:${attrs}`;
      add({
        id: device_id,
        kind: "device",
        label: device.description ?? `${device.subsystem} ${attrs}`,
        detail: device.subsystem,
      });
      edges.push({ from: id, to: device_id, label: device.permission });
    }
    for (const room of agent.chat.enable ? agent.chat.rooms : []) {
      add({ id: `room:${room}`, kind: "room", label: room });
      edges.push({ from: id, to: `room:${room}`, label: "in" });
    }
    for (const repo of agent.repos) {
      add({ id: `repo:${repo.url}`, kind: "repo", label: repo.url, detail: repo.path });
      edges.push({ from: id, to: `repo:${repo.url}`, label: "clones" });
    }
    if (agent.sudo.enable) {
      agent.sudo.policy.rules.forEach((rule, i) => {
        const rule_id = `sudo:${agent.name}:${i}`;
        add({
          id: rule_id,
          kind: "sudo",
          label: rule.argv.join(" "),
          detail: `${rule.action}${rule.runAs ? ` as ${rule.runAs}` : ""}`,
        });
        edges.push({ from: id, to: rule_id, label: rule.action });
      });
      const rest = `sudo:${agent.name}:default`;
      add({
        id: rest,
        kind: "sudo",
        label: "any other command",
        detail: agent.sudo.policy.default,
      });
      edges.push({ from: id, to: rest, label: agent.sudo.policy.default });
    }
  }
  return { nodes: [...nodes.values()], edges };
}

const COLUMN: Record<NodeKind, number> = {
  human: 0,
  agent: 1,
  device: 2,
  room: 2,
  repo: 2,
  sudo: 2,
};
const BOX_W = 230;
const BOX_H = 44;
const GAP_X = 120;
const GAP_Y = 14;
const MAX_LABEL = 30;

function clipLabel(text: string): string {
  return text.length <= MAX_LABEL ? text : `${text.slice(0, MAX_LABEL - 1)}…`;
}

/** Three columns (humans, agents, what they reach), lines between; every label escaped. */
export function pictureSvg(picture: TownPicture): Html {
  const rows = [0, 0, 0];
  const at = new Map<string, { x: number; y: number }>();
  const kinds: NodeKind[] = ["human", "agent", "device", "room", "repo", "sudo"];
  const ordered = kinds.flatMap((k) => picture.nodes.filter((n) => n.kind === k));
  for (const node of ordered) {
    const column = COLUMN[node.kind];
    const row = rows[column] ?? 0;
    rows[column] = row + 1;
    at.set(node.id, { x: 10 + column * (BOX_W + GAP_X), y: 10 + row * (BOX_H + GAP_Y) });
  }
  const width = 20 + 3 * BOX_W + 2 * GAP_X;
  const height = 20 + Math.max(1, ...rows) * (BOX_H + GAP_Y);
  const lines = picture.edges.map((edge) => {
    const a = at.get(edge.from);
    const b = at.get(edge.to);
    if (!a || !b) return html``;
    const x1 = a.x + BOX_W;
    const y1 = a.y + BOX_H / 2;
    const x2 = b.x;
    const y2 = b.y + BOX_H / 2;
    const mid = (x1 + x2) / 2;
    return html`<g class="edge edge-${edge.label}"><path d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}"/><title>${edge.from.split(":").slice(1).join(":")} ${edge.label} ${edge.to.split(":").slice(1).join(":")}</title></g>`;
  });
  const boxes = ordered.map((node) => {
    const p = at.get(node.id) ?? { x: 0, y: 0 };
    return html`<g class="node node-${node.kind}" transform="translate(${p.x},${p.y})"><rect width="${BOX_W}" height="${BOX_H}" rx="8"/><text x="10" y="18" class="label">${clipLabel(node.label)}</text>${node.detail ? html`<text x="10" y="35" class="detail">${node.kind} · ${clipLabel(node.detail)}</text>` : html`<text x="10" y="35" class="detail">${node.kind}</text>`}<title>${node.label}</title></g>`;
  });
  return html`<svg class="picture" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="the town: who talks to which agent, and what each agent can reach">${join(lines)}${join(boxes)}</svg>`;
}
