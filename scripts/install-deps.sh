#!/usr/bin/env bash
# install-deps.sh: everything keybroker's tests and demo need on a fresh
# Debian machine: Go modules, Debian's redis-server, and the Vault test
# server (Vault's own server code built from tools/vaultdev).
# Idempotent; run as root (apt-get) or with redis-server already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

# Debian packages: redis-server (shared quotas), tinyproxy (an egress
# CONNECT proxy for the egress tests) and python3-requests (the README's
# Python snippets, run by the tests). The tests start their own instances
# on loopback ports; the packaged services are stopped.
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v tinyproxy >/dev/null 2>&1 || missing="$missing tinyproxy"
/usr/bin/python3 -c 'import requests' >/dev/null 2>&1 || missing="$missing python3-requests"
# promtool (checks deploy/prometheus and the dashboard) comes with Debian's
# prometheus package, whose server must not start: it would take port 9090,
# keybroker's admin default.
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
# rsyslog with TLS (rsyslog-gnutls): the audit-shipping test runs its own
# rsyslogd as shipper and receiver (deploy/shipping), never the service.
command -v rsyslogd >/dev/null 2>&1 && [ -e /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] ||
  [ -n "$(find /usr/lib -name lmnsd_gtls.so 2>/dev/null | head -n1)" ] || missing="$missing rsyslog rsyslog-gnutls"
if [ -n "$missing" ]; then
  say "installing$missing (Debian)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing:$missing and this is not root: run 'sudo apt-get install -y$missing'" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # No package starts a service during the install (policy-rc.d says no);
  # the tests start their own instances on loopback ports.
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
  if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  for svc in redis-server tinyproxy prometheus rsyslog; do
    (service "$svc" stop || systemctl stop "$svc" || true) >/dev/null 2>&1
    (systemctl disable "$svc" || true) >/dev/null 2>&1
  done
fi
say "redis-server: $(redis-server --version | head -n1)"
say "tinyproxy: $(tinyproxy -v 2>&1 | head -n1)"
say "promtool: $(promtool --version 2>&1 | head -n1)"
say "rsyslogd: $(rsyslogd -v 2>&1 | head -n1)"

say "downloading Go modules"
go mod download

say "building the Vault test server (first build downloads ~500 MB and takes a few minutes)"
mkdir -p .run/bin
(cd tools/vaultdev && go build -o ../../.run/bin/vaultdev .)
say "vault test server: .run/bin/vaultdev"
