#!/usr/bin/env bash
# Installs the real agent CLIs the runtime tests drive (claude and codex, the
# versions pinned in test/agent-clis/package-lock.json) into
# /opt/nuketown-test/agent-clis, readable and runnable by the test agents.
# Cached: does nothing when that lock is already installed. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${NUKETOWN_AGENT_CLIS:-/opt/nuketown-test/agent-clis}
src="$here/test/agent-clis"
if [ -x "$dest/node_modules/.bin/claude" ] && [ -x "$dest/node_modules/.bin/codex" ] &&
  cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
  echo "agent CLIs: installed ($dest)"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "run this script as root: it installs into $dest" >&2
  exit 4
fi
echo "installing the agent CLIs into $dest"
mkdir -p "$dest"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
# claude's postinstall copies its native binary into place: scripts must run.
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
chmod -R a+rX "$dest"
"$dest/node_modules/.bin/claude" --version
"$dest/node_modules/.bin/codex" --version
