package api_test

import (
	"bytes"
	"fmt"
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

// limitedHandler is the fixture's API with limits and a clock of its own;
// requests are served in process so each can come from its own address.
type limitedHandler struct {
	f   *fixture
	h   http.Handler
	mu  sync.Mutex
	now time.Time
}

func newLimited(t *testing.T, f *fixture, l api.Limits) *limitedHandler {
	t.Helper()
	lh := &limitedHandler{f: f, now: time.Now()}
	h, err := api.New(api.Config{
		Store: f.store, Provision: f.prov, Admin: f.admin, Attestors: f.attestors,
		Root: f.ca.CA.Root, Chain: f.ca.Issuer.Chain(), TrustDomain: pkitest.TrustDomain, Revocation: f.rev,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Limits: l,
		Now: func() time.Time { lh.mu.Lock(); defer lh.mu.Unlock(); return lh.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	lh.h = h
	return lh
}

func (lh *limitedHandler) advance(d time.Duration) {
	lh.mu.Lock()
	lh.now = lh.now.Add(d)
	lh.mu.Unlock()
}

// enroll POSTs /v1/enroll from remote ("ip:port") with token and csrPEM.
func (lh *limitedHandler) enroll(remote, token string, csrPEM []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/enroll", bytes.NewReader(enrollBody(lh.f.t, csrPEM)))
	req.RemoteAddr = remote
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	lh.h.ServeHTTP(rec, req)
	return rec
}

// TestLockout: 10 failed authentications from one source within the window
// lock it out of that door (429 with Retry-After, even with a good token,
// which stays unspent); other sources, and other doors, are not affected;
// when the window has passed the source is served again. An IPv6 source
// counts by its /64.
func TestLockout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	lh := newLimited(t, f, api.Limits{LockoutFailures: 10, LockoutWindow: time.Minute})
	const mallory = "192.0.2.7:4000"
	for i := range 10 {
		if i > 0 {
			lh.advance(time.Second) // ten failures within the window
		}
		if rec := lh.enroll(mallory, "not-a-token", f.csr("SN-LOCK-1")); rec.Code != http.StatusUnauthorized {
			t.Fatalf("bad token #%d: %d %s", i+1, rec.Code, rec.Body)
		}
	}
	good := f.mint(provision.TokenSpec{TTL: time.Hour, Uses: 1})
	rec := lh.enroll(mallory, good, f.csr("SN-LOCK-1"))
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), wire.SlugRateLimited) {
		t.Fatalf("locked-out source: %d %s, want 429 rate-limited", rec.Code, rec.Body)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "60" {
		t.Errorf("Retry-After %q, want 60", ra)
	}
	if f.usesLeft(good) != 1 {
		t.Error("a locked-out request spent the token")
	}
	// Another address, and the same address on another door, are served.
	if rec := lh.enroll("198.51.100.1:4000", "not-a-token", f.csr("SN-LOCK-2")); rec.Code != http.StatusUnauthorized {
		t.Errorf("other source: %d", rec.Code)
	}
	renew := httptest.NewRequest(http.MethodPost, "/v1/renew", strings.NewReader(`{}`))
	renew.RemoteAddr = mallory
	rr := httptest.NewRecorder()
	lh.h.ServeHTTP(rr, renew)
	if rr.Code != http.StatusUnauthorized {
		t.Errorf("same source on the renew door: %d, want 401", rr.Code)
	}
	// Still locked just before the window passes, served after.
	lh.advance(59 * time.Second)
	if rec := lh.enroll(mallory, good, f.csr("SN-LOCK-1")); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("before the window passed: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	lh.advance(2 * time.Second)
	if rec := lh.enroll(mallory, good, f.csr("SN-LOCK-1")); rec.Code != http.StatusCreated {
		t.Fatalf("after the window: %d %s", rec.Code, rec.Body)
	}

	// IPv6: one /64 is one source.
	for i := range 10 {
		remote := fmt.Sprintf("[2001:db8:1:2::%x]:5000", i+1)
		if rec := lh.enroll(remote, "x", f.csr("SN-LOCK-3")); rec.Code != http.StatusUnauthorized {
			t.Fatalf("v6 #%d: %d", i, rec.Code)
		}
	}
	if rec := lh.enroll("[2001:db8:1:2::ffff]:1", "x", f.csr("SN-LOCK-3")); rec.Code != http.StatusTooManyRequests {
		t.Errorf("same /64: %d, want 429", rec.Code)
	}
	if rec := lh.enroll("[2001:db8:1:3::1]:1", "x", f.csr("SN-LOCK-3")); rec.Code != http.StatusUnauthorized {
		t.Errorf("next /64: %d, want 401", rec.Code)
	}
}

// TestSerialConflictIsAFailure: a 409 serial-conflict does not name the
// enrolled device and counts toward the lockout, so one token cannot probe
// serials; failures spread over more than a window do not lock.
func TestSerialConflictIsAFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	lh := newLimited(t, f, api.Limits{LockoutFailures: 3, LockoutWindow: time.Minute})
	const src = "192.0.2.8:1"
	rec := lh.enroll(src, f.mint(provision.TokenSpec{TTL: time.Hour, Uses: 1}), f.csr("SN-PROBE"))
	if rec.Code != http.StatusCreated {
		t.Fatalf("first enrollment: %d %s", rec.Code, rec.Body)
	}
	dev := f.device("SN-PROBE")
	probe := f.mint(provision.TokenSpec{TTL: time.Hour, Uses: 5})
	for i := range 2 {
		rec := lh.enroll(src, probe, f.csr("SN-PROBE"))
		if rec.Code != http.StatusConflict {
			t.Fatalf("probe %d: %d %s", i, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), dev.ID) {
			t.Errorf("the serial-conflict answer names the enrolled device: %s", rec.Body)
		}
		lh.advance(40 * time.Second) // two failures never fall in one window
	}
	if rec := lh.enroll(src, probe, f.csr("SN-PROBE")); rec.Code != http.StatusConflict {
		t.Fatalf("third probe, a new window: %d", rec.Code)
	}
	lh.enroll(src, probe, f.csr("SN-PROBE"))
	lh.enroll(src, probe, f.csr("SN-PROBE"))
	if rec := lh.enroll(src, probe, f.csr("SN-PROBE-2")); rec.Code != http.StatusTooManyRequests {
		t.Errorf("after three conflicts in a window: %d, want 429", rec.Code)
	}
	if f.usesLeft(probe) != 5 {
		t.Errorf("probing spent the token: %d uses left", f.usesLeft(probe))
	}
}

// TestPerSourceRate: a source over its rate gets 429 with Retry-After,
// per door; its bucket refills with time.
func TestPerSourceRate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	lh := newLimited(t, f, api.Limits{PerSourceRate: 1, PerSourceBurst: 3})
	const src = "192.0.2.9:1"
	for i := range 3 {
		if rec := lh.enroll(src, "", nil); rec.Code != http.StatusUnauthorized {
			t.Fatalf("request %d within the burst: %d", i, rec.Code)
		}
	}
	rec := lh.enroll(src, "", nil)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the burst: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	lh.advance(time.Second)
	if rec := lh.enroll(src, "", nil); rec.Code != http.StatusUnauthorized {
		t.Errorf("after a second: %d", rec.Code)
	}
}

// TestTenantLimit: a tenant over its rate gets 429 with Retry-After after
// admission, nothing signed and the token unspent.
func TestTenantLimit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	prov, err := provision.New(provision.Config{
		Store: f.store, Issuer: f.ca.Issuer, TrustDomain: pkitest.TrustDomain, TenantLimit: provision.NewTenantLimiter(0.001, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.prov = prov
	lh := newLimited(t, f, api.Limits{})
	if rec := lh.enroll("192.0.2.10:1", f.mint(provision.TokenSpec{TTL: time.Hour, Uses: 1}), f.csr("SN-T-1")); rec.Code != http.StatusCreated {
		t.Fatalf("first: %d %s", rec.Code, rec.Body)
	}
	tok := f.mint(provision.TokenSpec{TTL: time.Hour, Uses: 1})
	before := f.counts()
	rec := lh.enroll("192.0.2.11:1", tok, f.csr("SN-T-2"))
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over the tenant's rate: %d %s Retry-After %q", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	if f.usesLeft(tok) != 1 || f.counts() != before {
		t.Error("a rate-limited enrollment changed the registry")
	}
}
