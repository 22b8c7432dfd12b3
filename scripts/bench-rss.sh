#!/bin/bash
# bench-rss.sh [rounds] [connections] [seconds]: peak RSS of keybroker (the
# bench configuration: every feature on) and of the bare Go floor
# (httputil.ReverseProxy setting one header) while wrk holds N connections
# busy, each in a fresh process, one after the other. Run from the project
# root after ../shared/bench/ab.sh (it uses the binaries ab.sh built) or on
# its own (it builds them the same way). Needs wrk.
set -u
rounds=${1:-3}; conns=${2:-1000}; secs=${3:-5}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=$(cd "$here/../shared/bench" && pwd)
bin=/tmp/kb-bench/bin
mkdir -p "$bin"
echo '{"api_key":"key","api_secret":"secret"}' > /tmp/kb-bench/huntress.json
(cd "$bench/upstream" && go build -o "$bin/upstream" .) && (cd "$bench/goproxy" && go build -o "$bin/goproxy" .) &&
	(cd "$here" && go build -o "$bin/keybroker" ./cmd/proxy) || exit 1
auth="Basic a2V5OnNlY3JldA=="
H=(-H "Authorization: $auth" -H "Proxy-Authorization: Bearer kb_bench_key_0123456789abcdef0123")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
"$bin/upstream" -want "$auth" & pids+=($!)
mem() { awk '/VmHWM|RssAnon|RssFile/ {printf "%s %s ", $1, $2}' "/proc/$1/status"; }
for i in $(seq "$rounds"); do
	"$bin/goproxy" -auth "$auth" -target http://127.0.0.1:18081 >/dev/null 2>&1 & gp=$!
	sleep 0.3
	rps=$(wrk -t2 -c"$conns" -d"${secs}s" "${H[@]}" http://127.0.0.1:18082/v1/agents | awk '/Requests\/sec/ {print $2}')
	echo "round $i floor:     $(mem $gp)(kB) at $rps req/s"
	kill $gp; wait $gp 2>/dev/null
	rm -f /tmp/kb-bench/audit.log
	"$bin/keybroker" serve -config "$bench/conf/keybroker.yaml" >/dev/null 2>&1 & kb=$!
	for _ in $(seq 50); do curl -sf http://127.0.0.1:19086/readyz >/dev/null && break; sleep 0.2; done
	idle=$(awk '/VmRSS/ {print $2}' /proc/$kb/status)
	rps=$(wrk -t2 -c"$conns" -d"${secs}s" "${H[@]}" http://127.0.0.1:18086/huntress/v1/agents | awk '/Requests\/sec/ {print $2}')
	echo "round $i keybroker: $(mem $kb)(kB) at $rps req/s; idle before: $idle kB"
	kill $kb; wait $kb 2>/dev/null
done
