package registry

import (
	"errors"
	"time"
)

// ErrEKConflict: the TPM EK of a device being written is already bound to
// another device (devices are unique by non-empty EK hash, in every tenant).
// Nothing was written.
var ErrEKConflict = errors.New("registry: TPM EK already bound to another device")

// Refusals of Store.ReleaseQuarantine; nothing was written.
var (
	// ErrClaimNotHeld: the claim was already dismissed or released.
	ErrClaimNotHeld = errors.New("registry: quarantine claim is not held")
	// ErrClaimStale: the enrolled device the claim collides with is gone,
	// unknown, or no longer as it was when the claim was held (another
	// EK, another tenant or serial), so releasing the claim would act on
	// something the admin did not see.
	ErrClaimStale = errors.New("registry: the enrolled device changed since the claim was held")
)

// QuarantineStatus is the state of a held claim.
type QuarantineStatus string

// Quarantine states.
const (
	// QuarantineHeld: refused and waiting for an admin.
	QuarantineHeld QuarantineStatus = "held"
	// QuarantineDismissed: an admin looked at it and closed it.
	QuarantineDismissed QuarantineStatus = "dismissed"
	// QuarantineReleased: an admin let the claimant in (see
	// QuarantineRelease).
	QuarantineReleased QuarantineStatus = "released"
)

// QuarantineReason says which enrolled identity a held claim collides with.
type QuarantineReason string

// Quarantine reasons.
const (
	// ReasonSerialOtherEK: the serial is enrolled with another TPM EK.
	ReasonSerialOtherEK QuarantineReason = "serial-has-other-ek"
	// ReasonEKOtherSerial: the TPM EK is enrolled with another serial.
	ReasonEKOtherSerial QuarantineReason = "ek-has-other-serial"
	// ReasonMACOtherSerial: a MAC claimed belongs to an active device with
	// another serial. Such a claim is dismissed, not released: an admin
	// revokes the enrolled device, or reassigns the MAC, first.
	ReasonMACOtherSerial QuarantineReason = "mac-has-other-serial"
)

// Quarantine is an enrollment claim refused as a possible clone and held
// for an admin. It is not a device: nothing was issued. Claims are unique
// while held by (TenantID, Serial, EKHash): a repeat of a held claim bumps
// Attempts and LastSeen instead of adding a record.
type Quarantine struct {
	ID       string // opaque, time-ordered; set by the caller
	TenantID string
	Serial   string   // the serial claimed
	MACs     []string // the MACs claimed, 12 lowercase hex digits each
	EKHash   string   // hex SHA-256 of the claimant's EK public key; empty for a claim without a TPM (ReasonMACOtherSerial)
	Reason   QuarantineReason
	// ConflictDeviceID is the enrolled device the claim collides with
	// (empty if it could not be told, e.g. it was removed since).
	ConflictDeviceID string
	// ConflictEKHash is that device's EK hash when the claim was last
	// held (empty for a device without a TPM, or when not known).
	// ReleaseQuarantine refuses a claim whose device no longer has it.
	ConflictEKHash string
	SourceAddr     string // the last claim's client address
	FirstSeen      time.Time
	LastSeen       time.Time
	Attempts       int
	Status         QuarantineStatus
	// DismissedBy and DismissedAt are set when Status is dismissed.
	DismissedBy string
	DismissedAt *time.Time
	// ReleasedBy and ReleasedAt are set when Status is released.
	ReleasedBy string
	ReleasedAt *time.Time
}

// QuarantineRelease is what Store.ReleaseQuarantine applies, in one
// transaction, to let the claimant of a held claim in: an admin's answer
// to a legitimate hardware change. The claim's ConflictDeviceID (D) must
// still be as it was when the claim was held (else ErrClaimStale):
//
//   - ReasonSerialOtherEK (a new TPM or mainboard in the same chassis): D,
//     in the claim's tenant with the claim's serial and EK ConflictEKHash,
//     is bound to the claim's EK instead, becomes active (it may have been
//     revoked meanwhile), has its re-key request cleared (the old TPM's
//     keys are gone) and every one of its unrevoked, unexpired
//     certificates revoked with Reason. D keeps its id: the next
//     attestation of (serial, EK) re-enrolls it as a reset of the same TPM
//     would. The claim's EK bound to any other device is ErrEKConflict.
//   - ReasonEKOtherSerial (the TPM moved to another chassis): D, in the
//     claim's tenant, bound to the claim's EK with another serial, is
//     revoked (status and certificates, with Reason) and its EK cleared,
//     so the next attestation of (serial, EK) enrolls a new device.
//
// The claim becomes released by By and Audit is appended. An unknown ID,
// or a claim of a tenant other than TenantID (when set), is ErrNotFound; a
// claim not held is ErrClaimNotHeld; an invalid Reason is an
// InvalidReasonError. On error nothing is written.
type QuarantineRelease struct {
	ID       string
	TenantID string // the caller's tenant; empty means any
	By       string // who releases, as an audit actor ("admin:alice")
	Reason   int    // RFC 5280 reason of the certificates revoked
	Audit    *AuditEvent

	// Set by a successful ReleaseQuarantine: the claim as stored, device D
	// as it now is, and the certificates this release revoked.
	Claim   *Quarantine
	Device  *Device
	Revoked []*Certificate
}

// QuarantineFilter selects claims for ListQuarantine. Zero fields
// match all. Results are ordered by ID (time-ordered: first seen first);
// pass the last ID of a page as After for the next one.
type QuarantineFilter struct {
	TenantID string
	Status   QuarantineStatus
	Serial   string // the serial claimed
	After    string
	Limit    int // 0 means 100; at most 1000
}
