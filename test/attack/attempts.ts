/**
 * Every attack of issue 17, replayed against a live town (town.ts) from the
 * agents' side: each attempt runs as the agent (its own uid, through
 * runuser), a human's part is the mayor's `nuketown approve|deny`, and the
 * operator's part (reset, apply) is root's. An attempt either held or
 * succeeded, with one line of evidence; "held" means what the issue asks
 * the town to guarantee. Attempts that share a costly step (a reset) run
 * together as one scenario.
 *
 * Nothing dangerous can run: the deny-rule sidesteps target `/` but their
 * human always says no (town.ts never approves anything naming rm), and
 * what an approved attempt would run is harmless (`true`, a script that
 * writes a file into the evidence directory).
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { commitTo } from "../support/git-repo.ts";
import { run } from "../support/host.ts";
import {
  ADA,
  type AttackTown,
  asUser,
  auditRecords,
  BIN,
  daemonBack,
  decide,
  denyAll,
  describeDecision,
  gateOutcome,
  gitAs,
  type Human,
  killAllOf,
  lastLine,
  mayorSays,
  pendingRequests,
  processesWith,
  reset,
  type SudoResult,
  shAs,
  sleep,
  startAs,
  sudoAs,
  task,
  until,
  VOX,
  VOX_ALIAS,
} from "./town.ts";

export interface Verdict {
  readonly id: string;
  /** true: the town held; false: the attack succeeded; undefined: it could not be tried. */
  readonly held: boolean | undefined;
  readonly evidence: string;
  /** Not tried because this host lacks what the attack needs (said in `evidence`). */
  readonly skipped?: boolean;
}

export interface Scenario {
  readonly name: string;
  /** The attempts it reports, by id, with what each tries. */
  readonly attempts: Readonly<Record<string, string>>;
  run(town: AttackTown): Promise<Verdict[]>;
}

const tag = `${process.pid}`;
const node = (town: AttackTown) =>
  path.join(town.prefix, "lib", "nuketown", "current", "bin", "node");
const v = (id: string, held: boolean | undefined, evidence: string): Verdict => ({
  id,
  held,
  evidence,
});
/** A request the gate never answered says nothing either way: not run, with why. */
const judged = (id: string, result: SudoResult, held: boolean, evidence: string): Verdict =>
  gateOutcome(result) === "unreached"
    ? v(id, undefined, `the gate was never reached: ${evidence}`)
    : v(id, held, evidence);
const runtimeDir = (town: AttackTown) => path.join(town.root, "run");

/** The first line of an error output that says something (sops prints a blank line first). */
const firstError = (text: string) =>
  (text.split("\n").find((l) => /\w{3}/.test(l)) ?? "").trim().slice(0, 140);

/** Why a reset failed: its lines that name the cause, not only the summary. */
const whyFailed = (stderr: string) =>
  stderr
    .split("\n")
    .filter((l) => l.trim() !== "")
    .slice(-3)
    .join(" / ")
    .slice(0, 240);

/** The line of apply's or check's output about the age key (else the last line). */
const keyLine = (text: string) =>
  (text.split("\n").find((l) => /age key/.test(l)) ?? lastLine(text)).trim().slice(0, 160);

/** Connect to a Unix socket as a user: "connected" or the error code. */
async function probeSocket(town: AttackTown, user: string, socket: string): Promise<string> {
  const script =
    'const s=require("net").connect(process.argv[1]);' +
    's.on("connect",()=>{console.log("connected");s.end()});' +
    's.on("error",e=>console.log(e.code||e.message));';
  const probed = await asUser(user, [node(town), "-e", script, socket]);
  return (probed.stdout.trim() || probed.stderr.trim()).split("\n")[0] ?? "";
}

// ---------------------------------------------------------------------------

const secrets: Scenario = {
  name: "secrets",
  attempts: {
    "secrets.sops-decrypt":
      "ada decrypts the town's sops file (every agent's SSH key) with the town's age key",
    "secrets.other-home": "ada reads vox's SSH key in vox's home",
    "secrets.readable-key-apply":
      "the age key left 0644 (as the example shipped it): apply goes ahead",
    "secrets.readable-key-check": "the age key left 0644: check passes it",
  },
  async run(town) {
    const out: Verdict[] = [];
    const sops = await asUser(ADA.name, ["sops", "--decrypt", town.sopsFile], {
      env: { SOPS_AGE_KEY_FILE: town.keyFile, HOME: town.home(ADA) },
    });
    const leaked = sops.code === 0 && /PRIVATE KEY/.test(sops.stdout);
    out.push(
      v(
        "secrets.sops-decrypt",
        !leaked,
        leaked
          ? `sops -d as ${ADA.name} printed ${VOX.name}'s private key`
          : `sops -d as ${ADA.name} exited ${sops.code}: ${firstError(sops.stderr)}`,
      ),
    );
    const key = path.join(town.home(VOX), ".ssh", "id_ed25519");
    const read = await asUser(ADA.name, ["cat", key]);
    out.push(
      v(
        "secrets.other-home",
        read.code !== 0,
        read.code === 0 ? `read ${key}` : `cat ${key}: ${lastLine(read.stderr)}`,
      ),
    );
    run("chmod", ["0644", town.keyFile]);
    try {
      const readable = await asUser(ADA.name, ["cat", town.keyFile]);
      const applied = run(BIN, ["apply", town.config]);
      out.push(
        v(
          "secrets.readable-key-apply",
          applied.code !== 0,
          applied.code !== 0
            ? `apply exited ${applied.code}: ${keyLine(applied.stdout + applied.stderr)}`
            : `apply exited 0 with the key 0644 (${ADA.name} ${readable.code === 0 ? "can" : "cannot"} read it)`,
        ),
      );
      const checked = run(BIN, ["check", town.config]);
      out.push(
        v(
          "secrets.readable-key-check",
          checked.code !== 0,
          checked.code !== 0
            ? `check exited ${checked.code}: ${keyLine(checked.stdout + checked.stderr)}`
            : `check exited 0 with the key 0644${/age key/.test(checked.stdout + checked.stderr) ? " (with a warning)" : ", said nothing of it"}`,
        ),
      );
    } finally {
      run("chmod", ["0600", town.keyFile]);
    }
    return out;
  },
};

