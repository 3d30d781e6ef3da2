/**
 * The town's cloud agents as Kubernetes objects. Pure and deterministic: the
 * same town gives the same objects in the same order, keys sorted when
 * printed (see ./yaml.ts). Secrets appear only as references to a Secret made
 * out of band; no value of one is ever rendered.
 */
import { CHAT_SECRET_FILE, RUNTIME_KEY_FILE } from "../town/rules.ts";
import type { ResolvedAgent, ResolvedTown } from "../town/types.ts";
import { GPU_RESOURCE, TIER_SHAPES, tierPlacement, tierRank, tierResources } from "./tiers.ts";

export type KubeObject = {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly labels?: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
  };
} & Readonly<Record<string, unknown>>;

export const MANAGED_BY = "nuketown";
export const AGENT_LABEL = "nuketown.io/agent";
/** Annotations the controller reads on an agent's Deployment. */
export const ANNOTATIONS = {
  tier: "nuketown.io/tier",
  maxTier: "nuketown.io/max-tier",
  idleTimeout: "nuketown.io/idle-timeout",
  statusConfigMap: "nuketown.io/status-configmap",
} as const;
export const CONTAINER = "agent";

/** Cloud metadata endpoints a narrowed NetworkPolicy keeps: GCE/EC2/Azure IMDS, GKE's, EKS Pod Identity's. */
export const METADATA_CIDRS = ["169.254.169.254/32", "169.254.169.252/32", "169.254.170.23/32"];

const KIND_ORDER = [
  "Namespace",
  "ServiceAccount",
  "Role",
  "RoleBinding",
  "ResourceQuota",
  "LimitRange",
  "NetworkPolicy",
  "PersistentVolumeClaim",
  "Deployment",
];

export function cloudAgents(town: ResolvedTown): readonly ResolvedAgent[] {
  return town.agents.filter((a) => a.cloud.enable);
}

export function agentNamespace(town: ResolvedTown, agent: string): string {
  return town.cloud.namespaces === "shared"
    ? town.cloud.namespace
    : `${town.cloud.namespace}-${agent}`;
}

/** Every object for every cloud agent, sorted by kind, namespace and name. */
export function renderCloud(town: ResolvedTown): KubeObject[] {
  const agents = cloudAgents(town);
  const objects: KubeObject[] = agents.flatMap((agent) => renderAgent(town, agent));
  if (town.cloud.namespaces === "shared" && agents.length > 0) {
    objects.push(...sharedNamespace(town, agents));
  }
  return objects.sort(byKindNamespaceName);
}

function byKindNamespaceName(a: KubeObject, b: KubeObject): number {
  return (
    KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) ||
    compare(a.metadata.namespace ?? "", b.metadata.namespace ?? "") ||
    compare(a.metadata.name, b.metadata.name)
  );
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function townLabels(town: ResolvedTown): Record<string, string> {
  return { "app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": town.name };
}

function agentLabels(town: ResolvedTown, agent: ResolvedAgent): Record<string, string> {
  return {
    ...townLabels(town),
    "app.kubernetes.io/name": "nuketown-agent",
    "app.kubernetes.io/instance": agent.name,
    [AGENT_LABEL]: agent.name,
  };
}

/** A DNS-1123 label from a home-relative path: `.config/claude` → `config-claude`. */
function slug(path: string): string {
  return path
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "");
}

/** FNV-1a, 6 hex digits: tells apart paths whose slugs collide. */
function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0").slice(0, 6);
}

/** One claim name per persisted path, stable, unique within the agent, at most 63 characters. */
export function volumeNames(agent: ResolvedAgent): Map<string, string> {
  const slugs = agent.cloud.storage.map((s) => slug(s.path) || "home");
  const names = new Map<string, string>();
  agent.cloud.storage.forEach((s, i) => {
    const base = slugs[i] ?? "home";
    const clash = slugs.indexOf(base) !== slugs.lastIndexOf(base);
    const tail = clash ? `-${shortHash(s.path)}` : "";
    const name = `${agent.name}-${base}`.slice(0, 63 - tail.length).replace(/-+$/, "");
    names.set(s.path, `${name}${tail}`);
  });
  return names;
}

