#!/usr/bin/env bash
# bench/rss.sh [rounds] [connections] [seconds]: peak RSS of keybroker (every
# feature on, plain http to the stand-in vendor) and of the bare Go floor
# while wrk holds N connections busy, each in a fresh process, one after
# the other. KB_BENCH_TLS=1: verified HTTPS (HTTP/2) to the vendor instead,
# the production path (needs openssl). Needs Go, wrk and curl. Work files:
# KB_BENCH_DIR (/tmp/kb-bench).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}; conns=${2:-1000}; secs=${3:-5}
dir=${KB_BENCH_DIR:-/tmp/kb-bench}
bin=$dir/bin
for tool in go wrk curl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing (Debian: apt-get install -y wrk curl)" >&2; exit 1; }
done
mkdir -p "$bin"
(cd "$repo" && go build -o "$bin/upstream" ./bench/upstream && go build -o "$bin/floor" ./bench/floor &&
  go build -o "$bin/keybroker" ./cmd/proxy) || exit 1
echo '{"api_key":"key","api_secret":"secret"}' > "$dir/huntress.json"
vendor=http://127.0.0.1:18081 upstream_args=() floor_args=() egress=""
if [ -n "${KB_BENCH_TLS:-}" ]; then
  t=$dir/tls
  . "$repo/bench/certs.sh"
  bench_certs "$t"
  vendor=https://localhost:18081 upstream_args=(-cert "$t/cert.pem" -key "$t/key.pem") floor_args=(-ca "$t/ca.pem")
  egress="egress: {ca_file: \"$t/ca.pem\"}"
fi
auth="Basic a2V5OnNlY3JldA=="
key=$("$bin/keybroker" hash-key | awk '/^key:/ {print $2}')
sum=$(printf '%s\n' "$key" | "$bin/keybroker" hash-key --stdin | awk '{print $2}')
cat > "$dir/rss.yaml" <<YAML
listen: 127.0.0.1:18086
admin: {listen: "127.0.0.1:19086"}
upstreams:
  - name: huntress
    preset: huntress
    url: $vendor
    credential: {file: {path: "$dir/huntress.json"}}
    rate_limit: {requests: 10000000, per: 1s, burst: 100000, max_wait: 1s}
callers:
  - {name: bench, key_sha256: $sum, allow: [{upstream: huntress, methods: [GET], paths: [/v1/**]}]}
audit: {path: "$dir/audit.log"}
$egress
YAML
H=(-H "Authorization: $auth" -H "Proxy-Authorization: Bearer $key")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
"$bin/upstream" -want "$auth" "${upstream_args[@]}" & pids+=($!)
mem() { awk '/VmHWM|RssAnon|RssFile/ {printf "%s %s ", $1, $2}' "/proc/$1/status"; }
for i in $(seq "$rounds"); do
  "$bin/floor" -auth "$auth" -target "$vendor" "${floor_args[@]}" >/dev/null 2>&1 & gp=$!
  sleep 0.3
  rps=$(wrk -t2 -c"$conns" -d"${secs}s" "${H[@]}" http://127.0.0.1:18082/v1/agents | awk '/Requests\/sec/ {print $2}')
  echo "round $i floor:     $(mem $gp)(kB) at $rps req/s"
  kill $gp; wait $gp 2>/dev/null
  rm -f "$dir/audit.log"
  "$bin/keybroker" serve --config "$dir/rss.yaml" >/dev/null 2>&1 & kb=$!
  for _ in $(seq 50); do curl -sf http://127.0.0.1:19086/readyz >/dev/null && break; sleep 0.2; done
  idle=$(awk '/VmRSS/ {print $2}' "/proc/$kb/status")
  rps=$(wrk -t2 -c"$conns" -d"${secs}s" "${H[@]}" http://127.0.0.1:18086/huntress/v1/agents | awk '/Requests\/sec/ {print $2}')
  echo "round $i keybroker: $(mem $kb)(kB) at $rps req/s; idle before: $idle kB"
  kill $kb; wait $kb 2>/dev/null
done