// ---------------------------------------------------------------------------

const allowOverreach: Scenario = {
  name: "allow rules",
  attempts: {
    "allow.ssh-as-other-agent":
      "under `allow systemctl status **`: sudo -u vox systemctl status -H vox@127.0.0.1:2222",
    "allow.ssh-as-root":
      "under `allow systemctl status **`: sudo systemctl status -H root@127.0.0.1:2222",
    "allow.image":
      "under `allow systemctl status **`: sudo systemctl status --image=<ada's ext4 image>",
    "allow.runas-other-agent": "under a rule without runAs: sudo -u vox systemctl status",
  },
  async run(town) {
    const image = path.join(town.home(ADA), "disk.img");
    await shAs(ADA.name, `truncate -s 8M ${image} && /usr/sbin/mkfs.ext4 -q -F ${image}`);
    const tries: [string, string[], string | undefined][] = [
      [
        "allow.ssh-as-other-agent",
        ["systemctl", "status", "-H", `${VOX.name}@127.0.0.1:2222`],
        VOX.name,
      ],
      ["allow.ssh-as-root", ["systemctl", "status", "-H", "root@127.0.0.1:2222"], undefined],
      ["allow.image", ["systemctl", "status", `--image=${image}`], undefined],
      ["allow.runas-other-agent", ["systemctl", "status"], VOX.name],
    ];
    const out: Verdict[] = [];
    for (const [id, argv, user] of tries) {
      // A human shown ssh to another account, a mount of an agent's image or another
      // agent's identity says no.
      const result = await sudoAs(town, ADA, argv, denyAll, user ? { user } : {});
      out.push(
        judged(
          id,
          result,
          gateOutcome(result) !== "allowed-by-policy",
          `sudo ${user ? `-u ${user} ` : ""}${argv.join(" ")}: ${describeDecision(result)}`,
        ),
      );
    }
    return out;
  },
};

// ---------------------------------------------------------------------------

const denySidesteps: Scenario = {
  name: "deny rules",
  attempts: {
    "deny.bin-rm": "past `deny rm -rf /`: sudo /bin/rm -rf /",
    "deny.split-flags": "past `deny rm -rf /`: sudo rm -r -f /",
    "deny.double-slash": "past `deny rm -rf /`: sudo rm -rf //",
    "deny.slash-dot": "past `deny rm -rf /`: sudo rm -rf /.",
    "deny.long-options": "past `deny rm -rf /`: sudo rm --recursive --force /",
  },
  async run(town) {
    const tries: [string, string[]][] = [
      ["deny.bin-rm", ["/bin/rm", "-rf", "/"]],
      ["deny.split-flags", ["rm", "-r", "-f", "/"]],
      ["deny.double-slash", ["rm", "-rf", "//"]],
      ["deny.slash-dot", ["rm", "-rf", "/."]],
      ["deny.long-options", ["rm", "--recursive", "--force", "/"]],
    ];
    const out: Verdict[] = [];
    for (const [id, argv] of tries) {
      // Held: the rule denies it at once. Asked of a human: the rule was sidestepped
      // (the human says no; town.ts never approves rm).
      const result = await sudoAs(town, ADA, argv, denyAll);
      out.push(
        judged(
          id,
          result,
          gateOutcome(result) === "denied-by-policy",
          `sudo ${argv.join(" ")}: ${describeDecision(result)}`,
        ),
      );
    }
    return out;
  },
};

// ---------------------------------------------------------------------------

const scriptRewrite: Scenario = {
  name: "approved script",
  attempts: {
    "approval.script-rewrite":
      "ada rewrites ./s.sh between the human reading it and approving it; the new content runs as root",
  },
  async run(town) {
    const script = path.join(town.home(ADA), "s.sh");
    const ran = path.join(town.evidence, `rewritten-${tag}`);
    await shAs(
      ADA.name,
      `printf '#!/bin/sh\\necho harmless\\n' > ${script} && chmod 755 ${script}`,
    );
    let read = "";
    const human: Human = (shown) => {
      // The careful human reads the script they are asked to run as root: harmless.
      read = readFileSync(script, "utf8");
      return /^#!\/bin\/sh\necho harmless\n$/.test(read) && /s\.sh/.test(shown)
        ? "approve"
        : "deny";
    };
    const result = await sudoAs(town, ADA, ["./s.sh"], human, {
      cwd: town.home(ADA),
      meanwhile: async () => {
        // While the human decides, the agent swaps the content.
        await shAs(ADA.name, `printf '#!/bin/sh\\nid -u > ${ran}\\n' > ${script}`);
      },
    });
    const rootRan = existsSync(ran) && readFileSync(ran, "utf8").trim() === "0";
    rmSync(ran, { force: true });
    return [
      v(
        "approval.script-rewrite",
        !rootRan,
        rootRan
          ? `the human read "echo harmless" and approved; the rewritten script ran as root (${describeDecision(result)})`
          : `${describeDecision(result)}, human ${result.answered ?? "not asked"}: ${lastLine(result.stderr).slice(0, 140)}`,
      ),
    ];
  },
};