/** Keys of the agent's Secret and where each lands in the pod, relative to the secrets mount. */
export function secretItems(agent: ResolvedAgent): { key: string; path: string }[] {
  const items: { key: string; path: string }[] = [];
  if (agent.secrets.sshKey) items.push({ key: "ssh-key", path: "ssh-key" });
  if (agent.secrets.gpgKey) items.push({ key: "gpg-key", path: "gpg-key" });
  if (agent.runtime.apiKey) items.push({ key: "runtime-key", path: RUNTIME_KEY_FILE });
  if (agent.chat.matrix || agent.chat.xmpp)
    items.push({ key: "chat-secret", path: CHAT_SECRET_FILE });
  for (const extra of agent.secrets.extra) items.push({ key: extra.name, path: extra.target });
  return items.sort((a, b) => compare(a.key, b.key));
}

export function statusConfigMapName(agent: string): string {
  return `${agent}-status`;
}

export const SECRETS_MOUNT = "/run/nuketown/secrets";

function renderAgent(town: ResolvedTown, agent: ResolvedAgent): KubeObject[] {
  const namespace = agentNamespace(town, agent.name);
  const labels = agentLabels(town, agent);
  const meta = (name: string) => ({ name, namespace, labels });
  const { cloud } = agent;
  const objects: KubeObject[] = [];

  if (town.cloud.namespaces === "per-agent") {
    objects.push({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: {
        name: namespace,
        labels: {
          ...labels,
          "pod-security.kubernetes.io/enforce": "restricted",
          "pod-security.kubernetes.io/enforce-version": "latest",
        },
      },
    });
    objects.push(...quotaAndLimits(namespace, labels, [agent], agent.name));
  }

  objects.push({
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { ...meta(agent.name), ...serviceAccountAnnotations(agent) },
    // The agent's own token: it writes its status ConfigMap (idle clock, scale requests) and nothing else.
    automountServiceAccountToken: true,
  });
  const status = statusConfigMapName(agent.name);
  objects.push({
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "Role",
    metadata: meta(`${agent.name}-status`),
    rules: [
      { apiGroups: [""], resources: ["configmaps"], verbs: ["create"] },
      {
        apiGroups: [""],
        resources: ["configmaps"],
        resourceNames: [status],
        verbs: ["get", "patch", "update"],
      },
    ],
  });
  objects.push({
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "RoleBinding",
    metadata: meta(`${agent.name}-status`),
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: `${agent.name}-status` },
    subjects: [{ kind: "ServiceAccount", name: agent.name, namespace }],
  });

  objects.push(networkPolicy(agent, meta(agent.name)));

  const claims = volumeNames(agent);
  for (const s of cloud.storage) {
    objects.push({
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: {
        ...meta(claims.get(s.path) ?? ""),
        annotations: { "nuketown.io/path": s.path },
      },
      spec: {
        accessModes: ["ReadWriteOnce"],
        resources: { requests: { storage: s.size } },
        ...(town.cloud.storageClass !== undefined && {
          storageClassName: town.cloud.storageClass,
        }),
      },
    });
  }

  objects.push(deployment(town, agent, namespace, labels, claims));
  return objects;
}

function serviceAccountAnnotations(agent: ResolvedAgent) {
  const id = agent.cloud.identity;
  const annotations: Record<string, string> = {};
  if (id.gcpServiceAccount) annotations["iam.gke.io/gcp-service-account"] = id.gcpServiceAccount;
  if (id.awsRoleArn) {
    // Pod Identity binds the role through an association made with the EKS API; the
    // annotation then only records which role that is.
    annotations[
      id.awsPodIdentity ? "nuketown.io/eks-pod-identity-role-arn" : "eks.amazonaws.com/role-arn"
    ] = id.awsRoleArn;
    if (!id.awsPodIdentity) annotations["eks.amazonaws.com/token-expiration"] = "3600";
  }
  if (id.azureClientId) annotations["azure.workload.identity/client-id"] = id.azureClientId;
  return Object.keys(annotations).length > 0 ? { annotations } : {};
}

