package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sync/atomic"
	"time"

	"devpki/api/wire"
)

// Defaults of the enrollment and renewal work queue (Limits.MaxInFlight,
// MaxQueued, QueueWait), sized for a small machine: a handful of requests
// per core keeps the signer and the registry's group commit busy, more only
// lengthens every answer — the admin API's included.
const (
	DefaultMaxInFlight = 32
	DefaultMaxQueued   = 128
	DefaultQueueWait   = 250 * time.Millisecond
)

// inflight bounds the enrollment and renewal work a replica runs at once:
// at most max requests behind the doors, at most queued more waiting up to
// wait for a slot; any other is shed at once with 503 overloaded and
// Retry-After, before it reads the registry or signs. A fleet storm then
// meets a bounded queue instead of unbounded latency, and the admin API and
// the publication routes, which take no slot, keep answering.
type inflight struct {
	slots   chan struct{}
	queued  atomic.Int64
	maxWait int64
	wait    time.Duration
}

func newInflight(l Limits) *inflight {
	if l.MaxInFlight <= 0 {
		return nil
	}
	return &inflight{slots: make(chan struct{}, l.MaxInFlight), maxWait: int64(max(l.MaxQueued, 0)), wait: l.QueueWait}
}

// acquire takes a slot, waiting in the bounded queue if there is room, and
// returns its release, or the overloaded error to answer.
func (q *inflight) acquire(ctx context.Context) (func(), error) {
	select {
	case q.slots <- struct{}{}:
		return q.release, nil
	default:
	}
	if q.wait > 0 && q.queued.Add(1) <= q.maxWait {
		defer q.queued.Add(-1)
		t := time.NewTimer(q.wait)
		defer t.Stop()
		select {
		case q.slots <- struct{}{}:
			return q.release, nil
		case <-t.C:
		case <-ctx.Done():
		}
	} else if q.wait > 0 {
		q.queued.Add(-1)
	}
	return nil, problem(http.StatusServiceUnavailable, wire.SlugOverloaded, "Overloaded, retry later",
		fmt.Sprintf("this CA replica is already running %d enrollment and renewal requests (limits.max_in_flight) and its queue is full; nothing was done: retry after the Retry-After delay", cap(q.slots)))
}

func (q *inflight) release() { <-q.slots }

// WriterGauge counts the enrollment and renewal requests past the door of
// the server it was given to (Config.Writers): the requests holding an
// in-flight slot, each of which writes to the registry once (its
// certificate, or the audit event of its refusal) before it answers. The
// registry's group commit stops waiting for more writes when its
// transaction holds one of each (sqlstore.Options.Writers).
type WriterGauge struct {
	q atomic.Pointer[inflight]
}

// Writers is the count; before a server took the gauge, or for one
// without an in-flight limit (limits.max_in_flight: 0), it is not known:
// math.MaxInt (the committer then waits its whole linger).
func (g *WriterGauge) Writers() int {
	if q := g.q.Load(); q != nil {
		return len(q.slots)
	}
	return math.MaxInt
}
