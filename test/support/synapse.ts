/**
 * A real Synapse homeserver for tests: SQLite, one client listener on
 * 127.0.0.1, no federation, rate limits off, users registered through the
 * shared-secret admin API. Installed by scripts/install-chat-servers.sh.
 *
 * The first start on a machine builds a template (signing key and a migrated
 * database) under the temp dir; later starts copy it, which skips the
 * schema set-up.
 */
import { execFile } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { accessSync, constants, existsSync, readdirSync } from "node:fs";
import { copyFile, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import {
  freePort,
  type ServerProcess,
  startServerProcess,
  waitUntilReady,
} from "./server-process.ts";

export const SYNAPSE_VENV = "/opt/nuketown-test/synapse";
const execFileAsync = promisify(execFile);
const SERVER_NAME = "nt-test.local";
const START_TIMEOUT_MS = 60_000;
/** The files a template holds; `-wal` only when SQLite left one. */
const TEMPLATE_FILES = ["signing.key", "homeserver.db", "homeserver.db-wal"];

export interface SynapseServer {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** User ids are @name:serverName. */
  readonly serverName: string;
  /** Register a user via the shared-secret admin API (/_synapse/admin/v1/register); returns its id and a fresh access token. */
  register(
    localpart: string,
    options?: { admin?: boolean; password?: string },
  ): Promise<{ userId: string; accessToken: string; password: string; deviceId: string }>;
  /** Kills the server and removes its temp dir. */
  stop(): Promise<void>;
}

/** The venv's python when Synapse is installed there, else undefined. */
/**
 * Where the server's files go: memory when the machine has a tmpfs at
 * /dev/shm, so SQLite's fsync per event costs nothing and latencies measure
 * the server and our code, not the disk.
 */
function scratch(): string {
  try {
    accessSync("/dev/shm", constants.W_OK);
    return "/dev/shm";
  } catch {
    return os.tmpdir();
  }
}

export function synapseInstalled(): string | undefined {
  const python = path.join(SYNAPSE_VENV, "bin", "python");
  return existsSync(python) && synapseVersion() !== undefined ? python : undefined;
}

function synapseVersion(): string | undefined {
  const lib = path.join(SYNAPSE_VENV, "lib");
  if (!existsSync(lib)) return undefined;
  for (const pythonDir of readdirSync(lib)) {
    const sitePackages = path.join(lib, pythonDir, "site-packages");
    if (!existsSync(sitePackages)) continue;
    for (const name of readdirSync(sitePackages)) {
      const match = /^matrix_synapse-(.+)\.dist-info$/.exec(name);
      if (match) return match[1];
    }
  }
  return undefined;
}

function config(dir: string, port: number, secret: string): Record<string, unknown> {
  const unlimited = { per_second: 10_000, burst_count: 100_000 };
  return {
    server_name: SERVER_NAME,
    public_baseurl: `http://127.0.0.1:${port}/`,
    pid_file: path.join(dir, "homeserver.pid"),
    listeners: [
      {
        port,
        bind_addresses: ["127.0.0.1"],
        type: "http",
        tls: false,
        x_forwarded: false,
        resources: [{ names: ["client"], compress: false }],
      },
    ],
    database: { name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } },
    log_config: path.join(dir, "log.yaml"),
    media_store_path: path.join(dir, "media"),
    max_upload_size: "50M",
    signing_key_path: path.join(dir, "signing.key"),
    registration_shared_secret: secret,
    macaroon_secret_key: secret,
    form_secret: secret,
    enable_registration: false,
    report_stats: false,
    enable_metrics: false,
    trusted_key_servers: [],
    suppress_key_server_warning: true,
    federation_domain_whitelist: [],
    presence: { enabled: true },
    // Registration hashes the password; the default 12 rounds cost ~0.25 s a user.
    bcrypt_rounds: 4,
    rc_message: unlimited,
    rc_registration: unlimited,
    rc_registration_token_validity: unlimited,
    rc_login: { address: unlimited, account: unlimited, failed_attempts: unlimited },
    rc_admin_redaction: unlimited,
    rc_joins: { local: unlimited, remote: unlimited },
    rc_joins_per_room: unlimited,
    rc_3pid_validation: unlimited,
    rc_invites: { per_room: unlimited, per_user: unlimited, per_issuer: unlimited },
    rc_third_party_invite: unlimited,
    rc_media_create: unlimited,
    rc_presence: { per_user: unlimited },
    rc_delayed_event_mgmt: unlimited,
    rc_room_creation: unlimited,
    rc_reports: unlimited,
    rc_user_directory: unlimited,
    rc_profile: unlimited,
  };
}

function logConfig(file: string): Record<string, unknown> {
  return {
    version: 1,
    formatters: { plain: { format: "%(asctime)s %(name)s %(levelname)s %(message)s" } },
    handlers: {
      file: { class: "logging.FileHandler", formatter: "plain", filename: file, level: "WARNING" },
    },
    root: { level: "WARNING", handlers: ["file"] },
    disable_existing_loggers: false,
  };
}

