/**
 * ClusterApi on a real cluster, through @kubernetes/client-node: in-cluster
 * credentials when running in a pod, else a kubeconfig.
 */
import {
  ApiException,
  KubeConfig,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
} from "@kubernetes/client-node";
import type { ClusterApi, ConfigMapLike, DeploymentLike } from "./controller.ts";
import { MANAGED_BY } from "./render.ts";

/** A kubeconfig file when given, else the pod's service account when in a cluster, else the default kubeconfig. */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  if (file !== undefined) kc.loadFromFile(file);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

export class KubeClusterApi implements ClusterApi {
  readonly #objects: KubernetesObjectApi;

  constructor(kc: KubeConfig) {
    this.#objects = KubernetesObjectApi.makeApiClient(kc);
  }

  async listAgentDeployments(): Promise<DeploymentLike[]> {
    const list = await this.#objects.list(
      "apps/v1",
      "Deployment",
      undefined,
      undefined,
      undefined,
      undefined,
      undefined,
      `app.kubernetes.io/managed-by=${MANAGED_BY},nuketown.io/agent`,
    );
    return list.items.map(meta);
  }

  async getConfigMap(namespace: string, name: string): Promise<ConfigMapLike | undefined> {
    try {
      const cm = await this.#objects.read({
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name, namespace },
      });
      return {
        metadata: meta(cm).metadata,
        data: (cm as { data?: Record<string, string> }).data ?? {},
      };
    } catch (error) {
      if (error instanceof ApiException && error.code === 404) return undefined;
      throw error;
    }
  }

  async listConfigMaps(namespace: string, labelSelector: string): Promise<ConfigMapLike[]> {
    const list = await this.#objects.list(
      "v1",
      "ConfigMap",
      namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      labelSelector,
    );
    return list.items.map((cm) => ({
      metadata: meta(cm).metadata,
      data: (cm as { data?: Record<string, string> }).data ?? {},
    }));
  }

  async apply(object: Record<string, unknown>, fieldManager: string): Promise<void> {
    await this.#objects.patch(
      object as unknown as KubernetesObject,
      undefined,
      undefined,
      fieldManager,
      true,
      PatchStrategy.ServerSideApply,
    );
  }
}

function meta(o: KubernetesObject): DeploymentLike {
  const m = o.metadata ?? {};
  return {
    metadata: {
      name: m.name ?? "",
      ...(m.namespace !== undefined && { namespace: m.namespace }),
      labels: m.labels ?? {},
      annotations: m.annotations ?? {},
    },
  };
}
