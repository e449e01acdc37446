package registry

import (
	"errors"
	"time"
)

// ErrEKConflict: the TPM EK of a device being written is already bound to
// another device (devices are unique by non-empty EK hash, in every tenant).
// Nothing was written.
var ErrEKConflict = errors.New("registry: TPM EK already bound to another device")

// QuarantineStatus is the state of a held claim.
type QuarantineStatus string

// Quarantine states.
const (
	// QuarantineHeld: refused and waiting for an admin.
	QuarantineHeld QuarantineStatus = "held"
	// QuarantineDismissed: an admin looked at it and closed it.
	QuarantineDismissed QuarantineStatus = "dismissed"
)

// QuarantineReason says which enrolled identity a held claim collides with.
type QuarantineReason string

// Quarantine reasons.
const (
	// ReasonSerialOtherEK: the serial is enrolled with another TPM EK.
	ReasonSerialOtherEK QuarantineReason = "serial-has-other-ek"
	// ReasonEKOtherSerial: the TPM EK is enrolled with another serial.
	ReasonEKOtherSerial QuarantineReason = "ek-has-other-serial"
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
	EKHash   string   // hex SHA-256 of the claimant's EK public key
	Reason   QuarantineReason
	// ConflictDeviceID is the enrolled device the claim collides with
	// (empty if it could not be told, e.g. it was removed since).
	ConflictDeviceID string
	SourceAddr       string // the last claim's client address
	FirstSeen        time.Time
	LastSeen         time.Time
	Attempts         int
	Status           QuarantineStatus
	// DismissedBy and DismissedAt are set when Status is dismissed.
	DismissedBy string
	DismissedAt *time.Time
}

// QuarantineFilter selects held claims for ListQuarantine. Zero fields
// match all. Results are ordered by ID (time-ordered: first seen first);
// pass the last ID of a page as After for the next one.
type QuarantineFilter struct {
	TenantID string
	Status   QuarantineStatus
	Serial   string // the serial claimed
	After    string
	Limit    int // 0 means 100; at most 1000
}
