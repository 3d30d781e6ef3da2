/**
 * The reconciler finishing what it started and taking back what it gave, on
 * the real host as root: real accounts (uids 60460-60464), a device node the
 * test makes behind a sysfs-shaped tree, real sops and age. An apply cut
 * short by a failing program is completed by the next plain apply; a removed
 * device grant (or agent) loses its ACL; editing another agent's key in a
 * shared sops file resets nobody else; the sudoers fragment and the udev
 * rules go with the last agent that needs them; a town under directories
 * that do not exist yet gets them 0755, whatever root's umask.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { before, describe, it } from "node:test";
import { stringify } from "smol-toml";
import { applyPlan } from "../../src/host/apply.ts";
import { observeHost } from "../../src/host/observe.ts";
import { describeAction, planHost } from "../../src/host/plan.ts";
import { createDecryptor, type SecretDecryptor } from "../../src/host/secrets.ts";
import { readState } from "../../src/host/state.ts";
import { type Runner, systemRunner } from "../../src/os/process.ts";
import { loadTown } from "../../src/town/load.ts";
import { isRoot, mustRun, run, testUser } from "../support/host.ts";
import { BIN, testTown } from "../support/town.ts";
import { uidsOf } from "../support/uids.ts";

const A = "nt-test-hh-a";
const B = "nt-test-hh-b";
const C = "nt-test-hh-c";
const UID = { [A]: 60460, [B]: 60461, [C]: 60464 } as const;
const FRESH_APPROVERS = `nt-test-hhfr-${process.pid}`;
const SERIAL = { subsystem: "tty", attrs: { idVendor: "0483", idProduct: "5740" } };

describe("the reconciler repairs and revokes", { skip: !isRoot() && "needs root" }, () => {
  const testbed = testTown({ label: "hh", uids: uidsOf(import.meta.filename) });
  // The group of the second town one test applies.
  testbed.removeAtCleanup(FRESH_APPROVERS);
  const nuketown = (args: string[]) => testbed.nuketown(args);
  let root = "";
  let config = "";
  let node = "";
  let recipient = "";
  let declaration: Record<string, any> = {};
  const devices = () => ({ sysRoot: path.join(root, "sys"), devRoot: path.join(root, "dev") });
  const write = () => testbed.write(declaration);

  /** The named-user entries of the node's ACL, by number (an account may be gone). */
  const aclUsers = () =>
    mustRun("getfacl", ["--omit-header", "--absolute-names", "--numeric", node])
      .split("\n")
      .filter((line) => /^user:\d+:/.test(line));
  const canWrite = (uid: number) =>
    run("setpriv", [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "test", "-w", node])
      .code === 0;

  function sopsFile(values: { a: string; b: string }) {
    const plain = path.join(root, "secrets", "agents.plain.yaml");
    writeFileSync(plain, `a:\n    token: ${values.a}\nb:\n    token: ${values.b}\n`);
    const encrypted = mustRun("sops", [
      "--encrypt",
      "--age",
      recipient,
      "--input-type",
      "yaml",
      "--output-type",
      "yaml",
      plain,
    ]);
    writeFileSync(path.join(root, "secrets", "agents.yaml"), encrypted);
  }

  async function loaded() {
    return (await loadTown(config)).town;
  }
  async function plan(decryptor?: SecretDecryptor) {
    const town = await loaded();
    return planHost(town, await observeHost(town, { ...(decryptor && { decryptor }) }));
  }
  async function apply(runner: Runner = systemRunner) {
    const town = await loaded();
    const hostPlan = planHost(town, await observeHost(town, { runner }));
    assert.deepEqual(hostPlan.errors, []);
    return applyPlan(hostPlan, {
      town,
      runner,
      decryptor: createDecryptor({ ageKeyFile: town.secrets.ageKeyFile, runner }),
      systemd: false,
      log: () => {},
      devices: devices(),
    });
  }
  const planned = async () => (await plan()).actions.map(describeAction);

  before(() => {
    root = testbed.root;
    config = testbed.config;
    mkdirSync(path.join(root, "secrets"));
    const keyFile = testbed.ageKey();
    recipient = mustRun("age-keygen", ["-y", keyFile]).trim();
    sopsFile({ a: "a-token-1", b: "b-token-1" });

    // A serial adapter behind USB, as sysfs shows it, and its node.
    const usb = path.join(root, "sys", "devices", "pci0000:00", "usb1", "1-1");
    const tty = path.join(usb, "1-1:1.0", "tty", "ttyACM0");
    mkdirSync(tty, { recursive: true });
    writeFileSync(path.join(usb, "uevent"), "DEVNAME=bus/usb/001/002\n");
    writeFileSync(path.join(usb, "idVendor"), "0483\n");
    writeFileSync(path.join(usb, "idProduct"), "5740\n");
    writeFileSync(path.join(tty, "uevent"), "MAJOR=1\nMINOR=3\nDEVNAME=ttyACM0\n");
    const ttyClass = path.join(root, "sys", "class", "tty");
    mkdirSync(ttyClass, { recursive: true });
    symlinkSync(path.relative(tty, ttyClass), path.join(tty, "subsystem"));
    symlinkSync(path.relative(ttyClass, tty), path.join(ttyClass, "ttyACM0"));
    mkdirSync(path.join(root, "dev"), { mode: 0o755 });
    node = path.join(root, "dev", "ttyACM0");
    mustRun("mknod", ["-m", "0660", node, "c", "1", "3"]);

    const secret = (agent: "a" | "b") => ({
      token: { file: "secrets/agents.yaml", key: `${agent}.token`, target: ".config/token" },
    });
    declaration = testbed.declare({
      domain: "test.local",
      basePackages: [],
      humans: { "nt-test-hh-m": { approver: true } },
      secrets: { ageKeyFile: keyFile },
      agents: {
        [A]: {
          uid: UID[A],
          devices: [SERIAL],
          sudo: { enable: true },
          secrets: { extraSecrets: secret("a") },
        },
        [B]: { uid: UID[B], secrets: { extraSecrets: secret("b") } },
      },
    });
  });

  it("finishes an apply cut short by a failing program: udev reloaded, ACLs granted, then no changes", async () => {
    // The runner seam: udevadm dies once, after the rules file is in place.
    let fail = true;
    const flaky: Runner = {
      run(program, args, options) {
        if (fail && program === "udevadm") {
          fail = false;
          return Promise.reject(new Error("injected: udevadm was killed"));
        }
        return systemRunner.run(program, args, options);
      },
    };
    await assert.rejects(apply(flaky), /injected: udevadm was killed/);
    assert.ok(existsSync(path.join(root, "etc", "udev", "rules.d", "70-nuketown.rules")));
    assert.deepEqual(aclUsers(), [], "nothing granted yet");

    const next = await planned();
    assert.ok(next.includes("~ reload udev rules"), next.join("\n"));
    assert.ok(next.includes("~ grant ACLs on devices already plugged in"), next.join("\n"));

    await apply();
    assert.deepEqual(aclUsers(), [`user:${UID[A]}:rw-`]);
    assert.equal(canWrite(UID[A]), true, "the agent can use its device");
    assert.equal(canWrite(UID[B]), false);
    assert.deepEqual(await planned(), [], "a completed apply leaves nothing to do");
  });

  it("resets only the agent whose value changed when a shared sops file is re-encrypted", async () => {
    const home = (agent: string) => path.join(root, "agents", agent, ".config", "token");
    assert.equal(readFileSync(home(A), "utf8"), "a-token-1");
    // The whole file is encrypted anew (new data key, every value's ciphertext changes);
    // only b's value is different.
    sopsFile({ a: "a-token-1", b: "b-token-2" });
    const actions = await planned();
    assert.deepEqual(
      actions.filter((a) => a.startsWith("~ reset")),
      [`~ reset ${B} (identity, persisted paths, repos, secrets or installed packages changed)`],
    );
    await apply();
    assert.equal(readFileSync(home(B), "utf8"), "b-token-2");
    assert.equal(readFileSync(home(A), "utf8"), "a-token-1");

    // A's record now names the new file, so the next plan decrypts nothing.
    const fileHash = createHash("sha256")
      .update(readFileSync(path.join(root, "secrets", "agents.yaml")))
      .digest("hex");
    const state = await readState(path.join(root, "state"));
    assert.equal(state.agents[A]?.secrets?.[".config/token"]?.fileHash, fileHash);
    let decrypted = 0;
    const counting: SecretDecryptor = {
      decrypt: () => {
        decrypted++;
        return Promise.reject(new Error("should not be asked"));
      },
    };
    assert.deepEqual((await plan(counting)).actions, []);
    assert.equal(decrypted, 0);
  });

  it("revokes the ACL of a removed grant, then of a removed agent, and drops the rules file", async () => {
    delete declaration.agents[A].devices;
    write();
    assert.ok((await planned()).includes(`- ACLs no longer granted: ${A} (1 device rule)`));
    await apply();
    assert.deepEqual(aclUsers(), [], "the agent's entry is gone from the node");
    assert.equal(canWrite(UID[A]), false, "the agent can no longer use the device");
    assert.ok(!existsSync(path.join(root, "etc", "udev", "rules.d", "70-nuketown.rules")));
    assert.deepEqual(await planned(), []);

    declaration.agents[B].devices = [SERIAL];
    write();
    await apply();
    assert.deepEqual(aclUsers(), [`user:${UID[B]}:rw-`]);
    delete declaration.agents[B];
    write();
    await apply();
    assert.equal(testUser(B), undefined, "the agent's account is gone");
    assert.deepEqual(
      aclUsers(),
      [],
      "and so is its uid's entry (a later account with it gets nothing)",
    );
    assert.deepEqual(await planned(), []);
  });

  it("removes the sudoers fragment with the last sudo-enabled agent, live and in a --root tree", async () => {
    const sudoers = path.join(root, "etc", "sudoers.d", "nuketown");
    assert.ok(existsSync(sudoers), "installed while an agent has sudo");
    const tree = path.join(root, "tree");
    assert.equal(nuketown(["apply", config, "--root", tree]).code, 0);
    assert.ok(existsSync(path.join(tree, sudoers)));

    declaration.agents[A].sudo = { enable: false };
    write();
    await apply();
    assert.ok(!existsSync(sudoers), "removed with the last sudo-enabled agent");
    assert.deepEqual(await planned(), []);

    const rooted = nuketown(["apply", config, "--root", tree]);
    assert.equal(rooted.code, 0, rooted.stderr);
    assert.match(rooted.stdout, new RegExp(`- ${sudoers.replaceAll("/", "\\/")}`));
    assert.ok(!existsSync(path.join(tree, sudoers)));
    assert.equal(
      JSON.parse(nuketown(["plan", config, "--root", tree, "--json"]).stdout).changes,
      0,
    );
  });

  it("applies a town under directories that do not exist yet: parents 0755 under umask 077, homes usable", () => {
    const town = path.join(root, "fresh", "town");
    const file = path.join(root, "fresh.toml");
    writeFileSync(
      file,
      stringify({
        name: "nt-test-hh-fresh",
        agentsDir: path.join(town, "agents"),
        persistDir: path.join(town, "persist"),
        stateDir: path.join(town, "state"),
        runtimeDir: path.join(town, "run"),
        etcDir: path.join(town, "etc"),
        uidRange: { min: 60100, max: 60999 },
        homes: { backend: "image", image: { size: "256M" } },
        basePackages: [],
        approval: { group: FRESH_APPROVERS },
        agents: { [C]: { uid: UID[C], persist: ["projects"] } },
      }),
    );
    const applied = spawnSync("sh", ["-c", 'umask 077 && exec "$0" apply "$1"', BIN, file], {
      encoding: "utf8",
    });
    assert.equal(applied.status, 0, applied.stderr + applied.stdout);
    for (const dir of [path.join(root, "fresh"), town, path.join(town, "agents")]) {
      assert.equal(statSync(dir).mode & 0o777, 0o755, `${dir} is 0755`);
    }
    assert.equal(statSync(path.join(town, "state", "homes.img")).mode & 0o777, 0o600);
    const asAgent = run("runuser", [
      "-u",
      C,
      "--",
      "sh",
      "-c",
      "cd && echo hello > probe && cat probe && cat .config/nuketown/identity.toml >/dev/null && echo kept > projects/x",
    ]);
    assert.equal(asAgent.code, 0, asAgent.stderr);
    assert.equal(asAgent.stdout, "hello\n");
    assert.match(nuketown(["plan", file]).stdout, /^no changes$/m);
  });
});
