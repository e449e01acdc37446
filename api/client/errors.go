package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"devpki/api/wire"
)

// ResponseError is a non-2xx reply from the CA. When the server sent
// application/problem+json, Problem holds it and errors.As(err, &problem) finds
// it; otherwise Body holds an excerpt of what was sent.
type ResponseError struct {
	Method     string
	URL        string
	StatusCode int
	Status     string        // "503 Service Unavailable"
	Header     http.Header   // of the reply, for Retry-After and the like
	Problem    *wire.Problem // nil unless the reply was problem+json
	Body       string        // excerpt of a non-problem body

	received time.Time // local clock when the reply arrived
}

// Error reports the problem when there is one, else the status and body excerpt.
func (e *ResponseError) Error() string {
	if e.Problem != nil {
		return e.Problem.Error()
	}
	if e.Body != "" {
		return fmt.Sprintf("%s %s: %s: %s", e.Method, e.URL, e.Status, e.Body)
	}
	return fmt.Sprintf("%s %s: %s", e.Method, e.URL, e.Status)
}

// Unwrap returns the Problem, so that errors.As(err, new(*Problem)) works.
func (e *ResponseError) Unwrap() error {
	if e.Problem == nil {
		return nil
	}
	return e.Problem
}

// IsTransient reports whether a request that failed with err may succeed if
// sent again unchanged: connection refused, reset or aborted, network or host
// unreachable, an unexpected EOF, a timeout or temporary DNS failure, and the
// replies 429, 500, 502, 503 and 504 (a 500 may be a fault of the CA that
// passes, such as its registry failing; the CA commits nothing it answers
// 5xx for), and an EST server's 202 Accepted (the request awaits approval). Everything else — other statuses, TLS and certificate errors,
// pinning failures, a cancelled context — is permanent.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var re *ResponseError
	if errors.As(err, &re) {
		switch re.StatusCode {
		case http.StatusAccepted, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for _, errno := range []syscall.Errno{
		syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.ENETDOWN, syscall.EPIPE,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	// net/http's unexported errServerClosedIdle: the server closed a new
	// connection before the request went out (a busy server's header
	// timeout ran out during the handshake). Nothing was sent: retry.
	if strings.Contains(err.Error(), "http: server closed idle connection") {
		return true
	}
	// Every DNS failure is worth retrying: at first power-on the network,
	// the resolver or the CA's record may simply not be up yet, and the
	// caller's deadline bounds the retries anyway.
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return true
	}
	return false
}

// RetryAfter returns how long the server asked the client to wait, from the
// Retry-After header of a *ResponseError in err, given either as seconds or as
// an HTTP date. A date is read against the reply's Date header when present, so
// that a device whose clock is wrong still waits the intended time. A date in
// the past gives 0. ok is false when err carries no usable Retry-After.
func RetryAfter(err error) (d time.Duration, ok bool) {
	var re *ResponseError
	if !errors.As(err, &re) || re.Header == nil {
		return 0, false
	}
	v := strings.TrimSpace(re.Header.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		const maxSecs = int64((1<<63 - 1) / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	base := re.received
	if date, err := http.ParseTime(re.Header.Get("Date")); err == nil {
		base = date
	}
	if base.IsZero() {
		base = time.Now()
	}
	return max(at.Sub(base), 0), true
}
