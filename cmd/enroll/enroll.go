package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand/v2"
	"strings"
	"time"

	"devpki/api/client"
	"devpki/pkg/pki"
)

// Exit codes of the enroll command.
const (
	exitOK       = 0 // enrolled, or already enrolled
	exitFailure  = 1 // permanent error: the CA refused, or a local failure
	exitUsage    = 2 // bad flags or arguments
	exitTimedOut = 3 // --timeout elapsed while the CA kept failing transiently
)

// Backoff between attempts: full jitter over an exponential ceiling.
const (
	backoffBase = 500 * time.Millisecond
	backoffCap  = 30 * time.Second
	// attemptTimeout bounds one HTTP exchange so a stalled connection is retried.
	attemptTimeout = 60 * time.Second
)

// config is one run of enroll. Zero-valued hooks take the real clock, sleep,
// randomness and system discovery.
type config struct {
	CA              string
	Fingerprint     string // as given; normalized by run
	Token           string // resolved from --token, --token-file or DEVPKI_TOKEN; checked only when enrolling
	Dir             string
	Serial          string
	MACs            []string
	KeyPasswordFile string
	Timeout         time.Duration
	UserAgent       string

	Stdout, Stderr io.Writer

	Discovery discovery
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Sleep waits d or until ctx is done (a timer when nil).
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a duration in [0, ceiling) (math/rand/v2 when nil).
	Jitter func(ceiling time.Duration) time.Duration
}

// exitError carries the exit code of a failed run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitFailure
}

func (c *config) defaults() {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleepCtx
	}
	if c.Jitter == nil {
		c.Jitter = func(ceiling time.Duration) time.Duration {
			if ceiling <= 0 {
				return 0
			}
			return time.Duration(mrand.Int64N(int64(ceiling)))
		}
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *config) logf(format string, args ...any) {
	fmt.Fprintf(c.Stderr, "enroll: "+format+"\n", args...)
}

