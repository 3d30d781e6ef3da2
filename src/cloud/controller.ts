/**
 * The scaling controller: escalation needs a human, de-escalation is free.
 *
 * - An agent asks for a larger tier by writing `request.id`, `request.tier`
 *   and `request.reason` into its status ConfigMap (`<agent>-status` in its
 *   namespace; chat and the MCP tool write the same keys). The agent may
 *   write that ConfigMap and nothing else.
 * - The controller turns a new request into an approval request: a ConfigMap
 *   `scale-<agent>-<id>` in its own namespace, where agents have no rights. A
 *   human answers with `nuketown cloud approve|deny <id>`, which writes
 *   `decision` there under its own field manager.
 * - On yes, and never above the Deployment's `nuketown.io/max-tier`, the
 *   controller raises the tier by server-side apply under FIELD_MANAGER (Argo
 *   CD is told to ignore the fields it owns, see deploy/argocd/).
 * - An agent above its declared tier whose last task (`lastTaskAt` in its
 *   status ConfigMap, else the scale-up) is older than its idle timeout goes
 *   back to its declared tier without asking.
 *
 * Every change is an audit record. All cluster access goes through ClusterApi,
 * so the logic runs against a real API server or a recording fake alike.
 */
import { appendFileSync } from "node:fs";
import type { CloudTier } from "../town/types.ts";
import { AGENT_LABEL, ANNOTATIONS, CONTAINER, MANAGED_BY } from "./render.ts";
import { isTier, tierPlacement, tierRank, tierResources } from "./tiers.ts";

export const FIELD_MANAGER = "nuketown-cloud-controller";
export const APPROVER_MANAGER = "nuketown-cloud-approver";
export const REQUEST_LABEL = "nuketown.io/scale-request";
/** Set by the controller on the Deployment: the tier it applied, and when. */
export const SCALED = { tier: "nuketown.io/scaled-tier", at: "nuketown.io/scaled-at" } as const;

export interface ObjectMeta {
  readonly name: string;
  readonly namespace?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
}
export interface ConfigMapLike {
  readonly metadata: ObjectMeta;
  readonly data?: Readonly<Record<string, string>>;
}
export interface DeploymentLike {
  readonly metadata: ObjectMeta;
}

/** The controller's narrow view of the cluster. */
export interface ClusterApi {
  listAgentDeployments(): Promise<DeploymentLike[]>;
  getConfigMap(namespace: string, name: string): Promise<ConfigMapLike | undefined>;
  listConfigMaps(namespace: string, labelSelector: string): Promise<ConfigMapLike[]>;
  /** Server-side apply (force) of a partial object under `fieldManager`. */
  apply(object: Record<string, unknown>, fieldManager: string): Promise<void>;
}

export interface AuditRecord {
  readonly time: string;
  readonly event: "requested" | "rejected" | "approved" | "denied" | "scaled-up" | "scaled-down";
  readonly agent: string;
  readonly namespace: string;
  readonly request?: string;
  readonly from?: CloudTier;
  readonly to?: CloudTier;
  readonly by?: string;
  readonly reason?: string;
}
export type Audit = (record: AuditRecord) => void;

/** Audit records as JSON lines on `stream` (the pod's log) and, when given, appended to `file`. */
export function jsonLinesAudit(stream: NodeJS.WritableStream, file?: string): Audit {
  return (record) => {
    const line = `${JSON.stringify(record)}\n`;
    stream.write(line);
    if (file !== undefined) appendFileSync(file, line);
  };
}

export interface ControllerOptions {
  readonly api: ClusterApi;
  /** Where approval requests live; agents have no rights there. */
  readonly namespace: string;
  readonly audit: Audit;
  readonly now?: () => Date;
}

/** Keys of an approval ConfigMap that the controller writes (the approver writes decision*). */
const CONTROLLER_KEYS = ["agent", "namespace", "from", "tier", "reason", "requestedAt", "refusal"];

const REQUEST_ID = /^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$/;

export function approvalName(agent: string, id: string): string {
  return `scale-${agent}-${id}`;
}

