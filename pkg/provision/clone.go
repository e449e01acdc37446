package provision

import (
	"context"
	"errors"
	"fmt"

	"devpki/pkg/registry"
)

// ErrCloneSuspect: the claim collides with another enrolled identity — the
// serial is enrolled with another TPM EK or another IDevID (or without
// one), the EK with another serial, or a MAC belongs to an active device
// with another serial. It is held for an
// admin (registry.Quarantine) and audited; no certificate is issued.
var ErrCloneSuspect = errors.New("provision: clone suspect")

// cloneClaim is an ErrCloneSuspect refusal with what was claimed and what
// it collides with, so that the refusal can be held for an admin
// (registry.Quarantine). Its message is the full cause, for the audit log;
// the device gets heldError's shorter one.
type cloneClaim struct {
	reason registry.QuarantineReason
	serial string
	macs   []string
	ekHash string
	// idevidIssuer and idevidSerial name the claimant's IDevID, if any.
	idevidIssuer, idevidSerial string
	// device is the enrolled device the claim collides with, deviceTenant
	// its tenant and deviceEK its EK hash; empty when not known yet (a
	// race the store caught), then looked up when the claim is held.
	device, deviceTenant, deviceEK string
	// deviceIDevIDIssuer and deviceIDevIDSerial are that device's IDevID.
	deviceIDevIDIssuer, deviceIDevIDSerial string
	msg                                    string
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
	conflictIDevIssuer, conflictIDevSerial := cc.deviceIDevIDIssuer, cc.deviceIDevIDSerial
	if cc.deviceTenant != "" && cc.deviceTenant != tenantID {
		// Do not show another tenant's device to this tenant's admins.
		conflict, conflictEK, conflictIDevIssuer, conflictIDevSerial = "", "", "", ""
		detail += " (that device is in tenant " + cc.deviceTenant + ")"
	}
	q := &registry.Quarantine{
		ID: NewUUID(), TenantID: tenantID, Serial: cc.serial, MACs: cc.macs, EKHash: cc.ekHash, Reason: cc.reason,
		ConflictDeviceID: conflict, ConflictEKHash: conflictEK, SourceAddr: who.Source, LastSeen: s.cfg.Now(),
		IDevIDIssuer: cc.idevidIssuer, IDevIDSerial: cc.idevidSerial,
		ConflictIDevIDIssuer: conflictIDevIssuer, ConflictIDevIDSerial: conflictIDevSerial,
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
	case registry.ReasonSerialOtherEK, registry.ReasonSerialOtherIDevID:
		if d, err := s.cfg.Store.GetDeviceBySerial(ctx, tenantID, cc.serial); err == nil {
			cc.device, cc.deviceTenant, cc.deviceEK = d.ID, d.TenantID, d.EKHash
			cc.deviceIDevIDIssuer, cc.deviceIDevIDSerial = d.IDevIDIssuer, d.IDevIDSerial
		}
	case registry.ReasonEKOtherSerial:
		if ds, err := s.cfg.Store.ListDevices(ctx, registry.DeviceFilter{EKHash: cc.ekHash, Limit: 1}); err == nil && len(ds) == 1 {
			cc.device, cc.deviceTenant, cc.deviceEK = ds[0].ID, ds[0].TenantID, ds[0].EKHash
		}
	case registry.ReasonMACOtherSerial:
		ds, err := s.cfg.Store.IdentityHolders(ctx, tenantID, cc.serial, cc.macs)
		if err != nil {
			return
		}
		for _, d := range ds {
			if d.Status == registry.DeviceActive && !registry.SameSerial(d.Serial, cc.serial) && sharesMAC(d.MACs, cc.macs) {
				cc.device, cc.deviceTenant, cc.deviceEK = d.ID, d.TenantID, d.EKHash
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
