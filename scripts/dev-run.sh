#!/usr/bin/env bash
# dev-run.sh: keybroker on dev/keybroker.yaml, no Vault needed.
#
#   scripts/dev-run.sh          (make run)          stand-in vendors on loopback
#   scripts/dev-run.sh --real   (make run-vendors)  the real vendors
#
# The first run makes, in dev/secrets/ (git-ignored, mode 0600): a key for
# each caller (soar-workflows.key, siem-collector.key), the audit signing
# key, and, for --real, placeholder vendor credentials to fill in (keybroker
# refuses to send a placeholder and picks the real value up within seconds).
# Every dev/secrets/<caller>.key is hashed into <CALLER>_KEY_SHA256
# (my-script.key: MY_SCRIPT_KEY_SHA256), so a caller is added with a key
# file and an entry in dev/keybroker.yaml (README "Add a caller"). Each run
# also makes the dev JWT caller's signing key (its JWKS in
# dev/secrets/dev-jwt.jwks.json) and an hour's token (dev-jwt.token).
# Ctrl-C stops keybroker (it signs a last checkpoint) and the stand-ins.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${KEYBROKER_BIN_DIR:-.run/bin}
mode=standin
case "${1:-}" in
"") ;;
--real) mode=real ;;
*) echo "usage: $0 [--real]" >&2; exit 2 ;;
esac
for b in keybroker standin jwtcaller; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing: run 'make run' (it builds both)" >&2; exit 1; }
done

mkdir -p dev/secrets .run
chmod 700 dev/secrets
umask 077

for caller in soar-workflows siem-collector; do
  [ -s "dev/secrets/$caller.key" ] || "$BIN/keybroker" hash-key | awk '/^key:/ {print $2}' > "dev/secrets/$caller.key"
done
sum() { "$BIN/keybroker" hash-key --stdin < "dev/secrets/$1.key" | awk '{print $2}'; }
SOAR_KEY_SHA256=$(sum soar-workflows)
SIEM_KEY_SHA256=$(sum siem-collector)
export SOAR_KEY_SHA256 SIEM_KEY_SHA256
callers=""
for f in dev/secrets/*.key; do
  caller=$(basename "$f" .key)
  [ "$caller" = audit-public ] && continue
  var=$(printf '%s' "$caller" | tr 'a-z-' 'A-Z_')_KEY_SHA256
  export "$var=$(sum "$caller")"
  callers="$callers $caller"
done

# The dev JWT caller: a fresh signing key and an hour's token each run.
"$BIN/jwtcaller" -jwks dev/secrets/dev-jwt.jwks.json -iss https://dev.issuer.example \
  -sub system:serviceaccount:dev:script -aud keybroker > dev/secrets/dev-jwt.token

if [ ! -s dev/secrets/audit-signing.json ]; then
  keys=$("$BIN/keybroker" audit keygen)
  printf '{"private_key": "%s"}\n' "$(awk '/^private_key:/ {print $2}' <<<"$keys")" > dev/secrets/audit-signing.json
  awk '/^public_key:/ {print $2}' <<<"$keys" > dev/secrets/audit-public.key
fi
cp dev/secrets/audit-public.key .run/audit-public.key

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ "$mode" = standin ]; then
  mkdir -p .run/standin
  : > .run/standin/ready.json
  "$BIN/standin" -dir .run/standin > .run/standin/ready.json &
  pids+=($!)
  for _ in $(seq 100); do [ -s .run/standin/ready.json ] && break; sleep 0.1; done
  [ -s .run/standin/ready.json ] || { echo "the stand-in vendors did not start" >&2; exit 1; }
  HUNTRESS_URL=$(sed -n 's/.*"huntress_url":"\([^"]*\)".*/\1/p' .run/standin/ready.json)
  INFOCYTE_URL=$(sed -n 's/.*"infocyte_url":"\([^"]*\)".*/\1/p' .run/standin/ready.json)
  SAT_URL=$(sed -n 's/.*"sat_url":"\([^"]*\)".*/\1/p' .run/standin/ready.json)
  KEYBROKER_SECRETS=.run/standin
  export HUNTRESS_URL INFOCYTE_URL SAT_URL KEYBROKER_SECRETS
  vendors="stand-in Huntress $HUNTRESS_URL, stand-in Huntress SAT $SAT_URL, stand-in Infocyte $INFOCYTE_URL (tools/standin)"
else
  [ -f dev/secrets/huntress.json ] || printf '%s\n' '{"api_key": "REPLACE_WITH_HUNTRESS_API_KEY", "api_secret": "REPLACE_WITH_HUNTRESS_API_SECRET"}' > dev/secrets/huntress.json
  [ -f dev/secrets/infocyte.json ] || printf '%s\n' '{"token": "REPLACE_WITH_INFOCYTE_API_TOKEN"}' > dev/secrets/infocyte.json
  [ -f dev/secrets/huntress-sat.json ] || printf '%s\n' '{"client_id": "REPLACE_WITH_SAT_CLIENT_ID", "client_secret": "REPLACE_WITH_SAT_CLIENT_SECRET"}' > dev/secrets/huntress-sat.json
  vendors="the real vendors; credentials in dev/secrets/huntress.json, infocyte.json and huntress-sat.json (set INFOCYTE_URL=https://<instance>.infocyte.com/api and SAT_SCOPE)"
fi

listen=${KEYBROKER_LISTEN:-127.0.0.1:8080}
admin=${KEYBROKER_ADMIN:-127.0.0.1:9090}
cat <<MSG
keybroker on http://$listen (admin http://$admin), in front of
  $vendors
callers:$callers (keys in dev/secrets/<caller>.key), dev-jwt-script (token in dev/secrets/dev-jwt.token)
try, in another shell:
  export KEY=\$(cat dev/secrets/soar-workflows.key)
  curl -s -u "soar-workflows:\$KEY" "http://$listen/huntress/v1/agents?limit=2"
audit trail: .run/audit.log (signed; public key .run/audit-public.key). Ctrl-C stops.
MSG

"$BIN/keybroker" serve --config dev/keybroker.yaml &
kb=$!
trap 'kill -TERM $kb 2>/dev/null || true' INT TERM
set +e
wait $kb
rc=$?
while kill -0 $kb 2>/dev/null; do wait $kb; rc=$?; done
exit $rc
