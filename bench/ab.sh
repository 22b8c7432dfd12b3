#!/usr/bin/env bash
# bench/ab.sh [rounds] [seconds] [connections]
#
# Interleaved A/B of keybroker with every feature on (caller key, policy,
# sliding-window limiter with room, audit to a file, metrics) against the
# bare Go floor (bench/floor: httputil.ReverseProxy that sets one header)
# and nginx, all in front of one stand-in vendor (bench/upstream) on
# loopback. Each round runs wrk against each target in turn; the figures
# are the medians of the per-round ratios, with their spread, so that the
# drift of a shared machine cancels out. CPU time per request (from
# /proc/PID/stat) is given for keybroker and the floor: it repeats better
# than throughput on a small machine.
#
#   bench/ab.sh 7 3 64          plain http to the vendor (a sidecar's view)
#   bench/ab-tls.sh 7 3 64      verified HTTPS, HTTP/2 offered: the production path
#   FLOOR_H1=1 bench/ab-tls.sh  the floor on HTTP/1.1 over TLS instead of HTTP/2
#   KB_BENCH_CALLER=jwt bench/ab-tls.sh 7 3 1
#                               keybroker's caller proves itself with a platform
#                               JWT (RS256, keys from a jwks_file) instead of a key
#   KB_BENCH_SEQ=20000 bench/ab-tls.sh
#                               one call at a time instead of wrk's rounds,
#                               interleaved call by call across the floor,
#                               keybroker and nginx (bench/seq): medians that
#                               the machine's drift cannot tilt
#   KB_BENCH_RATE=300 bench/ab-tls.sh 5 10
#                               open loop (bench/open): calls arrive as a Poisson
#                               process at 300/s whether or not earlier ones were
#                               answered, latency from each call's intended start;
#                               p50, p99, p99.9 of keybroker against the floor over
#                               [rounds] rounds of [seconds] each, the two taking
#                               turns every second (A B, B A, ...) so that the
#                               machine's drift weighs on both alike
#   KB_BENCH_METHOD=POST KB_BENCH_SYNC=none bench/ab-tls.sh 5 5 64
#                               every call a POST with a small body (bench/post.lua),
#                               keybroker's audit.sync set (writes, all, none; unset:
#                               the binary's default). Put KB_BENCH_DIR on the disk
#                               the trail would live on: fdatasync on tmpfs is free
#   KB_BENCH_KEYBROKER=/path/to/keybroker bench/ab-tls.sh
#                               that binary instead of one built from this clone (an
#                               older build, for a before/after in the same run)
#
# Run from a clone (no other checkout needed). Needs Go, wrk, nginx, curl,
# python3, and openssl for the TLS run: apt-get install -y wrk nginx-light
# openssl (stop the packaged nginx service; this script starts its own).
# The caller key is made at run time; nothing here holds a usable key.
# Work files go to KB_BENCH_DIR (default /tmp/kb-bench).
set -u
repo=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-7}; secs=${2:-3}; conns=${3:-64}
tls=${KB_BENCH_TLS:-}
dir=${KB_BENCH_DIR:-/tmp/kb-bench}
bin=$dir/bin
for tool in go wrk nginx curl python3 ${tls:+openssl}; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing (Debian: apt-get install -y wrk nginx-light openssl curl python3)" >&2; exit 1; }
done
mkdir -p "$bin" "$dir/tls"
(cd "$repo" && go build -o "$bin/upstream" ./bench/upstream && go build -o "$bin/floor" ./bench/floor &&
  go build -o "$bin/keybroker-built" ./cmd/proxy && go build -o "$bin/jwtcaller" ./bench/jwtcaller &&
  go build -o "$bin/seq" ./bench/seq && go build -o "$bin/open" ./bench/open) || { echo "bench: build failed" >&2; exit 1; }

cp "${KB_BENCH_KEYBROKER:-$bin/keybroker-built}" "$bin/keybroker" || exit 1
method=${KB_BENCH_METHOD:-GET}
case $method in
  GET) wrk_script=() ;;
  POST) wrk_script=(-s "$repo/bench/post.lua") ;;
  *) echo "bench: KB_BENCH_METHOD is GET or POST" >&2; exit 1 ;;
esac
sync_line=""
[ -n "${KB_BENCH_SYNC:-}" ] && sync_line=", sync: $KB_BENCH_SYNC"
echo "keybroker: $("$bin/keybroker" version 2>/dev/null || echo unknown); $method calls; audit.sync ${KB_BENCH_SYNC:-default}; audit on $(df -T "$dir" | awk 'NR==2 {print $2}')"

