package sqlstore

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// lingering makes s's committer busy (its last transaction held two
// writes), so that the next write makes it linger.
func lingering(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	release := blockCommitter(t, s, nil)
	errs := make(chan error, 2)
	for _, a := range []string{"device:a", "device:b"} {
		go func() { errs <- s.AppendAudit(ctx, lingerEvent(a)) }()
	}
	waitQueued(t, s, 2)
	release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func lingerEvent(actor string) *registry.AuditEvent {
	return &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: actor, Action: "test", Result: registry.ResultOK}
}

// With Options.Writers, a lingering committer (here for an hour) commits
// as soon as its transaction holds a write of every writer in progress:
// when the last one arrives, and when a writer ends without writing.
func TestLingerEndsWhenEveryWriterIsIn(t *testing.T) {
	var writers atomic.Int64
	s, err := Open(context.Background(), Options{DSN: t.TempDir() + "/registry.db", Linger: time.Hour, MaxBatchTime: -1,
		Writers: func() int { return int(writers.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	done := func(actor string) chan error {
		c := make(chan error, 1)
		go func() { c <- s.AppendAudit(ctx, lingerEvent(actor)) }()
		return c
	}
	wait := func(c chan error, what string) {
		t.Helper()
		select {
		case err := <-c:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still waiting after 10 s: the committer lingered on", what)
		}
	}
	pending := func(c chan error, what string) {
		t.Helper()
		select {
		case err := <-c:
			t.Fatalf("%s: committed (%v) while a writer in progress had not written", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	// One writer in progress, and it is in: no wait.
	writers.Store(1)
	lingering(t, s)
	wait(done("device:c"), "the only writer")

	// Two in progress: the first waits for the second, which ends it.
	lingering(t, s) // (one writer in progress meanwhile: the blocker)
	writers.Store(2)
	first := done("device:d")
	pending(first, "one of two writers")
	second := done("device:e")
	wait(first, "the first of two, once the second wrote")
	wait(second, "the second of two")

	// Two in progress, one ends without writing: the recount ends it.
	writers.Store(1)
	lingering(t, s)
	writers.Store(2)
	alone := done("device:f")
	pending(alone, "one of two writers")
	writers.Store(1)
	wait(alone, "the last writer in progress")
}

// Without Options.Writers the committer lingers its whole Linger (the
// wait is bounded by it, not ended by a count).
func TestLingerWithoutWritersWaits(t *testing.T) {
	s, err := Open(context.Background(), Options{DSN: t.TempDir() + "/registry.db", Linger: 300 * time.Millisecond, MaxBatchTime: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lingering(t, s)
	start := time.Now()
	if err := s.AppendAudit(context.Background(), lingerEvent("device:c")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("committed after %v, within the 300 ms linger: nothing told it nobody else was coming", took)
	}
}

func TestWritersLingerDefault(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want time.Duration
	}{
		{Options{}, DefaultLinger},
		{Options{Writers: func() int { return 0 }}, DefaultWritersLinger},
		{Options{Linger: 3 * time.Millisecond, Writers: func() int { return 0 }}, 3 * time.Millisecond},
		{Options{Linger: -1, Writers: func() int { return 0 }}, 0},
	} {
		c.opts.DSN = t.TempDir() + "/registry.db"
		s, err := Open(context.Background(), c.opts)
		if err != nil {
			t.Fatal(err)
		}
		if s.linger != c.want {
			t.Errorf("Linger %v, Writers set %v: linger %v, want %v", c.opts.Linger, c.opts.Writers != nil, s.linger, c.want)
		}
		s.Close()
	}
}
