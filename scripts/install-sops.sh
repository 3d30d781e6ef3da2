#!/usr/bin/env bash
# Installs sops (https://github.com/getsops/sops), which Debian 12 does not
# package: built from source with Go into /usr/local/bin. Does nothing when a
# sops is already on PATH. Needs root (to write /usr/local/bin) and Go.
set -euo pipefail
version=v3.13.3
if command -v sops >/dev/null; then
  echo "sops: present ($(command -v sops))"
  exit 0
fi
go=$(command -v go || true)
[ -n "$go" ] || [ ! -x /usr/local/go/bin/go ] || go=/usr/local/go/bin/go
if [ -z "$go" ]; then
  echo "sops is missing and Go is not installed to build it: install Go (https://go.dev/dl/)," >&2
  echo "or put a sops $version binary on PATH (https://github.com/getsops/sops/releases)" >&2
  exit 4
fi
echo "building sops $version with $("$go" version)"
GOBIN=/usr/local/bin "$go" install "github.com/getsops/sops/v3/cmd/sops@$version"
/usr/local/bin/sops --version --disable-version-check
