/**
 * The shim reads sudo's command line as sudo(8) does, and hands the gate a
 * strict format of its own that parses back to the same request.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type GateRequest,
  GateUsageError,
  gateArguments,
  parseGateArguments,
  parseSudoArgs,
  type RunInvocation,
  type SudoInvocation,
  SudoUsageError,
  shellArgv,
  shellCommandLine,
} from "../../src/approval/sudo-args.ts";

function run(fields: Partial<Omit<RunInvocation, "mode">>): RunInvocation {
  return {
    mode: "run",
    preserveEnv: false,
    setHome: false,
    login: false,
    shell: false,
    nonInteractive: false,
    command: [],
    ...fields,
  };
}

const PARSES: readonly (readonly [line: string[], expected: SudoInvocation])[] = [
  [["ls"], run({ command: ["ls"] })],
  [["ls", "-la", "/root"], run({ command: ["ls", "-la", "/root"] })],
  // user, every spelling
  [["-u", "josh", "id"], run({ user: "josh", command: ["id"] })],
  [["-ujosh", "id"], run({ user: "josh", command: ["id"] })],
  [["--user=josh", "id"], run({ user: "josh", command: ["id"] })],
  [["--user", "josh", "id"], run({ user: "josh", command: ["id"] })],
  [["--us=josh", "id"], run({ user: "josh", command: ["id"] })],
  [["-u", "#1000", "id"], run({ user: "#1000", command: ["id"] })],
  // group
  [["-g", "wheel", "id"], run({ group: "wheel", command: ["id"] })],
  [["-gwheel", "id"], run({ group: "wheel", command: ["id"] })],
  [["--group=wheel", "id"], run({ group: "wheel", command: ["id"] })],
  [["--group", "wheel", "id"], run({ group: "wheel", command: ["id"] })],
  // environment
  [["-E", "env"], run({ preserveEnv: true, command: ["env"] })],
  [["--preserve-env", "env"], run({ preserveEnv: true, command: ["env"] })],
  [["--preserve-env=A,B", "env"], run({ preserveEnv: ["A", "B"], command: ["env"] })],
  [
    ["--preserve-env=A,,B", "--preserve-env=A,C", "env"],
    run({ preserveEnv: ["A", "B", "C"], command: ["env"] }),
  ],
  [["--preserve-env=A", "-E", "env"], run({ preserveEnv: true, command: ["env"] })],
  [["--preserve-env=", "env"], run({ command: ["env"] })],
  // simple flags
  [["-H", "env"], run({ setHome: true, command: ["env"] })],
  [["--set-home", "env"], run({ setHome: true, command: ["env"] })],
  [["-n", "true"], run({ nonInteractive: true, command: ["true"] })],
  [["--non-interactive", "true"], run({ nonInteractive: true, command: ["true"] })],
  [["-D", "/srv", "make"], run({ cwd: "/srv", command: ["make"] })],
  [["-D/srv", "make"], run({ cwd: "/srv", command: ["make"] })],
  [["--chdir=/srv", "make"], run({ cwd: "/srv", command: ["make"] })],
  // -i and -s, with and without a command
  [["-i"], run({ login: true })],
  [["--login"], run({ login: true })],
  [["-s"], run({ shell: true })],
  [["--shell"], run({ shell: true })],
  [["-i", "whoami"], run({ login: true, command: ["whoami"] })],
  [["-s", "echo", "$HOME"], run({ shell: true, command: ["echo", "$HOME"] })],
  [["-u", "josh", "-i"], run({ user: "josh", login: true })],
  // combined short flags
  [["-nu", "root", "id"], run({ user: "root", nonInteractive: true, command: ["id"] })],
  [["-Eu", "josh", "env"], run({ user: "josh", preserveEnv: true, command: ["env"] })],
  [
    ["-nHujosh", "env"],
    run({ user: "josh", setHome: true, nonInteractive: true, command: ["env"] }),
  ],
  [["-nEHs"], run({ preserveEnv: true, setHome: true, shell: true, nonInteractive: true })],
  // -- ends options; so does the first non-option
  [["--", "-weird"], run({ command: ["-weird"] })],
  [["-u", "josh", "--", "ls", "--", "-l"], run({ user: "josh", command: ["ls", "--", "-l"] })],
  [["ls", "-u", "josh"], run({ command: ["ls", "-u", "josh"] })],
  [["-", "x"], run({ command: ["-", "x"] })],
  [["/usr/bin/env", "A=1", "ls"], run({ command: ["/usr/bin/env", "A=1", "ls"] })],
  [["--", "A=1"], run({ command: ["A=1"] })],
  // -k: alone it invalidates, with a command it runs
  [["-k"], { mode: "invalidate" }],
  [["--reset-timestamp"], { mode: "invalidate" }],
  [["-K"], { mode: "invalidate" }],
  [["--remove-timestamp"], { mode: "invalidate" }],
  [["-k", "ls"], run({ command: ["ls"] })],
  [["-ks"], run({ shell: true })],
  // password prompting options change nothing: no password is ever asked
  [["-A", "ls"], run({ command: ["ls"] })],
  [["-S", "ls"], run({ command: ["ls"] })],
  [["-B", "ls"], run({ command: ["ls"] })],
  [["-N", "ls"], run({ command: ["ls"] })],
  [["-p", "", "ls"], run({ command: ["ls"] })],
  [["--prompt=pw: ", "ls"], run({ command: ["ls"] })],
  // other modes
  [["-v"], { mode: "validate" }],
  [["--validate"], { mode: "validate" }],
  [["-nv"], { mode: "validate" }],
  [["-u", "root", "-v"], { mode: "validate" }],
  [["-l"], { mode: "list", command: [] }],
  [["-ll"], { mode: "list", command: [] }],
  [["--list"], { mode: "list", command: [] }],
  [["-l", "systemctl", "restart", "x"], { mode: "list", command: ["systemctl", "restart", "x"] }],
  [["-l", "-u", "josh", "id"], { mode: "list", command: ["id"], user: "josh" }],
  [["-h"], { mode: "help" }],
  [["--help"], { mode: "help" }],
  [["--he"], { mode: "help" }],
  [["-V"], { mode: "version" }],
  [["--version"], { mode: "version" }],
];

const ERRORS: readonly (readonly [line: string[], message: string | RegExp])[] = [
  [[], "sudo: a command is required unless -i or -s is given"],
  [["-u", "josh"], "sudo: a command is required unless -i or -s is given"],
  [["-u"], "sudo: option requires an argument -- 'u'"],
  [["-nu"], "sudo: option requires an argument -- 'u'"],
  [["-g"], "sudo: option requires an argument -- 'g'"],
  [["-x", "ls"], "sudo: unknown option -- 'x'"],
  [["-nx", "ls"], "sudo: unknown option -- 'x'"],
  [["--user"], "sudo: option '--user' requires an argument"],
  [["--frobnicate", "ls"], "sudo: unrecognized option '--frobnicate'"],
  [["--login=yes"], "sudo: option '--login' doesn't allow an argument"],
  [
    ["--pre", "ls"],
    /^sudo: option '--pre' is ambiguous; possibilities: '--preserve-env' '--preserve-groups'$/,
  ],
  [["-u", "", "ls"], "sudo: the -u option needs a non-empty argument"],
  [["-u", "--", "ls"], "sudo: the -u option needs an argument before --"],
  [["-D", "--", "ls"], "sudo: the -D option needs an argument before --"],
  [["-u", "a", "-u", "b", "ls"], "sudo: the -u option may only be given once"],
  [["-i", "-s"], "sudo: you may not specify both the -i and -s options"],
  [["-iE"], "sudo: you may not specify both the -i and -E options"],
  [["-l", "-v"], /^sudo: Only one of the -e, -h, -i, -K, -l, -s, -v or -V options/],
  [["-V", "-h"], /^sudo: Only one of/],
  [["-l", "-i"], /^sudo: Only one of/],
  [["-v", "-E"], "sudo: the -E option cannot be used with -v"],
  [["-K", "-n"], "sudo: the -n option cannot be used with -K"],
  [["-v", "ls"], "sudo: -v does not take a command"],
  [["-K", "ls"], "sudo: -K does not take a command"],
  [["-V", "-u", "root"], "sudo: the -u and -g options cannot be used with -V"],
  [["-l", "-u", "root"], "sudo: -l with -u or -g needs a command to check"],
  [["-k", "-N", "ls"], "sudo: Only one of the -K, -k or -N options may be specified"],
  [["-A", "-S", "ls"], "sudo: the -A and -S options may not be used together"],
  [["--preserve-env=A=1", "env"], "sudo: invalid environment variable name: A=1"],
  [["FOO=bar", "ls"], /^sudo: setting environment variables \(FOO=bar\) is not supported/],
  [["-u", "root", "LD_PRELOAD=/tmp/x.so", "ls"], /^sudo: setting environment variables/],
  // refused, each with its reason
  [["-b", "sleep", "9"], /^sudo: -b \(background\) is not supported: the approval gate waits/],
  [["--background", "x"], /^sudo: -b \(background\) is not supported/],
  [["-e", "/etc/hosts"], /^sudo: -e \(sudoedit\) is not supported/],
  [["-P", "id"], /^sudo: -P \(preserve groups\) is not supported/],
  [["-C", "5", "ls"], /^sudo: -C \(close from\) is not supported/],
  [["-T", "10", "ls"], /^sudo: -T \(command timeout\) is not supported/],
  [["-R", "/mnt", "ls"], /^sudo: -R \(chroot\) is not supported/],
  [["-r", "role", "ls"], /^sudo: -r \(SELinux role\)/],
  [["-U", "josh", "-l"], /^sudo: -U \(list another user's privileges\)/],
  [["-h", "otherhost", "ls"], /^sudo: -h host \(run on another host\) is not supported/],
  [["-hotherhost", "ls"], /^sudo: -h host/],
  [["--host=otherhost", "ls"], /^sudo: -h host/],
];

describe("parseSudoArgs", () => {
  for (const [line, expected] of PARSES) {
    it(`sudo ${JSON.stringify(line)}`, () => {
      assert.deepEqual(parseSudoArgs(line), expected);
    });
  }

  for (const [line, message] of ERRORS) {
    it(`sudo ${JSON.stringify(line)} is refused`, () => {
      assert.throws(
        () => parseSudoArgs(line),
        (error: unknown) => {
          assert.ok(error instanceof SudoUsageError);
          if (typeof message === "string") assert.equal(error.message, message);
          else assert.match(error.message, message);
          return true;
        },
      );
    });
  }
});

describe("-i and -s with a command run it through the target's shell, escaped like sudo", () => {
  it("GIVEN sudo -s with a command THEN the shell gets -c and sudo's escaping", () => {
    const inv = parseSudoArgs(["-s", "echo", "$HOME", "a b", "it's;rm"]) as RunInvocation;
    assert.deepEqual(shellArgv(inv, "/bin/bash"), [
      "/bin/bash",
      "-c",
      "echo $HOME a\\ b it\\'s\\;rm",
    ]);
  });

  it("GIVEN sudo -i alone THEN the target's shell alone", () => {
    assert.deepEqual(shellArgv(parseSudoArgs(["-i"]) as RunInvocation, "/bin/zsh"), ["/bin/zsh"]);
  });

  it("GIVEN no -i or -s THEN the command as typed, never through a shell", () => {
    const inv = parseSudoArgs(["echo", "a;b"]) as RunInvocation;
    assert.deepEqual(shellArgv(inv, "/bin/sh"), ["echo", "a;b"]);
  });

  it("keeps letters, digits, _ - $ and escapes everything else, non-ASCII included", () => {
    assert.equal(shellCommandLine(["A_z-9$", "./x", "é", "*"]), "A_z-9$ \\.\\/x \\é \\*");
    assert.equal(shellCommandLine([]), "");
  });
});

describe("the gate's own format", () => {
  it("spells every option one way, only those that apply, and always ends with --", () => {
    assert.deepEqual(gateArguments(parseSudoArgs(["ls", "-l"])), ["--", "ls", "-l"]);
    assert.deepEqual(
      gateArguments(
        parseSudoArgs(["-nHu", "josh", "-g", "web", "--preserve-env=A,B", "-D", "/srv", "-s", "x"]),
      ),
      [
        "--user",
        "josh",
        "--group",
        "web",
        "--preserve-env-var",
        "A",
        "--preserve-env-var",
        "B",
        "--set-home",
        "--shell",
        "--non-interactive",
        "--cwd",
        "/srv",
        "--",
        "x",
      ],
    );
    assert.deepEqual(gateArguments(parseSudoArgs(["-E", "-s"])).slice(0, 1), ["--preserve-env"]);
  });

  it("is only for running a command, with values that cannot be mistaken for the --", () => {
    assert.throws(() => gateArguments({ mode: "validate" }), TypeError);
    assert.throws(() => gateArguments(run({ user: "--", command: ["ls"] })), TypeError);
  });

  it("never parses the command: everything after the first -- is passed on", () => {
    assert.deepEqual(parseGateArguments(["--", "--user", "x", "--", "-i"]).command, [
      "--user",
      "x",
      "--",
      "-i",
    ]);
  });

  const BAD: readonly (readonly [args: string[], message: RegExp])[] = [
    [["ls"], /expected -- before the command/],
    [[], /expected -- before the command/],
    [["-u", "root", "--", "ls"], /unknown option "-u"/],
    [["--user=root", "--", "ls"], /unknown option "--user=root"/],
    [["--user", "--", "ls"], /--user needs a value/],
    [["--user", "", "--", "ls"], /--user needs a non-empty value/],
    [["--user", "a", "--user", "b", "--", "ls"], /--user given twice/],
    [["--login", "--login", "--"], /--login given twice/],
    [["--login", "--shell", "--"], /exclude each other/],
    [["--login", "--preserve-env", "--"], /exclude each other/],
    [["--preserve-env", "--preserve-env-var", "A", "--", "x"], /exclude each other/],
    [["--preserve-env-var", "A=1", "--", "x"], /invalid environment variable name/],
    [["--preserve-env-var", "A", "--preserve-env-var", "A", "--", "x"], /given twice/],
    [["--"], /a command is required unless --login or --shell/],
  ];
  for (const [args, message] of BAD) {
    it(`refuses ${JSON.stringify(args)}`, () => {
      assert.throws(
        () => parseGateArguments(args),
        (error: unknown) => error instanceof GateUsageError && message.test(error.message),
      );
    });
  }
});

/** A small deterministic generator (mulberry32), so a failure is reproducible. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ["ls", "-l", "--", "-u", "--user", "root", "a b", "", "$HOME", "--login", "é", "-"];

function randomInvocation(next: () => number): RunInvocation {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
  const words = (max: number) =>
    Array.from({ length: Math.floor(next() * max) }, () => pick(WORDS));
  const login = next() < 0.2;
  const shell = !login && next() < 0.2;
  const vars = ["A", "B", "PATH"].filter(() => next() < 0.3);
  const preserveEnv =
    !login && next() < 0.2 ? true : vars.length > 0 && next() < 0.5 ? vars : false;
  const command = words(5);
  if (command.length === 0 && !login && !shell) command.push(pick(["ls", "--", "-x"]));
  return {
    mode: "run",
    ...(next() < 0.5 && { user: pick(["root", "josh", "#0", "-n", "--x"]) }),
    ...(next() < 0.3 && { group: pick(["wheel", "--cwd", "#10"]) }),
    preserveEnv,
    setHome: next() < 0.3,
    login,
    shell,
    nonInteractive: next() < 0.3,
    ...(next() < 0.3 && { cwd: pick(["/srv", "-", "rel dir"]) }),
    command,
  };
}

describe("round trip", () => {
  it("GIVEN many invocations WHEN passed to the gate and parsed back THEN the run fields are equal", () => {
    const next = random(0x5eed);
    for (let n = 0; n < 2000; n++) {
      const inv = randomInvocation(next);
      const { mode: _mode, ...fields } = inv;
      const parsed: GateRequest = parseGateArguments(gateArguments(inv));
      assert.deepEqual(parsed, fields, JSON.stringify(inv));
    }
  });

  it("GIVEN sudo command lines WHEN parsed, passed to the gate and parsed back THEN nothing is lost", () => {
    for (const [line, expected] of PARSES) {
      if (expected.mode !== "run") continue;
      const { mode: _mode, ...fields } = expected;
      assert.deepEqual(parseGateArguments(gateArguments(parseSudoArgs(line))), fields);
    }
  });
});