// ---------------------------------------------------------------------------

const targetByName: Scenario = {
  name: "target user by name",
  attempts: {
    "policy.second-name":
      "past `deny cat ** runAs vox`: sudo -u <a second name for vox's uid> cat /etc/hostname",
  },
  async run(town) {
    run("userdel", ["--force", VOX_ALIAS]);
    const made = run("useradd", [
      "--non-unique",
      "--uid",
      String(VOX.uid),
      "--gid",
      VOX.name,
      "--no-create-home",
      "--no-user-group",
      "--home-dir",
      path.join(town.root, "nohome", VOX_ALIAS),
      "--shell",
      "/usr/sbin/nologin",
      VOX_ALIAS,
    ]);
    if (made.code !== 0) return [v("policy.second-name", undefined, `useradd: ${made.stderr}`)];
    try {
      const argv = ["cat", "/etc/hostname"];
      const control = await sudoAs(town, ADA, argv, denyAll, { user: VOX.name });
      const result = await sudoAs(town, ADA, argv, denyAll, { user: VOX_ALIAS });
      return [
        judged(
          "policy.second-name",
          result,
          gateOutcome(result) === "denied-by-policy",
          `as ${VOX.name}: ${describeDecision(control)}; as ${VOX_ALIAS} (uid ${VOX.uid}): ${describeDecision(result)}`,
        ),
      ];
    } finally {
      run("userdel", ["--force", VOX_ALIAS]);
    }
  },
};

// ---------------------------------------------------------------------------

/** U+2060 word joiner, U+3164 Hangul filler, NBSP, and an ESC sequence. */
const INVISIBLE = ["\u2060", "\u3164", "\u00a0", "\u001b"] as const;
const rawIn = (text: string) =>
  INVISIBLE.filter((c) => text.includes(c)).map(
    (c) => `U+${c.codePointAt(0)?.toString(16).padStart(4, "0").toUpperCase()}`,
  );

const invisibleText: Scenario = {
  name: "invisible characters",
  attempts: {
    "text.approvals": "U+2060, U+3164, NBSP and ESC in argv reach `nuketown approvals` raw",
    "text.audit-view": "the same characters reach `nuketown audit tail` raw",
    "text.daemon-log":
      "ESC sequences (and U+2060) in a task's source reach the agent daemon's log raw",
  },
  async run(town) {
    const payload = `a\u2060b\u3164c\u00a0d\u001b[31mred\u001b]0;owned\u0007`;
    let shown = "";
    const result = await sudoAs(town, ADA, ["echo", payload], (row) => {
      shown = row;
      return "deny";
    });
    const tail = await mayorSays(town, ["audit", "tail", "-n", "6"]);
    const out: Verdict[] = [];
    const inShown = rawIn(shown);
    out.push(
      v(
        "text.approvals",
        shown !== "" && inShown.length === 0,
        shown === ""
          ? `the request was never shown (${describeDecision(result)})`
          : inShown.length === 0
            ? `shown as: ${shown.replace(/\s+/g, " ").slice(0, 120)}`
            : `raw ${inShown.join(", ")} in the approvals row`,
      ),
    );
    const inTail = rawIn(tail.stdout);
    out.push(
      v(
        "text.audit-view",
        tail.code === 0 && tail.stdout.includes("echo") && inTail.length === 0,
        tail.code !== 0
          ? `audit tail exited ${tail.code}: ${lastLine(tail.stderr)}`
          : inTail.length === 0
            ? "audit tail shows them escaped"
            : `raw ${inTail.join(", ")} in audit tail`,
      ),
    );
    // As ada, a task to its own daemon whose source carries terminal escapes.
    const source = `talk\u001b]0;owned\u0007\u001b[2J\u2060x`;
    const script =
      'const s=require("net").connect(process.argv[1]);' +
      's.on("connect",()=>s.write(JSON.stringify({v:1,type:"task",project:"site",prompt:"hello",source:process.argv[2]})+"\\n"));' +
      's.on("data",d=>{process.stdout.write(d);s.end()});' +
      's.on("error",e=>console.log(e.code||e.message));';
    const sent = await asUser(ADA.name, [node(town), "-e", script, town.socket(ADA), source]);
    const log = path.join(town.logsDir, `agent-${ADA.name}.log`);
    const queuedLine = () =>
      (existsSync(log) ? readFileSync(log, "utf8") : "")
        .split("\n")
        .filter((l) => /queued/.test(l) && /from talk/.test(l))
        .at(-1);
    await until("the task in the daemon log", () => queuedLine() !== undefined, 10_000).catch(
      () => {},
    );
    const line = queuedLine();
    const inLog = rawIn(line ?? "");
    out.push(
      v(
        "text.daemon-log",
        line !== undefined && inLog.length === 0,
        line === undefined
          ? `no queued line in ${log} (the daemon said: ${sent.stdout.trim().slice(0, 100)})`
          : inLog.length === 0
            ? `logged as: ${line.slice(line.indexOf("task")).slice(0, 120)}`
            : `raw ${inLog.join(", ")} in ${path.basename(log)}`,
      ),
    );
    return out;
  },
};

