package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// OCSPAnswer is a DER OCSP response and how long HTTP caches may keep it.
type OCSPAnswer struct {
	DER []byte
	// ThisUpdate and NextUpdate are the response's; zero for unsigned
	// error responses (malformedRequest, unauthorized, internalError).
	ThisUpdate time.Time
	NextUpdate time.Time
	// MaxAge is how long an HTTP cache may reuse it; zero means no-cache.
	MaxAge time.Duration
}

// OCSP answers a DER OCSP request (RFC 6960) for one certificate: good
// (recorded and not revoked), revoked (with time and reason), or unknown
// (not in the registry, or issued by another CA). An unparsable request
// gets malformedRequest. Signed answers are cached per serial until
// Refresh passes and dropped on revocation. Only a failure to read the
// registry or to sign is an error.
func (r *Revocation) OCSP(ctx context.Context, raw []byte) (*OCSPAnswer, error) {
	a, status, err := r.ocsp(ctx, raw)
	if err != nil {
		status = OCSPError
	}
	r.cfg.Metrics.OCSPResponse(status)
	return a, err
}

// ocsp is OCSP, also returning the answer's class for Metrics.
func (r *Revocation) ocsp(ctx context.Context, raw []byte) (*OCSPAnswer, string, error) {
	req, err := ocsp.ParseRequest(raw)
	if err != nil || req.SerialNumber == nil {
		return &OCSPAnswer{DER: ocsp.MalformedRequestErrorResponse}, OCSPMalformed, nil
	}
	if r.cfg.OCSP == nil {
		return &OCSPAnswer{DER: ocsp.UnauthorizedErrorResponse}, OCSPUnauthorized, nil
	}
	now := r.cfg.Now()
	st := &pki.OCSPStatus{
		Serial: req.SerialNumber, Status: ocsp.Unknown, Hash: req.HashAlgorithm,
		ThisUpdate: now.Add(-pki.DefaultBackdate).UTC().Truncate(time.Second),
		NextUpdate: now.Add(r.cfg.OCSPValidity).UTC().Truncate(time.Second),
	}
	if !r.cfg.OCSP.MatchesIssuer(req) {
		// Another CA issuer's certificate (a rollover): its own responder answers.
		if other := r.issuerFor(req); other != nil {
			return other.ocsp(ctx, raw)
		}
	}
	if !r.cfg.OCSP.MatchesIssuer(req) || req.SerialNumber.Sign() <= 0 {
		a, err := r.signOCSP(ctx, st)
		return a, OCSPUnknown, err
	}
	key := ocspKey{serial: pki.SerialHex(req.SerialNumber), hash: req.HashAlgorithm}
	// A revocation on another replica drops the cache (revisions); a
	// registry that cannot be read leaves it, bounded by Refresh.
	_, _ = r.revisions(ctx, false)
	r.ocspMu.Lock()
	e := r.ocspCache[key]
	r.ocspMu.Unlock()
	if e != nil && now.Before(e.reuseUntil) {
		return &OCSPAnswer{DER: e.der, ThisUpdate: e.thisUpdate, NextUpdate: e.nextUpdate, MaxAge: e.reuseUntil.Sub(now)}, e.status, nil
	}
	seq := r.revSeq.Load()
	c, err := r.cfg.Store.GetCertificate(ctx, key.serial)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		// Not cached: serials are random, an unknown one stays unknown, and
		// caching them would let anyone fill memory.
		a, err := r.signOCSP(ctx, st)
		return a, OCSPUnknown, err
	case err != nil:
		return nil, OCSPError, fmt.Errorf("OCSP: look up %s: %w", key.serial, err)
	case c.Status == registry.CertRevoked:
		st.Status, st.Reason = ocsp.Revoked, c.RevocationReason
		if c.RevokedAt != nil {
			st.RevokedAt = *c.RevokedAt
		}
	default:
		st.Status = ocsp.Good
	}
	status := OCSPGood
	if st.Status == ocsp.Revoked {
		status = OCSPRevoked
	}
	a, err := r.signOCSP(ctx, st)
	if err != nil {
		return nil, OCSPError, err
	}
	a.MaxAge = min(r.cfg.Refresh, st.NextUpdate.Sub(now))
	r.ocspMu.Lock()
	// A revocation that committed while this answer was made would not be
	// in it: cache only if none did.
	if r.revSeq.Load() == seq && len(r.ocspCache) < r.cfg.OCSPCacheMax {
		r.ocspCache[key] = &ocspEntry{der: a.DER, thisUpdate: st.ThisUpdate, nextUpdate: st.NextUpdate, reuseUntil: now.Add(a.MaxAge),
			status: status}
	}
	r.ocspMu.Unlock()
	return a, status, nil
}

func (r *Revocation) signOCSP(ctx context.Context, st *pki.OCSPStatus) (*OCSPAnswer, error) {
	der, err := r.cfg.OCSP.Sign(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("OCSP: %w", err)
	}
	return &OCSPAnswer{DER: der, ThisUpdate: st.ThisUpdate, NextUpdate: st.NextUpdate}, nil
}
