// Command floor is the benchmarks' floor for a Go implementation
// (bench/ab.sh): an httputil.ReverseProxy that sets one header and nothing
// else, with a clone of http.DefaultTransport. -h1 keeps it on HTTP/1.1
// over TLS (no HTTP/2) to the vendor.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18082", "listen address")
	target := flag.String("target", "http://127.0.0.1:18081", "upstream")
	auth := flag.String("auth", "", "Authorization value to inject")
	ca := flag.String("ca", "", "PEM CA to trust for an https target")
	h1 := flag.Bool("h1", false, "HTTP/1.1 over TLS to the target (no HTTP/2)")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil {
		log.Fatal(err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		t.TLSClientConfig = &tls.Config{RootCAs: pool}
		t.ForceAttemptHTTP2 = !*h1
		if *h1 {
			t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("Authorization", *auth)
		},
		Transport: t,
	}
	log.Fatal(http.ListenAndServe(*addr, rp))
}
