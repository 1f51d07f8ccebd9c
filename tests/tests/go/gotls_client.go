// A net/http client over TLS for the kernel_tls_go tests: after `pause`
// (time for the agent to attach to this new executable), `workers`
// goroutines each send `n` keep-alive GETs in turn to three paths; prints
// the statuses it saw as JSON. With `pause` = "stdin" it first opens its
// keep-alive connection with one GET of /gotls/before, prints "ready" and
// waits for a line on stdin (a connection older than the agent).
package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	port := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	workers, _ := strconv.Atoi(os.Args[3])
	tr := &http.Transport{
		// A custom TLS config keeps the transport on HTTP/1.1.
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		MaxIdleConnsPerHost: workers,
		IdleConnTimeout:     time.Minute,
	}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	if os.Args[4] == "stdin" {
		resp, err := c.Get("https://127.0.0.1:" + port + "/gotls/before")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
	} else {
		pause, _ := time.ParseDuration(os.Args[4])
		time.Sleep(pause)
	}
	paths := []string{"/gotls/ok", "/gotls/missing", "/gotls/fail"}
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				resp, err := c.Get("https://127.0.0.1:" + port + paths[i%len(paths)])
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				counts[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	out, _ := json.Marshal(counts)
	fmt.Println(string(out))
}
