package client

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

// TestRetrier: transient answers are retried after the jittered backoff or
// the server's Retry-After, whichever is longer; a permanent answer stops at
// once; a wait that would pass the deadline stops before sleeping; each
// stop carries the last answer.
func TestRetrier(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	var sleeps []time.Duration
	r := Retrier{
		Deadline: now.Add(time.Minute),
		Now:      func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error {
			sleeps = append(sleeps, d)
			now = now.Add(d)
			return nil
		},
		Jitter: func(c time.Duration) time.Duration { return c / 2 },
	}
	answer := func(code int, retryAfter string) error {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &ResponseError{StatusCode: code, Header: h}
	}
	script := []error{answer(503, "5"), answer(429, ""), answer(500, ""), nil}
	calls := 0
	if err := r.Do(context.Background(), func(context.Context) error { calls++; return script[calls-1] }); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{5 * time.Second, 500 * time.Millisecond, time.Second} // Retry-After, then half of 1 s and 2 s
	if calls != 4 || len(sleeps) != 3 || sleeps[0] != want[0] || sleeps[1] != want[1] || sleeps[2] != want[2] {
		t.Fatalf("%d calls, sleeps %v; want 4 and %v", calls, sleeps, want)
	}

	var re *RetryError
	err := r.Do(context.Background(), func(context.Context) error { return answer(401, "") })
	if !errors.As(err, &re) || re.Stop != StopPermanent {
		t.Fatalf("401: %v, want StopPermanent", err)
	}
	var resp *ResponseError
	if !errors.As(err, &resp) || resp.StatusCode != 401 {
		t.Errorf("the stop does not carry the answer: %v", err)
	}

	sleeps = nil
	err = r.Do(context.Background(), func(context.Context) error { return answer(503, "3600") })
	if !errors.As(err, &re) || re.Stop != StopWouldPassDeadline || re.Delay != time.Hour || len(sleeps) != 0 {
		t.Fatalf("Retry-After past the deadline: %v (%+v), slept %v; want StopWouldPassDeadline without sleeping", err, re, sleeps)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = r.Do(ctx, func(context.Context) error { return answer(503, "") })
	if !errors.As(err, &re) || re.Stop != StopInterrupted {
		t.Fatalf("cancelled: %v, want StopInterrupted", err)
	}

	for i, w := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second} {
		if got := Backoff(i); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", i, got, w)
		}
	}
	if Backoff(10) != BackoffCap || Backoff(1000) != BackoffCap {
		t.Error("Backoff not capped")
	}
	for range 100 {
		if d := FullJitter(time.Second); d < 0 || d >= time.Second {
			t.Fatalf("FullJitter(1s) = %s", d)
		}
	}
}