export class Controller {
  readonly #api: ClusterApi;
  readonly #namespace: string;
  readonly #audit: Audit;
  readonly #now: () => Date;

  constructor(opts: ControllerOptions) {
    this.#api = opts.api;
    this.#namespace = opts.namespace;
    this.#audit = opts.audit;
    this.#now = opts.now ?? (() => new Date());
  }

  /** One reconciliation of every agent Deployment. */
  async pass(): Promise<void> {
    const approvals = new Map(
      (await this.#api.listConfigMaps(this.#namespace, `${REQUEST_LABEL}=true`)).map((cm) => [
        cm.metadata.name,
        cm,
      ]),
    );
    for (const deployment of await this.#api.listAgentDeployments()) {
      await this.#agent(deployment, approvals);
    }
  }

  async #agent(d: DeploymentLike, approvals: Map<string, ConfigMapLike>): Promise<void> {
    const agent = d.metadata.labels?.[AGENT_LABEL];
    const namespace = d.metadata.namespace;
    const a = d.metadata.annotations ?? {};
    const declared = a[ANNOTATIONS.tier];
    const max = a[ANNOTATIONS.maxTier];
    if (agent === undefined || namespace === undefined || !isTier(declared) || !isTier(max)) return;
    const scaled = a[SCALED.tier];
    const current: CloudTier = isTier(scaled) ? scaled : declared;
    const statusName = a[ANNOTATIONS.statusConfigMap] ?? `${agent}-status`;
    const status = (await this.#api.getConfigMap(namespace, statusName))?.data ?? {};
    const base = { agent, namespace };

    // A new request becomes an approval request, or is turned down at once when it cannot be granted.
    const id = status["request.id"];
    if (id !== undefined && REQUEST_ID.test(id) && !approvals.has(approvalName(agent, id))) {
      const tier = status["request.tier"];
      const reason = status["request.reason"] ?? "";
      const refusal = !isTier(tier)
        ? `unknown tier ${JSON.stringify(tier ?? "")}`
        : tierRank(tier) > tierRank(max)
          ? `"${tier}" is above the agent's maxResources "${max}"`
          : tierRank(tier) <= tierRank(current)
            ? `already at "${current}"`
            : undefined;
      const state = refusal === undefined ? "pending" : "rejected";
      const approval: ConfigMapLike = {
        metadata: {
          name: approvalName(agent, id),
          namespace: this.#namespace,
          labels: {
            [REQUEST_LABEL]: "true",
            [AGENT_LABEL]: agent,
            "app.kubernetes.io/managed-by": MANAGED_BY,
          },
        },
        data: {
          agent,
          namespace,
          from: current,
          tier: tier ?? "",
          reason,
          requestedAt: this.#now().toISOString(),
          state,
          ...(refusal !== undefined && { refusal }),
        },
      };
      await this.#api.apply(configMap(approval), FIELD_MANAGER);
      approvals.set(approval.metadata.name, approval);
      this.#audit({
        time: this.#now().toISOString(),
        event: refusal === undefined ? "requested" : "rejected",
        ...base,
        request: approval.metadata.name,
        from: current,
        ...(isTier(tier) && { to: tier }),
        reason: refusal ?? reason,
      });
    }

    // Answers to this agent's pending approvals.
    for (const approval of approvals.values()) {
      const data = approval.data ?? {};
      if (data.agent !== agent || data.namespace !== namespace || data.state !== "pending")
        continue;
      const decision = data.decision;
      if (decision !== "approved" && decision !== "denied") continue;
      const tier = data.tier;
      const by = data.decidedBy ?? "unknown";
      const request = approval.metadata.name;
      if (decision === "denied" || !isTier(tier)) {
        await this.#settle(approval, "denied");
        this.#audit({
          time: this.#now().toISOString(),
          event: "denied",
          ...base,
          request,
          from: current,
          ...(isTier(tier) && { to: tier }),
          by,
          ...(data.decisionReason !== undefined && { reason: data.decisionReason }),
        });
        continue;
      }
      // Checked again: the declaration may have lowered maxResources since the request.
      if (tierRank(tier) > tierRank(max) || tierRank(tier) <= tierRank(current)) {
        await this.#settle(approval, "rejected");
        this.#audit({
          time: this.#now().toISOString(),
          event: "rejected",
          ...base,
          request,
          from: current,
          to: tier,
          by,
          reason:
            tierRank(tier) > tierRank(max)
              ? `"${tier}" is above maxResources "${max}"`
              : `already at "${current}"`,
        });
        continue;
      }
      await this.#api.apply(scaledDeployment(d, tier, this.#now()), FIELD_MANAGER);
      await this.#settle(approval, "applied");
      this.#audit({
        time: this.#now().toISOString(),
        event: "scaled-up",
        ...base,
        request,
        from: current,
        to: tier,
        by,
        reason: data.reason ?? "",
      });
      return;
    }

    // Idle: back to the declared tier, no question asked.
    if (tierRank(current) > tierRank(declared)) {
      const idleSeconds = Number(a[ANNOTATIONS.idleTimeout] ?? "3600");
      const last = latest(status.lastTaskAt, a[SCALED.at]);
      if (last !== undefined && this.#now().getTime() - last >= idleSeconds * 1000) {
        await this.#api.apply(scaledDeployment(d, declared, this.#now()), FIELD_MANAGER);
        this.#audit({
          time: this.#now().toISOString(),
          event: "scaled-down",
          ...base,
          from: current,
          to: declared,
          by: FIELD_MANAGER,
          reason: `no task for ${idleSeconds}s`,
        });
      }
    }
  }

  async #settle(approval: ConfigMapLike, state: "applied" | "denied" | "rejected"): Promise<void> {
    // Server-side apply drops fields a manager stops sending: send all the controller's keys again.
    const data: Record<string, string> = {};
    for (const key of CONTROLLER_KEYS) {
      const value = approval.data?.[key];
      if (value !== undefined) data[key] = value;
    }
    await this.#api.apply(
      configMap({
        metadata: { name: approval.metadata.name, namespace: this.#namespace },
        data: { ...data, state, settledAt: this.#now().toISOString() },
      }),
      FIELD_MANAGER,
    );
  }
}