# The vendor credential (a stand-in's), and a caller key made now.
echo '{"api_key":"key","api_secret":"secret"}' > "$dir/huntress.json"
auth="Basic a2V5OnNlY3JldA=="
key=$("$bin/keybroker" hash-key | awk '/^key:/ {print $2}')
sum=$(printf '%s\n' "$key" | "$bin/keybroker" hash-key --stdin | awk '{print $2}')
identity="key_sha256: $sum"
if [ "${KB_BENCH_CALLER:-key}" = jwt ]; then
  # A platform token instead: a fresh key, its JWKS, one token (an hour).
  key=$("$bin/jwtcaller" -jwks "$dir/jwks.json" -iss https://bench.issuer.example -sub system:serviceaccount:bench:caller -aud keybroker)
  identity="jwt: {issuer: https://bench.issuer.example, audience: keybroker, subject: \"system:serviceaccount:bench:caller\", jwks_file: \"$dir/jwks.json\"}"
fi

if [ -n "$tls" ]; then
  t=$dir/tls
  . "$repo/bench/certs.sh"
  bench_certs "$t"
  vport=18091 fport=18092 nport=18093 kport=18096 aport=19096
  vendor="https://localhost:$vport"
  upstream_args=(-cert "$t/cert.pem" -key "$t/key.pem")
  floor_args=(-ca "$t/ca.pem" ${FLOOR_H1:+-h1})
  egress="egress: {ca_file: \"$t/ca.pem\"}"
  nginx_tls="proxy_ssl_server_name on; proxy_ssl_name localhost; proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $t/ca.pem; proxy_ssl_session_reuse on;"
  scheme=https
else
  vport=18081 fport=18082 nport=18083 kport=18086 aport=19086
  vendor="http://127.0.0.1:$vport"
  upstream_args=() floor_args=() egress="" nginx_tls="" scheme=http
fi

cat > "$dir/keybroker.yaml" <<YAML
# keybroker under load, every feature on (bench/ab.sh writes this file).
listen: 127.0.0.1:$kport
admin: {listen: "127.0.0.1:$aport"}
upstreams:
  - name: huntress
    preset: huntress
    url: $vendor
    credential: {file: {path: "$dir/huntress.json"}}
    rate_limit: {requests: 10000000, per: 1s, burst: 100000, max_wait: 1s}
$egress
callers:
  - name: bench
    $identity
    allow: [{upstream: huntress, methods: [GET, POST], paths: [/v1/**]}]
audit: {path: "$dir/audit.log"$sync_line}
YAML
cat > "$dir/nginx.conf" <<NGINX
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx-body; proxy_temp_path $dir/nginx-proxy;
  fastcgi_temp_path $dir/nginx-fcgi; uwsgi_temp_path $dir/nginx-uwsgi; scgi_temp_path $dir/nginx-scgi;
  upstream vendor { server 127.0.0.1:$vport; keepalive 256; }
  server {
    listen 127.0.0.1:$nport;
    location /huntress/ {
      proxy_pass $scheme://vendor/;
      proxy_http_version 1.1;
      $nginx_tls
      proxy_set_header Connection "";
      proxy_set_header Authorization "$auth";
    }
  }
}
NGINX

rm -f "$dir/audit.log"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
"$bin/upstream" -addr "127.0.0.1:$vport" -want "$auth" "${upstream_args[@]}" & pids+=($!)
"$bin/floor" -addr "127.0.0.1:$fport" -auth "$auth" -target "$vendor" "${floor_args[@]}" 2>/dev/null & floor=$!; pids+=($floor)
nginx -c "$dir/nginx.conf" -p "$dir" & pids+=($!)
"$bin/keybroker" serve --config "$dir/keybroker.yaml" >"$dir/kb.out" 2>"$dir/kb.err" & kb=$!; pids+=($kb)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$aport/readyz" >/dev/null && break; sleep 0.2; done
probe() { curl -s -o /dev/null -w "$1 probe: %{http_code}\n" "${@:2}"; }
probe keybroker -H "Proxy-Authorization: Bearer $key" "http://127.0.0.1:$kport/huntress/v1/agents"
probe floor "http://127.0.0.1:$fport/v1/agents"
probe nginx "http://127.0.0.1:$nport/huntress/v1/agents"

H=(-H "Authorization: $auth" -H "Proxy-Authorization: Bearer $key")
if [ -n "${KB_BENCH_SEQ:-}" ]; then
  proto=http; [ -n "$tls" ] && proto="https${FLOOR_H1:+ (floor on HTTP/1.1)}"
  echo "$proto, one call at a time, interleaved call by call, $KB_BENCH_SEQ calls each:"
  "$bin/seq" -n "$KB_BENCH_SEQ" "${H[@]}" floor="http://127.0.0.1:$fport/v1/agents" \
    keybroker="http://127.0.0.1:$kport/huntress/v1/agents" nginx="http://127.0.0.1:$nport/huntress/v1/agents"
  exit
fi
if [ -n "${KB_BENCH_RATE:-}" ]; then
  proto=http; [ -n "$tls" ] && proto="https${FLOOR_H1:+ (floor on HTTP/1.1)}"
  echo "$proto to the vendor:"
  "$bin/open" -rate "$KB_BENCH_RATE" -rounds "$rounds" -d "${secs}s" "${H[@]}" floor="http://127.0.0.1:$fport/v1/agents" \
    keybroker="http://127.0.0.1:$kport/huntress/v1/agents"
  echo "keybroker peak RSS (kB): $(grep VmHWM "/proc/$kb/status" | awk '{print $2}')"
  exit
fi
thr=2; [ "$conns" -lt 2 ] && thr=1
tck=$(getconf CLK_TCK)
cpu() { [ -n "$1" ] && awk '{print $14+$15}' "/proc/$1/stat" || echo 0; }
# one URL PID: requests/s, p50, requests, CPU ticks the process used
one() {
  local c0 c1 out
  c0=$(cpu "$2")
  out=$(wrk -t$thr -c"$conns" -d"${secs}s" --latency "${wrk_script[@]}" "${H[@]}" "$1" 2>&1 | awk '/Requests\/sec/ {r=$2} $1=="50%" {p=$2} / requests in / {n=$1} END {print r, p, n}')
  c1=$(cpu "$2")
  echo "$out $((c1 - c0))"
}
out=$dir/ab.$$
: > "$out"
targets=("floor=http://127.0.0.1:$fport/v1/agents=$floor" "keybroker=http://127.0.0.1:$kport/huntress/v1/agents=$kb"
  "nginx=http://127.0.0.1:$nport/huntress/v1/agents=")
[ -z "$tls" ] && targets=("direct=$vendor/v1/agents=" "${targets[@]}")
for i in $(seq "$rounds"); do
  line=""
  for tg in "${targets[@]}"; do
    name=${tg%%=*} rest=${tg#*=}
    url=${rest%=*} pid=${rest##*=}
    read -r r p n ticks < <(one "$url" "$pid")
    line="$line $name $r $p $n $ticks"
  done
  echo "round $i:$line"; echo "$line" >> "$out"
done
python3 - "$out" "$conns" "$tck" "${tls:+https${FLOOR_H1:+ (floor on HTTP/1.1)}}" <<'PY'
import sys, statistics as st
def us(v):
    for suf, f in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(suf): return float(v[:-len(suf)]) * f
rows = []
for l in open(sys.argv[1]):
    f = l.split()
    rows.append({f[i]: (float(f[i + 1]), us(f[i + 2]), float(f[i + 3]), float(f[i + 4])) for i in range(0, len(f), 5)})
tck = float(sys.argv[3])
def spread(xs):
    xs = list(xs)
    return f"{st.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
kf = [r["keybroker"][0] / r["floor"][0] for r in rows]
kn = [r["keybroker"][0] / r["nginx"][0] for r in rows]
p50 = {n: st.median(r[n][1] for r in rows) for n in ("floor", "keybroker", "nginx")}
cpu = {n: st.median(r[n][3] / tck * 1e6 / r[n][2] for r in rows) for n in ("floor", "keybroker")}
print(f"{sys.argv[4] or 'http'} c={sys.argv[2]}, {len(rows)} rounds, medians (min-max): keybroker/floor rps {spread(kf)}, keybroker/nginx rps {spread(kn)}")
print(f"  p50: floor {p50['floor']:.0f} us, keybroker {p50['keybroker']:.0f} us, nginx {p50['nginx']:.0f} us"
      + (f"; added over direct: floor {p50['floor'] - st.median(r['direct'][1] for r in rows):.0f} us, keybroker {p50['keybroker'] - st.median(r['direct'][1] for r in rows):.0f} us" if "direct" in rows[0] else ""))
print(f"  CPU per request: floor {cpu['floor']:.0f} us, keybroker {cpu['keybroker']:.0f} us")
PY
rm -f "$out"
echo "keybroker peak RSS (kB): $(grep VmHWM "/proc/$kb/status" | awk '{print $2}')"
