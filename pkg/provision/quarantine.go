package provision

import (
	"context"
	"errors"
	"fmt"

	"devpki/pkg/registry"
)

// ReleaseResult is what ReleaseQuarantine did.
type ReleaseResult struct {
	// Claim is the released claim; Device the enrolled device it collided
	// with, as it now is (re-bound to the claim's EK, or revoked: with its
	// EK cleared for a claim of its EK).
	Claim  *registry.Quarantine
	Device *registry.Device
	// Certificates are those of Device this release revoked.
	Certificates []*registry.Certificate
	// CRLNumber is the number of a CRL built after the release committed,
	// listing those certificates; 0 if that build failed (Run retries).
	CRLNumber int64
}

// ReleaseQuarantine lets the claimant of held claim id in, the answer to a
// legitimate hardware change (decided by release, in release.go): for a
// serial claimed with another EK (a TPM or mainboard replaced), the
// enrolled device is re-bound to the new EK and keeps its id; for an EK
// claimed with another serial (a TPM moved to another chassis), the
// enrolled device is revoked and its EK freed, so the claim enrolls a new
// device; for a MAC claimed with another serial, the enrolled device is
// revoked, so the claim enrolls with that MAC.
// In each case the enrolled device's certificates are revoked with reason,
// the claim is marked released and the release audited
// ("quarantine.release"), in one transaction; then OCSP and the CRL are
// updated, as for a revocation, before it returns. The claimant is not
// contacted: its next attestation enrolls.
//
// A claim of another tenant is ErrNotFound, as an unknown one; a claim not
// held is registry.ErrClaimNotHeld; an enrolled device that changed since
// the claim was held is registry.ErrClaimStale; the claim's EK bound to
// another device is registry.ErrEKConflict. Refusals change nothing and
// are audited.
func (r *Revocation) ReleaseQuarantine(ctx context.Context, who Actor, id string, reason int) (*ReleaseResult, error) {
	const action = ActionQuarantineRelease
	if err := registry.ValidReason(reason); err != nil {
		r.refuse(ctx, who, action, id, err)
		return nil, err
	}
	q, err := scopedClaim(ctx, r.cfg.Store, who, id)
	if err != nil {
		r.refuse(ctx, who, action, id, err)
		return nil, fmt.Errorf("release quarantine: %w", err)
	}
	rel, err := release(ctx, r.cfg.Store, who, q, reason)
	if err != nil {
		switch {
		case errors.Is(err, registry.ErrClaimNotHeld):
			// Say who closed it.
			if q, gerr := r.cfg.Store.GetQuarantine(ctx, id); gerr == nil && q.Status != registry.QuarantineHeld {
				err = closedError(q)
			}
		case errors.Is(err, registry.ErrClaimStale):
			err = fmt.Errorf("%w; nothing was changed. Look again at the device ('ca devices get ID') and the claims "+
				"('ca devices list --status quarantined'): the claimant's next attempt updates the held claim", err)
		case errors.Is(err, registry.ErrEKConflict):
			err = fmt.Errorf("%w; nothing was changed", err)
		}
		r.refuse(ctx, who, action, id, err)
		return nil, fmt.Errorf("release quarantine %s: %w", id, err)
	}
	res := &ReleaseResult{Claim: rel.Claim, Device: rel.Device, Certificates: rel.Revoked, CRLNumber: r.crlNumber()}
	if len(rel.Revoked) > 0 {
		res.CRLNumber = r.revoked(ctx, rel.Revoked).CRLNumber
	}
	return res, nil
}