// ---------------------------------------------------------------------------

const capAndFlood: Scenario = {
  name: "request cap and denial flood",
  attempts: {
    "cap.exit-code": "the per-agent cap's refusal exits 10, as if a human had said no",
    "audit.denial-flood": "60 denied requests grow the audit log by a record or more each",
    "audit.tty-claimed": "the audit's tty is whatever file the agent made its stderr",
  },
  async run(town) {
    const out: Verdict[] = [];
    const env = { PATH: `${town.shimDir}:/usr/bin:/bin`, HOME: town.home(ADA) };
    const waiting = Array.from(
      { length: 8 },
      () => startAs(ADA.name, ["sudo", "true"], { env, timeoutMs: 150_000 }).done,
    );
    await until(
      "eight requests waiting",
      async () =>
        (await pendingRequests(town)).filter((r) => r.agent.name === ADA.name).length >= 8,
      30_000,
    );
    const ninth = await startAs(ADA.name, ["sudo", "true"], { env, timeoutMs: 60_000 }).done;
    for (const request of await pendingRequests(town))
      if (request.agent.name === ADA.name) await decide(town, request, "", denyAll);
    await Promise.all(waiting);
    out.push(
      v(
        "cap.exit-code",
        ninth.code !== 10 && ninth.code !== 0,
        `the 9th sudo exited ${ninth.code}: ${lastLine(ninth.stderr).slice(0, 120)}`,
      ),
    );

    // Each denial is at once (deny rule 1, spelled exactly): nothing waits, nothing runs.
    const before = auditRecords(town).length;
    const flood = 60;
    for (let sent = 0; sent < flood; sent += 10) {
      await Promise.all(
        Array.from(
          { length: 10 },
          () => startAs(ADA.name, ["sudo", "rm", "-rf", "/"], { env, timeoutMs: 60_000 }).done,
        ),
      );
    }
    for (const request of await pendingRequests(town))
      if (request.agent.name === ADA.name) await decide(town, request, "", denyAll);
    const added = auditRecords(town).length - before;
    out.push(
      v("audit.denial-flood", added < flood / 2, `${flood} denials added ${added} audit records`),
    );

    // stderr made a file whose path looks like a terminal.
    const fake = `/dev/shm/nt-test-attack-${tag}/pts/3`;
    const result = await sudoAs(town, ADA, ["true"], () => "approve", {
      shell: `mkdir -p ${path.dirname(fake)} && exec sudo true 2>${fake}`,
    });
    run("rm", ["-rf", path.dirname(path.dirname(fake))]);
    const tty = result.request?.tty;
    out.push(
      v(
        "audit.tty-claimed",
        tty !== fake,
        tty === fake
          ? `audited tty "${tty}": the agent's own file`
          : `audited tty: ${tty === undefined ? "none" : JSON.stringify(tty)} (${describeDecision(result)})`,
      ),
    );
    return out;
  },
};

// ---------------------------------------------------------------------------

const sockets: Scenario = {
  name: "sockets, drop box, gate identity",
  attempts: {
    "socket.other-agent": "vox and ada connect to each other's agent daemon sockets",
    "socket.approvald":
      "ada connects to approvald's request socket (root's) and control socket (approvers')",
    "dropbox.plant": "ada drops or lists a proof file in approvald's control-auth drop box",
    "gate.direct": "ada runs the gate without sudo, claiming SUDO_UID=0 / vox's identity",
    "gate.sudo-env": "ada passes SUDO_USER/SUDO_UID of vox through the real sudo to the gate",
  },
  async run(town) {
    const out: Verdict[] = [];
    const voxToAda = await probeSocket(town, VOX.name, town.socket(ADA));
    const adaToVox = await probeSocket(town, ADA.name, town.socket(VOX));
    out.push(
      v(
        "socket.other-agent",
        voxToAda !== "connected" && adaToVox !== "connected",
        `vox→ada: ${voxToAda}; ada→vox: ${adaToVox}`,
      ),
    );
    const request = await probeSocket(
      town,
      ADA.name,
      path.join(runtimeDir(town), "approval", "request.sock"),
    );
    const control = await probeSocket(town, ADA.name, path.join(runtimeDir(town), "control.sock"));
    out.push(
      v(
        "socket.approvald",
        request !== "connected" && control !== "connected",
        `request.sock: ${request}; control.sock: ${control}`,
      ),
    );
    const box = path.join(runtimeDir(town), "control-auth");
    const dropped = await asUser(ADA.name, ["touch", path.join(box, `proof-${tag}`)]);
    const listed = await asUser(ADA.name, ["ls", box]);
    out.push(
      v(
        "dropbox.plant",
        dropped.code !== 0 && listed.code !== 0,
        `touch: ${dropped.code === 0 ? "made" : lastLine(dropped.stderr)}; ls: ${listed.code === 0 ? "listed" : lastLine(listed.stderr)}`,
      ),
    );

    const seq = auditRecords(town).at(-1)?.seq ?? 0;
    const direct = [];
    for (const env of [
      { SUDO_UID: "0", SUDO_USER: "root" },
      { SUDO_UID: String(VOX.uid), SUDO_USER: VOX.name },
    ]) {
      direct.push(
        await asUser(ADA.name, [town.gate, "--sudo-argv", "id", "-u"], {
          env: { ...env, SUDO_GID: env.SUDO_UID },
        }),
      );
    }
    const foreign = () =>
      auditRecords(town).filter(
        (r) => r.seq > seq && r.event === "request" && r.data.agent !== ADA.name,
      );
    out.push(
      v(
        "gate.direct",
        direct.every((d) => d.code !== 0 && d.stdout.trim() !== "0") && foreign().length === 0,
        direct.map((d) => `exit ${d.code}: ${lastLine(d.stderr)}`).join("; "),
      ),
    );
    const viaSudo = await asUser(
      ADA.name,
      [
        "/usr/bin/sudo",
        "-n",
        `SUDO_USER=${VOX.name}`,
        `SUDO_UID=${VOX.uid}`,
        town.gate,
        "--sudo-argv",
        "id",
        "-u",
      ],
      { timeoutMs: 20_000 },
    );
    out.push(
      v(
        "gate.sudo-env",
        viaSudo.stdout.trim() !== "0" && foreign().length === 0,
        `exit ${viaSudo.code}: ${lastLine(viaSudo.stderr).slice(0, 140)}`,
      ),
    );
    return out;
  },
};