// runEnroll enrolls the device described by cfg, or does nothing when cfg.Dir
// already holds a valid identity pinned to cfg.Fingerprint.
func runEnroll(ctx context.Context, cfg config) error {
	cfg.defaults()
	pin, err := client.NormalizeFingerprint(cfg.Fingerprint)
	if err != nil {
		return usageErr("--fingerprint: %v", err)
	}
	if cfg.CA == "" {
		return usageErr("--ca is required")
	}
	if !strings.HasPrefix(cfg.CA, "https://") {
		return usageErr("--ca %q: must be an https:// URL", cfg.CA)
	}
	if cfg.Dir == "" {
		return usageErr("--dir is required")
	}
	if cfg.Timeout <= 0 {
		return usageErr("--timeout must be positive")
	}

	// Idempotence: a valid identity means nothing to do, without the network.
	id, err := recoverIdentity(cfg.Dir, cfg.KeyPasswordFile, pin, cfg.Now(), cfg.logf)
	switch {
	case err == nil:
		cfg.warnClock(id)
		fmt.Fprintf(cfg.Stdout, "already enrolled as %s, certificate valid until %s; nothing to do\n",
			id.Cert.Subject.CommonName, id.Cert.NotAfter.UTC().Format(time.RFC3339))
		return nil
	case errors.Is(err, fs.ErrNotExist):
		// Not enrolled (or a previous run stopped before device.crt).
	default:
		cfg.logf("existing identity in %s is not usable (%v); enrolling anew", cfg.Dir, err)
	}

	if cfg.Token == "" {
		return usageErr("a bootstrap token is required: --token, --token-file or DEVPKI_TOKEN")
	}
	serial, macs, err := identityClaims(cfg)
	if err != nil {
		return err
	}

	start := cfg.Now()
	deadline := start.Add(cfg.Timeout)
	// The context bounds real time as a backstop; the retry loop decides on cfg.Now.
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	r := retrier{cfg: &cfg, deadline: deadline}

	var roots []*x509.Certificate
	if err := r.do(ctx, "fetch CA roots", func(ctx context.Context) (err error) {
		roots, err = client.FetchRootsPinned(ctx, cfg.CA, pin)
		return err
	}); err != nil {
		return err
	}
	root := roots[0]
	cfg.logf("pinned root %s (%s)", pin, root.Subject)

	pool := x509.NewCertPool()
	pool.AddCert(root)
	opts := []client.Option{client.WithRoots(pool)}
	if cfg.UserAgent != "" {
		opts = append(opts, client.WithUserAgent(cfg.UserAgent))
	}
	cl, err := client.New(cfg.CA, opts...)
	if err != nil {
		return usageErr("--ca: %v", err)
	}

	// The key is on disk before the CSR leaves: if the answer is lost, the
	// next run sends the same key and the CA hands back the same
	// certificate instead of refusing the spent token.
	if err := ensureStateDir(cfg.Dir); err != nil {
		return err
	}
	pw, err := keyPassword(cfg.Dir, cfg.KeyPasswordFile, true)
	if err != nil {
		return err
	}
	key, err := pendingKey(cfg.Dir, pw, cfg.logf)
	if err != nil {
		return err
	}
	csrDER, err := pki.NewDeviceCSR(key, serial, macs)
	if err != nil {
		return fmt.Errorf("build CSR: %w", err)
	}
	req := &client.EnrollRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))}

	cfg.logf("enrolling serial %s mac %s", serial, strings.Join(macs, ","))
	var resp *client.EnrollResponse
	if err := r.do(ctx, "enroll", func(ctx context.Context) (err error) {
		resp, err = cl.Enroll(ctx, cfg.Token, req)
		return err
	}); err != nil {
		return err
	}

	id, err = checkReply(resp, key, root, cfg.Now())
	if err != nil {
		return fmt.Errorf("CA reply refused: %w", err)
	}
	cfg.warnClock(id)
	if err := saveCAInfo(cfg.Dir, caInfo{URL: cfg.CA, Fingerprint: pin}); err != nil {
		return err
	}
	if err := saveIdentity(cfg.Dir, id, pw); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	deviceID := resp.DeviceID
	if deviceID == "" {
		deviceID = id.Cert.Subject.CommonName
	}
	fmt.Fprintf(cfg.Stdout, "enrolled device %s; certificate %s valid until %s\n",
		deviceID, cfg.Dir+"/"+certFile, id.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func (c *config) warnClock(id *identity) {
	if now := c.Now(); now.Before(id.Cert.NotBefore) {
		c.logf("warning: the system clock (%s) is behind the certificate's notBefore (%s); set the clock (NTP)",
			now.UTC().Format(time.RFC3339), id.Cert.NotBefore.UTC().Format(time.RFC3339))
	}
}

// identityClaims returns the serial and MACs from the flags, discovering
// what is missing, validated and normalized.
func identityClaims(cfg config) (string, []string, error) {
	serial := cfg.Serial
	if serial == "" {
		s, err := cfg.Discovery.Serial()
		if err != nil {
			return "", nil, err
		}
		serial = s
	}
	if err := pki.ValidateSerial(serial); err != nil {
		return "", nil, usageErr("serial: %v", err)
	}
	raw := cfg.MACs
	if len(raw) == 0 {
		m, err := cfg.Discovery.MAC()
		if err != nil {
			return "", nil, err
		}
		raw = []string{m}
	}
	macs := make([]string, 0, len(raw))
	for _, m := range raw {
		n, err := pki.NormalizeMAC(m)
		if err != nil {
			return "", nil, usageErr("mac: %v", err)
		}
		macs = append(macs, n)
	}
	return serial, macs, nil
}

// checkReply verifies what the CA sent: the certificate holds our public key
// and chains through the returned intermediates to the pinned root.
func checkReply(resp *client.EnrollResponse, key crypto.Signer, root *x509.Certificate, now time.Time) (*identity, error) {
	leaf, err := client.ParseCertificatesPEM([]byte(resp.Certificate))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	id := &identity{Key: key, Cert: leaf[0], Root: root}
	for i, c := range resp.Chain {
		certs, err := client.ParseCertificatesPEM([]byte(c))
		if err != nil {
			return nil, fmt.Errorf("chain[%d]: %w", i, err)
		}
		id.Chain = append(id.Chain, certs...)
	}
	if err := verifyIdentity(id, now); err != nil {
		return nil, err
	}
	return id, nil
}

// retrier runs an operation until it succeeds, fails permanently, or the
// deadline would pass.
type retrier struct {
	cfg      *config
	deadline time.Time
}

func (r *retrier) do(ctx context.Context, what string, op func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if !client.IsTransient(err) && ctx.Err() == nil {
			return fmt.Errorf("%s: %w", what, describe(err))
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("%s: interrupted: %w", what, describe(err))
		}
		if ctx.Err() != nil || !r.cfg.Now().Before(r.deadline) {
			return &exitError{exitTimedOut, fmt.Errorf("%s: gave up after %s: %w", what, r.cfg.Timeout, describe(err))}
		}
		delay := r.cfg.Jitter(backoff(attempt))
		if ra, ok := client.RetryAfter(err); ok && ra > delay {
			delay = ra
		}
		if left := r.deadline.Sub(r.cfg.Now()); delay >= left {
			return &exitError{exitTimedOut, fmt.Errorf("%s: next retry in %s would pass --timeout %s: %w",
				what, delay.Round(time.Millisecond), r.cfg.Timeout, describe(err))}
		}
		r.cfg.logf("retrying in %s: %v", delay.Round(time.Millisecond), describe(err))
		if err := r.cfg.Sleep(ctx, delay); err != nil {
			if errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: interrupted while waiting to retry: %w", what, describe(err))
			}
			return &exitError{exitTimedOut, fmt.Errorf("%s: gave up after %s: %w", what, r.cfg.Timeout, err)}
		}
	}
}

// backoff is the ceiling before attempt+1: base·2^attempt, capped.
func backoff(attempt int) time.Duration {
	if attempt >= 16 {
		return backoffCap
	}
	return min(backoffBase<<attempt, backoffCap)
}

// describe shortens a CA error for humans: "401 Token invalid: <detail>
// [token-invalid]" for a problem, else the error itself. The result still
// wraps err.
func describe(err error) error {
	var re *client.ResponseError
	if !errors.As(err, &re) || re.Problem == nil {
		return err
	}
	p := re.Problem
	msg := fmt.Sprintf("%d %s", re.StatusCode, p.Title)
	if p.Detail != "" {
		msg += ": " + p.Detail
	}
	return &describedError{msg: msg + " [" + p.Slug() + "]", err: err}
}

type describedError struct {
	msg string
	err error
}

func (e *describedError) Error() string { return e.msg }
func (e *describedError) Unwrap() error { return e.err }