function quotaAndLimits(
  namespace: string,
  labels: Record<string, string>,
  agents: readonly ResolvedAgent[],
  name: string,
): KubeObject[] {
  let cpu = 0;
  let memoryGi = 0;
  let scratchGi = 0;
  let gpus = 0;
  let storageGi = 0;
  let claims = 0;
  let largest = agents[0]?.cloud.scaling.maxResources ?? "small";
  for (const agent of agents) {
    // Room for the largest tier the agent may be scaled to, so an approved scale-up is never stuck on quota.
    const max = agent.cloud.scaling.maxResources;
    const shape = TIER_SHAPES[max];
    cpu += shape.cpu;
    memoryGi += shape.memoryGi;
    scratchGi += shape.scratchGi;
    gpus += shape.gpus;
    if (tierRank(max) > tierRank(largest)) largest = max;
    for (const s of agent.cloud.storage) {
      storageGi += toGi(s.size);
      claims++;
    }
  }
  const hard: Record<string, string> = {
    "limits.cpu": String(cpu),
    "limits.memory": `${memoryGi}Gi`,
    "limits.ephemeral-storage": `${scratchGi}Gi`,
    "requests.cpu": String(cpu),
    "requests.memory": `${memoryGi}Gi`,
    "requests.ephemeral-storage": `${scratchGi}Gi`,
    "requests.storage": `${formatGi(storageGi)}Gi`,
    persistentvolumeclaims: String(claims),
    // Recreate: the old pod may still be terminating while the new one starts.
    pods: String(agents.length * 2),
    services: "0",
    "services.loadbalancers": "0",
    "services.nodeports": "0",
    // kube-root-ca.crt and the status ConfigMaps, with a little room.
    configmaps: String(agents.length + 3),
  };
  if (gpus > 0) hard[`requests.${GPU_RESOURCE}`] = String(gpus);
  const max = tierResources(largest).limits;
  return [
    {
      apiVersion: "v1",
      kind: "ResourceQuota",
      metadata: { name, namespace, labels },
      spec: { hard },
    },
    {
      apiVersion: "v1",
      kind: "LimitRange",
      metadata: { name, namespace, labels },
      spec: {
        limits: [
          { type: "Container", max: { ...max } },
          { type: "PersistentVolumeClaim", max: { storage: `${formatGi(maxClaimGi(agents))}Gi` } },
        ],
      },
    },
  ];
}

function maxClaimGi(agents: readonly ResolvedAgent[]): number {
  let max = 0;
  for (const a of agents) for (const s of a.cloud.storage) max = Math.max(max, toGi(s.size));
  return max;
}

const UNIT_GI: Record<string, number> = { Ki: 1 / 1024 ** 2, Mi: 1 / 1024, Gi: 1, Ti: 1024 };
function toGi(size: string): number {
  const m = /^([0-9.]+)(Ki|Mi|Gi|Ti)$/.exec(size);
  return m ? Number(m[1]) * (UNIT_GI[m[2] ?? "Gi"] ?? 1) : 0;
}
const formatGi = (gi: number) => String(Math.ceil(gi * 1000) / 1000);

function sharedNamespace(town: ResolvedTown, agents: readonly ResolvedAgent[]): KubeObject[] {
  const namespace = town.cloud.namespace;
  const labels = townLabels(town);
  return [
    {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: {
        name: namespace,
        labels: {
          ...labels,
          "pod-security.kubernetes.io/enforce": "restricted",
          "pod-security.kubernetes.io/enforce-version": "latest",
        },
      },
    },
    ...quotaAndLimits(namespace, labels, agents, "nuketown"),
  ];
}

function networkPolicy(agent: ResolvedAgent, metadata: KubeObject["metadata"]): KubeObject {
  const egress = agent.cloud.egress;
  const dns = {
    ports: [
      { port: 53, protocol: "UDP" },
      { port: 53, protocol: "TCP" },
    ],
    to: [{ namespaceSelector: {} }],
  };
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata,
    spec: {
      podSelector: { matchLabels: { [AGENT_LABEL]: agent.name } },
      policyTypes: ["Ingress", "Egress"],
      // No ingress rule: nothing may connect to the agent.
      ingress: [],
      egress:
        egress === undefined
          ? [{}]
          : [
              dns,
              {
                to: [...new Set([...METADATA_CIDRS, ...egress])]
                  .sort()
                  .map((cidr) => ({ ipBlock: { cidr } })),
              },
            ],
    },
  };
}

