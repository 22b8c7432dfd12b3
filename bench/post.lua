-- bench/post.lua: wrk sends each call as a POST with a small JSON body (a
-- write call: under audit.sync writes its begin line is synced before it
-- leaves). KB_BENCH_METHOD=POST bench/ab-tls.sh uses it.
wrk.method = "POST"
wrk.body = '{"reason":"bench"}'
wrk.headers["Content-Type"] = "application/json"