function latest(...times: (string | undefined)[]): number | undefined {
  const valid = times.map((t) => (t === undefined ? Number.NaN : Date.parse(t)));
  const finite = valid.filter(Number.isFinite);
  return finite.length === 0 ? undefined : Math.max(...finite);
}

function configMap(cm: ConfigMapLike): Record<string, unknown> {
  return { apiVersion: "v1", kind: "ConfigMap", metadata: cm.metadata, data: cm.data ?? {} };
}

/** The fields the controller owns on an agent's Deployment: the tier's resources and placement. */
export function scaledDeployment(
  d: DeploymentLike,
  tier: CloudTier,
  now: Date,
): Record<string, unknown> {
  const placement = tierPlacement(tier);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: d.metadata.name,
      namespace: d.metadata.namespace,
      annotations: { [SCALED.tier]: tier, [SCALED.at]: now.toISOString() },
    },
    spec: {
      template: {
        spec: {
          nodeSelector: placement.nodeSelector,
          tolerations: placement.tolerations,
          containers: [{ name: CONTAINER, resources: tierResources(tier) }],
        },
      },
    },
  };
}

/** A human's answer, written under the approver's own field manager. */
export async function decide(
  api: ClusterApi,
  namespace: string,
  id: string,
  answer: { approve: boolean; by: string; reason?: string },
): Promise<void> {
  const existing = await api.getConfigMap(namespace, id);
  if (existing === undefined || existing.data?.state !== "pending") {
    const { NuketownError, EXIT } = await import("../errors.ts");
    throw new NuketownError(
      existing === undefined
        ? `no scale request ${id} in namespace ${namespace}`
        : `scale request ${id} is ${existing.data?.state ?? "settled"}, not pending`,
      EXIT.invalid,
    );
  }
  await api.apply(
    configMap({
      metadata: { name: id, namespace },
      data: {
        decision: answer.approve ? "approved" : "denied",
        decidedBy: answer.by,
        ...(answer.reason !== undefined && { decisionReason: answer.reason }),
      },
    }),
    APPROVER_MANAGER,
  );
}
