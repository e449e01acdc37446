package registry

import (
	"context"
	"time"
)

// IDevIDCAKind says what a manufacturer CA certificate is to IDevID
// verification.
type IDevIDCAKind string

// IDevID CA kinds.
const (
	// IDevIDRoot is a trust anchor: an IDevID chaining to it is admitted
	// into the tenant that holds it.
	IDevIDRoot IDevIDCAKind = "root"
	// IDevIDIntermediate is a known intermediate: it completes the chain of
	// an IDevID whose device sends only its leaf, and is trusted only when
	// it chains to an IDevIDRoot of the same tenant.
	IDevIDIntermediate IDevIDCAKind = "intermediate"
)

// IDevIDCA is a device manufacturer's CA certificate, root or
// intermediate, that factory IDevID certificates (IEEE 802.1AR) of one
// tenant's devices chain to. Unique per (TenantID, Fingerprint).
type IDevIDCA struct {
	ID          string // opaque, time-ordered; set by the caller
	TenantID    string
	Fingerprint string // hex SHA-256 of DER
	DER         []byte
	Subject     string // RFC 2253 string of the subject
	Kind        IDevIDCAKind
	AddedBy     string // the audit actor who added it ("admin:alice")
	CreatedAt   time.Time
}

// ReasonSerialOtherIDevID: the serial is enrolled with another IDevID (other
// issuer or certificate serial), or without one, and an IDevID claims it.
// The claim has no EK: its EKHash is empty, its IDevIDIssuer and
// IDevIDSerial name the claimant.
const ReasonSerialOtherIDevID QuarantineReason = "serial-has-other-idevid"

// IDevIDStore is the part of Store that keeps manufacturer IDevID CAs.
type IDevIDStore interface {
	// PutIDevIDCA adds c with audit in one transaction. ID, TenantID,
	// Fingerprint, DER and a known Kind are required; a zero CreatedAt is
	// set to now. A fingerprint the tenant already holds is
	// ErrAlreadyExists (nothing written); an unknown tenant is an error.
	PutIDevIDCA(ctx context.Context, c *IDevIDCA, audit *AuditEvent) error
	// ListIDevIDCAs returns the IDevID CAs of a tenant ("" means every
	// tenant's), oldest first, at most 1000.
	ListIDevIDCAs(ctx context.Context, tenantID string) ([]*IDevIDCA, error)
}
