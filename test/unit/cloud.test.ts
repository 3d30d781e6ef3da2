import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { parseAllDocuments } from "yaml";
import {
  type Audit,
  type AuditRecord,
  type ClusterApi,
  type ConfigMapLike,
  Controller,
  type DeploymentLike,
  decide,
  FIELD_MANAGER,
} from "../../src/cloud/controller.ts";
import { renderCloud, volumeNames } from "../../src/cloud/render.ts";
import { unknownFields, validateObjects } from "../../src/cloud/validate.ts";
import { toYaml } from "../../src/cloud/yaml.ts";
import { parseDeclaration } from "../../src/town/parse.ts";
import { resolveTown } from "../../src/town/resolve.ts";
import { FIXED_CONTEXT, REPO_ROOT, resolveOrThrow } from "../support/fixtures.ts";
import { assertGolden } from "../support/golden.ts";

type Decl = Record<string, any>;

function cloudDeclaration(): Decl {
  const file = path.join(REPO_ROOT, "examples", "cloud", "town.toml");
  return parseDeclaration(readFileSync(file, "utf8"), "toml", file) as Decl;
}
const cloudTown = () => resolveOrThrow(cloudDeclaration());

describe("nuketown cloud render", () => {
  it("GIVEN the example cloud town THEN its manifests match the golden file", () => {
    assertGolden("cloud/example-town.yaml", toYaml(renderCloud(cloudTown())));
  });

  it("every rendered object passes the official schemas and the unknown-field check", () => {
    const objects = renderCloud(cloudTown());
    assert.deepEqual(validateObjects(objects), []);
    const shared = cloudDeclaration();
    shared.cloud.namespaces = "shared";
    assert.deepEqual(validateObjects(renderCloud(resolveOrThrow(shared))), []);
  });

  it("is deterministic and sorted: kind, then namespace, then name", () => {
    const a = toYaml(renderCloud(cloudTown()));
    const decl = cloudDeclaration();
    // Declaration order does not matter.
    decl.agents = Object.fromEntries(Object.entries(decl.agents).reverse());
    assert.equal(toYaml(renderCloud(resolveOrThrow(decl))), a);
    const kinds = parseAllDocuments(a).map((d) => (d.toJSON() as { kind: string }).kind);
    assert.deepEqual(kinds.slice(0, 3), ["Namespace", "Namespace", "Namespace"]);
    assert.equal(kinds.at(-1), "Deployment");
  });

  it("renders only agents with cloud.enable, each in its own namespace by default", () => {
    const objects = renderCloud(cloudTown());
    const agents = new Set(objects.map((o) => o.metadata.labels?.["nuketown.io/agent"]));
    assert.deepEqual([...agents].sort(), ["ada", "mel", "vox"]);
    const namespaces = objects.filter((o) => o.kind === "Namespace").map((o) => o.metadata.name);
    assert.deepEqual(namespaces, ["nuketown-ada", "nuketown-mel", "nuketown-vox"]);
  });

  it("runs the pod as the agent, non-root, read-only root, no escalation, Recreate, 1 replica", () => {
    const d = renderCloud(cloudTown()).find(
      (o) => o.kind === "Deployment" && o.metadata.name === "ada",
    ) as any;
    assert.equal(d.spec.replicas, 1);
    assert.equal(d.spec.strategy.type, "Recreate");
    const pod = d.spec.template.spec;
    assert.deepEqual(
      [
        pod.securityContext.runAsUser,
        pod.securityContext.runAsGroup,
        pod.securityContext.runAsNonRoot,
      ],
      [1100, 1100, true],
    );
    const [c] = pod.containers;
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.resources.limits, { cpu: "2", "ephemeral-storage": "20Gi", memory: "4Gi" });
    assert.deepEqual(pod.nodeSelector, { "nuketown.io/tier": "standard" });
    assert.ok(pod.volumes.some((v: any) => v.name === "home" && v.emptyDir));
  });

  it("gives the gpu tier the GPU resource and toleration, AKS its pod label", () => {
    const d = renderCloud(cloudTown()).find(
      (o) => o.kind === "Deployment" && o.metadata.name === "mel",
    ) as any;
    const pod = d.spec.template.spec;
    assert.equal(pod.containers[0].resources.limits["nvidia.com/gpu"], "1");
    assert.deepEqual(pod.tolerations, [
      { effect: "NoSchedule", key: "nvidia.com/gpu", operator: "Exists" },
    ]);
    assert.equal(d.spec.template.metadata.labels["azure.workload.identity/use"], "true");
  });

  it("never renders a secret's value: only the Secret's name and keys", () => {
    const yaml = toYaml(renderCloud(cloudTown()));
    assert.doesNotMatch(yaml, /agents\.yaml|sops|BEGIN|PRIVATE/);
    const d = renderCloud(cloudTown()).find(
      (o) => o.kind === "Deployment" && o.metadata.name === "ada",
    ) as any;
    const secret = d.spec.template.spec.volumes.find((v: any) => v.name === "secrets").secret;
    assert.equal(secret.secretName, "ada-secrets");
    assert.deepEqual(
      secret.items.map((i: any) => i.key),
      ["gpg-key", "ssh-key"],
    );
  });

  it("narrowed egress keeps DNS and the metadata endpoints; ingress is always denied", () => {
    const objects = renderCloud(cloudTown());
    const vox = objects.find((o) => o.kind === "NetworkPolicy" && o.metadata.name === "vox") as any;
    assert.deepEqual(vox.spec.ingress, []);
    assert.equal(vox.spec.egress[0].ports[0].port, 53);
    const cidrs = vox.spec.egress[1].to.map((t: any) => t.ipBlock.cidr);
    assert.ok(cidrs.includes("169.254.169.254/32") && cidrs.includes("203.0.113.0/24"));
    const ada = objects.find((o) => o.kind === "NetworkPolicy" && o.metadata.name === "ada") as any;
    assert.deepEqual(ada.spec.egress, [{}]);
  });

  it("names volumes uniquely even when two paths give the same slug", () => {
    const decl = cloudDeclaration();
    decl.agents.ada.persist = ["a.b", "a-b"];
    decl.agents.ada.cloud.storage = {};
    const names = [...volumeNames(resolveOrThrow(decl).agents[0] as any).values()];
    assert.equal(new Set(names).size, names.length);
  });
});

