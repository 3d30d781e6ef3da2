/**
 * The cloud renderer, the Argo CD plugin's generate step and the scaling
 * controller against a real kube-apiserver (with etcd) on 127.0.0.1, built by
 * scripts/install-kube.sh. The controller acts with its own service account's
 * RBAC from deploy/controller/controller.yaml, the agent with its rendered Role.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import { type AuditRecord, Controller, decide, FIELD_MANAGER } from "../../src/cloud/controller.ts";
import { KubeClusterApi, loadKubeConfig } from "../../src/cloud/kube.ts";
import { renderCloud } from "../../src/cloud/render.ts";
import { parseDeclaration } from "../../src/town/parse.ts";
import { REPO_ROOT, resolveOrThrow } from "../support/fixtures.ts";
import {
  applyStrict,
  type Cluster,
  kubeAvailable,
  objectPath,
  startCluster,
} from "../support/kube.ts";

const EXAMPLE = path.join(REPO_ROOT, "examples", "cloud", "town.toml");
const exampleObjects = () =>
  renderCloud(resolveOrThrow(parseDeclaration(readFileSync(EXAMPLE, "utf8"), "toml", EXAMPLE)));

const skip = kubeAvailable()
  ? false
  : "kube-apiserver and etcd are not built: run scripts/install-kube.sh";

describe("cloud on a real kube-apiserver", { skip }, () => {
  let cluster: Cluster;
  before(async () => {
    cluster = await startCluster({
      controller: [
        "system:serviceaccount:nuketown-system:nuketown-cloud-controller",
        ["system:serviceaccounts", "system:serviceaccounts:nuketown-system"],
      ],
      ada: ["system:serviceaccount:nuketown-ada:ada", ["system:serviceaccounts"]],
    });
  });
  after(async () => {
    await cluster?.stop();
  });

  it("applies every rendered object with server-side apply and fieldValidation=Strict", async () => {
    for (const object of exampleObjects()) {
      const res = await applyStrict(cluster, "admin", object, "argocd-controller");
      assert.ok(
        [200, 201].includes(res.status),
        `${objectPath(object)}: ${JSON.stringify(res.body)}`,
      );
    }
    const d = await cluster.request(
      "admin",
      "GET",
      "/apis/apps/v1/namespaces/nuketown-ada/deployments/ada",
    );
    assert.equal(d.body.spec.template.spec.securityContext.runAsUser, 1100);
  });

  it("rejects a deliberately broken object (an unknown field) under fieldValidation=Strict", async () => {
    const broken = structuredClone(exampleObjects().find((o) => o.kind === "Deployment")) as any;
    broken.spec.template.spec.containers[0].resourcez = {};
    const res = await applyStrict(cluster, "admin", broken);
    assert.ok(res.status >= 400, `expected a rejection, got ${res.status}`);
    assert.match(JSON.stringify(res.body), /resourcez/);
  });

  it("applies the plugin's generate output cleanly (stdout manifests only, logs on stderr)", async () => {
    const run = spawnSync(
      process.execPath,
      [path.join(REPO_ROOT, "src", "cli.ts"), "cloud", "generate"],
      {
        cwd: path.dirname(EXAMPLE),
        env: {
          PATH: process.env.PATH,
          ARGOCD_APP_NAME: "signi-agents",
          ARGOCD_ENV_NUKETOWN_HOSTNAME: "signi",
        },
        encoding: "utf8",
      },
    );
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stderr, /generating signi-agents from town\.toml/);
    const docs = parseAllDocuments(run.stdout).map((d) => d.toJSON());
    assert.ok(docs.length > 20);
    for (const object of docs) {
      const res = await applyStrict(cluster, "admin", object, "argocd-controller");
      assert.equal(res.status, 200, `${objectPath(object)}: ${JSON.stringify(res.body)}`);
    }
  });

  it("the controller scales only on a human's yes, never above max, and idle agents go back down", async () => {
    const manifest = readFileSync(
      path.join(REPO_ROOT, "deploy", "controller", "controller.yaml"),
      "utf8",
    );
    for (const doc of parseAllDocuments(manifest)) {
      const res = await applyStrict(cluster, "admin", doc.toJSON());
      assert.ok(res.status < 300, JSON.stringify(res.body));
    }
    // The agent asks through its own, rendered RBAC.
    const status = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "ada-status", namespace: "nuketown-ada" },
      data: { "request.id": "r1", "request.tier": "large", "request.reason": "build thrashing" },
    };
    const asked = await applyStrict(cluster, "ada", status, "ada");
    assert.equal(asked.status, 201, JSON.stringify(asked.body));
    // …and may not touch its Deployment.
    const selfScale = await cluster.request(
      "ada",
      "GET",
      "/apis/apps/v1/namespaces/nuketown-ada/deployments/ada",
    );
    assert.equal(selfScale.status, 403);

    const records: AuditRecord[] = [];
    let now = new Date();
    const controllerApi = new KubeClusterApi(loadKubeConfig(cluster.kubeconfig("controller")));
    const controller = new Controller({
      api: controllerApi,
      namespace: "nuketown-system",
      audit: (r) => records.push(r),
      now: () => now,
    });
    const limits = async () =>
      (
        await cluster.request(
          "admin",
          "GET",
          "/apis/apps/v1/namespaces/nuketown-ada/deployments/ada",
        )
      ).body.spec.template.spec.containers[0].resources.limits;

    await controller.pass();
    await controller.pass();
    assert.equal((await limits()).cpu, "2", "an unapproved request changes nothing");
    const pending = await cluster.request(
      "admin",
      "GET",
      "/api/v1/namespaces/nuketown-system/configmaps/scale-ada-r1",
    );
    assert.equal(pending.body.data.state, "pending");

    const adminApi = new KubeClusterApi(loadKubeConfig(cluster.kubeconfig("admin")));
    await decide(adminApi, "nuketown-system", "scale-ada-r1", { approve: true, by: "josh" });
    await controller.pass();
    const scaled = await cluster.request(
      "admin",
      "GET",
      "/apis/apps/v1/namespaces/nuketown-ada/deployments/ada",
    );
    assert.deepEqual(scaled.body.spec.template.spec.containers[0].resources.limits, {
      cpu: "4",
      "ephemeral-storage": "50Gi",
      memory: "8Gi",
    });
    assert.equal(scaled.body.spec.template.spec.nodeSelector["nuketown.io/tier"], "large");
    assert.ok(scaled.body.metadata.managedFields.some((f: any) => f.manager === FIELD_MANAGER));
    // The image and everything else Argo CD applied are still there.
    assert.equal(
      scaled.body.spec.template.spec.containers[0].image,
      "ghcr.io/example/nuketown-agent:0.1.0",
    );

    // A request above maxResources ("large") is turned down and changes nothing.
    await applyStrict(
      cluster,
      "ada",
      { ...status, data: { "request.id": "r2", "request.tier": "gpu" } },
      "ada",
    );
    await controller.pass();
    assert.equal((await limits()).cpu, "4");

    // Idle past the timeout (3600 s): back to "standard", nobody asked.
    now = new Date(now.getTime() + 3601_000);
    await controller.pass();
    assert.equal((await limits()).cpu, "2");
    assert.deepEqual(
      records.map((r) => r.event),
      ["requested", "scaled-up", "rejected", "scaled-down"],
    );
  });
});
