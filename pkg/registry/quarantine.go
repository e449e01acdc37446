package registry

import (
	"errors"
	"time"
)

// ErrEKConflict: the TPM EK of a device being written is already bound to
// another device (devices are unique by non-empty EK hash, in every tenant).
// Nothing was written.
var ErrEKConflict = errors.New("registry: TPM EK already bound to another device")

// Refusals of a release of a held claim (Store.ApplyRelease, and
// pkg/provision before it); nothing was written.
var (
	// ErrClaimNotHeld: the claim was already dismissed or released.
	ErrClaimNotHeld = errors.New("registry: quarantine claim is not held")
	// ErrClaimStale: the enrolled device the claim collides with is gone,
	// unknown, or no longer as it was when the claim was held (another
	// EK, MACs, status, tenant or serial), so releasing the claim would
	// act on something the admin did not see.
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
	// ReleaseWrite).
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
	// another serial. No EK is involved: the claim's EKHash may be empty.
	// Releasing it revokes that device, so the claimant may take the MAC.
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
	// EKHash is the hex SHA-256 of the claimant's EK public key; empty for
	// a claim without a TPM (ReasonMACOtherSerial, ReasonSerialOtherIDevID).
	EKHash string
	// IDevIDIssuer and IDevIDSerial name the claimant's IDevID (as
	// Device's) for ReasonSerialOtherIDevID; empty otherwise.
	IDevIDIssuer string
	IDevIDSerial string
	Reason       QuarantineReason
	// ConflictDeviceID is the enrolled device the claim collides with
	// (empty if it could not be told, e.g. it was removed since).
	ConflictDeviceID string
	// ConflictEKHash is that device's EK hash when the claim was last
	// held (empty for a device without a TPM, or when not known).
	// A release refuses a claim whose device no longer has it.
	ConflictEKHash string
	// ConflictIDevIDIssuer and ConflictIDevIDSerial are that device's
	// IDevID when the claim was last held (empty for a device enrolled
	// without one). A release refuses a claim whose device no longer has
	// it.
	ConflictIDevIDIssuer string
	ConflictIDevIDSerial string
	SourceAddr           string // the last claim's client address
	FirstSeen            time.Time
	LastSeen             time.Time
	Attempts             int
	Status               QuarantineStatus
	// DismissedBy and DismissedAt are set when Status is dismissed.
	DismissedBy string
	DismissedAt *time.Time
	// ReleasedBy and ReleasedAt are set when Status is released.
	ReleasedBy string
	ReleasedAt *time.Time
}

// ReleaseWrite is the one write that releases a held claim
// (Store.ApplyRelease): an atomic, conditional write, all of it or none of
// it. The store decides nothing: the caller (pkg/provision) has read the
// claim and the enrolled device D it collides with, checked that D is as
// the claim saw it, and chosen what becomes of D; the store checks that
// what the caller read still holds when it writes, and writes it:
//
//   - the claim ClaimID must be held: an unknown id is ErrNotFound, a
//     dismissed or released claim ErrClaimNotHeld. It becomes released by
//     By, now.
//   - D (DeviceID) must still have ExpectEKHash, ExpectStatus and, when
//     ExpectMACs is not nil, exactly those MACs in that order; a D that
//     changed or is gone is ErrClaimStale.
//   - D must still have ExpectIDevIDIssuer and ExpectIDevIDSerial ("" expects
//     a device enrolled without an IDevID), else ErrClaimStale; with
//     SetIDevID it gets IDevIDIssuer and IDevIDSerial.
//   - D gets EKHash and Status; ClearRekey clears its re-key request and
//     deadline; ClearAK its AK (AKPub). Its other fields are kept.
//   - every certificate of D neither revoked nor expired is revoked now
//     with Reason, an RFC 5280 reason (see ValidReason; else an
//     InvalidReasonError).
//   - EKHash bound to another device is ErrEKConflict (devices are unique
//     by non-empty EK hash, in every tenant).
//   - Audit, when not nil, is appended.
//
// ClaimID, DeviceID, ExpectStatus and Status are required. On any error
// nothing is written.
type ReleaseWrite struct {
	ClaimID string
	By      string // who releases, as an audit actor ("admin:alice")

	DeviceID     string
	ExpectEKHash string       // "" expects a device without a TPM EK
	ExpectStatus DeviceStatus // required
	ExpectMACs   []string     // nil: not checked
	// ExpectIDevIDIssuer and ExpectIDevIDSerial: D's IDevID as read.
	ExpectIDevIDIssuer string
	ExpectIDevIDSerial string

	EKHash     string       // D's new EK hash; "" frees D's EK
	Status     DeviceStatus // D's new status; required
	ClearRekey bool
	ClearAK    bool
	// SetIDevID re-binds D to the IDevID IDevIDIssuer, IDevIDSerial.
	SetIDevID    bool
	IDevIDIssuer string
	IDevIDSerial string

	Reason int // RFC 5280 reason of the certificates revoked
	Audit  *AuditEvent

	// Set by a successful ApplyRelease: the claim as stored, D as it now
	// is, and the certificates this release revoked (oldest first).
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