describe("the YAML printer", () => {
  it("reads back as the same objects, tricky strings included", () => {
    const objects = JSON.parse(JSON.stringify(renderCloud(cloudTown())));
    assert.deepEqual(
      parseAllDocuments(toYaml(objects)).map((d) => d.toJSON()),
      objects,
    );
    const tricky = [
      {
        s: ["yes", "No", "1.0", "0x10", "a: b", "#x", "- x", "", " lead", "trail ", "null", "~"],
        t: ["@at", "a #b", "x\ny", "é", "*", "&a", "!t", "%p", "{", "[", "'", '"', "a:", ":a"],
        u: ["8080", "1e3", "..", ".5", "-", "2026-01-01", "nix:0/nix/store/x", "a:b", "\u0007"],
        n: {},
        a: [],
        z: [[1, []], {}, [{ b: 1, a: [2] }]],
        k: { "weird key: x": 1, "1": 2, "": 3 },
      },
    ];
    assert.deepEqual(
      parseAllDocuments(toYaml(tricky)).map((d) => d.toJSON()),
      tricky,
    );
  });
});

describe("the offline validation", () => {
  it("refuses a wrong type and an unknown field, with the object and the path", () => {
    const d = structuredClone(renderCloud(cloudTown()).find((o) => o.kind === "Deployment")) as any;
    d.spec.replicas = "one";
    d.spec.template.spec.containers[0].securityContext.privileged2 = true;
    const problems = validateObjects([d]);
    assert.ok(problems.some((p) => p.path === "/spec/replicas"));
    assert.ok(
      problems.some(
        (p) =>
          p.path === "/spec/template/spec/containers/0/securityContext/privileged2" &&
          p.message === "unknown field",
      ),
    );
    assert.equal(problems[0]?.object, "Deployment nuketown-ada/ada");
  });

  it("looks into maps and lists but not into free-form values", () => {
    assert.deepEqual(unknownFields({ data: { anything: "x" } }, "V1ConfigMap"), []);
    assert.deepEqual(unknownFields({ rules: [{ verbz: [] }] }, "V1Role"), ["/rules/0/verbz"]);
  });

  it("refuses a kind nuketown does not render", () => {
    const [p] = validateObjects([{ apiVersion: "v1", kind: "Pod", metadata: { name: "x" } }]);
    assert.match(p?.message ?? "", /not a kind nuketown renders/);
  });

  it("the controller's manifest passes the same checks", () => {
    const text = readFileSync(
      path.join(REPO_ROOT, "deploy", "controller", "controller.yaml"),
      "utf8",
    );
    const objects = parseAllDocuments(text).map((d) => d.toJSON() as Record<string, unknown>);
    assert.equal(objects.length, 8);
    assert.deepEqual(validateObjects(objects), []);
  });
});

