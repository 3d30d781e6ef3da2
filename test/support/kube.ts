/**
 * A real, minimal Kubernetes control plane for tests: etcd and kube-apiserver
 * built by scripts/install-kube.sh, on 127.0.0.1 only, with self-made
 * certificates, a service-account key pair and a static token file (an admin
 * in system:masters, plus tokens for the service accounts a test wants to act
 * as, so RBAC is the real one). No controller-manager: Deployments are stored
 * and read back, no pods are made.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort, startServerProcess, waitUntilReady } from "./server-process.ts";

export const KUBE_BIN = path.join(
  process.env.NUKETOWN_KUBE_DIR ?? "/var/cache/nuketown/kube",
  "v1.37.2-etcd-v3.6.16",
  "bin",
);
export const kubeAvailable = () =>
  existsSync(path.join(KUBE_BIN, "kube-apiserver")) && existsSync(path.join(KUBE_BIN, "etcd"));

export interface Cluster {
  readonly server: string;
  readonly ca: string;
  readonly dir: string;
  /** A kubeconfig file acting as `user` (a name given to startCluster, or "admin"). */
  kubeconfig(user: string): string;
  /** A raw request as `user`; resolves with status and parsed body. */
  request(
    user: string,
    method: string,
    urlPath: string,
    body?: unknown,
    contentType?: string,
  ): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
}

/** `users`: name → [username, groups] for extra static tokens. */
export async function startCluster(
  users: Readonly<Record<string, readonly [string, readonly string[]]>> = {},
): Promise<Cluster> {
  const dir = mkdtempSync(path.join(tmpdir(), "nuketown-kube-"));
  const openssl = (...args: string[]) =>
    execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=nuketown-test-ca",
    "-keyout",
    "ca.key",
    "-out",
    "ca.crt",
  );
  openssl(
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-subj",
    "/CN=kube-apiserver",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
  );
  writeFileSync(path.join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl(
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "1",
    "-extfile",
    "san.ext",
    "-out",
    "server.crt",
  );
  openssl("genrsa", "-out", "sa.key", "2048");
  openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub");

  const tokens = new Map<string, string>([["admin", "admin-token"]]);
  const lines = ['admin-token,admin,admin-uid,"system:masters"'];
  let n = 0;
  for (const [name, [username, groups]] of Object.entries(users)) {
    const token = `token-${++n}-${name}`;
    tokens.set(name, token);
    lines.push(`${token},${username},uid-${n},"${["system:authenticated", ...groups].join(",")}"`);
  }
  writeFileSync(path.join(dir, "tokens.csv"), `${lines.join("\n")}\n`);

  const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
  mkdirSync(path.join(dir, "etcd"));
  const etcd = startServerProcess({
    command: path.join(KUBE_BIN, "etcd"),
    args: [
      "--name=test",
      `--data-dir=${path.join(dir, "etcd")}`,
      `--listen-client-urls=http://127.0.0.1:${etcdClient}`,
      `--advertise-client-urls=http://127.0.0.1:${etcdClient}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
      `--initial-cluster=test=http://127.0.0.1:${etcdPeer}`,
      "--unsafe-no-fsync",
      "--log-level=warn",
    ],
    cwd: dir,
    dir,
    logFile: path.join(dir, "etcd.log"),
  });
  const apiserver = startServerProcess({
    command: path.join(KUBE_BIN, "kube-apiserver"),
    args: [
      `--etcd-servers=http://127.0.0.1:${etcdClient}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiPort}`,
      `--cert-dir=${dir}`,
      `--tls-cert-file=${path.join(dir, "server.crt")}`,
      `--tls-private-key-file=${path.join(dir, "server.key")}`,
      `--token-auth-file=${path.join(dir, "tokens.csv")}`,
      "--authorization-mode=RBAC",
      "--service-account-issuer=https://kubernetes.default.svc",
      `--service-account-key-file=${path.join(dir, "sa.pub")}`,
      `--service-account-signing-key-file=${path.join(dir, "sa.key")}`,
      "--service-cluster-ip-range=10.96.0.0/24",
      "--anonymous-auth=false",
      // The kubernetes Service endpoint may not point at loopback; nothing here needs it.
      "--endpoint-reconciler-type=none",
    ],
    cwd: dir,
    dir,
    logFile: path.join(dir, "apiserver.log"),
  });
  const server = `https://127.0.0.1:${apiPort}`;
  const ca = path.join(dir, "ca.crt");
  const caText = execFileSync("cat", [ca], { encoding: "utf8" });

  const request: Cluster["request"] = (user, method, urlPath, body, contentType) =>
    new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = https.request(
        `${server}${urlPath}`,
        {
          method,
          ca: caText,
          headers: {
            authorization: `Bearer ${tokens.get(user)}`,
            accept: "application/json",
            ...(payload !== undefined && {
              "content-type": contentType ?? "application/json",
              "content-length": Buffer.byteLength(payload),
            }),
          },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk) => (text += chunk));
          res.on("end", () => {
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {}
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on("error", reject);
      req.end(payload);
    });

  const stop = async () => {
    await apiserver.stop(5000);
    await etcd.stop(5000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitUntilReady(
      apiserver,
      async () => (await request("admin", "GET", "/readyz")).status === 200,
      { what: "kube-apiserver", timeoutMs: 60_000, logFile: path.join(dir, "apiserver.log") },
    );
  } catch (error) {
    await stop();
    throw error;
  }

  return {
    server,
    ca,
    dir,
    kubeconfig(user) {
      const file = path.join(dir, `kubeconfig-${user}.yaml`);
      writeFileSync(
        file,
        JSON.stringify({
          apiVersion: "v1",
          kind: "Config",
          clusters: [{ name: "test", cluster: { server, "certificate-authority": ca } }],
          users: [{ name: user, user: { token: tokens.get(user) } }],
          contexts: [{ name: "test", context: { cluster: "test", user } }],
          "current-context": "test",
        }),
      );
      return file;
    },
    request,
    stop,
  };
}

/** The REST path of an object, for the kinds nuketown renders. */
export function objectPath(o: {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}): string {
  const plural: Record<string, string> = {
    Namespace: "namespaces",
    ServiceAccount: "serviceaccounts",
    ConfigMap: "configmaps",
    ResourceQuota: "resourcequotas",
    LimitRange: "limitranges",
    PersistentVolumeClaim: "persistentvolumeclaims",
    Deployment: "deployments",
    NetworkPolicy: "networkpolicies",
    Role: "roles",
    RoleBinding: "rolebindings",
    ClusterRole: "clusterroles",
    ClusterRoleBinding: "clusterrolebindings",
  };
  const base = o.apiVersion === "v1" ? "/api/v1" : `/apis/${o.apiVersion}`;
  const ns = o.metadata.namespace ? `/namespaces/${o.metadata.namespace}` : "";
  return `${base}${ns}/${plural[o.kind]}/${o.metadata.name}`;
}

/** Server-side apply with fieldValidation=Strict, as `user`. */
export function applyStrict(
  cluster: Cluster,
  user: string,
  object: any,
  manager = "nuketown-test",
) {
  return cluster.request(
    user,
    "PATCH",
    `${objectPath(object)}?fieldManager=${manager}&fieldValidation=Strict&force=true`,
    object,
    "application/apply-patch+yaml",
  );
}
