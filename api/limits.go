package api

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"devpki/api/wire"
	"devpki/pkg/provision"
)

// Limits guard the doors a stranger can knock on (enrollment by token,
// IDevID or EST, the TPM challenge and answer, renewal), per source
// address (an IPv6 source counts by its /64):
//
//   - a token bucket per source and door (golang.org/x/time/rate):
//     PerSourceRate requests a second with bursts of PerSourceBurst;
//   - a lockout: LockoutFailures failed authentications (401, a refused
//     token, credential or certificate, 409 serial-conflict) from a source
//     on a door within LockoutWindow lock that source out of that door
//     for LockoutWindow from the failure that reached the count.
//
// Refused requests get 429 rate-limited with Retry-After and reach
// nothing behind the door (no registry read, no audit row: the access log
// has them). The counters live in each replica's memory: with N replicas
// behind a balancer a source gets up to N times the rate and N times the
// failures before every replica has locked it out. Zero fields disable
// their limit.
//
// MaxInFlight bounds the requests the doors run at once (all doors
// together); MaxQueued more wait up to QueueWait for a slot, and the rest
// get 503 overloaded with Retry-After (inflight.go). Zero MaxInFlight
// disables it.
type Limits struct {
	PerSourceRate   float64
	PerSourceBurst  int
	LockoutFailures int
	LockoutWindow   time.Duration
	MaxInFlight     int
	MaxQueued       int
	QueueWait       time.Duration
	// MaxHandshakes bounds the TLS handshakes 'ca serve' runs at once
	// (HandshakeListener); 0: no bound.
	MaxHandshakes int
}

// DefaultLimits are ca.yaml's defaults. A factory line enrolls many
// devices from one NAT address, so the per-source rate is generous; the
// lockout is the brute-force guard.
var DefaultLimits = Limits{PerSourceRate: 50, PerSourceBurst: 100, LockoutFailures: 10, LockoutWindow: time.Minute,
	MaxInFlight: DefaultMaxInFlight, MaxQueued: DefaultMaxQueued, QueueWait: DefaultQueueWait, MaxHandshakes: DefaultMaxHandshakes}

// maxSources bounds the per-source state kept. Entries idle for longer than
// a lockout window (and a full bucket's refill) are swept when it fills;
// if every entry is live, the state is dropped and starts again (memory
// stays bounded under a flood from many addresses, at the cost of their
// counts).
const maxSources = 1 << 16

type sourceState struct {
	bucket      *rate.Limiter
	failures    int
	windowStart time.Time
	lockedUntil time.Time
	last        time.Time
}

type limiter struct {
	cfg Limits
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*sourceState // door + " " + source
}

func newLimiter(cfg Limits, now func() time.Time) *limiter {
	if cfg.PerSourceRate <= 0 && cfg.LockoutFailures <= 0 {
		return nil
	}
	return &limiter{cfg: cfg, now: now, m: map[string]*sourceState{}}
}

// sourceKey is the address a limit counts: the IP, or an IPv6 address's
// /64 (one host's share of a typical allocation).
func sourceKey(ip string) string {
	a := net.ParseIP(ip)
	if a == nil || a.To4() != nil {
		return ip
	}
	return a.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

func (l *limiter) state(key string, now time.Time) *sourceState {
	st := l.m[key]
	if st == nil {
		if len(l.m) >= maxSources {
			l.sweep(now)
		}
		st = &sourceState{windowStart: now}
		if l.cfg.PerSourceRate > 0 {
			st.bucket = rate.NewLimiter(rate.Limit(l.cfg.PerSourceRate), max(l.cfg.PerSourceBurst, 1))
		}
		l.m[key] = st
	}
	st.last = now
	return st
}

func (l *limiter) sweep(now time.Time) {
	idle := max(l.cfg.LockoutWindow, time.Minute)
	if l.cfg.PerSourceRate > 0 {
		idle = max(idle, time.Duration(float64(max(l.cfg.PerSourceBurst, 1))/l.cfg.PerSourceRate*float64(time.Second)))
	}
	for k, st := range l.m {
		if now.Sub(st.last) > idle && now.After(st.lockedUntil) {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxSources {
		l.m = map[string]*sourceState{}
	}
}

// admit takes one request of source on door, or returns the
// *provision.RateLimitError it must get.
func (l *limiter) admit(door, source string) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(door+" "+sourceKey(source), now)
	if now.Before(st.lockedUntil) {
		return &provision.RateLimitError{Scope: "locked out after repeated failed authentication on " + door,
			RetryAfter: st.lockedUntil.Sub(now)}
	}
	if st.bucket != nil {
		r := st.bucket.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return &provision.RateLimitError{Scope: "too many requests from this address on " + door, RetryAfter: d}
		}
	}
	return nil
}

// failed counts a failed authentication of source on door.
func (l *limiter) failed(door, source string) {
	if l.cfg.LockoutFailures <= 0 {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(door+" "+sourceKey(source), now)
	if now.Sub(st.windowStart) > l.cfg.LockoutWindow {
		st.failures, st.windowStart = 0, now
	}
	st.failures++
	if st.failures >= l.cfg.LockoutFailures {
		st.lockedUntil = now.Add(l.cfg.LockoutWindow)
		st.failures, st.windowStart = 0, now
	}
}

// authFailure reports whether an answer is a failed authentication: the
// caller could not prove who it is (401), offered a credential this CA
// refuses (a token for another device or tenant, an untrusted TPM or
// certificate), or probed a serial enrolled already (409 serial-conflict).
func authFailure(status int, slug string) bool {
	if status == http.StatusUnauthorized {
		return true
	}
	switch slug {
	case wire.SlugTokenMismatch, wire.SlugSerialConflict, wire.SlugTPMUntrustedEK, wire.SlugTPMActivation,
		wire.SlugForbidden, wire.SlugNotRenewable, wire.SlugRenewProofInvalid:
		return true
	}
	return false
}

// door is the middleware of a door named name: it refuses a source over
// its rate or locked out, sheds the request when the doors' work queue is
// full (inflight), and counts the answers that are failed authentications.
func (s *Server) door(name string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if s.limits == nil && s.cfg.Metrics == nil && s.inflight == nil {
			return next
		}
		return func(c echo.Context) error {
			src := c.RealIP()
			if s.limits != nil {
				if err := s.limits.admit(name, src); err != nil {
					return err
				}
			}
			if s.inflight != nil {
				release, err := s.inflight.acquire(c.Request().Context())
				if err != nil {
					return err
				}
				defer release()
			}
			err := next(c)
			if err != nil {
				if status, slug, _, _ := classify(err); authFailure(status, slug) {
					s.authFailed(name)
					if s.limits != nil {
						s.limits.failed(name, src)
					}
				}
			}
			return err
		}
	}
}
