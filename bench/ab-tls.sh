#!/usr/bin/env bash
# bench/ab-tls.sh [rounds] [seconds] [connections]: bench/ab.sh over verified
# HTTPS to the stand-in vendor, HTTP/2 offered: the path production takes.
# keybroker (egress.ca_file), the floor (the same CA, HTTP/2; FLOOR_H1=1:
# HTTP/1.1) and nginx (proxy_ssl_verify, keepalive). See bench/ab.sh.
KB_BENCH_TLS=1 exec "$(dirname "$0")/ab.sh" "$@"
