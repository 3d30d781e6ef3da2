/**
 * `nuketown cloud render | generate | controller`: the town's cloud agents as
 * Kubernetes manifests, the Argo CD plugin's generate step, and the scaling
 * controller. Thin: the objects come from src/cloud/.
 */
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { EXIT, NuketownError, RefusedError } from "../errors.ts";
import { plural, type Streams } from "../output.ts";
import type { DeclarationFormat } from "../town/parse.ts";
import { writeWarnings } from "./check.ts";

export interface CloudRenderOptions extends Streams {
  readonly config: string;
  readonly cwd: string;
  /** Write one file per object under this directory (replaced) instead of printing. */
  readonly outDir?: string;
  readonly format?: DeclarationFormat;
  /** Fills defaults that depend on a host name (the town's name). @default "cloud" */
  readonly hostname?: string;
}

/** The town's cloud manifests, validated; throws RefusedError when an object fails validation. */
async function manifests(opts: CloudRenderOptions) {
  const [{ loadTown }, { renderCloud }, { validateObjects, formatObjectProblem }] =
    await Promise.all([
      import("../town/load.ts"),
      import("../cloud/render.ts"),
      import("../cloud/validate.ts"),
    ]);
  // The cluster is no host: a default that depends on the machine would make two renders differ.
  const { town, warnings } = await loadTown(opts.config, {
    ...opts,
    hostname: opts.hostname ?? "cloud",
  });
  writeWarnings(opts.err, warnings);
  const objects = renderCloud(town);
  const problems = validateObjects(objects);
  if (problems.length > 0) {
    throw new RefusedError(
      `rendered objects fail the Kubernetes schemas (a bug in nuketown: please report it):\n${problems
        .map((p) => `  ${formatObjectProblem(p)}`)
        .join("\n")}`,
    );
  }
  return { town, objects };
}

/** `nuketown cloud render`: print the manifests (or write them under --out). */
export async function cloudRender(opts: CloudRenderOptions): Promise<number> {
  const { town, objects } = await manifests(opts);
  const { toYaml } = await import("../cloud/yaml.ts");
  if (opts.outDir === undefined) {
    opts.out.write(toYaml(objects));
    return EXIT.ok;
  }
  const target = path.resolve(opts.cwd, opts.outDir);
  await rm(target, { recursive: true, force: true });
  for (const object of objects) {
    const dir = path.join(target, object.metadata.namespace ?? "_cluster");
    await mkdir(dir, { recursive: true });
    const file = `${object.kind.toLowerCase()}-${object.metadata.name}.yaml`;
    await writeFile(path.join(dir, file), toYaml([object]));
  }
  opts.err.write(
    `rendered ${plural(objects.length, "object")} for ${plural(
      new Set(objects.map((o) => o.metadata.labels?.["nuketown.io/agent"]).filter(Boolean)).size,
      "cloud agent",
    )} of town ${town.name} into ${target}\n`,
  );
  return EXIT.ok;
}

/** The town files `generate` looks for when no parameter names one, in this order. */
export const TOWN_FILES = ["town.toml", "town.yaml", "town.json", "town.nix.json"];

export interface CloudGenerateOptions extends Streams {
  readonly cwd: string;
  readonly env: Readonly<Record<string, string | undefined>>;
}

/**
 * The Argo CD plugin's generate command: manifests on stdout, everything else
 * on stderr. The town file comes from the plugin parameter `town`
 * (PARAM_TOWN), else ARGOCD_ENV_NUKETOWN_TOWN, else the first of TOWN_FILES
 * in the application's path; ARGOCD_ENV_NUKETOWN_HOSTNAME fills host-derived
 * defaults.
 */
export async function cloudGenerate(opts: CloudGenerateOptions): Promise<number> {
  const { env } = opts;
  const named = env.PARAM_TOWN || env.ARGOCD_ENV_NUKETOWN_TOWN;
  const config = named ?? TOWN_FILES.find((f) => existsSync(path.join(opts.cwd, f)));
  if (config === undefined) {
    throw new NuketownError(
      `no town file in ${opts.cwd} (looked for ${TOWN_FILES.join(", ")}): set the plugin parameter "town" or ARGOCD_ENV_NUKETOWN_TOWN`,
      EXIT.invalid,
    );
  }
  const hostname = env.PARAM_HOSTNAME || env.ARGOCD_ENV_NUKETOWN_HOSTNAME || undefined;
  opts.err.write(
    `nuketown: generating ${env.ARGOCD_APP_NAME ? `${env.ARGOCD_APP_NAME} ` : ""}from ${config}\n`,
  );
  return cloudRender({
    config,
    cwd: opts.cwd,
    out: opts.out,
    err: opts.err,
    ...(hostname !== undefined && { hostname }),
  });
}

export interface CloudControllerOptions extends Streams {
  /** A kubeconfig file; default: in-cluster, else $KUBECONFIG / ~/.kube/config. */
  readonly kubeconfig?: string;
  /** Namespace of the controller's approval ConfigMaps. @default "nuketown-system" */
  readonly namespace?: string;
  /** Seconds between passes. @default 15 */
  readonly interval?: number;
  /** One pass, then exit (for cron jobs and tests). */
  readonly once?: boolean;
  /** Append audit records (JSON lines) here as well as to stderr. */
  readonly auditFile?: string;
}

/** `nuketown cloud controller`: scale requests become approvals; idle agents go back down. */
export async function cloudController(opts: CloudControllerOptions): Promise<number> {
  const [{ KubeClusterApi, loadKubeConfig }, { Controller, jsonLinesAudit }] = await Promise.all([
    import("../cloud/kube.ts"),
    import("../cloud/controller.ts"),
  ]);
  const api = new KubeClusterApi(loadKubeConfig(opts.kubeconfig));
  const controller = new Controller({
    api,
    namespace: opts.namespace ?? "nuketown-system",
    audit: jsonLinesAudit(opts.err, opts.auditFile),
  });
  if (opts.once) {
    await controller.pass();
    return EXIT.ok;
  }
  const interval = (opts.interval ?? 15) * 1000;
  const stop = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => stop.abort());
  opts.err.write(`nuketown cloud controller: watching every ${interval / 1000}s\n`);
  while (!stop.signal.aborted) {
    try {
      await controller.pass();
    } catch (error) {
      opts.err.write(`nuketown cloud controller: pass failed: ${(error as Error).message}\n`);
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, interval);
      stop.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve(undefined);
      });
    });
  }
  return EXIT.ok;
}

/** `nuketown cloud approve|deny`: a human's answer to a scale request. */
export interface CloudDecideOptions extends Streams {
  readonly id: string;
  readonly approve: boolean;
  readonly by?: string;
  readonly reason?: string;
  readonly kubeconfig?: string;
  readonly namespace?: string;
}

export async function cloudDecide(opts: CloudDecideOptions): Promise<number> {
  const [{ KubeClusterApi, loadKubeConfig }, { decide }] = await Promise.all([
    import("../cloud/kube.ts"),
    import("../cloud/controller.ts"),
  ]);
  const api = new KubeClusterApi(loadKubeConfig(opts.kubeconfig));
  const by = opts.by ?? process.env.SUDO_USER ?? process.env.USER ?? "unknown";
  await decide(api, opts.namespace ?? "nuketown-system", opts.id, {
    approve: opts.approve,
    by,
    ...(opts.reason !== undefined && { reason: opts.reason }),
  });
  opts.out.write(`${opts.approve ? "approved" : "denied"} ${opts.id}\n`);
  return EXIT.ok;
}