// ---------------------------------------------------------------------------

/**
 * Send vox a task while ada scans every process's command line for `secret`
 * (the pattern read from a file of ada's, so the scanner's own command line
 * does not hold it; `tight`: no pause between scans, for short-lived
 * processes). Root watches for vox's runtime meanwhile.
 */
async function watchForPrompt(
  town: AttackTown,
  request: { prompt: string; mode: "batch" | "interactive" },
  secret: string,
  tight = false,
): Promise<{ sawRuntime: boolean; seen: string[] }> {
  const pattern = path.join(town.home(ADA), `pattern-${tag}`);
  await shAs(ADA.name, `cat > ${pattern}`, { input: `${secret}\n` });
  const outcome = task(town, VOX, { project: "site", source: "attack", ...request }).catch(
    (error: Error) => error,
  );
  const show = `echo "$f: $(tr '\\0' ' ' < $f | tail -c 100)"`;
  const scan = asUser(
    ADA.name,
    [
      "/bin/sh",
      "-c",
      `end=$(($(date +%s) + ${tight ? 3 : 6})); while [ $(date +%s) -lt $end ]; do for f in $(grep -l -a -F -f ${pattern} /proc/[0-9]*/cmdline 2>/dev/null); do ${show}; done; ${tight ? ":" : "sleep 0.1"}; done`,
    ],
    { timeoutMs: 30_000 },
  );
  let sawRuntime = false;
  const deadline = Date.now() + (tight ? 3000 : 6000);
  while (Date.now() < deadline) {
    const runtime = path.join(town.root, "runtimes", "claude");
    if (processesWith(runtime).some((p) => p.uid === VOX.uid)) sawRuntime = true;
    await sleep(100);
  }
  // Lines whose command line could be shown again first: they are the evidence.
  const seen = [...new Set((await scan).stdout.split("\n").filter((l) => l !== ""))]
    .sort((a, b) => Number(a.endsWith(": ")) - Number(b.endsWith(": ")))
    .map((line) =>
      line.endsWith(": ") ? `${line}(matched; gone before it could be shown)` : line,
    );
  await outcome;
  rmSync(pattern, { force: true });
  return { sawRuntime, seen };
}

const prompts: Scenario = {
  name: "prompts in /proc",
  attempts: {
    "proc.prompt-batch":
      "ada reads vox's task prompt from /proc/<pid>/cmdline of vox's runtime (batch)",
    "proc.prompt-interactive":
      "ada reads vox's task prompt from /proc/<pid>/cmdline of vox's runtime (interactive, in tmux)",
    "proc.prompt-branch":
      "ada reads the first words of vox's prompt from the command lines of the git that prepares vox's workspace (its topic branch)",
  },
  async run(town) {
    const out: Verdict[] = [];
    for (const mode of ["batch", "interactive"] as const) {
      const id = `proc.prompt-${mode}`;
      const secret = `nt-secret-${mode}-${tag}`;
      // Past the first six words: the topic branch (proc.prompt-branch) does not carry it.
      const prompt = `hello there friend how are you: please keep ${secret} between us`;
      const { sawRuntime, seen } = await watchForPrompt(town, { prompt, mode }, secret);
      if (!sawRuntime) {
        out.push(v(id, undefined, "vox's runtime was never seen running: nothing to read"));
        continue;
      }
      out.push(
        v(
          id,
          seen.length === 0,
          seen.length === 0
            ? `vox's runtime ran; ${ADA.name} found the prompt in no /proc/*/cmdline`
            : `${ADA.name} read the prompt in ${seen.slice(0, 2).join("; ")}`,
        ),
      );
    }
    // The git processes live for milliseconds: a tight scan, up to five tasks.
    let seen: string[] = [];
    for (let attempt = 1; attempt <= 5 && seen.length === 0; attempt++) {
      const secret = `ntsecret${attempt}x${tag}`;
      const prompt = `please rotate ${secret} tonight`;
      seen = (await watchForPrompt(town, { prompt, mode: "batch" }, secret, true)).seen;
    }
    out.push(
      v(
        "proc.prompt-branch",
        seen.length === 0,
        seen.length === 0
          ? `in five tasks ${ADA.name} found the prompt's words in no /proc/*/cmdline`
          : `${ADA.name} read them in ${seen.slice(0, 2).join("; ")}`,
      ),
    );
    return out;
  },
};

// ---------------------------------------------------------------------------

/**
 * What a planted process does to go unnoticed: it closes the descriptors git
 * left open to it (else it would hold the fetch's pipes and hang the reset
 * instead of outliving it).
 */
