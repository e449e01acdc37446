package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/pki"
)

// Exit codes of the enroll command.
const (
	exitOK       = 0 // enrolled, or already enrolled
	exitFailure  = 1 // permanent error: the CA refused, or a local failure
	exitUsage    = 2 // bad flags or arguments
	exitTimedOut = 3 // --timeout elapsed while the CA kept failing transiently
)

// defaultTimeout is --timeout's default: long enough for a device whose
// first boot falls in an outage of the CA or its registry to ride out a few
// minutes of it.
const defaultTimeout = 15 * time.Minute

// Backoff between attempts: full jitter over an exponential ceiling, or the
// server's Retry-After when that is longer (the policy lives in api/client,
// where the fleet-storm load tool runs it too).
const (
	backoffBase = client.BackoffBase
	backoffCap  = client.BackoffCap
	// attemptTimeout bounds one HTTP exchange so a stalled connection is retried.
	attemptTimeout = client.AttemptTimeout
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
	// IDevIDCert and IDevIDKey are --idevid-cert and --idevid-key: the
	// factory IDevID presented instead of a token.
	IDevIDCert, IDevIDKey string
	// TPM is --tpm: auto, a device path, swtpm:unix:PATH, swtpm:tcp:HOST:PORT,
	// simulator (tpmsimulator builds) or none.
	TPM       string
	Timeout   time.Duration
	UserAgent string
	// Protocol is --protocol: "native" (the devpki JSON API; "" means the
	// same) or "est" (RFC 7030, est.go). ESTLabel is --est-label, the
	// optional /.well-known/est/<label> segment; ESTAuth is --est-auth,
	// "basic" (the default: serial and token) or "bearer".
	Protocol string
	ESTLabel string
	ESTAuth  string

	Stdout, Stderr io.Writer

	Discovery discovery
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Sleep waits d or until ctx is done (a timer when nil).
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a duration in [0, ceiling) (math/rand/v2 when nil).
	Jitter func(ceiling time.Duration) time.Duration
	// Log, when set, receives the agent's log as records (--log-format
	// json); nil writes "enroll: ..." lines to Stderr.
	Log *slog.Logger
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

// keyring reads and writes the keys of c.Dir. An enrolled TPM identity is
// opened through the TPM recorded at enrollment unless --tpm names a
// specific one.
func (c *config) keyring() *keyring {
	kr := newKeyring(c.Dir, c.KeyPasswordFile)
	if c.TPM != "" && c.TPM != "auto" && c.TPM != "none" {
		kr.tpmSpec = c.TPM
	}
	return kr
}

func (c *config) defaults() {
	if c.TPM == "" {
		c.TPM = "auto"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = client.SleepContext
	}
	if c.Jitter == nil {
		c.Jitter = client.FullJitter
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
}

func (c *config) logf(format string, args ...any) {
	if c.Log != nil {
		c.logJSONf(format, args...)
		return
	}
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
	if err := checkTPMSpec(cfg.TPM); err != nil {
		return err
	}
	if err := checkProtocol(&cfg); err != nil {
		return err
	}

	// Idempotence: a valid identity means nothing to do, without the network.
	kr := cfg.keyring()
	defer kr.close()
	id, err := recoverIdentity(ctx, kr, pin, cfg.Now(), cfg.logf)
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
	kr.close() // the enrollment opens the TPM named by --tpm
	if cfg.Protocol == protocolEST {
		return enrollEST(ctx, cfg, kr, pin)
	}

	var idevid *tls.Certificate
	if cfg.IDevIDCert != "" {
		if idevid, err = loadIDevID(&cfg); err != nil {
			return err
		}
	}
	noToken := usageErr("a bootstrap token is required: --token, --token-file or DEVPKI_TOKEN (without one, enrollment needs a TPM: --tpm, or the factory IDevID: --idevid-cert)")
	if cfg.Token == "" && idevid == nil && cfg.TPM == "none" {
		return noToken
	}
	if err := ensureStateDir(cfg.Dir); err != nil {
		return err
	}
	t, err := cfg.openEnrollTPM(ctx)
	if err != nil {
		return err
	}
	if t != nil {
		defer t.Close()
	}
	if cfg.Token == "" && idevid == nil && t == nil {
		return noToken
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
	if idevid != nil {
		opts = append(opts, client.WithClientCertificate(*idevid))
	}
	if cfg.UserAgent != "" {
		opts = append(opts, client.WithUserAgent(cfg.UserAgent))
	}
	cl, err := client.New(cfg.CA, opts...)
	if err != nil {
		return usageErr("--ca: %v", err)
	}

	var deviceID string
	if idevid != nil {
		id, deviceID, err = enrollIDevID(ctx, &cfg, &r, cl, t, serial, macs, root)
		if err != nil {
			return err
		}
		if t != nil {
			if err := kr.useTPM(t, cfg.TPM); err != nil {
				return fmt.Errorf("record the TPM: %w", err)
			}
		}
	} else if t != nil {
		id, deviceID, err = enrollTPM(ctx, &cfg, &r, cl, t, serial, macs, root)
		if err != nil {
			return err
		}
		if err := kr.useTPM(t, cfg.TPM); err != nil {
			return fmt.Errorf("record the TPM: %w", err)
		}
	} else {
		id, deviceID, err = enrollSoftware(ctx, &cfg, &r, cl, serial, macs, root)
		if err != nil {
			if hasSlug(err, slugTPMRequired) {
				if cfg.TPM == "none" {
					return fmt.Errorf("%w; this device must enroll with its TPM: --tpm auto (or the TPM's path)", err)
				}
				return fmt.Errorf("%w; this device has no TPM, so it cannot join that tenant", err)
			}
			return err
		}
	}
	return finishEnroll(ctx, &cfg, kr, id, caInfo{URL: cfg.CA, Fingerprint: pin}, deviceID)
}

// finishEnroll records a new identity in cfg.Dir (the CA it came from, then
// the key and certificates, device.crt last) and says so.
func finishEnroll(ctx context.Context, cfg *config, kr *keyring, id *identity, ci caInfo, deviceID string) error {
	cfg.warnClock(id)
	if err := saveCAInfo(cfg.Dir, ci); err != nil {
		return err
	}
	if err := saveIdentity(kr, id); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	kr.pruneTPMKeys(ctx, cfg.logf)
	if deviceID == "" {
		deviceID = id.Cert.Subject.CommonName
	}
	fmt.Fprintf(cfg.Stdout, "enrolled device %s; certificate %s valid until %s; key: %s\n",
		deviceID, cfg.Dir+"/"+certFile, id.Cert.NotAfter.UTC().Format(time.RFC3339), keyStorage(id.Key, cfg.TPM))
	return nil
}

// enrollSoftware enrolls with a bootstrap token and a software P-256 key.
// The key is on disk before the CSR leaves: if the answer is lost, the next
// run sends the same key and the CA hands back the same certificate instead
// of refusing the spent token.
func enrollSoftware(ctx context.Context, cfg *config, r *retrier, cl *client.Client, serial string, macs []string, root *x509.Certificate) (*identity, string, error) {
	pw, err := keyPassword(cfg.Dir, cfg.KeyPasswordFile, true)
	if err != nil {
		return nil, "", err
	}
	key, err := pendingKey(cfg.Dir, pw, cfg.logf)
	if err != nil {
		return nil, "", err
	}
	return enrollToken(ctx, cfg, r, cl, key, serial, macs, root)
}

// enrollToken sends a CSR signed by key with the bootstrap token, or,
// with --idevid-cert, without one (the client presents the IDevID).
func enrollToken(ctx context.Context, cfg *config, r *retrier, cl *client.Client, key crypto.Signer, serial string, macs []string, root *x509.Certificate) (*identity, string, error) {
	csrDER, err := pki.NewDeviceCSR(key, serial, macs)
	if err != nil {
		return nil, "", tpmHint(fmt.Errorf("build CSR: %w", err))
	}
	req := &wire.EnrollRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))}

	cfg.logf("enrolling serial %s mac %s", serial, strings.Join(macs, ","))
	var resp *wire.EnrollResponse
	if err := r.do(ctx, "enroll", func(ctx context.Context) (err error) {
		if cfg.IDevIDCert != "" {
			resp, err = cl.EnrollIDevID(ctx, req)
		} else {
			resp, err = cl.Enroll(ctx, cfg.Token, req)
		}
		return err
	}); err != nil {
		return nil, "", err
	}
	id, err := checkReply(resp, key, []*x509.Certificate{root}, cfg.Now())
	if err != nil {
		return nil, "", fmt.Errorf("CA reply refused: %w", err)
	}
	return id, resp.DeviceID, nil
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
func checkReply(resp *wire.EnrollResponse, key crypto.Signer, roots []*x509.Certificate, now time.Time) (*identity, error) {
	leaf, err := client.ParseCertificatesPEM([]byte(resp.Certificate))
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	id := &identity{Key: key, Cert: leaf[0], Root: roots[0], Extra: roots[1:]}
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

// retrier runs an operation until it succeeds, fails permanently (a 4xx
// answer, a refused TLS peer, ...), or the deadline would pass. Transient
// failures (client.IsTransient: the network, 429, 500, 502, 503, 504) are
// retried with jittered exponential backoff, at least the Retry-After the
// CA asked for; each retry is one line on stderr. Every call to the CA of
// enroll, renew, rekey and run goes through it.
type retrier struct {
	cfg      *config
	deadline time.Time
}

func (r *retrier) do(ctx context.Context, what string, op func(context.Context) error) error {
	rt := client.Retrier{Deadline: r.deadline, AttemptTimeout: attemptTimeout, Now: r.cfg.Now, Sleep: r.cfg.Sleep, Jitter: r.cfg.Jitter,
		OnRetry: func(_ int, err error, delay time.Duration) {
			r.cfg.event(slog.LevelWarn, fmt.Sprintf("%s failed: %v; next try in %s", what, describe(err), seconds(delay)),
				what+" failed; retrying", "err", describe(err).Error(), "retry_in", seconds(delay))
		}}
	var re *client.RetryError
	if err := rt.Do(ctx, op); !errors.As(err, &re) {
		return err
	}
	err := re.Err
	switch re.Stop {
	case client.StopPermanent:
		return fmt.Errorf("%s: %w", what, describe(err))
	case client.StopInterrupted:
		return fmt.Errorf("%s: interrupted: %w", what, describe(err))
	case client.StopInterruptedWaiting:
		return fmt.Errorf("%s: interrupted while waiting to retry: %w", what, describe(err))
	case client.StopWouldPassDeadline:
		return r.timedOut(what, fmt.Errorf("next try in %s would pass --timeout %s: %w",
			seconds(re.Delay), r.cfg.Timeout, describe(err)))
	}
	return r.timedOut(what, fmt.Errorf("gave up after %s: %w", r.cfg.Timeout, describe(err)))
}

// timedOut is the exit-3 error of a retry loop whose deadline passed,
// saying what to do about it.
func (r *retrier) timedOut(what string, err error) error {
	return &exitError{exitTimedOut, fmt.Errorf("%s: %w; the CA or the network kept failing: "+
		"check that the CA is reachable and ready (GET /readyz), then run the command again (it picks up where it "+
		"stopped), or give it longer with --timeout", what, err)}
}

// seconds formats a retry delay for humans: "7s", "0.5s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Round(100*time.Millisecond).Seconds(), 'f', -1, 64) + "s"
}

// backoff is the ceiling before attempt+1: base·2^attempt, capped.
func backoff(attempt int) time.Duration { return client.Backoff(attempt) }

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
