/**
 * The desktop channel, for real: a test account as the mayor, a virtual X
 * server (Xvfb) of theirs, the real zenity dialog, clicked and typed at with
 * xdotool and photographed with imagemagick. Set NT_TEST_SCREENSHOTS=<dir>
 * to keep the screenshots for a look.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFile, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import type { DecideResult, HumanAnswer } from "../../src/approval/channel.ts";
import {
  DesktopChannel,
  dialogArguments,
  findGraphicalSession,
  showArgument,
} from "../../src/approval/desktop.ts";
import { commandHash, type PendingRequest } from "../../src/approval/protocol.ts";
import { type Runner, systemRunner } from "../../src/os/process.ts";
import type { ResolvedHuman } from "../../src/town/types.ts";
import { cleanupHost, isRoot, makeTempRoot, mustRun, run } from "../support/host.ts";

const MAYOR = "nt-test-dmayor";
const MAYOR_UID = 60731;
const AGENT = { name: "nt-test-dagent", uid: 60732 };
/** The human's name differs from their Unix account: decisions must carry the name. */
const HUMAN: ResolvedHuman = {
  name: "mayor-human",
  unixUser: MAYOR,
  displayName: "The Mayor",
  approver: true,
};

const X11_DIR = "/tmp/.X11-unix";

/** program → Debian package. */
const TOOLS: Record<string, string> = {
  Xvfb: "xvfb",
  zenity: "zenity",
  xdotool: "xdotool",
  import: "imagemagick",
};

const has = (program: string) => run("sh", ["-c", `command -v ${program}`]).code === 0;

/** Installs what is missing (root only); returns the programs still missing. */
function ensureTools(): string[] {
  const missing = () => Object.keys(TOOLS).filter((program) => !has(program));
  const packages = missing().map((program) => TOOLS[program] as string);
  if (packages.length === 0 || !isRoot()) return missing();
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () =>
    spawnSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...packages], {
      env,
      stdio: "ignore",
    }).status;
  if (install() !== 0) {
    spawnSync("apt-get", ["update", "-qq"], { env, stdio: "ignore" });
    install();
  }
  return missing();
}