describe("invalid cloud declarations are errors with paths", () => {
  const cases: { kind: string; path: string; change: (d: Decl) => void; reason: RegExp }[] = [
    {
      kind: "an unknown tier",
      path: "agents.ada.cloud.resources",
      change: (d) => (d.agents.ada.cloud.resources = "huge"),
      reason: /small|standard/,
    },
    {
      kind: "maxResources below resources",
      path: "agents.ada.cloud.scaling.maxResources",
      change: (d) => (d.agents.ada.cloud.scaling.maxResources = "small"),
      reason: /below resources/,
    },
    {
      kind: "no image anywhere",
      path: "agents.ada.cloud.image",
      change: (d) => delete d.cloud.image,
      reason: /needs an image/,
    },
    {
      kind: "an image that is no reference",
      path: "agents.ada.cloud.image",
      change: (d) => (d.agents.ada.cloud.image = "Not An Image!"),
      reason: /nix-snapshotter reference/,
    },
    {
      kind: "devices in a pod",
      path: "agents.ada.devices",
      change: (d) => (d.agents.ada.devices = [{ subsystem: "tty", attrs: { idVendor: "0483" } }]),
      reason: /devices/,
    },
    {
      kind: "sudo in a pod",
      path: "agents.ada.sudo.enable",
      change: (d) => (d.agents.ada.sudo = { enable: true }),
      reason: /without privilege escalation/,
    },
    {
      kind: "a persisted file",
      path: "agents.ada.persist[2]",
      change: (d) => d.agents.ada.persist.push({ path: ".netrc", type: "file" }),
      reason: /directories only/,
    },
    {
      kind: "two clouds' identities",
      path: "agents.ada.cloud.identity",
      change: (d) => (d.agents.ada.cloud.identity.awsRoleArn = "arn:aws:iam::123456789012:role/x"),
      reason: /one cloud/,
    },
    {
      kind: "Pod Identity without a role",
      path: "agents.mel.cloud.identity.awsPodIdentity",
      change: (d) => (d.agents.mel.cloud.identity.awsPodIdentity = true),
      reason: /needs awsRoleArn/,
    },
    {
      kind: "a malformed egress CIDR",
      path: "agents.vox.cloud.egress[0]",
      change: (d) => (d.agents.vox.cloud.egress = ["everywhere"]),
      reason: /CIDR/,
    },
    {
      kind: "storage for a path that is not persisted",
      path: "agents.ada.cloud.storage.nope",
      change: (d) => (d.agents.ada.cloud.storage.nope = "1Gi"),
      reason: /not a persisted path/,
    },
    {
      kind: "a namespace name over 63 characters",
      path: "agents.ada",
      change: (d) => (d.cloud.namespace = "n".repeat(60)),
      reason: /longer than 63/,
    },
  ];
  for (const c of cases) {
    it(c.kind, () => {
      const decl = cloudDeclaration();
      c.change(decl);
      const result = resolveTown(decl, FIXED_CONTEXT);
      const paths = result.errors.map((e) => `${e.path}: ${e.message}`).join("\n");
      const found = result.errors.find((e) => e.path === c.path);
      assert.ok(found, `expected a problem at ${c.path}, got:\n${paths}`);
      assert.match(found.message, c.reason);
      assert.equal(result.town, undefined);
    });
  }
});

/** A recording fake of the cluster: objects in memory, every apply kept in order. */
class RecordingFakeCluster implements ClusterApi {
  readonly applied: { object: any; manager: string }[] = [];
  readonly configMaps = new Map<string, ConfigMapLike>();
  deployments: DeploymentLike[] = [];

  async listAgentDeployments() {
    return this.deployments;
  }
  async getConfigMap(namespace: string, name: string) {
    return this.configMaps.get(`${namespace}/${name}`);
  }
  async listConfigMaps(namespace: string, selector: string) {
    const [key, value] = selector.split("=");
    return [...this.configMaps.values()].filter(
      (cm) => cm.metadata.namespace === namespace && cm.metadata.labels?.[key ?? ""] === value,
    );
  }
  async apply(object: any, manager: string) {
    this.applied.push({ object: structuredClone(object), manager });
    const key = `${object.metadata.namespace}/${object.metadata.name}`;
    if (object.kind === "ConfigMap") {
      const old = this.configMaps.get(key);
      this.configMaps.set(key, {
        metadata: {
          ...old?.metadata,
          ...object.metadata,
          labels: { ...old?.metadata.labels, ...object.metadata.labels },
        },
        data: { ...old?.data, ...object.data },
      });
    } else {
      this.deployments = this.deployments.map((d) =>
        `${d.metadata.namespace}/${d.metadata.name}` === key
          ? {
              metadata: {
                ...d.metadata,
                annotations: { ...d.metadata.annotations, ...object.metadata.annotations },
              },
            }
          : d,
      );
    }
  }
}

