package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
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
	// issuers are the known intermediates whose own chain to a root was
	// verified when the verifier was made, by raw subject: a leaf one of
	// them issued needs one signature check, not one per chain link.
	issuers map[string][]verifiedIssuer
}

// verifiedIssuer is a known intermediate and its verified chain to an
// anchor (the intermediate first).
type verifiedIssuer struct {
	cert  *x509.Certificate
	chain []*x509.Certificate
}

// NewChainVerifier trusts roots and completes chains with the known
// intermediates. usage is the extended key usage a leaf must allow
// (x509.ExtKeyUsageClientAuth for TLS clients); none means any.
func NewChainVerifier(roots *x509.CertPool, known []*x509.Certificate, usage ...x509.ExtKeyUsage) *ChainVerifier {
	v := &ChainVerifier{roots: roots, known: x509.NewCertPool(), usage: usage, issuers: map[string][]verifiedIssuer{}}
	for _, c := range known {
		v.known.AddCert(c)
	}
	if len(v.usage) == 0 {
		v.usage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	for _, c := range known {
		if !plainIssuer(c) {
			continue
		}
		// The signatures of its chain, checked once; validity periods are
		// checked at each Verify, at its time.
		var chains [][]*x509.Certificate
		var err error
		for _, at := range []time.Time{time.Now(), c.NotBefore, c.NotAfter} {
			if chains, err = c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: v.known,
				CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				break
			}
		}
		if err != nil || len(chains) != 1 || !allPlain(chains[0][1:]) {
			continue
		}
		k := string(c.RawSubject)
		v.issuers[k] = append(v.issuers[k], verifiedIssuer{cert: c, chain: chains[0]})
	}
	return v
}

// plainIssuer reports whether c constrains nothing below it that
// crypto/x509 would check along a chain: no name constraints, no extended
// key usage other than any, no critical extension crypto/x509 does not
// handle. Leaves under such a CA are checked by verifyFast exactly as
// Certificate.Verify would; under any other, Verify does it.
func plainIssuer(c *x509.Certificate) bool {
	if len(c.UnhandledCriticalExtensions) > 0 || len(c.UnknownExtKeyUsage) > 0 {
		return false
	}
	for _, u := range c.ExtKeyUsage {
		if u != x509.ExtKeyUsageAny {
			return false
		}
	}
	return len(c.PermittedDNSDomains)+len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+len(c.ExcludedIPRanges)+
		len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) == 0 &&
		!c.PermittedDNSDomainsCritical
}

func allPlain(cs []*x509.Certificate) bool {
	for _, c := range cs {
		if !plainIssuer(c) {
			return false
		}
	}
	return true
}

// verifyFast verifies leaf when a known intermediate issued it: the leaf's
// signature by that intermediate, and at now the validity of the leaf and
// of every certificate of the intermediate's chain, the leaf's extended key
// usage and its critical extensions — what Certificate.Verify checks of
// such a chain, less the intermediate's signature, verified once in
// NewChainVerifier. ok is false when no known intermediate issued leaf (the
// caller falls back to Certificate.Verify).
func (v *ChainVerifier) verifyFast(leaf *x509.Certificate, now time.Time) (chain []*x509.Certificate, ok bool, err error) {
	for _, iss := range v.issuers[string(leaf.RawIssuer)] {
		if len(leaf.AuthorityKeyId) > 0 && len(iss.cert.SubjectKeyId) > 0 && !bytes.Equal(leaf.AuthorityKeyId, iss.cert.SubjectKeyId) {
			continue
		}
		if err := leaf.CheckSignatureFrom(iss.cert); err != nil {
			continue
		}
		if len(leaf.UnhandledCriticalExtensions) > 0 {
			return nil, true, x509.UnhandledCriticalExtension{}
		}
		for _, c := range append([]*x509.Certificate{leaf}, iss.chain...) {
			if now.Before(c.NotBefore) || now.After(c.NotAfter) {
				return nil, true, x509.CertificateInvalidError{Cert: c, Reason: x509.Expired,
					Detail: fmt.Sprintf("current time %s is outside %s to %s", now.UTC().Format(time.RFC3339),
						c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))}
			}
		}
		if !usageAllowed(leaf, v.usage) {
			return nil, true, x509.CertificateInvalidError{Cert: leaf, Reason: x509.IncompatibleUsage}
		}
		return append([]*x509.Certificate{leaf}, iss.chain...), true, nil
	}
	return nil, false, nil
}

// AllowsUsage reports whether leaf may be used for usage by crypto/x509's
// rule for a leaf: no extended key usage, or any, or usage among them.
func AllowsUsage(leaf *x509.Certificate, usage x509.ExtKeyUsage) bool {
	return usageAllowed(leaf, []x509.ExtKeyUsage{usage})
}

// usageAllowed is crypto/x509's rule for a leaf: no extended key usage, or
// any, or one of want (any in want accepts all).
func usageAllowed(leaf *x509.Certificate, want []x509.ExtKeyUsage) bool {
	if len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, w := range want {
		if w == x509.ExtKeyUsageAny {
			return true
		}
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageAny || slices.Contains(want, u) {
			return true
		}
	}
	return false
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
	if chain, ok, err := v.verifyFast(presented[0], now); ok {
		if err != nil {
			return nil, fmt.Errorf("pki: verify %q: %w", presented[0].Subject, err)
		}
		return [][]*x509.Certificate{chain}, nil
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