const missingTools = isRoot() ? ensureTools() : [];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a failure naming what did not happen within `ms`. */
function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe("desktop approval channel", { skip: !isRoot() && "needs root" }, () => {
  it("has Xvfb, zenity, xdotool and imagemagick (installed with apt-get when missing)", (t) => {
    if (missingTools.length === 0) return;
    const message = `cannot test the desktop channel: ${missingTools.join(", ")} missing and apt-get could not install ${missingTools.map((p) => TOOLS[p]).join(" ")}`;
    if (process.env.CI === "true") assert.fail(message);
    t.diagnostic(message);
    t.skip(message);
  });

  describe("in the mayor's X session", { skip: missingTools.length > 0 && "tools missing" }, () => {
    let root = "";
    let home = "";
    let display = "";
    const children: ChildProcess[] = [];
    let channel: DesktopChannel | undefined;
    let createdX11Dir = false;

    /** Start a program as the mayor; it is stopped in `after`. */
    const asMayor = (program: string, args: string[], env: Record<string, string>) => {
      const child = spawn(program, args, {
        uid: MAYOR_UID,
        gid: MAYOR_UID,
        cwd: home,
        env: { HOME: home, PATH: "/usr/bin:/bin", ...env },
        stdio: ["ignore", "ignore", "ignore", "pipe"],
      });
      children.push(child);
      return child;
    };

    /**
     * An X client run by root against the mayor's display (Xvfb trusts local
     * clients). Asynchronous: the channel under test works while it waits.
     */
    const x = (program: string, args: string[]) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(
          program,
          args,
          { env: { PATH: process.env.PATH, DISPLAY: display }, timeout: 20_000 },
          (error, stdout, stderr) =>
            resolve({
              status: error ? (typeof error.code === "number" ? error.code : 1) : 0,
              stdout,
              stderr,
            }),
        );
      });

    const windowOf = async (request: PendingRequest): Promise<string> => {
      const found = await x("xdotool", ["search", "--sync", "--name", request.id]);
      const id = found.stdout.trim().split("\n")[0];
      assert.ok(id, `no window for ${request.id}: ${found.stderr}`);
      return id;
    };

    const windowGone = async (request: PendingRequest) => {
      for (let i = 0; i < 100; i++) {
        if ((await x("xdotool", ["search", "--name", request.id])).stdout.trim() === "") return;
        await sleep(100);
      }
      assert.fail(`the window of ${request.id} is still there`);
    };

    const screenshot = async (name: string): Promise<string> => {
      const file = path.join(root, `${name}.png`);
      const shot = await x("import", ["-window", "root", file]);
      assert.equal(shot.status, 0, shot.stderr);
      const keep = process.env.NT_TEST_SCREENSHOTS;
      if (keep) {
        mkdirSync(keep, { recursive: true });
        copyFileSync(file, path.join(keep, `${name}.png`));
      }
      return file;
    };

    /** The mayor's zenity processes showing a request (by its id on their command line). */
    const zenityPids = (request: PendingRequest): number[] =>
      run("pgrep", ["-u", String(MAYOR_UID), "zenity"])
        .stdout.split("\n")
        .filter((pid) => pid !== "")
        .filter((pid) => {
          const cmdline = (() => {
            try {
              return readFileSync(`/proc/${pid}/cmdline`, "utf8");
            } catch {
              return "";
            }
          })();
          return cmdline.includes(`(${request.id})`);
        })
        .map(Number);

    let serial = 0;
    const request = (argv: string[], seconds = 120): PendingRequest => {
      const base = {
        agent: AGENT,
        argv,
        command: `/usr/bin/${argv[0]}`,
        cwd: "/agents/nt-test-dagent/projects/site",
        runAs: { user: "root" },
      };
      const now = Date.now();
      return {
        ...base,
        id: `d${process.pid.toString(16)}${(serial++).toString(16).padStart(2, "0")}`,
        time: new Date(now).toISOString(),
        hash: commandHash(base),
        expires: new Date(now + seconds * 1000).toISOString(),
      };
    };

    /** A `decide` that records answers; `next` resolves with the next one. */
    const recorder = () => {
      const answers: { id: string; answer: HumanAnswer }[] = [];
      let wake: (() => void) | undefined;
      return {
        answers,
        decide:
          (id: string) =>
          async (answer: HumanAnswer): Promise<DecideResult> => {
            answers.push({ id, answer });
            wake?.();
            return { ok: true };
          },
        next: async (count: number) => {
          while (answers.length < count) await new Promise<void>((resolve) => (wake = resolve));
          return answers[count - 1];
        },
      };
    };

    before(async () => {
      // Our account, left over by a run that was killed before its `after`.
      if (run("id", ["-u", MAYOR]).code === 0) {
        run("pkill", ["-KILL", "-u", MAYOR]);
        run("userdel", [MAYOR]);
      }
      root = makeTempRoot("desktop");
      home = path.join(root, "home");
      mustRun("useradd", [
        "--uid",
        String(MAYOR_UID),
        "--user-group",
        "--no-create-home",
        "--home-dir",
        home,
        "--shell",
        "/usr/sbin/nologin",
        MAYOR,
      ]);
      mkdirSync(home, { mode: 0o700 });
      mustRun("chown", [`${MAYOR}:${MAYOR}`, home]);
      // As on a booted system (tmpfiles' x11.conf): else Xvfb would create it as the mayor.
      if (!existsSync(X11_DIR)) {
        mkdirSync(X11_DIR);
        chmodSync(X11_DIR, 0o1777);
        createdX11Dir = true;
      }
      // Xvfb picks a free display itself and tells us which on fd 3; bounded by timeout(1).
      const xvfb = asMayor(
        "timeout",
        ["600", "Xvfb", "-displayfd", "3", "-nolisten", "tcp", "-screen", "0", "1024x768x24"],
        {},
      );
      const fd = xvfb.stdio[3] as NodeJS.ReadableStream;
      display = await within(
        20_000,
        "Xvfb announcing its display",
        new Promise<string>((resolve, reject) => {
          let text = "";
          fd.setEncoding("utf8");
          fd.on("data", (chunk: string) => {
            text += chunk;
            if (text.includes("\n")) resolve(`:${text.trim()}`);
          });
          xvfb.once("exit", (code) => reject(new Error(`Xvfb exited ${code}`)));
        }),
      );
    });

    after(async () => {
      await channel?.close();
      for (const child of children) child.kill("SIGTERM");
      await sleep(300);
      // Anything of the mayor's still running (zenity, Xvfb), the account, the temp dir.
      cleanupHost(root, [MAYOR]);
      // An Xvfb killed hard leaves its lock and socket; only ours, by owner.
      const number = display.slice(1);
      for (const file of [`/tmp/.X${number}-lock`, path.join(X11_DIR, `X${number}`)]) {
        if (number && existsSync(file) && statSync(file).uid === MAYOR_UID) rmSync(file);
      }
      if (createdX11Dir) {
        try {
          rmdirSync(X11_DIR);
        } catch {
          // Another X server uses it now.
        }
      }
    });

    it("finds the mayor's display in the environment of their processes (no logind here)", async () => {
      // GIVEN processes of the mayor that name a remote display and a dead one
      asMayor("sleep", ["600"], { DISPLAY: "otherhost:0" });
      asMayor("sleep", ["600"], { DISPLAY: `:${Number(display.slice(1)) + 137}` });
      await sleep(200);
      // THEN neither is a graphical session
      assert.equal(await findGraphicalSession(MAYOR, systemRunner), undefined);
      // WHEN a process of theirs runs in the Xvfb display
      asMayor("sleep", ["600"], { DISPLAY: display });
      await sleep(200);
      // THEN that is the session
      assert.deepEqual(await findGraphicalSession(MAYOR, systemRunner), {
        user: MAYOR,
        uid: MAYOR_UID,
        display,
      });
      assert.equal(await findGraphicalSession("nt-test-nosuchuser", systemRunner), undefined);
    });

    it("shows the exact argv; Approve, Deny and a decision made elsewhere", async () => {
      asMayor("sleep", ["600"], { DISPLAY: display });
      const logs: string[] = [];
      channel = new DesktopChannel({ mayor: HUMAN, log: (line) => logs.push(line) });
      const { answers, decide, next } = recorder();

      // GIVEN a request whose argv would be mangled by markup or C escapes
      const tricky = ["systemctl", "restart", "nginx.service", "<b>&amp;</b>", "C:\\new\\101"];
      const first = request(tricky);
      channel.requested(first, decide(first.id));
      const firstWindow = await windowOf(first);
      await sleep(500);
      const shot = await screenshot("approve");
      assert.ok(statSync(shot).size > 0);
      // The dialog's text, as zenity received it, shows each argument as the human should read it.
      const shown = dialogArguments(first, new Date())?.args.find((a) => a.startsWith("--text="));
      assert.ok(shown?.includes("&lt;b&gt;&amp;amp;&lt;/b&gt;"), shown);
      assert.equal(showArgument(tricky[4] as string), '"C:\\\\new\\\\101"');

      // WHEN the mayor clicks Approve (the right-hand button; Return would deny)
      const geometry = Object.fromEntries(
        (await x("xdotool", ["getwindowgeometry", "--shell", firstWindow])).stdout
          .trim()
          .split("\n")
          .map((line) => line.split("=") as [string, string]),
      );
      const right = Number(geometry.X) + Number(geometry.WIDTH);
      const bottom = Number(geometry.Y) + Number(geometry.HEIGHT);
      await x("xdotool", [
        "mousemove",
        "--sync",
        String(right - 40),
        String(bottom - 25),
        "click",
        "1",
      ]);
      // THEN the channel approves in the name of the mayor's human
      assert.deepEqual(await within(10_000, "Approve", next(1)), {
        id: first.id,
        // Bound to the hash the dialog showed.
        answer: { approve: true, human: "mayor-human", hash: first.hash },
      });
      await windowGone(first);

      // GIVEN a second request; WHEN the mayor presses Escape (zenity exits 1)
      const second = request(["iptables", "-F"]);
      channel.requested(second, decide(second.id));
      const secondWindow = await windowOf(second);
      await sleep(300);
      await x("xdotool", ["windowfocus", "--sync", secondWindow]);
      await x("xdotool", ["key", "Escape"]);
      // THEN it is denied
      assert.deepEqual(await within(10_000, "Escape", next(2)), {
        id: second.id,
        answer: { approve: false, human: "mayor-human", hash: second.hash },
      });

      // GIVEN a third request; WHEN it is decided elsewhere
      const third = request(["reboot"]);
      channel.requested(third, decide(third.id));
      await windowOf(third);
      assert.equal(zenityPids(third).length, 1);
      channel.resolved(third, {
        decision: "approved",
        by: { kind: "human", id: "someone-else" },
        reason: "approved by someone-else",
      });
      // THEN its dialog goes away, and the channel says nothing about it
      await windowGone(third);
      for (let i = 0; i < 50 && zenityPids(third).length > 0; i++) await sleep(100);
      assert.deepEqual(zenityPids(third), []);
      await sleep(300);
      assert.equal(answers.length, 2);
      await channel.close();
      assert.deepEqual(logs, []);
    });

    it("stays silent, saying so once, without a session or without zenity", async () => {
      const { answers, decide } = recorder();
      const nobody = { ...HUMAN, unixUser: "nt-test-nosuchuser" };
      const logs: string[] = [];
      const lonely = new DesktopChannel({ mayor: nobody, log: (line) => logs.push(line) });
      for (const r of [request(["id"]), request(["id"])]) lonely.requested(r, decide(r.id));
      await lonely.close();
      assert.deepEqual(logs, ["desktop: no graphical session for nt-test-nosuchuser"]);

      logs.length = 0;
      const bare = new DesktopChannel({
        mayor: HUMAN,
        zenity: path.join(root, "no-zenity-here"),
        log: (line) => logs.push(line),
      });
      for (const r of [request(["id"]), request(["id"])]) bare.requested(r, decide(r.id));
      for (let i = 0; i < 100 && logs.length === 0; i++) await sleep(50);
      await sleep(200);
      await bare.close();
      assert.deepEqual(logs, ["desktop: zenity not installed (apt-get install zenity)"]);
      assert.equal(answers.length, 0);
    });

    it("never denies for the mayor when the dialog cannot be shown", async () => {
      // GIVEN a display whose socket exists but has no X server behind it
      // (zenity then exits 1, like a Deny would without ZENITY_CANCEL)
      const sockets = path.join(root, "x11");
      mkdirSync(sockets);
      const dead = Number(display.slice(1)) + 211;
      const server = net.createServer((socket) => socket.destroy());
      await new Promise<void>((resolve) => server.listen(path.join(sockets, `X${dead}`), resolve));
      asMayor("sleep", ["600"], { DISPLAY: `:${dead}` });
      await sleep(200);
      const { answers, decide } = recorder();
      const logs: string[] = [];
      const broken = new DesktopChannel({
        mayor: HUMAN,
        lookup: { x11SocketDir: sockets },
        log: (line) => logs.push(line),
      });
      const r = request(["id"]);
      // WHEN it is asked
      broken.requested(r, decide(r.id));
      for (let i = 0; i < 200 && logs.length === 0; i++) await sleep(50);
      await broken.close();
      server.close();
      // THEN it says why, and decides nothing
      assert.equal(answers.length, 0);
      assert.match(logs[0] ?? "", /^desktop: zenity exited 1: .*cannot open display/);
    });
  });
});