const CLOSE_FDS = [3, 4, 5, 6, 7, 8, 9].map((fd) => `${fd}>&-`).join(" ");

const GIT_PLANTS_AT_RESET: [string, string][] = [
  ["core.fsmonitor", "EVIL"],
  ["remote.origin.uploadpack", "EVIL"],
  ["core.sshCommand", "EVIL"],
  ["credential.helper", "!EVIL"],
];

const resetMemory: Scenario = {
  name: "a reset of ada",
  attempts: {
    "git.reset-hooks":
      "planted hooksPath/fsmonitor/uploadpack/sshCommand/credential.helper in ada's persisted clone run during a reset",
    "git.reset-alternate-refs":
      "planted objects/info/alternates + core.alternateRefsCommand in ada's persisted clone run during a reset",
    "reset.tmp-files": "files ada left in /tmp, /var/tmp and /dev/shm are there for the fresh ada",
    "reset.crontab": "a crontab ada installed survives its reset",
  },
  async run(town) {
    const clone = path.join(town.home(ADA), "projects", "site");
    const hooksRan = path.join(town.evidence, `git-hooks-${tag}`);
    const altRan = path.join(town.evidence, `git-alternates-${tag}`);
    const evil = path.join(clone, ".git", "evil.sh");
    const alt = path.join(clone, ".git", "evil-alt.sh");
    // Written as ada, in ada's own clone.
    await shAs(
      ADA.name,
      [
        `printf '#!/bin/sh\\necho "$0 $*" >> ${hooksRan}\\n(setsid sleep 4242 >/dev/null 2>&1 </dev/null ${CLOSE_FDS} &)\\nexec git-upload-pack "$@"\\n' > ${evil}`,
        `printf '#!/bin/sh\\necho "$0 $*" >> ${altRan}\\n(setsid sleep 4243 >/dev/null 2>&1 </dev/null ${CLOSE_FDS} &)\\n' > ${alt}`,
        `chmod 755 ${evil} ${alt}`,
        `mkdir -p ${clone}/.git/myhooks`,
        ...["post-checkout", "post-merge", "reference-transaction", "pre-auto-gc"].map(
          (hook) =>
            `printf '#!/bin/sh\\nexec ${evil}\\n' > ${clone}/.git/myhooks/${hook} && chmod 755 ${clone}/.git/myhooks/${hook}`,
        ),
        `git init -q --bare ${clone}/.git/alt.git`,
        `echo ${clone}/.git/alt.git/objects > ${clone}/.git/objects/info/alternates`,
      ].join(" && "),
    );
    for (const [key, value] of [
      ...GIT_PLANTS_AT_RESET,
      ["core.hooksPath", `${clone}/.git/myhooks`],
    ] as const)
      await gitAs(ADA, clone, ["config", key, value.replace("EVIL", evil)]);
    await gitAs(ADA, clone, ["config", "core.alternateRefsCommand", alt]);
    // Something new upstream, so the round's fetch has work to do.
    commitTo(town.repo, "NEWS", `news ${tag}\n`, "news");

    const memories = ["/tmp", "/var/tmp", "/dev/shm"].map((dir) =>
      path.join(dir, `nt-test-attack-memory-${tag}`),
    );
    await shAs(ADA.name, memories.map((file) => `echo remember > ${file}`).join(" && "));
    const hasCrontab = run("sh", ["-c", "command -v crontab"]).code === 0;
    if (hasCrontab)
      await asUser(ADA.name, ["crontab", "-"], { input: `@reboot echo remember-${tag}\n` });

    const resetAt = Date.now();
    const result = await reset(town, ADA);
    const out: Verdict[] = [];
    if (result.hung) {
      out.push(
        v("git.reset-hooks", false, "the reset hung on what was planted (freed after 120 s)"),
      );
    } else if (result.code !== 0) {
      out.push(v("git.reset-hooks", undefined, `the reset failed: ${whyFailed(result.stderr)}`));
    } else {
      const planted = processesWith("sleep 4242").filter((p) => p.uid === ADA.uid);
      const ran = existsSync(hooksRan);
      out.push(
        v(
          "git.reset-hooks",
          !ran && planted.length === 0,
          ran
            ? `ran during the reset: ${readFileSync(hooksRan, "utf8").split("\n")[0]}${planted.length > 0 ? `; still running: pid ${planted[0]?.pid}` : ""}`
            : "nothing planted ran; the reset fetched",
        ),
      );
      const altRanNow = existsSync(altRan);
      out.push(
        v(
          "git.reset-alternate-refs",
          !altRanNow,
          altRanNow
            ? `core.alternateRefsCommand ran as ${ADA.name} during the reset's fetch: ${readFileSync(altRan, "utf8").split("\n")[0]}`
            : "core.alternateRefsCommand did not run",
        ),
      );
    }
    if (result.code !== 0 || result.hung)
      out.push(
        v(
          "git.reset-alternate-refs",
          existsSync(altRan) ? false : undefined,
          `the reset ${result.hung ? "hung" : "failed"} (see git.reset-hooks)${existsSync(altRan) ? "; core.alternateRefsCommand ran" : ""}`,
        ),
      );

    const kept: string[] = [];
    for (const file of memories) {
      const read = await asUser(ADA.name, ["cat", file]);
      if (read.code === 0 && read.stdout.includes("remember")) kept.push(file);
    }
    out.push(
      v(
        "reset.tmp-files",
        result.code === 0 && kept.length === 0,
        kept.length === 0
          ? `none of ${memories.length} files is left for the fresh ${ADA.name}`
          : `the fresh ${ADA.name} reads ${kept.join(", ")}`,
      ),
    );
    if (hasCrontab) {
      const listed = run("crontab", ["-u", ADA.name, "-l"]);
      const survives = listed.code === 0 && listed.stdout.includes(`remember-${tag}`);
      out.push(
        v(
          "reset.crontab",
          !survives,
          survives ? "ada's crontab is still installed after the reset" : "the crontab is gone",
        ),
      );
      run("crontab", ["-u", ADA.name, "-r"]);
    } else {
      out.push({
        id: "reset.crontab",
        held: undefined,
        skipped: true,
        evidence: "crontab is not installed on this host: an agent cannot install one",
      });
    }
    for (const file of memories) rmSync(file, { force: true });
    run("pkill", ["-KILL", "-u", String(ADA.uid), "-f", "sleep 424[23]"]);
    if (result.code === 0) await daemonBack(town, ADA, resetAt);
    // Leave the clone as the declaration has it for the next scenarios.
    for (const key of [
      ...GIT_PLANTS_AT_RESET.map(([k]) => k),
      "core.hooksPath",
      "core.alternateRefsCommand",
    ])
      await gitAs(ADA, clone, ["config", "--unset-all", key]);
    rmSync(path.join(clone, ".git", "objects", "info", "alternates"), { force: true });
    return out;
  },
};

