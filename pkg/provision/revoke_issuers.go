package provision

import (
	"context"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/registry"
)

// Revocation across CA issuers (a rollover). Each issuer has its own
// Revocation: a CRL signed by that issuer listing only its certificates
// (RevocationConfig.IssuerKeyID), and OCSP answers signed by its responder.
// The Revocation of the CA from 'ca init' is the one the API holds; it
// knows the others (SetIssuers), hands them the OCSP requests for their
// certificates, and rebuilds their CRL when it revokes one of theirs.

// NewIssuerRevocation is NewRevocation for another issuer than the first:
// certificates recorded without an issuer are never its.
func NewIssuerRevocation(cfg RevocationConfig) (*Revocation, error) {
	r, err := NewRevocation(cfg)
	if err != nil {
		return nil, err
	}
	r.secondary = true
	return r, nil
}

// SetIssuers replaces the other issuers' Revocations, by issuer KeyID
// (their RevocationConfig.IssuerKeyID). Their Refresh runs from r's Run.
func (r *Revocation) SetIssuers(m map[string]*Revocation) {
	cp := make(map[string]*Revocation, len(m))
	for k, v := range m {
		if v != r {
			cp[k] = v
		}
	}
	r.issuers.Store(&cp)
}

// ForIssuer returns the Revocation of the issuer keyID: r itself for its
// own key id, another issuer's, or nil when none is known.
func (r *Revocation) ForIssuer(keyID string) *Revocation {
	if keyID == r.cfg.IssuerKeyID {
		return r
	}
	if m := r.issuers.Load(); m != nil {
		return (*m)[keyID]
	}
	return nil
}

// IssuerKeyID is RevocationConfig.IssuerKeyID.
func (r *Revocation) IssuerKeyID() string { return r.cfg.IssuerKeyID }

// ownRow reports whether a revoked certificate recorded with issuerKeyID
// is r's issuer's (all are when r names none; certificates recorded
// without an issuer are the first issuer's, r's unless r is another
// issuer's).
func (r *Revocation) ownRow(issuerKeyID []byte) bool {
	if r.cfg.IssuerKeyID == "" {
		return true
	}
	if len(issuerKeyID) == 0 {
		return !r.secondary
	}
	return string(issuerKeyID) == r.cfg.IssuerKeyID
}

// issuerFor returns the other issuer's Revocation whose responder answers
// for req's issuer, or nil.
func (r *Revocation) issuerFor(req *ocsp.Request) *Revocation {
	m := r.issuers.Load()
	if m == nil {
		return nil
	}
	for _, o := range *m {
		if o.cfg.OCSP != nil && o.cfg.OCSP.MatchesIssuer(req) {
			return o
		}
	}
	return nil
}

// revokedElsewhere updates the OCSP caches and CRLs of the other issuers
// whose certificates are among certs (r's own are done by revoked).
func (r *Revocation) revokedElsewhere(ctx context.Context, certs []*registry.Certificate) {
	m := r.issuers.Load()
	if m == nil {
		return
	}
	done := map[string]bool{}
	for _, c := range certs {
		o := (*m)[c.IssuerKeyID]
		if o == nil || done[c.IssuerKeyID] {
			continue
		}
		done[c.IssuerKeyID] = true
		var own []*registry.Certificate
		for _, c2 := range certs {
			if c2.IssuerKeyID == c.IssuerKeyID {
				own = append(own, c2)
			}
		}
		for _, c2 := range own {
			o.invalidateOCSP(c2.Serial)
		}
		// Its CRL lists them before the revocation is acknowledged.
		if _, err := o.RebuildCRL(context.WithoutCancel(ctx)); err != nil {
			r.cfg.Log.Error("CRL rebuild after revocation failed; the next refresh retries", "issuer", c.IssuerKeyID, "err", err)
		}
	}
}

// refreshIssuers runs Refresh and the OCSP sweep of the other issuers.
func (r *Revocation) refreshIssuers(ctx context.Context) {
	m := r.issuers.Load()
	if m == nil {
		return
	}
	for kid, o := range *m {
		if err := o.Refresh(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.Error("CRL refresh failed", "issuer", kid, "err", err)
		}
		o.sweepOCSP()
	}
}
