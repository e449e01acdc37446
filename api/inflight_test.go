package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
)

// stallingBody is a request body whose first Read says so on started and
// then blocks until release is closed: the request holds its door slot
// (the handler is reading its body) for as long as the test wants.
type stallingBody struct {
	started chan struct{}
	release chan struct{}
	once    sync.Once
	r       io.Reader
}

func (b *stallingBody) Read(p []byte) (int, error) {
	b.once.Do(func() { close(b.started); <-b.release })
	return b.r.Read(p)
}

// TestDoorsShedWhenFull: with limits.max_in_flight 1 and no queue, an
// enrollment arriving while another is being worked on is shed with 503
// overloaded, Retry-After and a problem body saying what to do; it reads
// and spends nothing, and the access log names the problem. Routes behind
// no door (the CA roots) are served meanwhile. When the first finishes,
// the door takes requests again.
func TestDoorsShedWhenFull(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var accessLog syncLog
	h, err := api.New(api.Config{
		Store: f.store, Provision: f.prov, Admin: f.admin, Attestors: f.attestors,
		Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(), TrustDomain: pkitest.TrustDomain, Revocation: f.rev,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		AccessLog: slog.New(slog.NewTextHandler(&accessLog, nil)),
		Limits:    api.Limits{MaxInFlight: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	token := f.mint(provision.TokenSpec{TTL: time.Hour, Uses: 3})
	post := func(remote string, body io.Reader) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/v1/enroll", body)
		req.RemoteAddr = remote
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	slow := &stallingBody{started: make(chan struct{}), release: make(chan struct{}),
		r: bytes.NewReader(enrollBody(t, f.csr("SN-SHED-1")))}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- post("192.0.2.1:1000", slow) }()
	<-slow.started

	before := f.counts()
	rec := post("192.0.2.2:1000", bytes.NewReader(enrollBody(t, f.csr("SN-SHED-2"))))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("enrollment while the door is full: %d %s, want 503", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
	var p wire.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Slug() != wire.SlugOverloaded ||
		!strings.Contains(p.Detail, "limits.max_in_flight") || !strings.Contains(p.Detail, "retry") {
		t.Errorf("problem %+v (%v), want slug %s naming limits.max_in_flight and what to do", p, err, wire.SlugOverloaded)
	}
	if after := f.counts(); after != before {
		t.Errorf("a shed request changed the registry: %+v -> %+v", before, after)
	}
	if !strings.Contains(accessLog.String(), "problem="+wire.SlugOverloaded) {
		t.Errorf("access log does not name the shed request:\n%s", accessLog.String())
	}

	// Routes behind no door are still served.
	req := httptest.NewRequest(http.MethodGet, "/v1/ca/roots", nil)
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		t.Errorf("GET /v1/ca/roots while the doors are full: %d", rr.Code)
	}

	close(slow.release)
	if rec := <-first; rec.Code != http.StatusCreated {
		t.Fatalf("the request that held the slot: %d %s", rec.Code, rec.Body)
	}
	if rec := post("192.0.2.2:1000", bytes.NewReader(enrollBody(t, f.csr("SN-SHED-2")))); rec.Code != http.StatusCreated {
		t.Fatalf("after the slot was released: %d %s, want 201", rec.Code, rec.Body)
	}
	if left := f.usesLeft(token); left != 1 {
		t.Errorf("%d token uses left, want 1 (two enrollments, the shed one spent nothing)", left)
	}
}

// syncLog is a bytes.Buffer safe for the access log's concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
