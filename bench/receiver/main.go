// A webhook receiver for benchmarks that costs little CPU: standard library only.
//
// Every POST is answered 200 on a kept-alive connection, unless its path is listed in -hang
// (never answered: the client's timeout must fire) or -status (answered with that code).
// When -secret gives a path's key, the X-gio-signature is verified and a bad one gets 401.
// Per path it counts answers by status and distinct delivery ids answered 2xx (a redelivery
// counts once), and keeps (delivery id, receipt time) for latency.
//
//	GET  /_stats     per-path counts, first and last receipt (Unix ns), as JSON
//	GET  /_receipts  "path<TAB>delivery id<TAB>receipt Unix ns" lines
//	POST /_reset     forget everything received so far
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type pathStats struct {
	Statuses map[string]int `json:"statuses"`
	UniqueOK int            `json:"unique_ok"` // distinct delivery ids answered 2xx
	First    int64          `json:"first_ns"`
	Last     int64          `json:"last_ns"`
	ok       map[string]struct{}
}

type receipt struct {
	path string
	id   string
	at   int64
}

type receiver struct {
	hang    map[string]bool
	status  map[string]int
	secrets map[string][]byte

	mu       sync.Mutex
	paths    map[string]*pathStats
	receipts []receipt
}

// pairs parses "a=b,c=d" flag values.
func pairs(text string) map[string]string {
	out := map[string]string{}
	for _, item := range strings.Split(text, ",") {
		if key, value, ok := strings.Cut(item, "="); ok {
			out[key] = value
		}
	}
	return out
}

func (r *receiver) record(path, id string, status int) {
	now := time.Now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	stats := r.paths[path]
	if stats == nil {
		stats = &pathStats{Statuses: map[string]int{}, First: now, ok: map[string]struct{}{}}
		r.paths[path] = stats
	}
	stats.Statuses[strconv.Itoa(status)]++
	if status/100 == 2 {
		stats.ok[id] = struct{}{}
		stats.UniqueOK = len(stats.ok)
	}
	stats.Last = now
	r.receipts = append(r.receipts, receipt{path, id, now})
}

func (r *receiver) hook(w http.ResponseWriter, req *http.Request) {
	path := req.URL.Path
	if r.hang[path] {
		io.Copy(io.Discard, req.Body)
		r.record(path, req.Header.Get("X-gio-delivery-id"), 0)
		<-req.Context().Done() // until the client gives up and closes the connection
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, "unreadable body", http.StatusBadRequest)
		return
	}
	status := http.StatusOK
	if code, ok := r.status[path]; ok {
		status = code
	}
	if key, ok := r.secrets[path]; ok {
		mac := hmac.New(sha256.New, key)
		mac.Write(body)
		given, _ := hex.DecodeString(req.Header.Get("X-gio-signature"))
		if !hmac.Equal(mac.Sum(nil), given) {
			status = http.StatusUnauthorized
		}
	}
	r.record(path, req.Header.Get("X-gio-delivery-id"), status)
	w.WriteHeader(status)
	w.Write([]byte("ok"))
}

func (r *receiver) stats(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(r.paths)
}

func (r *receiver) dump(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	receipts := r.receipts
	r.mu.Unlock()
	out := bufio.NewWriterSize(w, 1<<16)
	for _, item := range receipts {
		fmt.Fprintf(out, "%s\t%s\t%d\n", item.path, item.id, item.at)
	}
	out.Flush()
}

func (r *receiver) reset(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	r.paths = map[string]*pathStats{}
	r.receipts = nil
	r.mu.Unlock()
	w.Write([]byte("ok"))
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	hang := flag.String("hang", "", "comma-separated paths never answered")
	status := flag.String("status", "", "path=code,... answered with that status")
	secrets := flag.String("secret", "", "path=key,... whose X-gio-signature is verified")
	flag.Parse()

	r := &receiver{
		hang: map[string]bool{}, status: map[string]int{}, secrets: map[string][]byte{},
		paths: map[string]*pathStats{},
	}
	for _, path := range strings.Split(*hang, ",") {
		if path != "" {
			r.hang[path] = true
		}
	}
	for path, code := range pairs(*status) {
		value, err := strconv.Atoi(code)
		if err != nil {
			fmt.Fprintf(os.Stderr, "-status %s: %v\n", path, err)
			os.Exit(2)
		}
		r.status[path] = value
	}
	for path, key := range pairs(*secrets) {
		r.secrets[path] = []byte(key)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /_stats", r.stats)
	mux.HandleFunc("GET /_receipts", r.dump)
	mux.HandleFunc("POST /_reset", r.reset)
	mux.HandleFunc("POST /", r.hook)

	// Go listens with the kernel's largest backlog (net.core.somaxconn).
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", listener.Addr())
	os.Stdout.Sync()
	server := &http.Server{Handler: mux, IdleTimeout: 5 * time.Minute}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