// ---------------------------------------------------------------------------

const workspacePlant: Scenario = {
  name: "workspace preparation",
  attempts: {
    "git.workspace-hooks":
      "planted core.fsmonitor and hooks (post-checkout) run when ada's daemon prepares a task's workspace",
    "git.workspace-filter":
      "a planted filter driver (smudge/clean, via .git/info/attributes) runs when ada's daemon prepares a task's workspace",
  },
  async run(town) {
    const clone = path.join(town.home(ADA), "projects", "site");
    const hooksRan = path.join(town.evidence, `ws-hooks-${tag}`);
    const filterRan = path.join(town.evidence, `ws-filter-${tag}`);
    const evil = path.join(clone, ".git", "ws-evil.sh");
    const filter = path.join(clone, ".git", "ws-filter.sh");
    await shAs(
      ADA.name,
      [
        `printf '#!/bin/sh\\necho "$0 $*" >> ${hooksRan}\\n' > ${evil}`,
        `printf '#!/bin/sh\\necho "$0 $*" >> ${filterRan}\\nexec cat\\n' > ${filter}`,
        `chmod 755 ${evil} ${filter}`,
        `mkdir -p ${clone}/.git/wshooks`,
        ...["post-checkout", "reference-transaction"].map(
          (hook) =>
            `printf '#!/bin/sh\\nexec ${evil}\\n' > ${clone}/.git/wshooks/${hook} && chmod 755 ${clone}/.git/wshooks/${hook}`,
        ),
        `echo '* filter=nt' > ${clone}/.git/info/attributes`,
      ].join(" && "),
    );
    // ada works on a branch of its own without README, so a new task's branch checks it out.
    await gitAs(ADA, clone, ["switch", "--quiet", "--create", `${ADA.name}/wip-${tag}`]);
    await gitAs(ADA, clone, ["rm", "--quiet", "README"]);
    await gitAs(ADA, clone, ["commit", "--quiet", "-m", "wip"]);
    for (const [key, value] of [
      ["core.fsmonitor", evil],
      ["core.hooksPath", `${clone}/.git/wshooks`],
      ["filter.nt.smudge", filter],
      ["filter.nt.clean", filter],
    ] as const)
      await gitAs(ADA, clone, ["config", key, value]);
    const outcome = await task(town, ADA, {
      project: "site",
      prompt: `tidy the readme ${tag}`,
      source: "attack",
    });
    const started = outcome.end.event === "task.finished" || outcome.end.event === "task.failed";
    const out: Verdict[] = [];
    const hooks = existsSync(hooksRan);
    out.push(
      v(
        "git.workspace-hooks",
        started ? !hooks : undefined,
        hooks
          ? `ran while the workspace was prepared: ${readFileSync(hooksRan, "utf8").split("\n")[0]}`
          : `the task ${outcome.state} and nothing planted ran`,
      ),
    );
    const filtered = existsSync(filterRan);
    out.push(
      v(
        "git.workspace-filter",
        started ? !filtered : undefined,
        filtered
          ? `the filter driver ran as ${ADA.name} while the workspace was prepared (${outcome.state})`
          : `the task ${outcome.state} and the filter did not run`,
      ),
    );
    for (const key of ["core.fsmonitor", "core.hooksPath", "filter.nt.smudge", "filter.nt.clean"])
      await gitAs(ADA, clone, ["config", "--unset-all", key]);
    rmSync(path.join(clone, ".git", "info", "attributes"), { force: true });
    return out;
  },
};

// ---------------------------------------------------------------------------

