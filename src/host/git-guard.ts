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
  // Only the transports a declared URL may use; never ext:: or fd::.
  "protocol.allow=never",
  "protocol.file.allow=always",
  "protocol.git.allow=always",
  "protocol.http.allow=always",
  "protocol.https.allow=always",
  "protocol.ssh.allow=always",
].flatMap((setting) => ["-c", setting]);

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
