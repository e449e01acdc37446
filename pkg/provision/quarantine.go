package provision

import (
	"context"
	"fmt"

	"devpki/pkg/registry"
)

// ReleaseResult is what ReleaseQuarantine did.
type ReleaseResult struct {
	// Claim is the released claim; Device the enrolled device it collided
	// with, as it now is (re-bound to the claim's EK, or revoked with its
	// EK cleared).
	Claim  *registry.Quarantine
	Device *registry.Device
	// Certificates are those of Device this release revoked.
	Certificates []*registry.Certificate
	// CRLNumber is the number of a CRL built after the release committed,
	// listing those certificates; 0 if that build failed (Run retries).
	CRLNumber int64
}

// ReleaseQuarantine lets the claimant of held claim id in, the answer to a
// legitimate hardware change (registry.QuarantineRelease): for a serial
// claimed with another EK (a TPM or mainboard replaced), the enrolled
// device is re-bound to the new EK and keeps its id; for an EK claimed
// with another serial (a TPM moved to another chassis), the enrolled
// device is revoked and its EK freed, so the claim enrolls a new device.
// Either way the enrolled device's certificates are revoked with reason,
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
	const action = "quarantine.release"
	if err := registry.ValidReason(reason); err != nil {
		r.refuse(ctx, who, action, id, err)
		return nil, err
	}
	q, err := r.cfg.Store.GetQuarantine(ctx, id)
	if err == nil && !sameTenant(q.TenantID, who.TenantID) {
		err = fmt.Errorf("claim of another tenant: %w", registry.ErrNotFound)
	}
	if err != nil {
		r.refuse(ctx, who, action, id, err)
		return nil, fmt.Errorf("release quarantine %s: %w", id, err)
	}
	detail := fmt.Sprintf("serial=%s ek=%s reason=%s device=%s", q.Serial, q.EKHash, q.Reason, q.ConflictDeviceID)
	if q.Reason == registry.ReasonSerialOtherEK {
		detail += " previous_ek=" + q.ConflictEKHash + " (device re-bound to the claim's EK)"
	} else {
		detail += " (device revoked, its EK freed)"
	}
	rel := &registry.QuarantineRelease{
		ID: id, TenantID: q.TenantID, By: who.String(), Reason: reason,
		Audit: &registry.AuditEvent{
			TenantID: q.TenantID, Actor: who.String(), Action: action, Target: id, Result: registry.ResultOK,
			Detail: detail + " revocation=" + registry.ReasonName(reason), SourceAddr: who.Source,
		},
	}
	if err := r.cfg.Store.ReleaseQuarantine(ctx, rel); err != nil {
		r.refuse(ctx, who, action, id, err)
		return nil, fmt.Errorf("release quarantine %s: %w", id, err)
	}
	res := &ReleaseResult{Claim: rel.Claim, Device: rel.Device, Certificates: rel.Revoked, CRLNumber: r.crlNumber()}
	if len(rel.Revoked) > 0 {
		res.CRLNumber = r.revoked(ctx, rel.Revoked).CRLNumber
	}
	return res, nil
}
