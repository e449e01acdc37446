package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"devpki/pkg/registry"
)

// Releasing a held claim (Revocation.ReleaseQuarantine): what it does to
// the enrolled device the claim collides with is decided here, from the
// claim and the device as read; the store only applies that decision in
// one conditional write (registry.ReleaseWrite), refusing it if the claim
// or the device changed in between.

// releaseStore is what releasing a held claim needs of the registry.
type releaseStore interface {
	GetDevice(ctx context.Context, id string) (*registry.Device, error)
	ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error)
	ApplyRelease(ctx context.Context, w *registry.ReleaseWrite) error
}

// release lets the claimant of held claim q in, as who, revoking
// certificates with reason (a valid RFC 5280 reason), and returns the
// write as applied (its Claim, Device and Revoked set). q is the claim as
// read, already in who's tenant. By q.Reason, the enrolled device D the
// claim collides with (q.ConflictDeviceID):
//
//   - ReasonSerialOtherEK (a new TPM or mainboard in the same chassis): D,
//     in q's tenant with q's serial and EK q.ConflictEKHash, is re-bound to
//     q's EK and made active (it may have been revoked meanwhile); its
//     re-key request and AK are cleared (the old TPM's keys are gone). D
//     keeps its id: the next attestation of (serial, EK) re-enrolls it as a
//     reset of the same TPM would. q's EK bound to any other device is
//     registry.ErrEKConflict.
//   - ReasonEKOtherSerial (the TPM moved to another chassis): D, in q's
//     tenant, bound to q's EK with another serial, is revoked and its EK
//     and AK cleared, so the next attestation of (serial, EK) enrolls a new
//     device.
//   - ReasonSerialOtherIDevID (a replaced board with a new IDevID, or a
//     device enrolled without an IDevID now presenting one): D, in q's
//     tenant with q's serial and the IDevID q.ConflictIDevID*, is re-bound
//     to q's IDevID and made active; it keeps its id, and the claimant's
//     next IDevID enrollment re-enrolls it.
//   - ReasonMACOtherSerial (a new serial claims an enrolled device's MAC):
//     D, in q's tenant, active or revoked, with another serial and one of
//     q's MACs, is revoked, so the claimed serial enrolls with that MAC.
//
// Either way every unrevoked, unexpired certificate of D is revoked with
// reason and q is marked released, audited, in the same write. A claim
// not held is registry.ErrClaimNotHeld; a D that is gone, unknown or not
// as described is registry.ErrClaimStale. Nothing is written on error.
func release(ctx context.Context, st releaseStore, who Actor, q *registry.Quarantine, reason int) (*registry.ReleaseWrite, error) {
	if q.Status != registry.QuarantineHeld {
		return nil, fmt.Errorf("%w: claim %s is %s", registry.ErrClaimNotHeld, q.ID, q.Status)
	}
	if q.ConflictDeviceID == "" {
		return nil, fmt.Errorf("%w: claim %s names no enrolled device (it was not found, or is in another tenant)",
			registry.ErrClaimStale, q.ID)
	}
	d, err := st.GetDevice(ctx, q.ConflictDeviceID)
	if errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("%w: device %s of claim %s no longer exists", registry.ErrClaimStale, q.ConflictDeviceID, q.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("read device %s of claim %s: %w", q.ConflictDeviceID, q.ID, err)
	}
	w, detail, err := releaseDecision(q, d)
	if err != nil {
		return nil, err
	}
	if w.EKHash != "" && w.EKHash != d.EKHash {
		// Named here for the admin; the store's unique EK index is what
		// holds against a race.
		bound, err := st.ListDevices(ctx, registry.DeviceFilter{EKHash: w.EKHash, Limit: 1})
		if err != nil {
			return nil, fmt.Errorf("devices of the EK of claim %s: %w", q.ID, err)
		}
		if len(bound) > 0 && bound[0].ID != d.ID {
			return nil, fmt.Errorf("%w: EK %s of claim %s is now bound to device %s", registry.ErrEKConflict, w.EKHash, q.ID, bound[0].ID)
		}
	}
	w.ClaimID, w.By, w.Reason = q.ID, who.String(), reason
	w.Audit = event(who, q.TenantID, ActionQuarantineRelease, q.ID, registry.ResultOK,
		detail+" revocation="+registry.ReasonName(reason))
	if err := st.ApplyRelease(ctx, w); err != nil {
		return nil, err
	}
	return w, nil
}

