package client

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"time"
)

// The device agent's retry policy: full jitter over an exponential ceiling
// (BackoffBase·2^attempt, at most BackoffCap), or the server's Retry-After
// when that is longer; AttemptTimeout bounds one exchange so a stalled
// connection is retried. cmd/enroll and the fleet-storm load tool both run
// it through Retrier, so the load tool exercises the agent's own code.
const (
	BackoffBase    = 500 * time.Millisecond
	BackoffCap     = 30 * time.Second
	AttemptTimeout = 60 * time.Second
)

// Backoff is the jitter ceiling before attempt+1: BackoffBase·2^attempt,
// capped at BackoffCap.
func Backoff(attempt int) time.Duration {
	if attempt >= 16 {
		return BackoffCap
	}
	return min(BackoffBase<<attempt, BackoffCap)
}

// FullJitter returns a uniformly random duration in [0, ceiling).
func FullJitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(mrand.Int64N(int64(ceiling)))
}

// RetryStop says why Retrier.Do gave up.
type RetryStop int

const (
	// StopPermanent: the operation failed with a permanent error
	// (IsTransient false).
	StopPermanent RetryStop = iota + 1
	// StopInterrupted: ctx was cancelled while an attempt ran.
	StopInterrupted
	// StopDeadline: the deadline (or ctx's) passed.
	StopDeadline
	// StopWouldPassDeadline: the next wait (RetryError.Delay) would end
	// after the deadline.
	StopWouldPassDeadline
	// StopInterruptedWaiting: ctx was cancelled while waiting to retry.
	StopInterruptedWaiting
)

// RetryError is the failure of Retrier.Do: why it stopped and the last
// attempt's error (Unwrap), so errors.As finds the server's answer.
type RetryError struct {
	Stop RetryStop
	// Delay is the wait that would have passed the deadline
	// (StopWouldPassDeadline).
	Delay time.Duration
	Err   error
}

func (e *RetryError) Error() string { return e.Err.Error() }
func (e *RetryError) Unwrap() error { return e.Err }

// Retrier runs an operation until it succeeds, fails permanently, or the
// deadline would pass. Transient failures (IsTransient: the network, 429,
// 500, 502, 503, 504) are retried after Jitter(Backoff(attempt)), or the
// Retry-After the server asked for when longer. Zero-valued hooks take the
// real clock, a timer and FullJitter.
type Retrier struct {
	Deadline time.Time
	// AttemptTimeout bounds each attempt (AttemptTimeout when zero).
	AttemptTimeout time.Duration
	Now            func() time.Time
	// Sleep waits d or until ctx is done.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a duration in [0, ceiling).
	Jitter func(ceiling time.Duration) time.Duration
	// OnRetry, when set, is called before each wait with the failed
	// attempt's number and error and the wait.
	OnRetry func(attempt int, err error, delay time.Duration)
}

// Do runs op until it returns nil (Do returns nil) or a *RetryError.
func (r *Retrier) Do(ctx context.Context, op func(context.Context) error) error {
	now, sleep, jitter, per := r.Now, r.Sleep, r.Jitter, r.AttemptTimeout
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = SleepContext
	}
	if jitter == nil {
		jitter = FullJitter
	}
	if per <= 0 {
		per = AttemptTimeout
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, per)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if !IsTransient(err) && ctx.Err() == nil {
			return &RetryError{Stop: StopPermanent, Err: err}
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return &RetryError{Stop: StopInterrupted, Err: err}
		}
		if ctx.Err() != nil || !now().Before(r.Deadline) {
			return &RetryError{Stop: StopDeadline, Err: err}
		}
		delay := jitter(Backoff(attempt))
		if ra, ok := RetryAfter(err); ok && ra > delay {
			delay = ra
		}
		if left := r.Deadline.Sub(now()); delay >= left {
			return &RetryError{Stop: StopWouldPassDeadline, Delay: delay, Err: err}
		}
		if r.OnRetry != nil {
			r.OnRetry(attempt, err, delay)
		}
		if serr := sleep(ctx, delay); serr != nil {
			if errors.Is(serr, context.Canceled) {
				return &RetryError{Stop: StopInterruptedWaiting, Err: err}
			}
			return &RetryError{Stop: StopDeadline, Err: err}
		}
	}
}

// SleepContext waits d or until ctx is done (ctx's error): Retrier.Sleep's
// default.
func SleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