const outliving: Scenario = {
  name: "outliving a reset",
  attempts: {
    "reset.churner":
      "processes of ada that keep changing pid (fork, exit, fork) and a double-forked one outlive three resets, or make one fail",
  },
  async run(town) {
    const marker = `nt-churn-${tag}`;
    const planted = path.join(town.home(ADA), `planted-${tag}`);
    // Each instance forks a subshell that, 20 ms later, becomes the next instance; the
    // instance itself exits at once: the pid keeps changing. Every generation is an
    // orphan for init to reap, so the pace is kept near what this machine's init reaps
    // (a faster one only piles up zombies, and loads a shared machine).
    const code = '(sleep 0.02; exec sh -c "$1" "$0" "$1") >/dev/null 2>&1 </dev/null &';
    const labels = ["c1", "c2", "dfork"];
    const start = [
      // The cap (processes of ada's uid, zombies included) keeps a runaway from taking
      // the machine's pids.
      ...labels
        .slice(0, 2)
        .map((c) => `prlimit --nproc=3000 setsid -f sh -c '${code}' ${marker}-${c} '${code}'`),
      `setsid -f sh -c 'sleep 600; : ${marker}-dfork' >/dev/null 2>&1 </dev/null`,
      `echo planted > ${planted}`,
    ].join("; ");
    /**
     * Which of them run, sampled for `ms`: a churner is between two processes now and
     * then, and a loaded machine makes that longer, so one look is not enough.
     */
    const running = async (ms: number) => {
      const seen = new Map<string, { pid: number; args: string }>();
      const end = Date.now() + ms;
      do {
        for (const p of processesWith(marker).filter((p) => p.uid === ADA.uid)) {
          const label = new RegExp(`${marker}-(\\w+)`).exec(p.args)?.[1];
          if (label && !seen.has(label)) seen.set(label, p);
        }
        await sleep(50);
      } while (Date.now() < end && seen.size < labels.length);
      return seen;
    };
    const plant = async (what: string) => {
      const started = await shAs(ADA.name, start);
      const seen = await running(15_000);
      if (seen.size < labels.length)
        throw new Error(
          `${what} did not all start (${[...seen.keys()].join(", ") || "none"} seen; sh exited ${started.code}: ${lastLine(started.stderr)})`,
        );
    };
    try {
      await plant("the churners");
      for (let round = 1; round <= 3; round++) {
        const resetAt = Date.now();
        const result = await reset(town, ADA);
        if (result.hung)
          return [v("reset.churner", false, `reset ${round} hung (freed after 120 s)`)];
        if (result.code !== 0)
          return [
            v(
              "reset.churner",
              false,
              `reset ${round} failed: ${whyFailed(result.stderr)}; home rolled back: ${!existsSync(planted)}`,
            ),
          ];
        const left = await running(1500);
        if (left.size > 0) {
          const [label, p] = [...left.entries()][0] ?? [];
          return [
            v(
              "reset.churner",
              false,
              `${[...left.keys()].join(", ")} outlived reset ${round} (exit 0), e.g. ${label} as pid ${p?.pid}`,
            ),
          ];
        }
        if (existsSync(planted))
          return [v("reset.churner", false, `reset ${round} left ${planted} in the home`)];
        await daemonBack(town, ADA, resetAt);
        if (round < 3) {
          await plant("the churners again");
        }
      }
      return [
        v("reset.churner", true, "nothing outlived any of three resets; each rolled the home back"),
      ];
    } finally {
      if ((await running(1000)).size > 0) {
        const since = Date.now();
        killAllOf(ADA);
        await daemonBack(town, ADA, since).catch(() => {});
      }
    }
  },
};

/** In the order they run: what needs a quiet town first, resets last. */
export const SCENARIOS: readonly Scenario[] = [
  secrets,
  sockets,
  allowOverreach,
  denySidesteps,
  targetByName,
  scriptRewrite,
  invisibleText,
  capAndFlood,
  prompts,
  resetMemory,
  workspacePlant,
  outliving,
];

export interface AttemptResult extends Verdict {
  readonly title: string;
  readonly scenario: string;
}

/** Run one scenario; an error marks each of its attempts as not tried, with the reason. */
export async function runScenario(town: AttackTown, scenario: Scenario): Promise<AttemptResult[]> {
  let verdicts: Verdict[];
  try {
    verdicts = await scenario.run(town);
  } catch (error) {
    verdicts = [];
    const reason = `${(error as Error).message.split("\n")[0]}`;
    for (const id of Object.keys(scenario.attempts)) verdicts.push(v(id, undefined, reason));
  }
  return Object.entries(scenario.attempts).map(([id, title]) => {
    const verdict = verdicts.find((x) => x.id === id);
    return {
      id,
      title,
      scenario: scenario.name,
      held: verdict?.held,
      evidence: verdict?.evidence ?? "the scenario reported nothing for it",
      ...(verdict?.skipped && { skipped: true }),
    };
  });
}

/** `held  id  evidence` / `SUCCEEDED  id  evidence` / `skipped|not run  id  reason`. */
export function formatResult(result: AttemptResult): string {
  const state =
    result.held === true
      ? "held"
      : result.held === false
        ? "SUCCEEDED"
        : result.skipped
          ? "skipped"
          : "not run";
  return `${state.padEnd(9)} ${result.id.padEnd(27)} ${result.evidence.replace(/\s+/g, " ")}`;
}

/** The closing line: `N attempts, K succeeded` (skipped ones are not attempts). */
export function summary(results: readonly AttemptResult[]): string {
  const tried = results.filter((r) => r.held !== undefined);
  const succeeded = tried.filter((r) => r.held === false).length;
  return `${tried.length} attempts, ${succeeded} succeeded`;
}

/** Attempts that should have run and did not (an error of the replay, not a skip). */
export const notRun = (results: readonly AttemptResult[]) =>
  results.filter((r) => r.held === undefined && !r.skipped);
