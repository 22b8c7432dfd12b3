// Command upstream is the benchmarks' stand-in vendor (bench/ab.sh): it
// answers 200 with a fixed JSON body (a Huntress-like list, -size bytes of
// host name) when the Authorization header equals -want, else 401; over
// HTTPS with HTTP/2 offered when given -cert and -key.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address")
	want := flag.String("want", "", "exact Authorization value to accept")
	size := flag.Int("size", 1024, "response body bytes")
	cert := flag.String("cert", "", "TLS certificate (serve HTTPS, HTTP/2 offered)")
	key := flag.String("key", "", "TLS key")
	flag.Parse()
	body := []byte(`{"agents":[{"id":1,"hostname":"` + strings.Repeat("x", *size) + `"}],"pagination":{}}`)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != *want {
			http.Error(w, `{"error":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	})
	if *cert != "" {
		log.Fatal(http.ListenAndServeTLS(*addr, *cert, *key, nil))
	}
	log.Fatal(http.ListenAndServe(*addr, nil))
}