/**
 * logind is the one edge this container cannot reach (systemd is not PID 1):
 * its answers come from a stand-in for `loginctl`, the processes from a
 * /proc-shaped tree owned by the mayor's uid, the sockets are real.
 */
describe("finding a logind session", { skip: !isRoot() && "needs root (chown)" }, () => {
  let root = "";
  const servers: net.Server[] = [];
  after(() => {
    for (const server of servers) server.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const listen = async (file: string) => {
    const server = net.createServer((socket) => socket.destroy());
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(file, resolve));
  };

  it("takes an active local wayland session, and its WAYLAND_DISPLAY from the user's processes", async () => {
    root = mkdtempSync(path.join("/tmp", "nt-test-desktop-"));
    const etc = path.join(root, "etc");
    const proc = path.join(root, "proc");
    const runtime = path.join(root, "run", String(MAYOR_UID));
    const x11 = path.join(root, "x11");
    for (const dir of [etc, proc, runtime, x11]) mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(etc, "passwd"),
      `root:x:0:0:root:/root:/bin/bash\n${MAYOR}:x:${MAYOR_UID}:${MAYOR_UID}::/home/m:/bin/sh\n`,
    );
    // The session leader (in the session's scope, no WAYLAND_DISPLAY: it is not the compositor),
    // the compositor's child (in user@.service), and a process of someone else.
    const processes: [number, number, Record<string, string>, string][] = [
      [100, MAYOR_UID, { HOME: "/home/m" }, "0::/user.slice/user-60731.slice/session-7.scope\n"],
      [
        200,
        MAYOR_UID,
        {
          WAYLAND_DISPLAY: "wayland-1",
          DISPLAY: ":9",
          XAUTHORITY: "/run/user/x/.mutter-Xwaylandauth",
        },
        "0::/user.slice/user-60731.slice/user@60731.service/app.slice/x.scope\n",
      ],
      [300, 0, { WAYLAND_DISPLAY: "wayland-0" }, "0::/system.slice/x.service\n"],
    ];
    for (const [pid, uid, env, cgroup] of processes) {
      const dir = path.join(proc, String(pid));
      mkdirSync(dir);
      writeFileSync(
        path.join(dir, "environ"),
        Object.entries(env)
          .map(([k, v]) => `${k}=${v}\0`)
          .join(""),
      );
      writeFileSync(path.join(dir, "cgroup"), cgroup);
      chownSync(dir, uid, uid);
    }
    await listen(path.join(runtime, "wayland-1"));
    await listen(path.join(x11, "X9"));

    const calls: string[][] = [];
    const answers: Record<string, string> = {
      "list-sessions": `     c1 ${MAYOR_UID} ${MAYOR} -     pts/0\n      5 ${MAYOR_UID} ${MAYOR} seat0 tty2\n      7 ${MAYOR_UID} ${MAYOR} seat0 tty3\n`,
      "show-session c1":
        "Name=nt-test-dmayor\nType=x11\nDisplay=localhost:10.0\nState=active\nRemote=yes\nLeader=90\n",
      "show-session 5":
        "Name=nt-test-dmayor\nType=tty\nDisplay=\nState=online\nRemote=no\nLeader=95\n",
      "show-session 7":
        "Name=nt-test-dmayor\nType=wayland\nDisplay=\nState=active\nRemote=no\nLeader=100\n",
      [`show-user ${MAYOR}`]: `RuntimePath=${runtime}\n`,
    };
    const loginctl: Runner = {
      async run(program, args) {
        assert.equal(program, "loginctl");
        calls.push([...args]);
        const key = args.filter((a) => !a.startsWith("-") && !/^[A-Z]/.test(a)).join(" ");
        const stdout = answers[key] ?? "";
        return {
          code: key in answers ? 0 : 1,
          stdout,
          stderr: "",
          stdoutBytes: Buffer.from(stdout),
        };
      },
    };
    assert.deepEqual(
      await findGraphicalSession(MAYOR, loginctl, { proc, etc, x11SocketDir: x11 }),
      {
        user: MAYOR,
        uid: MAYOR_UID,
        display: ":9",
        waylandDisplay: "wayland-1",
        xauthority: "/run/user/x/.mutter-Xwaylandauth",
        runtimeDir: runtime,
      },
    );
    assert.deepEqual(calls[1], [
      "--no-pager",
      "show-session",
      "c1",
      "-p",
      "Name",
      "-p",
      "Type",
      "-p",
      "Display",
      "-p",
      "State",
      "-p",
      "Remote",
      "-p",
      "Leader",
    ]);
  });
});
