package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAccessLogJSONEndToEnd: `ca serve --log-format json` writes one JSON
// access-log line per request with the documented fields; its request_id
// is the answer's X-Request-Id and the problem body's request_id.
func TestAccessLogJSONEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := startServer(t, "--config", ca.Config, "--log-format", "json")
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(ca.Dir, "root.crt")))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Post(srv.URL+"/v1/enroll", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Type      string `json:"type"`
		RequestID string `json:"request_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if id == "" || p.RequestID != id {
		t.Fatalf("X-Request-Id %q, problem request_id %q", id, p.RequestID)
	}
	// The line may land just after the answer.
	var line map[string]any
	for deadline := time.Now().Add(5 * time.Second); line == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		sc := bufio.NewScanner(strings.NewReader(srv.stderr.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["request_id"] == id {
				line = m
			}
		}
	}
	if line == nil {
		t.Fatalf("no JSON access-log line for request %s in:\n%s", id, srv.stderr.String())
	}
	for k, want := range map[string]any{"method": "POST", "route": "/v1/enroll", "status": float64(401), "problem": "token-invalid", "remote": "127.0.0.1"} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %v (line %v)", k, line[k], want, line)
		}
	}
	for _, k := range []string{"time", "latency_ms"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access log line without %s: %v", k, line)
		}
	}
}
