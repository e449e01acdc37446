package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
)

// TestEnrollRetries500: a CA answering 500 (its registry failing, say) is
// retried like a 503, and the enrollment completes once it recovers.
func TestEnrollRetries500(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	f.Then(problem(http.StatusInternalServerError, "internal", ""), problem(http.StatusInternalServerError, "internal", ""))
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatalf("%v\n%s", err, &h.stderr)
	}
	if got := f.EnrollHits.Load(); got != 3 {
		t.Errorf("%d enroll requests, want 3", got)
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond} // half of each backoff ceiling
	if len(h.sleeps) != 2 || h.sleeps[0] != want[0] || h.sleeps[1] != want[1] {
		t.Errorf("sleeps %v, want %v", h.sleeps, want)
	}
	lines := strings.Count(h.stderr.String(), "enroll failed: 500 Internal Server Error [internal]; next try in ")
	if lines != 2 {
		t.Errorf("%d retry lines, want one per retry:\n%s", lines, &h.stderr)
	}
	checkState(t, h.cfg.Dir, nil, stateFiles)
}

// TestEnrollStoreUnavailableRetryAfter: the CA's 503 store-unavailable with
// Retry-After is waited out for at least the time it asks.
func TestEnrollStoreUnavailableRetryAfter(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	f.Then(
		problem(http.StatusServiceUnavailable, wire.SlugStoreUnavailable, "", "Retry-After", "5"),
		problem(http.StatusServiceUnavailable, wire.SlugStoreUnavailable, "", "Retry-After", "5"),
	)
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatalf("%v\n%s", err, &h.stderr)
	}
	if len(h.sleeps) != 2 || h.sleeps[0] != 5*time.Second || h.sleeps[1] != 5*time.Second {
		t.Errorf("sleeps %v, want [5s 5s] (Retry-After beats the backoff)", h.sleeps)
	}
	if !strings.Contains(h.stderr.String(), "[store-unavailable]; next try in 5s") {
		t.Errorf("stderr:\n%s", &h.stderr)
	}
	checkState(t, h.cfg.Dir, nil, stateFiles)
}

// TestEnroll4xxAfterOutageIsPermanent: a refusal ends the retries at once,
// with exit 1, even in the middle of an outage.
func TestEnroll4xxAfterOutageIsPermanent(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	f.Then(problem(http.StatusServiceUnavailable, wire.SlugStoreUnavailable, "", "Retry-After", "5"),
		problem(http.StatusUnauthorized, "token-spent", "no uses left"))
	h := newHarness(t, f)
	err := h.run()
	if code := exitCode(err); code != exitFailure {
		t.Fatalf("exit %d (%v), want %d", code, err, exitFailure)
	}
	if f.EnrollHits.Load() != 2 || len(h.sleeps) != 1 {
		t.Errorf("%d requests, %d sleeps; want 2 and 1", f.EnrollHits.Load(), len(h.sleeps))
	}
	if !strings.Contains(err.Error(), "401 Unauthorized: no uses left [token-spent]") {
		t.Errorf("message %q", err)
	}
}

// TestEnrollDeadlineReached: a CA that keeps answering 500 is retried until
// --timeout, then enroll exits 3 saying what to do.
func TestEnrollDeadlineReached(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	for range 200 {
		f.Then(problem(http.StatusInternalServerError, "internal", ""))
	}
	h := newHarness(t, f)
	h.cfg.Timeout = 3 * time.Minute
	err := h.run()
	if code := exitCode(err); code != exitTimedOut {
		t.Fatalf("exit %d (%v), want %d", code, err, exitTimedOut)
	}
	var slept time.Duration
	for _, d := range h.sleeps {
		slept += d
	}
	if slept > h.cfg.Timeout || slept < h.cfg.Timeout/2 {
		t.Errorf("retried for %s with a --timeout of %s", slept, h.cfg.Timeout)
	}
	var re *client.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusInternalServerError {
		t.Errorf("err %v does not carry the last answer", err)
	}
	for _, want := range []string{"--timeout 3m0s", "run the command again", "/readyz"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, certFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device.crt written (%v)", err)
	}
}

// TestRenewRetries500: renew (and rekey, and run, which use the same path)
// ride out a CA answering 500 and 503.
func TestRenewRetries500(t *testing.T) {
	f, h := enrolled(t)
	before := h.load(t)
	f.Then(problem(http.StatusInternalServerError, "internal", ""),
		problem(http.StatusServiceUnavailable, wire.SlugStoreUnavailable, "", "Retry-After", "5"))
	for _, cmd := range []struct {
		name  string
		rekey bool
	}{{"renew", false}, {"rekey", true}} {
		if err := runRenewCmd(context.Background(), &agentFlags{cfg: h.cfg, rekey: cmd.rekey}, nil); err != nil {
			t.Fatalf("%s: %v\n%s", cmd.name, err, h.stderr.String())
		}
	}
	if f.RenewHits.Load() != 4 {
		t.Errorf("%d renew requests, want 4 (2 failed, 2 answered)", f.RenewHits.Load())
	}
	if after := h.load(t); sameKey(before.Key, after.Key) {
		t.Error("rekey kept the key")
	}
	if n := strings.Count(h.stderr.String(), "renew failed: "); n != 2 {
		t.Errorf("%d retry lines, want 2:\n%s", n, h.stderr.String())
	}
}

// TestDefaultTimeout: without --timeout a device retries for 15 minutes.
func TestDefaultTimeout(t *testing.T) {
	t.Parallel()
	cfg, err := parseEnrollFlags([]string{"--dir", t.TempDir()}, &strings.Builder{}, func(string) string { return "" })
	if err != nil || cfg.Timeout != 15*time.Minute {
		t.Errorf("enroll --timeout default %v (%v), want 15m", cfg.Timeout, err)
	}
	for _, cmd := range []string{"renew", "run"} {
		a, err := parseAgentFlags(cmd, []string{"--dir", t.TempDir()}, &strings.Builder{})
		if err != nil || a.cfg.Timeout != 15*time.Minute {
			t.Errorf("%s --timeout default (%v), want 15m", cmd, err)
		}
	}
}