// releaseDecision checks that device d is as claim q saw it and returns
// what releasing q does to it (ClaimID, By, Reason and Audit left to the
// caller) with the audit detail; else an ErrClaimStale.
func releaseDecision(q *registry.Quarantine, d *registry.Device) (*registry.ReleaseWrite, string, error) {
	if d.TenantID != q.TenantID {
		return nil, "", fmt.Errorf("%w: device %s is not in the claim's tenant", registry.ErrClaimStale, d.ID)
	}
	w := &registry.ReleaseWrite{DeviceID: d.ID, ExpectEKHash: d.EKHash, ExpectStatus: d.Status,
		ExpectIDevIDIssuer: d.IDevIDIssuer, ExpectIDevIDSerial: d.IDevIDSerial}
	detail := fmt.Sprintf("serial=%s ek=%s reason=%s device=%s", q.Serial, q.EKHash, q.Reason, d.ID)
	switch q.Reason {
	case registry.ReasonSerialOtherEK:
		switch {
		case !registry.SameSerial(d.Serial, q.Serial):
			return nil, "", fmt.Errorf("%w: device %s has serial %q, the claim %q", registry.ErrClaimStale, d.ID, d.Serial, q.Serial)
		case d.EKHash == q.EKHash:
			return nil, "", fmt.Errorf("%w: device %s is already bound to the claim's EK %s", registry.ErrClaimStale, d.ID, q.EKHash)
		case d.EKHash != q.ConflictEKHash:
			return nil, "", fmt.Errorf("%w: device %s is now bound to EK %q; when the claim was held it had EK %q",
				registry.ErrClaimStale, d.ID, d.EKHash, q.ConflictEKHash)
		}
		// Re-bind D to the claimant's TPM; the old TPM's keys are gone, so
		// no re-key is owed, and its AK goes with it (the next attestation
		// records the new one).
		w.EKHash, w.Status, w.ClearRekey, w.ClearAK = q.EKHash, registry.DeviceActive, true, true
		detail += " previous_ek=" + q.ConflictEKHash + " (device re-bound to the claim's EK)"
	case registry.ReasonEKOtherSerial:
		switch {
		case d.EKHash != q.EKHash:
			return nil, "", fmt.Errorf("%w: device %s is no longer bound to the claim's EK %s (now %q)",
				registry.ErrClaimStale, d.ID, q.EKHash, d.EKHash)
		case registry.SameSerial(d.Serial, q.Serial):
			return nil, "", fmt.Errorf("%w: device %s already has the claim's serial %q", registry.ErrClaimStale, d.ID, q.Serial)
		}
		w.EKHash, w.Status, w.ClearAK = "", registry.DeviceRevoked, true
		detail += " (device revoked, its EK freed)"
	case registry.ReasonSerialOtherIDevID:
		claimant := IDevIDName(q.IDevIDIssuer, q.IDevIDSerial)
		switch {
		case !registry.SameSerial(d.Serial, q.Serial):
			return nil, "", fmt.Errorf("%w: device %s has serial %q, the claim %q", registry.ErrClaimStale, d.ID, d.Serial, q.Serial)
		case d.IDevIDIssuer == q.IDevIDIssuer && d.IDevIDSerial == q.IDevIDSerial:
			return nil, "", fmt.Errorf("%w: device %s is already bound to the claim's IDevID %s", registry.ErrClaimStale, d.ID, claimant)
		case d.IDevIDIssuer != q.ConflictIDevIDIssuer || d.IDevIDSerial != q.ConflictIDevIDSerial:
			return nil, "", fmt.Errorf("%w: device %s is now bound to IDevID %q %q; when the claim was held it had %q %q",
				registry.ErrClaimStale, d.ID, d.IDevIDIssuer, d.IDevIDSerial, q.ConflictIDevIDIssuer, q.ConflictIDevIDSerial)
		}
		// Re-bind D to the claimant's IDevID (a replaced board, a device
		// enrolled by token before its IDevID was trusted); it keeps its
		// id, and the claimant's next attempt re-enrolls it.
		w.EKHash, w.Status, w.ClearRekey = d.EKHash, registry.DeviceActive, true
		w.SetIDevID, w.IDevIDIssuer, w.IDevIDSerial = true, q.IDevIDIssuer, q.IDevIDSerial
		detail += " idevid=" + claimant + " previous_idevid=" + IDevIDName(q.ConflictIDevIDIssuer, q.ConflictIDevIDSerial) +
			" (device re-bound to the claim's IDevID)"
	case registry.ReasonMACOtherSerial:
		shared := slices.IndexFunc(q.MACs, func(m string) bool { return slices.Contains(d.MACs, m) })
		switch {
		case d.Status != registry.DeviceActive && d.Status != registry.DeviceRevoked:
			return nil, "", fmt.Errorf("%w: device %s is %s", registry.ErrClaimStale, d.ID, d.Status)
		case shared < 0:
			return nil, "", fmt.Errorf("%w: device %s no longer has any of the claim's MACs %v (now %v)",
				registry.ErrClaimStale, d.ID, q.MACs, d.MACs)
		case registry.SameSerial(d.Serial, q.Serial):
			return nil, "", fmt.Errorf("%w: device %s already has the claim's serial %q", registry.ErrClaimStale, d.ID, q.Serial)
		}
		// D keeps its EK and AK: its TPM is not the claimant's.
		w.EKHash, w.Status, w.ExpectMACs = d.EKHash, registry.DeviceRevoked, d.MACs
		detail += " mac=" + q.MACs[shared] + " (device revoked, its MAC freed)"
	default:
		return nil, "", fmt.Errorf("release claim %s: unknown reason %q", q.ID, q.Reason)
	}
	return w, detail, nil
}
