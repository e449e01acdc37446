package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON lines written so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("access log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// TestAccessLog: one line per request with the documented fields; the
// request id is the X-Request-Id header and the problem body's request_id
// (a client-sent id is not used).
func TestAccessLog(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	// An enrollment: 201, the tenant of the device.
	tok := f.mint(provision.TokenSpec{TTL: 3600e9, Uses: 1})
	resp, _ := f.enroll(tok, f.csr("SN-LOG-1"))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("enroll: %d", resp.StatusCode)
	}
	enrollID := resp.Header.Get(api.HeaderRequestID)

	// A refusal, with a client-chosen request id that must not be used.
	req, _ := http.NewRequest(http.MethodPost, f.url+"/v1/enroll", bytes.NewReader([]byte(`{}`)))
	req.Header.Set(api.HeaderRequestID, "client-chosen")
	req.Header.Set("Content-Type", "application/json")
	r2, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var p wire.Problem
	if err := json.NewDecoder(r2.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	refusedID := r2.Header.Get(api.HeaderRequestID)
	if refusedID == "" || refusedID == "client-chosen" || p.RequestID != refusedID {
		t.Errorf("refusal: header id %q, problem id %q", refusedID, p.RequestID)
	}

	// An admin read with a client certificate: its serial and tenant.
	admin := f.adminCert(f.ca, "default", "logger", registry.RoleAuditor, "")
	r3, _, err := f.do(f.newClient(&admin), http.MethodGet, "/v1/admin/devices?limit=1", "", "", nil)
	if err != nil || r3.StatusCode != http.StatusOK {
		t.Fatalf("admin read: %v %v", r3, err)
	}

	byID := map[string]map[string]any{}
	for _, l := range f.accessLog.lines(t) {
		if id, _ := l["request_id"].(string); id != "" {
			byID[id] = l
		}
		for _, k := range []string{"time", "request_id", "method", "route", "status", "latency_ms", "remote"} {
			if _, ok := l[k]; !ok {
				t.Errorf("access log line without %s: %v", k, l)
			}
		}
	}
	want := func(id string, kv map[string]any) {
		t.Helper()
		l, ok := byID[id]
		if !ok {
			t.Errorf("no access log line for request %q", id)
			return
		}
		for k, v := range kv {
			if l[k] != v {
				t.Errorf("request %s: %s = %v, want %v (line %v)", id, k, l[k], v, l)
			}
		}
	}
	want(enrollID, map[string]any{"method": "POST", "route": "/v1/enroll", "status": float64(201), "tenant": "default"})
	want(refusedID, map[string]any{"route": "/v1/enroll", "status": float64(401), "problem": wire.SlugTokenInvalid})
	want(r3.Header.Get(api.HeaderRequestID), map[string]any{"route": "/v1/admin/devices", "status": float64(200),
		"client_serial": admin.Leaf.SerialNumber.Text(16), "tenant": "default"})
}
