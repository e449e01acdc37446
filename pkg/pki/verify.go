package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ChainVerifier verifies certificate chains as a TLS peer presents them
// (leaf first, then whatever chain it chose to send) against a set of trust
// anchors, completing the chain with CA certificates it already knows. A
// client that sends only its leaf verifies when its issuer is known: small
// TLS stacks send no chain.
type ChainVerifier struct {
	roots *x509.CertPool
	known *x509.CertPool
	usage []x509.ExtKeyUsage
}

// NewChainVerifier trusts roots and completes chains with the known
// intermediates. usage is the extended key usage a leaf must allow
// (x509.ExtKeyUsageClientAuth for TLS clients); none means any.
func NewChainVerifier(roots *x509.CertPool, known []*x509.Certificate, usage ...x509.ExtKeyUsage) *ChainVerifier {
	v := &ChainVerifier{roots: roots, known: x509.NewCertPool(), usage: usage}
	for _, c := range known {
		v.known.AddCert(c)
	}
	if len(v.usage) == 0 {
		v.usage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	return v
}

// ErrNoCertificate: there was no certificate to verify.
var ErrNoCertificate = errors.New("pki: no certificate presented")

// Verify verifies presented[0] at now, with the known intermediates and
// presented[1:] as intermediates, and returns its chains (leaf first, an
// anchor last), as crypto/tls would have put them in VerifiedChains.
func (v *ChainVerifier) Verify(presented []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	if len(presented) == 0 {
		return nil, ErrNoCertificate
	}
	opts := x509.VerifyOptions{Roots: v.roots, Intermediates: v.known, CurrentTime: now, KeyUsages: v.usage}
	chains, err := presented[0].Verify(opts)
	if err != nil && len(presented) > 1 {
		// The peer sent a chain of its own: add it to what is known.
		opts.Intermediates = v.known.Clone()
		for _, c := range presented[1:] {
			opts.Intermediates.AddCert(c)
		}
		chains, err = presented[0].Verify(opts)
	}
	if err != nil {
		return nil, fmt.Errorf("pki: verify %q: %w", presented[0].Subject, err)
	}
	return chains, nil
}
