#!/usr/bin/env bash
# dev-run.sh (make run): keybroker on dev/keybroker.yaml with file-based
# secrets, no Vault. First run creates dev/secrets/ with placeholder vendor
# credentials (fill them in; keybroker picks changes up within seconds) and
# a caller key for the "dev" caller.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p dev/secrets .run
chmod 700 dev/secrets
umask 077
[ -f dev/secrets/huntress.json ] || cat > dev/secrets/huntress.json <<'JSON'
{"api_key": "REPLACE_WITH_HUNTRESS_API_KEY", "api_secret": "REPLACE_WITH_HUNTRESS_API_SECRET"}
JSON
[ -f dev/secrets/infocyte.json ] || cat > dev/secrets/infocyte.json <<'JSON'
{"token": "REPLACE_WITH_INFOCYTE_API_TOKEN"}
JSON
if [ ! -f dev/secrets/caller.key ]; then
  .run/bin/proxy hash-key | awk '/^key:/ {print $2}' > dev/secrets/caller.key
fi
KEY=$(cat dev/secrets/caller.key)
export KEYBROKER_DEV_KEY_SHA256=$(printf '%s\n' "$KEY" | .run/bin/proxy hash-key -stdin | awk '{print $2}')

cat <<MSG
keybroker (dev) on http://127.0.0.1:8080, admin on http://127.0.0.1:9090
  vendor credentials: dev/secrets/huntress.json, dev/secrets/infocyte.json (placeholders until you fill them in)
  try:   curl -s -H "Proxy-Authorization: Bearer \$(cat dev/secrets/caller.key)" http://127.0.0.1:8080/huntress/v1/account
  ready: curl -s http://127.0.0.1:9090/readyz
  audit: tail -f .run/audit.log
MSG
exec .run/bin/proxy serve -config dev/keybroker.yaml
