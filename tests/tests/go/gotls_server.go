// A net/http server over TLS for the kernel_tls_go tests: one line per
// request ("METHOD PATH STATUS") to the log file, so the test compares the
// agent with the server's own record.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

func main() {
	port, cert, key, logPath := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	f, err := os.Create(logPath)
	if err != nil {
		panic(err)
	}
	log := bufio.NewWriter(f)
	var mu sync.Mutex
	codes := map[string]int{"/gotls/ok": 200, "/gotls/missing": 404, "/gotls/fail": 503, "/gotls/before": 200}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, ok := codes[r.URL.Path]
		if !ok {
			code = 400
		}
		w.WriteHeader(code)
		w.Write([]byte(strings.Repeat("x", 100)))
		mu.Lock()
		fmt.Fprintf(log, "%s %s %d\n", r.Method, r.URL.Path, code)
		log.Flush()
		mu.Unlock()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		panic(err)
	}
	srv := &http.Server{
		Handler: h,
		// HTTP/1.1 only: an empty TLSNextProto turns off HTTP/2 over ALPN.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	fmt.Println("ready")
	if err := srv.ServeTLS(ln, cert, key); err != nil {
		panic(err)
	}
}
