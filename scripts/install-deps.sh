#!/usr/bin/env bash
# install-deps.sh: everything keybroker's tests and demo need on a fresh
# Debian machine: Go modules, Debian's redis-server, and the Vault test
# server (Vault's own server code built from tools/vaultdev).
# Idempotent; run as root (apt-get) or with redis-server already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1; then
  say "installing redis-server (Debian)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "redis-server is missing and this is not root: run 'sudo apt-get install -y redis-server'" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends redis-server
  # The tests start their own redis-server on a loopback port; the
  # packaged service is not needed.
  (service redis-server stop || systemctl stop redis-server || true) >/dev/null 2>&1
fi
say "redis-server: $(redis-server --version | head -n1)"

say "downloading Go modules"
go mod download

say "building the Vault test server (first build downloads ~500 MB and takes a few minutes)"
mkdir -p .run/bin
(cd tools/vaultdev && go build -o ../../.run/bin/vaultdev .)
say "vault test server: .run/bin/vaultdev"
