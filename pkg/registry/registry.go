// Package registry holds devpki's domain records — tenants, devices, certificates,
// bootstrap tokens, admins and the hash-chained audit log — and the Store
// interface that every storage backend implements. It imports no other devpki
// package.
package registry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultTenant is the name of the tenant that every store creates on open.
const DefaultTenant = "default"

// Sentinel errors. Stores wrap them; callers test with errors.Is.
var (
	ErrNotFound            = errors.New("registry: not found")
	ErrAlreadyExists       = errors.New("registry: already exists")
	ErrTokenInvalid        = errors.New("registry: bootstrap token unknown")
	ErrTokenExpired        = errors.New("registry: bootstrap token expired")
	ErrTokenSpent          = errors.New("registry: bootstrap token has no uses left")
	ErrTokenSerialMismatch = errors.New("registry: bootstrap token is bound to another serial")
	ErrTokenTenantMismatch = errors.New("registry: bootstrap token belongs to another tenant")
	// ErrSerialConflict: the serial is already enrolled in the tenant and the
	// enrollment was not made with a token bound to that serial.
	ErrSerialConflict = errors.New("registry: serial already enrolled")
	// ErrConflict: the record changed between the caller's read and its write
	// (for example a device id that no longer matches its serial); retry.
	ErrConflict = errors.New("registry: concurrent change")
	// ErrAuditChain is returned by VerifyAudit when an event was edited,
	// removed or reordered.
	ErrAuditChain = errors.New("registry: audit chain broken")
	// ErrAlreadyRevoked is returned, wrapped, by RevokeCertificate and
	// RevokeDevice when there was nothing left to revoke. It is not a
	// failure: revocation is idempotent, and nothing was written.
	ErrAlreadyRevoked = errors.New("registry: already revoked")
	// ErrRekeyRequired: an admin asked the device for a new key; a renewal
	// with the current key is refused.
	ErrRekeyRequired = errors.New("registry: re-key required")
	// ErrNotRenewable: the certificate presented for renewal is revoked,
	// superseded by a later renewal, or not a device certificate.
	ErrNotRenewable = errors.New("registry: certificate cannot be renewed")
	// ErrDeviceNotActive: the device is revoked or quarantined.
	ErrDeviceNotActive = errors.New("registry: device is not active")
	// ErrUnavailable: the store cannot commit right now (read-only or full
	// disk, I/O error, lost database connection); nothing was written.
	// Retry later.
	ErrUnavailable = errors.New("registry: store unavailable")
	// ErrNotRevoked is returned, wrapped, by ReinstateDevice when the device
	// is not revoked; nothing was written.
	ErrNotRevoked = errors.New("registry: device is not revoked")
	// ErrMACConflict: a MAC of the device being written belongs to another
	// active device of the tenant. Nothing was written.
	ErrMACConflict = errors.New("registry: MAC already belongs to another active device")
)

