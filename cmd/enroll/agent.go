package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ocsp"
)

// agentFlags parses the flags of renew, run and status.
type agentFlags struct {
	cfg         config
	rekey       bool
	fingerprint string
	logFormat   string // run: --log-format
}

func parseAgentFlags(cmd string, args []string, stderr io.Writer) (*agentFlags, error) {
	a := &agentFlags{}
	fs := flag.NewFlagSet("enroll "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.cfg.Dir, "dir", "", "state `directory` written by enroll (required)")
	fs.StringVar(&a.cfg.CA, "ca", "", "CA base `URL` (default: the one recorded at enrollment)")
	fs.StringVar(&a.fingerprint, "fingerprint", "", "root fingerprint (default: the one recorded at enrollment)")
	fs.StringVar(&a.cfg.KeyPasswordFile, "key-password-file", "", "`file` holding the password of device.key (default: DIR/device.key.password)")
	fs.DurationVar(&a.cfg.Timeout, "timeout", defaultTimeout, "give up retrying transient failures (network, 429, 500, 502, 503, 504) after this long")
	fs.StringVar(&a.cfg.TPM, "tpm", "auto", "TPM `spec`: for a TPM identity, auto uses the TPM recorded in DIR/tpm.json; for 'run', also the first enrollment's (see enroll -h)")
	if cmd == "renew" {
		fs.BoolVar(&a.rekey, "rekey", false, "make a new key instead of renewing the current one")
	}
	if cmd == "run" {
		fs.Func("mac", "MAC `address` for the first enrollment, repeatable", func(s string) error {
			a.cfg.MACs = append(a.cfg.MACs, s)
			return nil
		})
		fs.StringVar(&a.cfg.Serial, "serial", "", "device serial for the first enrollment")
		fs.StringVar(&a.cfg.Token, "token", "", "bootstrap token for the first enrollment (or $DEVPKI_TOKEN)")
		fs.StringVar(&a.logFormat, "log-format", logText, "log `format` on stderr: text (\"enroll: ...\" lines) or json (one object per line: time, level, msg, fields)")
		protocolFlags(fs, &a.cfg)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &exitError{exitUsage, err}
	}
	if fs.NArg() > 0 {
		return nil, usageErr("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if a.cfg.Dir == "" {
		return nil, usageErr("--dir is required")
	}
	if a.cfg.Timeout <= 0 {
		return nil, usageErr("--timeout must be positive")
	}
	var err error
	if a.cfg.Log, err = newLogger(a.logFormat, stderr); err != nil {
		return nil, err
	}
	return a, nil
}

// envFailpoint is the crash hook of the real binary: when DEVPKI_FAILPOINT
// names a step of replaceIdentity, the process kills itself with SIGKILL
// there. The crash tests use it; it does nothing otherwise.
func envFailpoint(getenv func(string) string) func(string) error {
	want := getenv("DEVPKI_FAILPOINT")
	return func(step string) error {
		if want != "" && step == want {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
		return nil
	}
}

// runRenewCmd is 'enroll renew': renew (or re-key) once.
func runRenewCmd(ctx context.Context, a *agentFlags, failpoint func(string) error) error {
	cfg := &a.cfg
	cfg.defaults()
	ci, err := loadCAInfo(cfg.Dir, cfg.CA, a.fingerprint)
	if err != nil {
		return err
	}
	id, err := renewOnce(ctx, cfg, ci, a.rekey, failpoint)
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Stdout, "renewed device %s; certificate %s valid until %s\n",
		id.Cert.Subject.CommonName, cfg.Dir+"/"+certFile, id.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// runAgent is 'enroll run': enroll when the state is empty, then renew at two
// thirds of each certificate's lifetime, retrying while the CA is away, until
// ctx ends (SIGTERM) or the identity can no longer be renewed.
func runAgent(ctx context.Context, a *agentFlags, failpoint func(string) error) error {
	cfg := &a.cfg
	cfg.defaults()
	var lastRenewed time.Time
	for {
		ci, ciErr := loadCAInfo(cfg.Dir, cfg.CA, a.fingerprint)
		var id *identity
		var err error
		if ciErr == nil {
			kr := cfg.keyring()
			// An expired identity too: renewOnce renews it by proof of
			// possession of its key (expired.go).
			id, err = loadForRenewal(ctx, kr, ci.Fingerprint, cfg.Now(), cfg.logf)
			kr.close()
		}
		if ciErr != nil || errors.Is(err, fs.ErrNotExist) {
			cfg.logf("no identity in %s yet: enrolling", cfg.Dir)
			ec := *cfg
			ec.Fingerprint = a.fingerprint
			if err := runEnroll(ctx, ec); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("load identity: %w", err)
		}
		at := renewAt(id.Cert, cfg.Jitter)
		if earliest := lastRenewed.Add(minRenewGap(id.Cert)); !lastRenewed.IsZero() && at.Before(earliest) {
			// The certificate just issued is already due: this clock runs
			// ahead of the CA's. Don't renew in a loop.
			cfg.logf("warning: certificate %s is due for renewal right after it was issued; is the clock (%s) ahead of the CA's? waiting until %s",
				id.Cert.SerialNumber.Text(16), cfg.Now().UTC().Format(time.RFC3339), earliest.UTC().Format(time.RFC3339))
			at = earliest
		}
		cfg.event(slog.LevelInfo, fmt.Sprintf("certificate %s valid until %s; next renewal at %s", id.Cert.SerialNumber.Text(16),
			id.Cert.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339)),
			"certificate valid", "certificate", id.Cert.SerialNumber.Text(16), "device", id.Cert.Subject.CommonName,
			"not_after", id.Cert.NotAfter.UTC(), "next_renewal", at.UTC())
		if wait := at.Sub(cfg.Now()); wait > 0 {
			if err := cfg.Sleep(ctx, wait); err != nil {
				cfg.logf("stopping: %v", err)
				return nil
			}
		}
		for attempt := 0; ; attempt++ {
			rc := *cfg
			rc.Timeout = max(cfg.Timeout, id.Cert.NotAfter.Sub(cfg.Now()))
			var nid *identity
			if nid, err = renewOnce(ctx, &rc, ci, false, failpoint); err == nil {
				cfg.event(slog.LevelInfo, "renewed", "renewed", "certificate", nid.Cert.SerialNumber.Text(16),
					"not_after", nid.Cert.NotAfter.UTC())
				lastRenewed = cfg.Now()
				break
			}
			if ctx.Err() != nil {
				cfg.logf("stopping: %v", ctx.Err())
				return nil
			}
			if !cfg.Now().Before(id.Cert.NotAfter) {
				return fmt.Errorf("renewal failed and the certificate has expired: %w", err)
			}
			delay := cfg.Jitter(backoff(attempt))
			cfg.event(slog.LevelWarn, fmt.Sprintf("renewal failed (%v); retrying in %s", err, delay.Round(time.Millisecond)),
				"renewal failed; retrying", "err", err.Error(), "retry_in", delay.Round(time.Millisecond).String())
			if err := cfg.Sleep(ctx, delay); err != nil {
				return nil
			}
		}
	}
}

// minRenewGap is the least time between two renewals by the agent: a tenth
// of the lifetime, at most an hour.
func minRenewGap(c *x509.Certificate) time.Duration {
	return min(time.Hour, c.NotAfter.Sub(c.NotBefore)/10)
}

// runStatus is 'enroll status': identity, expiry, chain and OCSP status.
func runStatus(ctx context.Context, a *agentFlags) error {
	cfg := &a.cfg
	cfg.defaults()
	ci, err := loadCAInfo(cfg.Dir, cfg.CA, a.fingerprint)
	if err != nil {
		return err
	}
	kr := cfg.keyring()
	defer kr.close()
	id, err := loadForRenewal(ctx, kr, ci.Fingerprint, cfg.Now(), cfg.logf)
	if err != nil {
		return fmt.Errorf("no valid identity in %s: %w", cfg.Dir, err)
	}
	spec := kr.tpmSpec
	if kr.tpm != nil && spec == "" {
		spec = kr.tpm.Spec()
	}
	c := id.Cert
	w := cfg.Stdout
	fmt.Fprintf(w, "device:      %s\n", c.Subject.CommonName)
	fmt.Fprintf(w, "serial:      %s\n", c.Subject.SerialNumber)
	for _, u := range c.URIs {
		fmt.Fprintf(w, "san:         %s\n", u)
	}
	fmt.Fprintf(w, "key:         %s\n", keyStorage(id.Key, spec))
	fmt.Fprintf(w, "certificate: %s\n", c.SerialNumber.Text(16))
	fmt.Fprintf(w, "valid:       %s to %s (renewal due %s)\n", c.NotBefore.UTC().Format(time.RFC3339),
		c.NotAfter.UTC().Format(time.RFC3339), renewAt(c, func(time.Duration) time.Duration { return 0 }).UTC().Format(time.RFC3339))
	if !cfg.Now().Before(c.NotAfter) {
		fmt.Fprintf(w, "EXPIRED:     'enroll renew' (or 'enroll run') renews it by proof of possession of its key within the CA's grace period; past it, re-enroll with a token bound to the serial\n")
	}
	fmt.Fprintf(w, "chain:       valid to pinned root %s\n", ci.Fingerprint)
	switch {
	case ci.Protocol == protocolEST && ci.ESTLabel != "":
		fmt.Fprintf(w, "protocol:    est (RFC 7030) at %s, label %s\n", ci.URL, ci.ESTLabel)
	case ci.Protocol == protocolEST:
		fmt.Fprintf(w, "protocol:    est (RFC 7030) at %s\n", ci.URL)
	default:
		fmt.Fprintf(w, "protocol:    native (devpki API) at %s\n", ci.URL)
	}
	fmt.Fprintf(w, "ocsp:        %s\n", ocspStatus(ctx, id))
	return nil
}

// ocspStatus asks the responder named in the certificate.
func ocspStatus(ctx context.Context, id *identity) string {
	if len(id.Cert.OCSPServer) == 0 {
		return "unknown (the certificate names no OCSP responder)"
	}
	if len(id.Chain) == 0 {
		return "unknown (no issuer certificate in chain.pem)"
	}
	issuer := id.Chain[0]
	req, err := ocsp.CreateRequest(id.Cert, issuer, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	pool := x509.NewCertPool()
	for _, r := range id.roots() {
		pool.AddCert(r)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, id.Cert.OCSPServer[0], bytes.NewReader(req))
	if err != nil {
		return "error: " + err.Error()
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := hc.Do(hr)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "error: " + err.Error()
	}
	r, err := ocsp.ParseResponseForCert(body, id.Cert, issuer)
	if err != nil {
		return fmt.Sprintf("error: %v (HTTP %d)", err, resp.StatusCode)
	}
	switch r.Status {
	case ocsp.Good:
		return fmt.Sprintf("good (this update %s)", r.ThisUpdate.UTC().Format(time.RFC3339))
	case ocsp.Revoked:
		return fmt.Sprintf("REVOKED at %s, reason %d", r.RevokedAt.UTC().Format(time.RFC3339), r.RevocationReason)
	}
	return "unknown to the responder"
}
