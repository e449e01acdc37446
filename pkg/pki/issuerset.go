package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"sync/atomic"
)

// IssuerSet is the CA's issuers during a rollover, keyed by KeyID: one
// active issuer signs every certificate, the others are trusted (their
// chains verify) and named in the trust bundle. Its contents are swapped
// whole by Set; it is safe for concurrent use and implements the issuing
// methods of Issuer by delegating to the active one.
type IssuerSet struct {
	cur atomic.Pointer[IssuerSetState]
}

// IssuerSetState is one consistent view of an IssuerSet.
type IssuerSetState struct {
	// Active signs new certificates.
	Active *Issuer
	// Trusted are every issuer whose certificates still verify (prepared,
	// active, previous and retired), by KeyID; it includes Active.
	Trusted map[string]*Issuer
	// Roots are the distinct roots of the trust bundle, oldest first;
	// Cross the cross certificates that vouch for newer roots.
	Roots, Cross []*x509.Certificate
	// BundleKeyID is the KeyID of the newest issuer the bundle names (the
	// prepared one, else the active one): fetching the bundle counts as
	// having seen it.
	BundleKeyID string
}

// NewIssuerSet starts a set with one active issuer.
func NewIssuerSet(active *Issuer) *IssuerSet {
	s := &IssuerSet{}
	kid := KeyID(active.ca.Intermediate)
	s.cur.Store(&IssuerSetState{
		Active: active, Trusted: map[string]*Issuer{kid: active},
		Roots: []*x509.Certificate{active.ca.Root}, BundleKeyID: kid,
	})
	return s
}

// Set replaces the set's contents; st.Active must be set and in Trusted.
func (s *IssuerSet) Set(st *IssuerSetState) error {
	if st == nil || st.Active == nil || st.Trusted[KeyID(st.Active.ca.Intermediate)] != st.Active || len(st.Roots) == 0 {
		return errors.New("issuer set: an active issuer among the trusted ones and a root are required")
	}
	s.cur.Store(st)
	return nil
}

// State returns the current view (do not modify it).
func (s *IssuerSet) State() *IssuerSetState { return s.cur.Load() }

// Active returns the issuer that signs now.
func (s *IssuerSet) Active() *Issuer { return s.cur.Load().Active }

// IssueDevice issues through the active issuer.
func (s *IssuerSet) IssueDevice(ctx context.Context, req *DeviceRequest) (*Issued, error) {
	return s.Active().IssueDevice(ctx, req)
}

// IssueServer issues through the active issuer.
func (s *IssuerSet) IssueServer(ctx context.Context, req *ServerRequest) (*Issued, error) {
	return s.Active().IssueServer(ctx, req)
}

// IssueClient issues through the active issuer.
func (s *IssuerSet) IssueClient(ctx context.Context, req *ClientRequest) (*Issued, error) {
	return s.Active().IssueClient(ctx, req)
}

// Chain is the active issuer's chain.
func (s *IssuerSet) Chain() []*x509.Certificate { return s.Active().Chain() }

// Root is the active issuer's root.
func (s *IssuerSet) Root() *x509.Certificate { return s.Active().Root() }

// Intermediates returns every trusted issuer's certificate.
func (s *IssuerSet) Intermediates() []*x509.Certificate {
	st := s.cur.Load()
	out := make([]*x509.Certificate, 0, len(st.Trusted))
	for _, i := range st.Trusted {
		out = append(out, i.ca.Intermediate)
	}
	return out
}

// CA returns the issuer's CA (root, intermediate, signer).
func (i *Issuer) CA() *CA { return i.ca }