function fakeWithAda(status: Record<string, string>) {
  const api = new RecordingFakeCluster();
  const ada = renderCloud(cloudTown()).find(
    (o) => o.kind === "Deployment" && o.metadata.name === "ada",
  ) as any;
  api.deployments = [{ metadata: ada.metadata }];
  api.configMaps.set("nuketown-ada/ada-status", {
    metadata: { name: "ada-status", namespace: "nuketown-ada" },
    data: status,
  });
  const records: AuditRecord[] = [];
  const audit: Audit = (r) => records.push(r);
  let now = new Date("2026-01-01T10:00:00Z");
  const controller = new Controller({ api, namespace: "nuketown-system", audit, now: () => now });
  return {
    api,
    records,
    controller,
    advance: (s: number) => (now = new Date(now.getTime() + s * 1000)),
  };
}

describe("the scaling controller (against a recording fake of the cluster)", () => {
  const request = {
    "request.id": "r1",
    "request.tier": "large",
    "request.reason": "build thrashing",
  };

  it("an unapproved request becomes an approval request and changes no Deployment", async () => {
    const { api, records, controller } = fakeWithAda(request);
    await controller.pass();
    await controller.pass();
    assert.deepEqual(
      api.applied.map((a) => a.object.kind),
      ["ConfigMap"],
    );
    assert.equal(api.configMaps.get("nuketown-system/scale-ada-r1")?.data?.state, "pending");
    assert.deepEqual(
      records.map((r) => r.event),
      ["requested"],
    );
  });

  it("on yes it raises the tier under its own field manager; a denial changes nothing", async () => {
    const yes = fakeWithAda(request);
    await yes.controller.pass();
    await decide(yes.api, "nuketown-system", "scale-ada-r1", { approve: true, by: "josh" });
    await yes.controller.pass();
    const scaled = yes.api.applied.find((a) => a.object.kind === "Deployment");
    assert.equal(scaled?.manager, FIELD_MANAGER);
    assert.deepEqual(scaled?.object.spec.template.spec.containers[0].resources.limits, {
      cpu: "4",
      "ephemeral-storage": "50Gi",
      memory: "8Gi",
    });
    assert.equal(yes.api.configMaps.get("nuketown-system/scale-ada-r1")?.data?.state, "applied");
    assert.deepEqual(
      yes.records.map((r) => [r.event, r.by ?? ""]),
      [
        ["requested", ""],
        ["scaled-up", "josh"],
      ],
    );

    const no = fakeWithAda(request);
    await no.controller.pass();
    await decide(no.api, "nuketown-system", "scale-ada-r1", { approve: false, by: "josh" });
    await no.controller.pass();
    assert.equal(no.api.applied.filter((a) => a.object.kind === "Deployment").length, 0);
    assert.deepEqual(
      no.records.map((r) => r.event),
      ["requested", "denied"],
    );
  });

  it("never above maxResources: such a request is rejected at once", async () => {
    const { api, records, controller } = fakeWithAda({ ...request, "request.tier": "gpu" });
    await controller.pass();
    assert.equal(api.configMaps.get("nuketown-system/scale-ada-r1")?.data?.state, "rejected");
    await assert.rejects(
      decide(api, "nuketown-system", "scale-ada-r1", { approve: true, by: "josh" }),
      /rejected, not pending/,
    );
    assert.equal(api.applied.filter((a) => a.object.kind === "Deployment").length, 0);
    assert.match(records[0]?.reason ?? "", /above the agent's maxResources/);
  });

  it("an idle agent goes back to its declared tier without asking; a busy one stays", async () => {
    const f = fakeWithAda(request);
    await f.controller.pass();
    await decide(f.api, "nuketown-system", "scale-ada-r1", { approve: true, by: "josh" });
    await f.controller.pass();
    f.advance(600);
    // The agent finished a task at 10:09: not idle yet at 10:10.
    f.api.configMaps.set("nuketown-ada/ada-status", {
      metadata: { name: "ada-status", namespace: "nuketown-ada" },
      data: { ...request, lastTaskAt: new Date("2026-01-01T10:09:00Z").toISOString() },
    });
    await f.controller.pass();
    assert.equal(f.api.applied.filter((a) => a.object.kind === "Deployment").length, 1);
    f.advance(3600);
    await f.controller.pass();
    const down = f.api.applied.filter((a) => a.object.kind === "Deployment").at(-1);
    assert.deepEqual(down?.object.spec.template.spec.nodeSelector, {
      "nuketown.io/tier": "standard",
    });
    assert.deepEqual(
      f.records.map((r) => r.event),
      ["requested", "scaled-up", "scaled-down"],
    );
  });
});
