package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"devpki/pkg/pki"
)

// ErrPinMismatch is returned by FetchRootsPinned when no root in the CA's
// bundle has the pinned fingerprint, or when the server's own certificate does
// not chain to the pinned root.
var ErrPinMismatch = errors.New("root fingerprint pin mismatch")

// NormalizeFingerprint returns a SHA-256 fingerprint as 64 lowercase hex
// digits. It accepts upper or lower case and ':' (or space) separators, as
// printed by openssl and step.
func NormalizeFingerprint(s string) (string, error) {
	f := strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s)))
	if len(f) != 64 {
		return "", fmt.Errorf("fingerprint %q: want 64 hex digits of a SHA-256, got %d", s, len(f))
	}
	if _, err := hex.DecodeString(f); err != nil {
		return "", fmt.Errorf("fingerprint %q: not hex", s)
	}
	return f, nil
}

// FetchRootsPinned bootstraps trust in a CA known only by the SHA-256
// fingerprint of its root certificate. It fetches GET /v1/ca/roots without
// verifying the server (this call only), and accepts the reply only if
//
//   - one root in the bundle has fingerprint fingerprintHex (pki.Fingerprint;
//     case-insensitive, ':' separators allowed), and
//   - the certificate chain the server presented in the TLS handshake, recorded
//     by VerifyConnection, verifies to that root for the host of baseURL with
//     the serverAuth usage — so a man in the middle that relays the real
//     bundle over its own TLS connection is refused.
//
// It returns only the pinned root. Nothing secret is sent before the checks.
func FetchRootsPinned(ctx context.Context, baseURL, fingerprintHex string) ([]*x509.Certificate, error) {
	pin, err := NormalizeFingerprint(fingerprintHex)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("client: fetch pinned roots: base URL %q must be https", baseURL)
	}

	c, conns := bootstrapClient(u)
	defer c.hc.CloseIdleConnections()
	roots, err := c.Roots(ctx)
	if err != nil {
		return nil, err
	}
	var pinned *x509.Certificate
	for _, r := range roots {
		if pki.Fingerprint(r) == pin {
			pinned = r
			break
		}
	}
	if pinned == nil {
		return nil, fmt.Errorf("client: %s serves %d root(s), none with fingerprint %s: %w", u.Host, len(roots), pin, ErrPinMismatch)
	}
	if err := conns.verify(u, pinned, nil); err != nil {
		return nil, err
	}
	return []*x509.Certificate{pinned}, nil
}

// connLog records the TLS connections of a bootstrap client.
type connLog struct {
	mu    sync.Mutex
	conns []tls.ConnectionState
}

// bootstrapClient returns a client of u that does not verify the server
// (its root is what the caller fetches) and refuses redirects, and the log of
// its connections for connLog.verify once a root is pinned.
func bootstrapClient(u *url.URL) (*Client, *connLog) {
	log := &connLog{}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The server cannot be verified yet: its root is what this call fetches.
		// VerifyConnection records the presented chain, which connLog.verify
		// checks against the pinned root before anything fetched is trusted.
		InsecureSkipVerify: true, //nolint:gosec // bootstrap call only; see above
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			log.mu.Lock()
			log.conns = append(log.conns, cs)
			log.mu.Unlock()
			return nil
		},
	}
	hc := &http.Client{
		Transport: &http.Transport{
			Proxy:             http.ProxyFromEnvironment,
			TLSClientConfig:   tlsConf,
			DisableKeepAlives: true,
		},
		// A redirect could lead to another server; refuse it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Client{base: u, hc: hc, userAgent: DefaultUserAgent}, log
}

// verify checks that every recorded connection presented a chain that
// verifies to root for the host of u with the serverAuth usage (extra may
// supply intermediates the server did not send) — so a man in the middle
// that relays the real bundle over its own TLS connection is refused.
func (l *connLog) verify(u *url.URL, root *x509.Certificate, extra []*x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) == 0 {
		return errors.New("client: fetch pinned roots: no TLS connection was recorded")
	}
	for _, cs := range l.conns {
		if err := verifyServerChain(cs, u.Hostname(), pool, extra); err != nil {
			return fmt.Errorf("client: server certificate of %s does not chain to the pinned root %s: %v: %w",
				u.Host, pki.Fingerprint(root), err, ErrPinMismatch)
		}
	}
	return nil
}

func verifyServerChain(cs tls.ConnectionState, host string, roots *x509.CertPool, extra []*x509.Certificate) error {
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	for _, c := range extra {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}
