# bench/certs.sh, sourced by the benchmarks: bench_certs DIR makes, once,
# a throwaway CA (DIR/ca.pem) and a certificate for localhost signed by it
# (DIR/cert.pem, DIR/key.pem) for the stand-in vendor. Needs openssl.
bench_certs() {
  local t=$1
  mkdir -p "$t"
  [ -s "$t/cert.pem" ] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench-ca \
    -keyout "$t/ca.key" -out "$t/ca.pem" -addext basicConstraints=critical,CA:TRUE 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout "$t/key.pem" -out "$t/req.pem" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$t/ext"
  openssl x509 -req -in "$t/req.pem" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial -days 30 -extfile "$t/ext" -out "$t/cert.pem" 2>/dev/null
}
