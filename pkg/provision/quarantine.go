package provision

import (
	"context"
	"errors"
	"fmt"

	"devpki/pkg/registry"
)

// cloneClaim is an ErrCloneSuspect refusal with what was claimed and what
// it collides with, so that the refusal can be held for an admin
// (registry.Quarantine). Its message is the full cause, for the audit log;
// the device gets heldError's shorter one.
type cloneClaim struct {
	reason registry.QuarantineReason
	serial string
	macs   []string
	ekHash string
	// device is the enrolled device the claim collides with, deviceTenant
	// its tenant and deviceEK its EK hash; empty when not known yet (a
	// race the store caught), then looked up when the claim is held.
	device, deviceTenant, deviceEK string
	msg                            string
}

func (e *cloneClaim) Error() string { return ErrCloneSuspect.Error() + ": " + e.msg }

func (e *cloneClaim) Unwrap() error { return ErrCloneSuspect }

// holdClone records a clone-suspect refusal by who as a held claim of
// tenantID, with its audit event (ActionCloneSuspect, target the held
// record's id) in the same transaction, and returns the error for the
// device: ErrCloneSuspect, saying the claim is held for an administrator,
// without the enrolled device's id or EK. It returns nil, having written
// nothing, when cause is no clone claim or tenantID is unknown.
func (s *Service) holdClone(ctx context.Context, who Actor, tenantID string, cause error) error {
	var cc *cloneClaim
	if tenantID == "" || !errors.As(cause, &cc) {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	if cc.device == "" {
		s.findConflict(ctx, tenantID, cc)
	}
	detail := cause.Error()
	conflict, conflictEK := cc.device, cc.deviceEK
	if cc.deviceTenant != "" && cc.deviceTenant != tenantID {
		// Do not show another tenant's device to this tenant's admins.
		conflict, conflictEK = "", ""
		detail += " (that device is in tenant " + cc.deviceTenant + ")"
	}
	q := &registry.Quarantine{
		ID: NewUUID(), TenantID: tenantID, Serial: cc.serial, MACs: cc.macs, EKHash: cc.ekHash, Reason: cc.reason,
		ConflictDeviceID: conflict, ConflictEKHash: conflictEK, SourceAddr: who.Source, LastSeen: s.cfg.Now(),
	}
	err := s.cfg.Store.HoldClaim(ctx, q, event(who, tenantID, ActionCloneSuspect, "", registry.ResultDenied,
		detail+"; held for an administrator"))
	if err != nil {
		// Still refused, and still audited if the store takes that.
		_ = appendRefusal(ctx, s.cfg.Store, who, tenantID, ActionCloneSuspect, cc.serial,
			fmt.Errorf("%w (holding the claim failed: %v)", cause, err))
		return fmt.Errorf("%w: serial %q: refused; ask an administrator", ErrCloneSuspect, cc.serial)
	}
	return &heldError{serial: cc.serial, id: q.ID, attempts: q.Attempts}
}

// findConflict looks up the enrolled device a claim the store refused
// collides with. A failed lookup leaves it unknown.
func (s *Service) findConflict(ctx context.Context, tenantID string, cc *cloneClaim) {
	switch cc.reason {
	case registry.ReasonSerialOtherEK:
		if d, err := s.cfg.Store.GetDeviceBySerial(ctx, tenantID, cc.serial); err == nil {
			cc.device, cc.deviceTenant, cc.deviceEK = d.ID, d.TenantID, d.EKHash
		}
	case registry.ReasonEKOtherSerial:
		if ds, err := s.cfg.Store.ListDevices(ctx, registry.DeviceFilter{EKHash: cc.ekHash, Limit: 1}); err == nil && len(ds) == 1 {
			cc.device, cc.deviceTenant, cc.deviceEK = ds[0].ID, ds[0].TenantID, ds[0].EKHash
		}
	case registry.ReasonMACOtherSerial:
		for _, m := range cc.macs {
			ds, err := s.cfg.Store.ListDevices(ctx, registry.DeviceFilter{TenantID: tenantID, MAC: m, Status: registry.DeviceActive, Limit: 1})
			if err == nil && len(ds) == 1 {
				cc.device, cc.deviceTenant, cc.deviceEK = ds[0].ID, ds[0].TenantID, ds[0].EKHash
				return
			}
		}
	}
}

// heldError is what the device is told of a claim held for an admin.
type heldError struct {
	serial   string
	id       string
	attempts int
}

func (e *heldError) Error() string {
	return fmt.Sprintf("%v: serial %q: the claim is held for an administrator as quarantine %s (attempt %d); "+
		"no certificate is issued until an administrator resolves it", ErrCloneSuspect, e.serial, e.id, e.attempts)
}

func (e *heldError) Unwrap() error { return ErrCloneSuspect }

// QuarantineID returns the id of the held claim (registry.Quarantine) an
// ErrCloneSuspect from TPMChallenge or Enroll was recorded as, or "".
func QuarantineID(err error) string {
	var he *heldError
	if errors.As(err, &he) {
		return he.id
	}
	return ""
}

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
