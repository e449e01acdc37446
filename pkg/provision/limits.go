package provision

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ErrRateLimited: too many requests; retry after the RateLimitError's
// RetryAfter. Nothing was signed or spent.
var ErrRateLimited = errors.New("provision: rate limited")

// RateLimitError is ErrRateLimited with the time to wait.
type RateLimitError struct {
	// Scope says which limit: "tenant <name>" here, "source" or "lockout"
	// at the API's doors.
	Scope      string
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("too many requests (%s); retry in %s", e.Scope, e.RetryAfter.Round(time.Second))
}

func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// TenantLimiter bounds the admitted requests of each tenant — enrollments
// and TPM challenges once the tenant is known, renewals once the
// certificate is — with a token bucket per tenant (golang.org/x/time/rate).
// It protects the CA's signing capacity and the other tenants from one
// tenant's fleet storm; a refused device gets 429 with Retry-After and its
// agent retries. Each replica keeps its own buckets: with N replicas
// behind a balancer a tenant gets up to N times the rate. Tenants are
// created by admins, so the map of buckets is bounded by them.
type TenantLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	m     map[string]*rate.Limiter
}

// NewTenantLimiter allows perSecond admitted requests per tenant with
// bursts of burst (at least 1); perSecond <= 0 returns nil, no limit.
func NewTenantLimiter(perSecond float64, burst int) *TenantLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &TenantLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), m: map[string]*rate.Limiter{}}
}

// Allow takes one request of tenant (named name in the error) at now, or
// returns a *RateLimitError. A nil limiter allows everything.
func (l *TenantLimiter) Allow(tenantID, name string, now time.Time) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	lim := l.m[tenantID]
	if lim == nil {
		lim = rate.NewLimiter(l.limit, l.burst)
		l.m[tenantID] = lim
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return &RateLimitError{Scope: "tenant " + name, RetryAfter: d}
	}
	return nil
}