function deployment(
  town: ResolvedTown,
  agent: ResolvedAgent,
  namespace: string,
  labels: Record<string, string>,
  claims: Map<string, string>,
): KubeObject {
  const { cloud } = agent;
  const selector = { [AGENT_LABEL]: agent.name };
  const podLabels: Record<string, string> = { ...labels };
  if (cloud.identity.azureClientId) podLabels["azure.workload.identity/use"] = "true";
  const shape = TIER_SHAPES[cloud.resources];
  const secret = `${agent.name}-${town.cloud.secretName}`;
  const items = secretItems(agent);

  const volumes: Record<string, unknown>[] = [
    { name: "home", emptyDir: { sizeLimit: `${shape.scratchGi}Gi` } },
    { name: "tmp", emptyDir: { sizeLimit: "1Gi" } },
  ];
  const mounts: Record<string, unknown>[] = [
    { name: "home", mountPath: agent.home },
    { name: "tmp", mountPath: "/tmp" },
  ];
  for (const s of cloud.storage) {
    const claim = claims.get(s.path) ?? "";
    volumes.push({ name: claim, persistentVolumeClaim: { claimName: claim } });
    mounts.push({ name: claim, mountPath: `${agent.home}/${s.path}` });
  }
  if (items.length > 0) {
    volumes.push({
      name: "secrets",
      secret: { secretName: secret, items, defaultMode: 0o440 },
    });
    mounts.push({ name: "secrets", mountPath: SECRETS_MOUNT, readOnly: true });
  }

  const env = [
    { name: "HOME", value: agent.home },
    { name: "NUKETOWN_AGENT", value: agent.name },
    { name: "NUKETOWN_SECRETS", value: SECRETS_MOUNT },
    { name: "NUKETOWN_STATUS_CONFIGMAP", value: statusConfigMapName(agent.name) },
    { name: "NUKETOWN_TOWN", value: town.name },
    { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
  ];
  const placement = tierPlacement(cloud.resources);

  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: agent.name,
      namespace,
      labels,
      annotations: {
        [ANNOTATIONS.tier]: cloud.resources,
        [ANNOTATIONS.maxTier]: cloud.scaling.maxResources,
        [ANNOTATIONS.idleTimeout]: String(cloud.scaling.idleTimeout),
        [ANNOTATIONS.statusConfigMap]: statusConfigMapName(agent.name),
      },
    },
    spec: {
      replicas: 1,
      // Never two pods on one home's volumes: the old pod is gone before the new one starts.
      strategy: { type: "Recreate" },
      revisionHistoryLimit: 3,
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: podLabels },
        spec: {
          serviceAccountName: agent.name,
          automountServiceAccountToken: true,
          enableServiceLinks: false,
          hostname: agent.name,
          securityContext: {
            runAsUser: agent.uid,
            runAsGroup: agent.gid,
            fsGroup: agent.gid,
            fsGroupChangePolicy: "OnRootMismatch",
            runAsNonRoot: true,
            seccompProfile: { type: "RuntimeDefault" },
          },
          nodeSelector: placement.nodeSelector,
          ...(placement.tolerations.length > 0 && { tolerations: placement.tolerations }),
          terminationGracePeriodSeconds: 60,
          containers: [
            {
              name: CONTAINER,
              image: cloud.image ?? "",
              imagePullPolicy: "IfNotPresent",
              workingDir: agent.home,
              env,
              resources: tierResources(cloud.resources),
              securityContext: {
                allowPrivilegeEscalation: false,
                capabilities: { drop: ["ALL"] },
                privileged: false,
                readOnlyRootFilesystem: true,
                runAsNonRoot: true,
              },
              volumeMounts: mounts,
            },
          ],
          volumes,
        },
      },
    },
  };
}