interface Instance {
  readonly dir: string;
  readonly url: string;
  readonly secret: string;
  readonly process: ServerProcess;
}

/** Writes the config into `dir` (JSON is YAML), starts Synapse and waits until it answers. */
async function launch(python: string, dir: string, generateKeys: boolean): Promise<Instance> {
  const port = await freePort();
  const secret = randomBytes(24).toString("hex");
  const configFile = path.join(dir, "homeserver.yaml");
  const logFile = path.join(dir, "homeserver.log");
  await writeFile(configFile, JSON.stringify(config(dir, port, secret), null, 2));
  await writeFile(path.join(dir, "log.yaml"), JSON.stringify(logConfig(logFile), null, 2));
  const moduleArgs = ["-m", "synapse.app.homeserver", "-c", configFile];
  if (generateKeys) {
    await execFileAsync(python, [...moduleArgs, "--generate-keys"], {
      cwd: dir,
      timeout: START_TIMEOUT_MS,
    }).catch((error: { stderr?: string; message: string }) => {
      throw new Error(`synapse --generate-keys failed: ${error.stderr || error.message}`);
    });
  }
  const url = `http://127.0.0.1:${port}`;
  const server = startServerProcess({ command: python, args: moduleArgs, cwd: dir, dir, logFile });
  try {
    await waitUntilReady(
      server,
      async () =>
        (await fetch(`${url}/_matrix/client/versions`, { signal: AbortSignal.timeout(2_000) })).ok,
      {
        what: `Synapse on ${url}`,
        timeoutMs: START_TIMEOUT_MS,
        logFile,
      },
    );
  } catch (error) {
    await server.stop();
    throw error;
  }
  return { dir, url, secret, process: server };
}

function templatePath(version: string): string {
  return path.join(scratch(), `nt-test-synapse-template-${version}-${SERVER_NAME}`);
}

/** Builds the template once: signing key and a database past all migrations. */
async function ensureTemplate(python: string, version: string): Promise<string> {
  const template = templatePath(version);
  if (existsSync(path.join(template, "homeserver.db"))) return template;
  const dir = await mkdtemp(path.join(scratch(), "nt-test-synapse-"));
  try {
    const instance = await launch(python, dir, true);
    await instance.process.stop();
    // Built beside the template and renamed into place, so a concurrent
    // builder or a crash never leaves a half-copied template.
    const staging = await mkdtemp(`${template}.`);
    for (const file of TEMPLATE_FILES) {
      if (existsSync(path.join(dir, file)))
        await copyFile(path.join(dir, file), path.join(staging, file));
    }
    await rename(staging, template).catch(async (error: NodeJS.ErrnoException) => {
      await rm(staging, { recursive: true, force: true });
      if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
    });
    return template;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Starts a fresh homeserver in its own temp dir; throws (with the log's end) when it cannot. */
export async function startSynapse(): Promise<SynapseServer> {
  const python = synapseInstalled();
  const version = synapseVersion();
  if (python === undefined || version === undefined)
    throw new Error(
      `Synapse is not installed in ${SYNAPSE_VENV}: run scripts/install-chat-servers.sh as root`,
    );
  const template = await ensureTemplate(python, version);
  const dir = await mkdtemp(path.join(scratch(), "nt-test-synapse-"));
  let instance: Instance;
  try {
    for (const file of TEMPLATE_FILES) {
      if (existsSync(path.join(template, file)))
        await copyFile(path.join(template, file), path.join(dir, file));
    }
    instance = await launch(python, dir, false);
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const { url, secret } = instance;
  let stopped: Promise<void> | undefined;
  return {
    url,
    serverName: SERVER_NAME,
    async register(localpart, options = {}) {
      const password = options.password ?? randomBytes(12).toString("hex");
      const admin = options.admin === true;
      const endpoint = `${url}/_synapse/admin/v1/register`;
      const nonceResponse = await fetch(endpoint);
      if (!nonceResponse.ok)
        throw new Error(`GET ${endpoint}: ${nonceResponse.status} ${await nonceResponse.text()}`);
      const { nonce } = (await nonceResponse.json()) as { nonce: string };
      const mac = createHmac("sha1", secret)
        .update(`${nonce}\0${localpart}\0${password}\0${admin ? "admin" : "notadmin"}`)
        .digest("hex");
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ nonce, username: localpart, password, admin, mac }),
      });
      if (!response.ok)
        throw new Error(`registering ${localpart}: ${response.status} ${await response.text()}`);
      const body = (await response.json()) as {
        user_id: string;
        access_token: string;
        device_id: string;
      };
      return {
        userId: body.user_id,
        accessToken: body.access_token,
        password,
        deviceId: body.device_id,
      };
    },
    stop() {
      stopped ??= (async () => {
        await instance.process.stop();
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
