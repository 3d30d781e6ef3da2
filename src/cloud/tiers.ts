/**
 * Resource tiers: what a tier name means to Kubernetes. Operators label node
 * pools `nuketown.io/tier=<tier>`; the agent never names an instance type.
 */
import type { CloudTier } from "../town/types.ts";

export const TIERS: readonly CloudTier[] = ["small", "standard", "large", "gpu"];
export { tierRank } from "../town/rules.ts";
export const isTier = (value: unknown): value is CloudTier =>
  typeof value === "string" && (TIERS as readonly string[]).includes(value);

export const GPU_RESOURCE = "nvidia.com/gpu";
export const TIER_LABEL = "nuketown.io/tier";

export interface TierShape {
  /** Whole CPUs, requested and limited alike (Guaranteed QoS: no noisy neighbours). */
  readonly cpu: number;
  /** GiB of memory, requested and limited alike. */
  readonly memoryGi: number;
  /** GiB of node disk for the home (an emptyDir) and /tmp. */
  readonly scratchGi: number;
  readonly gpus: number;
}

export const TIER_SHAPES: Readonly<Record<CloudTier, TierShape>> = {
  small: { cpu: 1, memoryGi: 2, scratchGi: 10, gpus: 0 },
  standard: { cpu: 2, memoryGi: 4, scratchGi: 20, gpus: 0 },
  large: { cpu: 4, memoryGi: 8, scratchGi: 50, gpus: 0 },
  gpu: { cpu: 8, memoryGi: 32, scratchGi: 100, gpus: 1 },
};

export interface ContainerResources {
  readonly requests: Readonly<Record<string, string>>;
  readonly limits: Readonly<Record<string, string>>;
}

/** The container's requests and limits for a tier. */
export function tierResources(tier: CloudTier): ContainerResources {
  const s = TIER_SHAPES[tier];
  const base: Record<string, string> = {
    cpu: String(s.cpu),
    memory: `${s.memoryGi}Gi`,
    "ephemeral-storage": `${s.scratchGi}Gi`,
  };
  if (s.gpus > 0) base[GPU_RESOURCE] = String(s.gpus);
  return { requests: { ...base }, limits: { ...base } };
}

/** What the pod needs besides resources to land on the tier's node pool. */
export function tierPlacement(tier: CloudTier) {
  return {
    nodeSelector: { [TIER_LABEL]: tier },
    tolerations:
      TIER_SHAPES[tier].gpus > 0
        ? [{ effect: "NoSchedule", key: GPU_RESOURCE, operator: "Exists" }]
        : [],
  };
}
