#!/usr/bin/env bash
# bench/verify.sh [MiB]: how fast an auditor checks a trail. Makes a signed
# trail of MiB (default 1024) with bench/trailgen (calls with their begin
# lines, events, a checkpoint every 10,000 records, rotated into 4 files),
# then times, on the same files:
#   openssl dgst -sha256          one core of hardware SHA-256: the reference
#   keybroker audit verify ... --public-key K   (the chain and every signature)
#   keybroker audit report ...
# and again with the rotated files gzipped (no target: gunzip bounds it).
# Prints MB/s and peak RSS of each. Needs Go, openssl and python3. Work
# files go to KB_BENCH_DIR (default /tmp/kb-bench-verify): put it on the
# disk the trail would live on; the files are read from the page cache.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mib=${1:-1024}
dir=${KB_BENCH_DIR:-/tmp/kb-bench-verify}
for tool in go openssl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing" >&2; exit 1; }
done
mkdir -p "$dir/bin"
(cd "$repo" && go build -o "$dir/bin/keybroker" ./cmd/proxy && go build -o "$dir/bin/trailgen" ./bench/trailgen)

# run LABEL BYTES CMD...: wall time, MB/s and the peak RSS of CMD.
run() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
label, size, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
t = time.time()
p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
dt = time.time() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
ok = "ok" if p.returncode == 0 else "FAILED: " + p.stderr.decode().strip()[:200]
print(f"  {label:<34} {dt:6.2f} s  {size / dt / 1e6:7.0f} MB/s  peak RSS {rss:4d} MB  {ok}")
PY
}

for variant in plain gzip; do
  rm -rf "$dir/trail"
  flags=(-dir "$dir/trail" -size $((mib << 20)) -files 4)
  [ "$variant" = gzip ] && flags+=(-gzip)
  pub=$("$dir/bin/trailgen" "${flags[@]}")
  files=()
  for f in "$dir/trail"/audit.log.3* "$dir/trail"/audit.log.2* "$dir/trail"/audit.log.1 "$dir/trail"/audit.log; do files+=("$f"); done
  size=$(cat "${files[@]}" | wc -c)
  if [ "$variant" = gzip ]; then
    size=$(for f in "${files[@]}"; do case $f in *.gz) gzip -dc "$f";; *) cat "$f";; esac; done | wc -c)
  fi
  cat "${files[@]}" > /dev/null # into the page cache
  echo "$variant: ${#files[@]} files, $((size >> 20)) MiB of trail ($(nproc) cores)"
  [ "$variant" = plain ] && run "openssl dgst -sha256 (1 core)" "$size" openssl dgst -sha256 "${files[@]}"
  run "keybroker audit verify --public-key" "$size" "$dir/bin/keybroker" audit verify "${files[@]}" --public-key "$pub"
  run "keybroker audit report" "$size" "$dir/bin/keybroker" audit report "${files[@]}"
done
