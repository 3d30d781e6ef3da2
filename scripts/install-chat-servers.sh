#!/usr/bin/env bash
# Installs the chat servers the integration tests start on 127.0.0.1 (see
# test/support/prosody.ts and test/support/synapse.ts):
# - Prosody from Debian, whose own system daemon is kept stopped and disabled:
#   the tests run their own instance with their own config;
# - Synapse from PyPI, pinned, in a venv at /opt/nuketown-test/synapse.
# Needs root; does nothing that is already done.
set -euo pipefail
synapse_version=1.163.2
venv=/opt/nuketown-test/synapse

# The system prosody must neither run nor start at boot: it would hold 5222
# and 5269 on all interfaces.
disable_system_prosody() {
  if [ -d /run/systemd/system ]; then
    if systemctl is-enabled --quiet prosody.service 2>/dev/null ||
      systemctl is-active --quiet prosody.service 2>/dev/null; then
      echo "prosody: stopping and disabling the system service"
      systemctl disable --now prosody.service >/dev/null 2>&1
    fi
  else
    if compgen -G "/etc/rc[2-5].d/S*prosody" >/dev/null; then
      echo "prosody: disabling the system service"
      update-rc.d prosody disable >/dev/null 2>&1
    fi
    # Debian 12's init script looks for a process named lua5.2 (prosody runs
    # on lua5.4) and so cannot stop it: use the daemon's pidfile instead.
    local pid
    pid=$(cat /run/prosody/prosody.pid 2>/dev/null || true)
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q /usr/bin/prosody; then
      echo "prosody: stopping the system service (pid $pid)"
      kill -TERM "$pid"
    fi
  fi
}

synapse_installed_version() {
  [ -x "$venv/bin/python" ] || return 0
  "$venv/bin/python" -c \
    'import importlib.metadata as m; print(m.version("matrix-synapse"))' 2>/dev/null || true
}

missing=()
for pkg in prosody python3-venv; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
have_synapse=$(synapse_installed_version)

if [ "${#missing[@]}" -eq 0 ] && [ "$have_synapse" = "$synapse_version" ]; then
  disable_system_prosody
  echo "chat servers: prosody and synapse $synapse_version present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  [ "$have_synapse" = "$synapse_version" ] || missing+=("matrix-synapse $synapse_version in $venv")
  echo "missing: ${missing[*]} (run this script as root)" >&2
  exit 4
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  # Keep the package's postinst from starting the system prosody at all
  # (exit 101: "action forbidden by policy"), unless a policy already exists.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
disable_system_prosody

if [ "$have_synapse" != "$synapse_version" ]; then
  echo "installing: matrix-synapse $synapse_version into $venv"
  # Debian's python3, not whatever python3 comes first on PATH.
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "matrix-synapse==$synapse_version"
  echo "synapse: $(synapse_installed_version)"
fi