// FoldSerial is the form in which serials are compared: two serials of one
// tenant are the same device when their folds are equal. Serials are ASCII
// (pki.ValidateSerial), so folding is ASCII lower-casing; any other byte is
// left as it is. Devices keep their serial as presented.
func FoldSerial(serial string) string {
	for i := 0; i < len(serial); i++ {
		if c := serial[i]; 'A' <= c && c <= 'Z' {
			b := []byte(serial)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return serial
}

// SameSerial reports whether a and b name the same device serial: their
// folds are equal (FoldSerial).
func SameSerial(a, b string) bool { return FoldSerial(a) == FoldSerial(b) }

// Tenant is an isolated fleet and its enrollment policy. The zero policy
// admits every method and key type the CA admits, with the CA's certificate
// lifetime, and lets devices enroll with software keys.
type Tenant struct {
	ID         string
	Name       string
	RequireTPM bool
	// Methods are the enrollment methods the tenant admits ("token",
	// "tpm", "idevid"); empty admits every method the CA has.
	Methods []string
	// KeyTypes are the device key types the tenant admits ("ecdsa-p256",
	// "ecdsa-p384", "rsa", "ed25519"), within the CA's key policy; empty
	// admits every type the CA admits.
	KeyTypes []string
	// CertLifetime is the lifetime of the tenant's device certificates, at
	// enrollment and renewal; zero means the CA's.
	CertLifetime time.Duration
	// RenewGrace is how long after expiry the tenant's devices may still
	// renew an expired certificate by proving its key (the renewal after
	// long offline); zero means the CA's, negative disables it.
	RenewGrace time.Duration
	CreatedAt  time.Time
}

// DeviceStatus is the lifecycle state of a device.
type DeviceStatus string

// Device states.
const (
	DeviceActive      DeviceStatus = "active"
	DeviceRevoked     DeviceStatus = "revoked"
	DeviceQuarantined DeviceStatus = "quarantined"
)

// Device is one enrolled piece of hardware, unique per (TenantID, Serial).
type Device struct {
	ID       string // opaque, stable; the certificate's CN
	TenantID string
	Serial   string   // hardware serial number
	MACs     []string // 12 lowercase hex digits each
	Status   DeviceStatus
	Method   string // enrollment method: "token", "tpm", ...
	EKHash   string // TPM EK public key hash, empty for software keys
	// IDevIDIssuer and IDevIDSerial name the factory IDevID certificate
	// (IEEE 802.1AR) the device enrolled with: its issuer's DN (RFC 2253
	// string) and its certificate serial number (lowercase hex). The
	// hardware serial that IDevID carried is Serial (they are equal,
	// folded). Empty for devices never admitted by an IDevID.
	IDevIDIssuer string
	IDevIDSerial string
	// AKPub is the PKIX DER of the public key of the AK the device
	// activated at its last TPM enrollment (an RSA key): a new key it
	// brings at renewal must be certified (TPM2_Certify) by this AK. Nil
	// for devices not enrolled by TPM attestation, and for TPM devices
	// enrolled before it was recorded.
	AKPub []byte
	// RekeyRequired is set by an admin's rotate: the next renewal must
	// bring a new key. A renewal with a new key clears it.
	RekeyRequired bool
	// RekeyDeadline, when set with RekeyRequired, is when the certificates
	// of a device that has not re-keyed are revoked.
	RekeyDeadline *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// CertStatus is the state of an issued certificate.
type CertStatus string

// Certificate states.
const (
	CertActive     CertStatus = "active"
	CertSuperseded CertStatus = "superseded" // replaced by renewal; still valid until it expires
	CertRevoked    CertStatus = "revoked"
)

// CertKind says what an issued certificate is for.
type CertKind string

// Certificate kinds.
const (
	KindDevice CertKind = "device"
	KindAdmin  CertKind = "admin"
	KindServer CertKind = "server"
	KindClient CertKind = "client"
	KindOCSP   CertKind = "ocsp" // the CA's delegated OCSP responder
)

// RFC 5280 CRLReason codes. Code 7 is unassigned.
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
	ReasonCertificateHold      = 6
	ReasonRemoveFromCRL        = 8
	ReasonPrivilegeWithdrawn   = 9
	ReasonAACompromise         = 10
)

// RevokedRow is one line of a CRL as EachRevoked reads it: a revoked
// certificate that has not expired yet, with what a CRL entry needs and
// nothing parsed or copied per row. The slices are valid only during the
// callback.
type RevokedRow struct {
	Serial      []byte // as Certificate.Serial
	RevokedAt   int64  // Unix seconds (a CRL lists whole seconds)
	Reason      int
	IssuerKeyID []byte // as Certificate.IssuerKeyID
}

// Certificate is every certificate the CA issued, recorded before it is
// returned to anyone.
type Certificate struct {
	Serial           string // lowercase hex of the X.509 serial number, no leading zeros stripped beyond big.Int.Text(16)
	Kind             CertKind
	DeviceID         string // empty unless Kind == KindDevice
	TenantID         string
	Subject          string // RFC 2253 string of the subject
	SANs             []string
	NotBefore        time.Time
	NotAfter         time.Time
	DER              []byte
	Status           CertStatus
	RevokedAt        *time.Time
	RevocationReason int
	ReplacesSerial   string // the certificate this one renews, if any
	// KeySHA256 is the SHA-256 of the certificate's SubjectPublicKeyInfo.
	KeySHA256 []byte
	// TokenHash is the bootstrap token this certificate was enrolled with
	// (set by Store.Enroll from Enrollment.TokenHash).
	TokenHash []byte
	// CRLPartition is the partition CRL the certificate's CRL distribution
	// point names (pki.CertCRLPartition), 1 and up; 0 means none: only the
	// full CRL covers it (certificates issued before partitioning, and
	// those without a CRL DP).
	CRLPartition int
	CreatedAt    time.Time
	// IssuerKeyID is the hex authority key identifier of the certificate:
	// the subject key id of the CA issuer that signed it (CAIssuer.KeyID).
	IssuerKeyID string
}

// CRLRevisions count the revocations committed so far, as Store revisions
// them: each write that revokes certificates bumps All and the revision
// of each partition it revoked in, in its own transaction. A CRL built
// after reading revision r lists every revocation up to r: a replica
// compares them with those its CRLs were built at.
type CRLRevisions struct {
	All        int64
	Partitions map[int]int64 // partitions never revoked in are absent (revision 0)
}

// Token is a bootstrap token. Only the SHA-256 hash of the secret is stored.
// An empty Serial means the token is not bound to a serial.
type Token struct {
	ID       string
	Hash     []byte // SHA-256 of the secret token string
	TenantID string
	Serial   string
	// ExpiresAt is when the token stops being spendable; the zero value
	// means it already has (see Spendable).
	ExpiresAt time.Time
	UsesLeft  int
	// Reinstate, set only together with Serial, lets the token re-enroll
	// the device with that serial even though an admin revoked it: an
	// explicit, audited reinstatement. A token without it never brings a
	// revoked device back.
	Reinstate bool
	CreatedBy string
	CreatedAt time.Time
}

// Spendable is the one token-expiry and use rule: a token may be spent at
// now while now is before its ExpiresAt and it has uses left. A zero
// ExpiresAt is expired (fail closed: every minted token has an expiry). It
// returns nil, ErrTokenExpired or ErrTokenSpent. Store.Enroll's conditional
// spend applies the same rule in its UPDATE (expires_at > now AND
// uses_left > 0) and names a refusal with this method.
func (t *Token) Spendable(now time.Time) error {
	switch {
	case t.ExpiresAt.IsZero():
		return fmt.Errorf("bootstrap token %s has no expiry: %w", t.ID, ErrTokenExpired)
	case !now.Before(t.ExpiresAt):
		return fmt.Errorf("bootstrap token %s expired at %s: %w", t.ID, t.ExpiresAt.UTC().Format(time.RFC3339), ErrTokenExpired)
	case t.UsesLeft <= 0:
		return fmt.Errorf("bootstrap token %s: %w", t.ID, ErrTokenSpent)
	}
	return nil
}

// Role is an admin's authority.
type Role string

// Admin roles.
const (
	RoleAdmin    Role = "admin"
	RoleOperator Role = "operator"
	RoleAuditor  Role = "auditor"
)

// AdminStatus is the state of an admin.
type AdminStatus string

// Admin states. The zero value is active.
const (
	AdminActive  AdminStatus = "active"
	AdminRevoked AdminStatus = "revoked"
)

// Admin is a person or tool allowed on the admin API. The CA maps a verified
// client certificate to an Admin by Name (from the certificate's URI SAN).
type Admin struct {
	Name     string
	TenantID string // the tenant its certificates name; a super-admin's home tenant (the default tenant)
	Role     Role
	// Super: the admin acts on every tenant (an admin made without a
	// tenant); otherwise only on TenantID.
	Super bool
	// Status is AdminActive (or empty) until the admin is revoked; a
	// revoked admin is refused whatever certificate it presents.
	Status    AdminStatus
	RevokedAt *time.Time
	CreatedAt time.Time
}

// Audit results.
const (
	ResultOK     = "ok"
	ResultDenied = "denied"
	ResultError  = "error"
)

// AuditEvent is one entry of the append-only, hash-chained audit log. Seq,
// PrevHash and Hash are assigned by the store.
type AuditEvent struct {
	Seq        int64
	Time       time.Time
	TenantID   string
	Actor      string // "token:<id>", "admin:<name>", "device:<id>", "system"
	Action     string // "enroll", "token.create", ...
	Target     string // device id, certificate serial, token id ...
	Result     string // ResultOK, ResultDenied, ResultError
	Detail     string
	SourceAddr string
	PrevHash   []byte
	Hash       []byte
	// TenantSeq, TenantPrevHash and TenantHash place the event in its
	// tenant's own chain (AuditChain, AuditTenantHash), so that one
	// tenant's events verify without the others'. The store assigns them.
	TenantSeq      int64
	TenantPrevHash []byte
	TenantHash     []byte
}

// Preregistration binds a TPM EK, by its hash, to the serial (and MACs) of
// the device that holds it, before that device enrolls. A TPM without an EK
// certificate can enroll by attestation only when its EK is pre-registered,
// and only with this serial.
type Preregistration struct {
	EKHash    string // hex SHA-256 of the EK public key (PKIX DER), 64 lowercase hex digits
	TenantID  string
	Serial    string
	MACs      []string // 12 lowercase hex digits each
	CreatedBy string
	CreatedAt time.Time
}

// TPMRoot is a TPM manufacturer CA certificate added by an admin: a root
// EK certificates may chain to (besides the roots in the CA's config), or
// an intermediate (Kind TPMIntermediate) that only helps build such chains.
type TPMRoot struct {
	Fingerprint string // hex SHA-256 of DER
	DER         []byte
	Subject     string
	// Kind is TPMRootCA or TPMIntermediate; empty means TPMRootCA.
	Kind      TPMCAKind
	AddedBy   string
	CreatedAt time.Time
}

// TPMCAKind says what a registry-held TPM manufacturer CA certificate is.
type TPMCAKind string

// Kinds of TPMRoot.
const (
	// TPMRootCA is a trust anchor: EK certificates must chain to one.
	TPMRootCA TPMCAKind = "root"
	// TPMIntermediate is a manufacturer issuing CA: it completes EK
	// chains and adds no trust by itself.
	TPMIntermediate TPMCAKind = "intermediate"
)

// Enrollment is everything one successful enrollment writes, applied in one
// transaction by Store.Enroll. The store decides nothing: provision decided
// whether this is a new device or the re-enrollment of Replace, and the
// store applies it with conditional writes, so that a concurrent change
// makes it fail instead of acting on what provision no longer sees.
type Enrollment struct {
	// TokenHash, when set, is the token spent by this enrollment, with a
	// conditional update that re-checks it belongs to Device.TenantID
	// (else ErrTokenTenantMismatch) and is spendable now (Token.Spendable:
	// ErrTokenExpired, ErrTokenSpent; unknown: ErrTokenInvalid). A token
	// spent by a concurrent enrollment meanwhile is ErrTokenSpent.
	TokenHash []byte
	// Device is inserted when Replace is nil: a device with the same
	// (TenantID, FoldSerial(Serial)) is ErrSerialConflict, its EKHash bound
	// to another device is ErrEKConflict, one of its MACs belonging to
	// another active device of the tenant is ErrMACConflict.
	//
	// When Replace is set, Device re-enrolls that device: Device.ID must be
	// Replace.ID, and the stored device must still have Replace's tenant,
	// folded serial, Status and EKHash (else ErrConflict: it changed since
	// provision read it). Its Serial (as presented), MACs, Method, EKHash,
	// AKPub are overwritten, its Status becomes active, and every active or
	// superseded certificate of it is revoked with reason superseded.
	// The stored device must also still have Replace's IDevIDIssuer and
	// IDevIDSerial, which are overwritten too.
	// ErrEKConflict and ErrMACConflict apply as for an insert.
	Device  *Device
	Replace *Device
	// Certificate is inserted; its DeviceID equals Device.ID.
	Certificate *Certificate
	// Audit is appended in the same transaction.
	Audit *AuditEvent
}

// Renewal is what one renewal writes, in one transaction by Store.Renew:
// the certificate OldSerial must be an active device certificate of an
// active device (else ErrNotRenewable or ErrDeviceNotActive); a same-key
// renewal of a device whose RekeyRequired is set is ErrRekeyRequired. Then
// Certificate (ReplacesSerial = OldSerial) is inserted, the old certificate
// becomes superseded (still valid until it expires), a new-key renewal
// clears RekeyRequired, and Audit is appended.
//
// Certificate.DeviceID and TenantID may be left empty: the store takes them
// from the old certificate. A caller that has read the old certificate sets
// them to its device and tenant; the renewal then also requires that they
// match (else ErrConflict, nothing written), and the store needs not read
// them back.
type Renewal struct {
	OldSerial   string
	SameKey     bool
	Certificate *Certificate
	Audit       *AuditEvent
}

// DeviceFilter selects devices for ListDevices. Zero fields match all.
// Results are ordered by ID (time-ordered UUIDs); pass the last ID of a page
// as After to get the next one (keyset pagination).
type DeviceFilter struct {
	TenantID string
	Status   DeviceStatus
	Serial   string // compared on its fold (FoldSerial)
	MAC      string // 12 lowercase hex digits
	// EKHash selects the devices bound to this TPM EK (any tenant unless
	// TenantID is set).
	EKHash string
	// RekeyDueBefore selects devices told to re-key whose deadline is
	// before this time.
	RekeyDueBefore time.Time
	After          string
	Limit          int // 0 means 100; at most 1000
}

// CertFilter selects certificates for ListCertificates, ordered by Serial,
// with After as the keyset cursor — or, when ExpiringBefore is set, by
// NotAfter then Serial (soonest first), with After the cursor Cursor makes.
// Zero fields match all.
type CertFilter struct {
	TenantID       string
	DeviceID       string
	Kind           CertKind
	Status         CertStatus
	ExpiringBefore time.Time // NotAfter before this
	After          string
	Limit          int // 0 means 100; at most 1000
}

// Store is the registry. All methods are safe for concurrent use. Every
// write method takes the audit event it appends in the same transaction.
type Store interface {
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	Close() error

	GetTenant(ctx context.Context, name string) (*Tenant, error)
	GetTenantByID(ctx context.Context, id string) (*Tenant, error)
	CreateTenant(ctx context.Context, t *Tenant, audit *AuditEvent) error
	// ListTenants returns every tenant, ordered by name.
	ListTenants(ctx context.Context) ([]*Tenant, error)
	// SetTenantRequireTPM sets the tenant's RequireTPM policy and appends
	// audit in one transaction. An unknown tenant id is ErrNotFound, and
	// nothing is written.
	SetTenantRequireTPM(ctx context.Context, tenantID string, require bool, audit *AuditEvent) error
	// UpdateTenantPolicy writes t's policy (RequireTPM, Methods, KeyTypes,
	// CertLifetime) to the tenant with t.ID and appends audit in one
	// transaction. An unknown tenant id is ErrNotFound, and nothing is
	// written.
	UpdateTenantPolicy(ctx context.Context, t *Tenant, audit *AuditEvent) error

	CreateToken(ctx context.Context, t *Token, audit *AuditEvent) error
	// GetToken returns the token with the given hash whatever its state.
	GetToken(ctx context.Context, hash []byte) (*Token, error)

	GetDevice(ctx context.Context, id string) (*Device, error)
	// ListDevices returns one page of devices matching f.
	ListDevices(ctx context.Context, f DeviceFilter) ([]*Device, error)
	// IdentityHolders returns, each once, the devices of the tenant that
	// hold an identity a new claim names: the device with serial (compared
	// folded, whatever its status) and the active devices that hold any of
	// macs (12 lowercase hex digits each, by the MAC index the enrollment
	// transaction maintains). Point lookups in one query, never a scan.
	IdentityHolders(ctx context.Context, tenantID, serial string, macs []string) ([]*Device, error)
	// ListCertificates returns one page of certificates matching f.
	ListCertificates(ctx context.Context, f CertFilter) ([]*Certificate, error)
	// GetDeviceBySerial returns the device of the tenant whose serial folds
	// (FoldSerial) as serial does, or ErrNotFound.
	GetDeviceBySerial(ctx context.Context, tenantID, serial string) (*Device, error)

	// RecordCertificate stores a certificate that is not a device enrollment
	// (admin, server, client).
	RecordCertificate(ctx context.Context, c *Certificate, audit *AuditEvent) error
	GetCertificate(ctx context.Context, serial string) (*Certificate, error)
	// GetCertificateAndDevice is GetCertificate and GetDevice of its device
	// in one read (a renewal's lookups): the device is nil for a
	// certificate that has none (an admin's); ErrNotFound when there is no
	// certificate.
	GetCertificateAndDevice(ctx context.Context, serial string) (*Certificate, *Device, error)
	ListDeviceCertificates(ctx context.Context, deviceID string) ([]*Certificate, error)

	// RevokeCertificate marks the certificate revoked at at (zero: now) with
	// an RFC 5280 reason (see ValidReason; else an error wrapping
	// ErrInvalidReason) and appends audit in the same transaction. It
	// returns the stored certificate. An unknown serial is ErrNotFound. A
	// certificate already revoked is returned unchanged together with an
	// error wrapping ErrAlreadyRevoked, and nothing — no audit event
	// either — is written.
	RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time, audit *AuditEvent) (*Certificate, error)
	// RevokeDevice sets the device's status to revoked and revokes every
	// one of its certificates that is not revoked and not expired, with
	// audit, in one transaction; it returns the certificates it revoked.
	// An unknown device is ErrNotFound; a device already revoked with
	// nothing left to revoke gives an error wrapping ErrAlreadyRevoked and
	// writes nothing.
	RevokeDevice(ctx context.Context, deviceID string, reason int, audit *AuditEvent) ([]*Certificate, error)
	// ReinstateDevice sets a revoked device's status back to active, with
	// audit, in one transaction, and returns the device as stored. Nothing
	// else changes: its certificates stay revoked, so it needs a new
	// enrollment to get one. An unknown device is ErrNotFound; a device that
	// is not revoked gives an error wrapping ErrNotRevoked and writes
	// nothing.
	ReinstateDevice(ctx context.Context, deviceID string, audit *AuditEvent) (*Device, error)
	// NextCRLNumber returns the next CRL number from a counter kept in the
	// database: strictly increasing across calls, processes and replicas
	// sharing the database; the first call returns 1.
	NextCRLNumber(ctx context.Context) (int64, error)
	// NextPartitionCRLNumber is NextCRLNumber for one partition CRL: its
	// own counter in the database (its scope is its own, RFC 5280 §5.2.3).
	NextPartitionCRLNumber(ctx context.Context, partition int) (int64, error)
	// CRLRevisions reads the revocation revisions (one cheap query).
	CRLRevisions(ctx context.Context) (*CRLRevisions, error)
	// EachRevoked calls fn, in serial order, for each revoked certificate
	// whose NotAfter is after now (what a CRL built at now must list): all
	// of them for partition 0, those with that CRLPartition for partition
	// n. It streams them as it reads them: a CRL build feeds a million
	// entries into its encoder without holding them. An error from fn stops
	// the read and is returned; a negative partition is an error.
	EachRevoked(ctx context.Context, partition int, now time.Time, fn func(*RevokedRow) error) error

	// Renew records a renewal atomically (see Renewal).
	Renew(ctx context.Context, r *Renewal) error
	// GetReplacement returns the certificate that renewed serial, or
	// ErrNotFound.
	GetReplacement(ctx context.Context, serial string) (*Certificate, error)
	// RequireRekey sets or clears the device's RekeyRequired flag and
	// deadline, with audit. An unknown device is ErrNotFound.
	RequireRekey(ctx context.Context, deviceID string, required bool, deadline *time.Time, audit *AuditEvent) error

	// PutAdmin records a, replacing the tenant and role of an admin of
	// that name ('ca init').
	PutAdmin(ctx context.Context, a *Admin, audit *AuditEvent) error
	// CreateAdmin inserts a with audit; a name already taken is
	// ErrAlreadyExists and nothing is written.
	CreateAdmin(ctx context.Context, a *Admin, audit *AuditEvent) error
	GetAdmin(ctx context.Context, name string) (*Admin, error)
	// ListAdmins returns every admin, ordered by name.
	ListAdmins(ctx context.Context) ([]*Admin, error)
	// RevokeAdmin marks the admin revoked at at, with audit, in one
	// transaction. An unknown name is ErrNotFound; an admin already
	// revoked is ErrAlreadyRevoked, and nothing is written.
	RevokeAdmin(ctx context.Context, name string, at time.Time, audit *AuditEvent) error

	// Enroll applies e atomically: all of it or none of it. Concurrent calls
	// may be grouped into one database transaction, but Enroll returns only
	// after the transaction holding e has committed durably, and an error in
	// one enrollment never affects another.
	Enroll(ctx context.Context, e *Enrollment) error

	// PutPreregistration records p with audit in one transaction; an EK
	// hash already pre-registered is ErrAlreadyExists.
	PutPreregistration(ctx context.Context, p *Preregistration, audit *AuditEvent) error
	// GetPreregistration returns the pre-registration of an EK hash, or
	// ErrNotFound.
	GetPreregistration(ctx context.Context, ekHash string) (*Preregistration, error)
	// PutTPMRoot adds a manufacturer root with audit; a fingerprint
	// already there is ErrAlreadyExists.
	PutTPMRoot(ctx context.Context, r *TPMRoot, audit *AuditEvent) error
	// ListTPMRoots returns every manufacturer root added, oldest first.
	ListTPMRoots(ctx context.Context) ([]*TPMRoot, error)
	// IDevID manufacturer CAs, per tenant.
	IDevIDStore

	// HoldClaim records a claim refused as a possible clone (see Quarantine)
	// and appends audit, in one transaction. A claim equal in (TenantID,
	// Serial, EKHash) to a held one updates it instead (Attempts+1,
	// LastSeen, MACs, Reason, ConflictDeviceID, SourceAddr); q.ID is then
	// ignored. Zero LastSeen means now. ID, TenantID, Serial and a known
	// Reason are required, and EKHash but for ReasonMACOtherSerial. On
	// return q holds the stored record; an empty audit.Target is set to its
	// ID.
	HoldClaim(ctx context.Context, q *Quarantine, audit *AuditEvent) error
	// GetQuarantine returns a claim whatever its status, or ErrNotFound.
	GetQuarantine(ctx context.Context, id string) (*Quarantine, error)
	// ListQuarantine returns one page of claims matching f.
	ListQuarantine(ctx context.Context, f QuarantineFilter) ([]*Quarantine, error)
	// DismissQuarantine marks a held claim dismissed by by, with audit, and
	// returns it. An unknown id is ErrNotFound; a claim already dismissed or
	// released is ErrConflict, with nothing written.
	DismissQuarantine(ctx context.Context, id, by string, audit *AuditEvent) (*Quarantine, error)
	// ApplyRelease writes the release of a held claim that the caller
	// decided, if what it read still holds: all of w or none of it (see
	// ReleaseWrite).
	ApplyRelease(ctx context.Context, w *ReleaseWrite) error

	// AppendAudit appends a single event (refused requests and the like).
	AppendAudit(ctx context.Context, ev *AuditEvent) error
	// ListAudit returns up to limit events with Seq > afterSeq, in order.
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]*AuditEvent, error)
	// VerifyAudit walks the whole chain and returns an error wrapping
	// ErrAuditChain that names the first bad Seq.
	VerifyAudit(ctx context.Context) error
	// AuditStore: refusals, exports, checkpoints and pruning (audit.go).
	AuditStore

	// PutTPMChallenge records a pending TPM challenge (not audited: the
	// enrollment that completes it, or its refusal, is). An ID already
	// stored is ErrAlreadyExists. In the same transaction it deletes up to
	// MaxChallengeSweep challenges, used or not, that expired before the
	// store's clock, so the table does not grow without bound.
	PutTPMChallenge(ctx context.Context, c *TPMChallenge) error
	// ConsumeTPMChallenge marks the challenge used and returns it. Of any
	// number of concurrent calls for one ID, from any number of processes
	// sharing the database, exactly one succeeds. An unknown ID is
	// ErrChallengeNotFound; one already consumed is ErrChallengeUsed; one
	// whose Expires is not after now is ErrChallengeExpired, and is
	// consumed (a later call gets ErrChallengeUsed, until it is swept).
	ConsumeTPMChallenge(ctx context.Context, id string, now time.Time) (*TPMChallenge, error)
}
