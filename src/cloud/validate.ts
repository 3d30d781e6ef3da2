/**
 * Offline validation of rendered objects against the official Kubernetes
 * schemas, before anything is printed:
 *
 * - kubernetes-models: ajv validators compiled from the Kubernetes OpenAPI
 *   spec (types, required fields, formats, int-or-string...);
 * - a strict unknown-field check, which those schemas do not make (they allow
 *   extra properties): every key must be a field of its type in
 *   @kubernetes/client-node's models, generated from the same spec. This is
 *   what the API server's `fieldValidation=Strict` would refuse.
 */
import * as models from "@kubernetes/client-node/dist/gen/models/all.js";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { ClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole";
import { ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding";
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { LimitRange } from "kubernetes-models/v1/LimitRange";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { ResourceQuota } from "kubernetes-models/v1/ResourceQuota";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";

interface Validating {
  validate(): void;
}
type Known = { readonly model: new (data: never) => Validating; readonly type: string };

/** The kinds nuketown renders (agents and the controller), by `apiVersion/kind`. */
const KINDS: Readonly<Record<string, Known>> = {
  "v1/ConfigMap": { model: ConfigMap, type: "V1ConfigMap" },
  "v1/LimitRange": { model: LimitRange, type: "V1LimitRange" },
  "v1/Namespace": { model: Namespace, type: "V1Namespace" },
  "v1/PersistentVolumeClaim": { model: PersistentVolumeClaim, type: "V1PersistentVolumeClaim" },
  "v1/ResourceQuota": { model: ResourceQuota, type: "V1ResourceQuota" },
  "v1/ServiceAccount": { model: ServiceAccount, type: "V1ServiceAccount" },
  "apps/v1/Deployment": { model: Deployment, type: "V1Deployment" },
  "networking.k8s.io/v1/NetworkPolicy": { model: NetworkPolicy, type: "V1NetworkPolicy" },
  "rbac.authorization.k8s.io/v1/Role": { model: Role, type: "V1Role" },
  "rbac.authorization.k8s.io/v1/RoleBinding": { model: RoleBinding, type: "V1RoleBinding" },
  "rbac.authorization.k8s.io/v1/ClusterRole": { model: ClusterRole, type: "V1ClusterRole" },
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": {
    model: ClusterRoleBinding,
    type: "V1ClusterRoleBinding",
  },
};

export interface ObjectProblem {
  /** `Deployment nuketown-ada/ada`. */
  readonly object: string;
  /** JSON pointer inside the object, "" for the whole object. */
  readonly path: string;
  readonly message: string;
}

type AttributeMap = readonly { readonly baseName: string; readonly type: string }[];
const registry = models as unknown as Record<
  string,
  { getAttributeTypeMap?: () => AttributeMap } | undefined
>;
const fieldsCache = new Map<string, Map<string, string> | undefined>();

function fieldsOf(type: string): Map<string, string> | undefined {
  if (fieldsCache.has(type)) return fieldsCache.get(type);
  const map = registry[type]?.getAttributeTypeMap?.();
  const fields = map ? new Map(map.map((a) => [a.baseName, a.type])) : undefined;
  fieldsCache.set(type, fields);
  return fields;
}

const LEAVES = new Set(["string", "number", "boolean", "Date", "any", "IntOrString", "object"]);

/** Keys that are not fields of their type, as JSON pointers. */
export function unknownFields(value: unknown, type: string, at = ""): string[] {
  if (value === null || value === undefined || LEAVES.has(type)) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return [];
    return value.flatMap((item, i) => unknownFields(item, array[1] ?? "any", `${at}/${i}`));
  }
  const record = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (record) {
    if (typeof value !== "object") return [];
    return Object.entries(value).flatMap(([k, v]) =>
      unknownFields(v, record[1] ?? "any", `${at}/${pointer(k)}`),
    );
  }
  const fields = fieldsOf(type);
  if (!fields || typeof value !== "object" || Array.isArray(value)) return [];
  const out: string[] = [];
  for (const [key, inner] of Object.entries(value)) {
    const fieldType = fields.get(key);
    if (fieldType === undefined) out.push(`${at}/${pointer(key)}`);
    else out.push(...unknownFields(inner, fieldType, `${at}/${pointer(key)}`));
  }
  return out;
}

const pointer = (key: string) => key.replaceAll("~", "~0").replaceAll("/", "~1");

function describe(object: Record<string, unknown>): string {
  const meta = (object.metadata ?? {}) as { name?: string; namespace?: string };
  const name = meta.namespace ? `${meta.namespace}/${meta.name}` : String(meta.name);
  return `${String(object.kind)} ${name}`;
}

/** Every problem of every object; empty when all pass both checks. */
export function validateObjects(objects: readonly Record<string, unknown>[]): ObjectProblem[] {
  const problems: ObjectProblem[] = [];
  for (const object of objects) {
    const name = describe(object);
    const known = KINDS[`${String(object.apiVersion)}/${String(object.kind)}`];
    if (!known) {
      problems.push({
        object: name,
        path: "",
        message: `${String(object.apiVersion)} ${String(object.kind)} is not a kind nuketown renders`,
      });
      continue;
    }
    try {
      new known.model(object as never).validate();
    } catch (error) {
      for (const e of schemaErrors(error)) problems.push({ object: name, ...e });
    }
    for (const path of unknownFields(object, known.type)) {
      problems.push({ object: name, path, message: "unknown field" });
    }
  }
  return problems;
}

function schemaErrors(error: unknown): { path: string; message: string }[] {
  const list = (error as { errors?: { instancePath?: string; message?: string }[] }).errors;
  if (Array.isArray(list) && list.length > 0) {
    return list.map((e) => ({ path: e.instancePath ?? "", message: e.message ?? "invalid" }));
  }
  return [{ path: "", message: (error as Error).message }];
}

export function formatObjectProblem(p: ObjectProblem): string {
  return `${p.object}${p.path === "" ? "" : ` ${p.path}`}: ${p.message}`;
}
