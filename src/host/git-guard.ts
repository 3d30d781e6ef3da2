/**
 * Git that nuketown runs on an agent's repositories — the round's fetch of
 * a persisted clone, the daemon's workspace preparation — must not run what
 * the agent planted in a repository's own configuration: hooks, an fsmonitor
 * command, an ssh command, a credential helper, an `ext::` transport, a
 * remote's upload-pack. Command-line `-c` outranks every configuration file
 * (includes too), so these are pinned here; remotes are fetched by their
 * declared URL with the standard upload-pack, never by the repo's remote
 * config. (Whatever the agent's own tasks run is the agent's business: this
 * is about what runs on its behalf, outside its tasks.) Pure.
 */

/** `git` options that neutralise repository-local executable configuration. */
export const GUARDED_GIT_CONFIG: readonly string[] = [
  "core.hooksPath=/dev/null",
  "core.fsmonitor=false",
  "core.sshCommand=ssh",
  "core.gitProxy=",
  "core.askPass=",
  // An empty helper resets the list: no helper the repo names runs.
  "credential.helper=",
  // Fetch and clone list an alternate's refs with this command (an alternate the repo names,
  // even inside its own .git): `true` lists none, and no git runs in the alternate either.
  "core.alternateRefsCommand=true",
  "core.alternateRefsPrefixes=",
  // A submodule's git reads the submodule's own config, filters included.
  "submodule.recurse=false",
  // Only the transports a declared URL may use; never ext:: or fd::.
  "protocol.allow=never",
  "protocol.file.allow=always",
  "protocol.git.allow=always",
  "protocol.http.allow=always",
  "protocol.https.allow=always",
  "protocol.ssh.allow=always",
].flatMap((setting) => ["-c", setting]);

/**
 * `git config --null --name-only --get-regexp '^filter\.'` (a read, runs
 * nothing) → the filter drivers configured at any level, for
 * {@link filterOverrides}. Driver names may hold dots, spaces, `=`.
 */
export const FILTER_NAMES_ARGS: readonly string[] = [
  "config",
  "--null",
  "--name-only",
  "--get-regexp",
  "^filter\\.",
];

export function filterNames(output: string): string[] {
  const names = new Set<string>();
  for (const key of output.split("\0")) {
    const match = /^filter\.(.+)\.[^.]+$/s.exec(key);
    if (match?.[1]) names.add(match[1]);
  }
  return [...names].sort();
}

/**
 * Environment that switches off the named filter drivers (smudge, clean and
 * process commands that `.gitattributes` or `.git/info/attributes` would
 * run): an empty command applies no filter (git's convert.c), and a driver
 * that is not required then passes content through unchanged. Given as
 * `GIT_CONFIG_KEY_n`/`VALUE_n`, command-line level like `-c`, because a
 * name may hold `=`, which `-c` would split at.
 */
export function filterOverrides(names: readonly string[]): Record<string, string> {
  const pairs = names.flatMap((name) => [
    [`filter.${name}.smudge`, ""],
    [`filter.${name}.clean`, ""],
    [`filter.${name}.process`, ""],
    [`filter.${name}.required`, "false"],
  ]);
  const env: Record<string, string> = { GIT_CONFIG_COUNT: String(pairs.length) };
  for (const [index, [key, value]] of pairs.entries()) {
    env[`GIT_CONFIG_KEY_${index}`] = key!;
    env[`GIT_CONFIG_VALUE_${index}`] = value!;
  }
  return env;
}

/** `git -C dir fetch` of a declared URL into origin's remote-tracking branches. */
export function guardedFetchArgs(dir: string, url: string): string[] {
  return [
    ...GUARDED_GIT_CONFIG,
    "-C",
    dir,
    "fetch",
    "--quiet",
    "--prune",
    "--no-recurse-submodules",
    "--upload-pack=git-upload-pack",
    "--",
    url,
    "+refs/heads/*:refs/remotes/origin/*",
  ];
}
