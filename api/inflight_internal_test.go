package api

import (
	"context"
	"crypto/x509"
	"errors"
	"math"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki/pkitest"
)

// TestInflightQueue: with one slot and a queue of one, a request arriving
// while the slot is held waits and gets the slot when it is released;
// another arriving while the queue is full is shed at once; one whose
// context ends while queued is shed; with no queue wait nothing queues.
func TestInflightQueue(t *testing.T) {
	t.Parallel()
	q := newInflight(Limits{MaxInFlight: 1, MaxQueued: 1, QueueWait: time.Hour})
	release, err := q.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	var release2 func()
	go func() {
		var err error
		release2, err = q.acquire(context.Background())
		got <- err
	}()
	for q.queued.Load() != 1 { // the second is waiting in the queue
		time.Sleep(time.Millisecond)
	}
	if _, err := q.acquire(context.Background()); !isOverloaded(err) {
		t.Fatalf("past a full queue: %v, want overloaded", err)
	}
	if q.queued.Load() != 1 {
		t.Fatalf("a shed request left the queue count at %d", q.queued.Load())
	}
	release()
	if err := <-got; err != nil {
		t.Fatalf("the queued request: %v", err)
	}
	if q.queued.Load() != 0 {
		t.Fatalf("queue count %d after the queued request left", q.queued.Load())
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := q.acquire(ctx)
		got <- err
	}()
	for q.queued.Load() != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-got; !isOverloaded(err) {
		t.Fatalf("a queued request whose client went away: %v, want overloaded", err)
	}
	release2()

	if newInflight(Limits{}) != nil {
		t.Error("MaxInFlight 0 should disable the bound")
	}
	nq := newInflight(Limits{MaxInFlight: 1, MaxQueued: 10})
	r, _ := nq.acquire(context.Background())
	if _, err := nq.acquire(context.Background()); !isOverloaded(err) || nq.queued.Load() != 0 {
		t.Fatalf("no queue wait: %v (queued %d), want shed at once", err, nq.queued.Load())
	}
	r()
	if r, err := nq.acquire(context.Background()); err != nil {
		t.Fatalf("after release: %v", err)
	} else {
		r()
	}
}

func isOverloaded(err error) bool {
	var pe *problemError
	return errors.As(err, &pe) && pe.slug == wire.SlugOverloaded && pe.status == 503
}

// TestWriterGauge: the gauge counts the requests holding a slot of the
// server it was given to; before that, or for a server without an in-flight
// limit, the count is unknown (math.MaxInt).
func TestWriterGauge(t *testing.T) {
	t.Parallel()
	g := &WriterGauge{}
	if got := g.Writers(); got != math.MaxInt {
		t.Fatalf("before a server: %d, want math.MaxInt", got)
	}
	ca := pkitest.NewCA(t).CA.Root
	unlimited := &WriterGauge{}
	newServer(Config{Root: ca, Chain: []*x509.Certificate{ca}, Limits: Limits{MaxInFlight: 0}, Writers: unlimited})
	if got := unlimited.Writers(); got != math.MaxInt {
		t.Fatalf("server without an in-flight limit: %d, want math.MaxInt", got)
	}
	s := newServer(Config{Root: ca, Chain: []*x509.Certificate{ca}, Limits: Limits{MaxInFlight: 4}, Writers: g})
	if got := g.Writers(); got != 0 {
		t.Fatalf("idle server: %d writers", got)
	}
	r1, err := s.inflight.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.inflight.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Writers(); got != 2 {
		t.Fatalf("two requests past the door: %d writers", got)
	}
	r1()
	r2()
	if got := g.Writers(); got != 0 {
		t.Fatalf("after both answered: %d writers", got)
	}
}
