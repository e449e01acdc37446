package sqlstore

import (
	"encoding/json"
	"time"

	"devpki/pkg/registry"
)

// Row structs are the gorm view of the tables. They are kept apart from the
// domain types in package registry: no gorm tags leak out, no soft delete.

type tenantRow struct {
	ID         string `gorm:"primaryKey;size:128"`
	Name       string `gorm:"size:128;not null;uniqueIndex"`
	RequireTPM bool   `gorm:"not null"`
	// Methods and KeyTypes are JSON arrays of strings; CertLifetimeSeconds
	// is registry.Tenant.CertLifetime (0: the CA's).
	Methods             string `gorm:"not null;default:''"`
	KeyTypes            string `gorm:"not null;default:''"`
	CertLifetimeSeconds int64  `gorm:"not null;default:0"`
	// RenewGraceSeconds is registry.Tenant.RenewGrace (0: the CA's,
	// negative: disabled).
	RenewGraceSeconds int64 `gorm:"not null;default:0"`
	CreatedAt         time.Time
}

func (tenantRow) TableName() string { return "tenants" }

// The list indexes (ListDevices, list.go) pair each filter with the keyset
// order (id): tenant, tenant+status. A serial is found through the
// tenant's unique folded serial, an EK through the partial unique
// ux_devices_ek_hash (both made by migrations; migration 00012 dropped the
// tenant-less serial index and the full EK index).
type deviceRow struct {
	ID       string     `gorm:"primaryKey;size:128;index:idx_devices_tenant_id,priority:2;index:idx_devices_tenant_status_id,priority:3"`
	TenantID string     `gorm:"size:128;not null;index:idx_devices_tenant_id,priority:1;index:idx_devices_tenant_status_id,priority:1"`
	Tenant   *tenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial   string     `gorm:"size:256;not null"`
	// SerialFolded is registry.FoldSerial(Serial), unique per tenant
	// (ux_devices_tenant_serial_folded, made by migrateIdentity; it also
	// serves every lookup by tenant).
	SerialFolded string `gorm:"size:256;not null;default:''"`
	MACs         string `gorm:"column:macs;not null"` // JSON array of strings
	Status       string `gorm:"size:32;not null;index:idx_devices_tenant_status_id,priority:2"`
	Method       string `gorm:"size:64;not null"`
	EKHash       string `gorm:"column:ek_hash;size:128;not null"`
	// AKPub is registry.Device.AKPub (PKIX DER); NULL when not recorded.
	AKPub []byte `gorm:"column:ak_pub"`
	// IDevIDIssuer and IDevIDSerial: registry.Device's.
	IDevIDIssuer string `gorm:"column:idevid_issuer;not null;default:''"`
	IDevIDSerial string `gorm:"column:idevid_serial;size:128;not null;default:''"`
	// RekeyRequired and RekeyDeadline: an admin's rotate (registry.Device).
	// The partial idx_devices_rekey_due (migration 00009) serves the
	// deadline sweep (DeviceFilter.RekeyDueBefore).
	RekeyRequired bool `gorm:"not null;default:false"`
	RekeyDeadline *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func (deviceRow) TableName() string { return "devices" }

// The list indexes (ListCertificates, list.go) pair each filter with the
// keyset order, soonest-expiring first: (not_after, serial) after tenant,
// or after tenant+status (migration 00013; before it, serial order, which
// every write touched at a random leaf). They replace the single-column
// not_after and status indexes (migration 00006_list_indexes drops those).
type certificateRow struct {
	Serial           string     `gorm:"primaryKey;size:64;index:idx_certificates_tenant_status_not_after,priority:4;index:idx_certificates_tenant_not_after_serial,priority:3"`
	Kind             string     `gorm:"size:32;not null"`
	DeviceID         *string    `gorm:"size:128;index"`
	Device           *deviceRow `gorm:"foreignKey:DeviceID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	TenantID         string     `gorm:"size:128;not null;index:idx_certificates_tenant_status_not_after,priority:1;index:idx_certificates_tenant_not_after_serial,priority:1"`
	Subject          string     `gorm:"not null"`
	SANs             string     `gorm:"column:sans;not null"` // JSON array of strings
	NotBefore        time.Time  `gorm:"not null"`
	NotAfter         time.Time  `gorm:"not null;index:idx_certificates_tenant_status_not_after,priority:3;index:idx_certificates_tenant_not_after_serial,priority:2"`
	DER              []byte     `gorm:"column:der"`
	Status           string     `gorm:"size:32;not null;index:idx_certificates_tenant_status_not_after,priority:2"`
	RevokedAt        *time.Time
	RevocationReason int    `gorm:"not null"`
	ReplacesSerial   string `gorm:"size:64;not null"`
	KeySHA256        []byte `gorm:"column:key_sha256"` // not indexed (migration 00011)
	TokenHash        []byte `gorm:"column:token_hash"`
	// CRLPartition is registry.Certificate.CRLPartition (0: the full CRL
	// only); idx_certificates_revoked_partition (migration 00005) serves
	// partition CRLs.
	CRLPartition int `gorm:"column:crl_partition;not null;default:0"`
	CreatedAt    time.Time
	// IssuerKID is registry.Certificate.IssuerKeyID ('' in rows from before
	// rollovers, until RegisterInitialIssuer); idx_certificates_issuer
	// (migration 00002_rollover) covers the rollover status count.
	IssuerKID string `gorm:"column:issuer_kid;size:64;not null;default:''"`
}

func (certificateRow) TableName() string { return "certificates" }

type tokenRow struct {
	ID        string     `gorm:"primaryKey;size:128"`
	Hash      []byte     `gorm:"not null;uniqueIndex"`
	TenantID  string     `gorm:"size:128;not null;index"`
	Tenant    *tenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial    string     `gorm:"size:256;not null"`
	ExpiresAt time.Time  `gorm:"not null"`
	UsesLeft  int        `gorm:"not null"`
	Reinstate bool       `gorm:"not null;default:false"`
	CreatedBy string     `gorm:"size:256;not null"`
	CreatedAt time.Time
}

func (tokenRow) TableName() string { return "tokens" }

// deviceMACRow says a MAC belongs to an active device of a tenant: unique
// per (tenant, MAC), so two active devices cannot hold one MAC whatever
// the concurrency. Enrollments maintain it in their transaction; rows of
// devices no longer active are dropped when another device claims the MAC.
type deviceMACRow struct {
	TenantID string `gorm:"primaryKey;size:128"`
	MAC      string `gorm:"column:mac;primaryKey;size:32"`
	DeviceID string `gorm:"size:128;not null;index"`
}

func (deviceMACRow) TableName() string { return "device_macs" }

// deviceMACHistoryRow says device DeviceID named MAC in an enrollment: every
// MAC a device ever held, whatever its status (device_macs keeps only the
// active owner). It is the index of ListDevices' MAC filter, which checks
// the device's current macs on the few rows it finds. Written by claimMACs;
// never deleted (devices are not).
type deviceMACHistoryRow struct {
	MAC      string `gorm:"column:mac;primaryKey;size:32"`
	DeviceID string `gorm:"primaryKey;size:128"`
}

func (deviceMACHistoryRow) TableName() string { return "device_mac_history" }

type preregistrationRow struct {
	EKHash    string     `gorm:"column:ek_hash;primaryKey;size:128"`
	TenantID  string     `gorm:"size:128;not null"`
	Tenant    *tenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial    string     `gorm:"size:256;not null"`
	MACs      string     `gorm:"column:macs;not null"` // JSON array of strings
	CreatedBy string     `gorm:"size:256;not null"`
	CreatedAt time.Time
}

func (preregistrationRow) TableName() string { return "tpm_preregistrations" }

type adminRow struct {
	Name      string `gorm:"primaryKey;size:256"`
	TenantID  string `gorm:"size:128;not null"`
	Role      string `gorm:"size:32;not null"`
	Super     bool   `gorm:"not null;default:false"`
	Status    string `gorm:"size:32;not null;default:'active'"`
	RevokedAt *time.Time
	CreatedAt time.Time
}

func (adminRow) TableName() string { return "admins" }

type auditRow struct {
	Seq        int64     `gorm:"primaryKey;autoIncrement:false"`
	Time       time.Time `gorm:"not null"`
	TenantID   string    `gorm:"size:128;not null;index"`
	Actor      string    `gorm:"not null"`
	Action     string    `gorm:"size:128;not null"`
	Target     string    `gorm:"not null"`
	Result     string    `gorm:"size:32;not null"`
	Detail     string    `gorm:"not null"`
	SourceAddr string    `gorm:"not null"`
	PrevHash   []byte    `gorm:"not null"`
	Hash       []byte    `gorm:"not null"`
	// The tenant chain (registry.AuditTenantHash). Rows written before it
	// existed are backfilled when the store opens (migrateAuditTenants).
	TenantSeq      int64 `gorm:"not null;default:0"`
	TenantPrevHash []byte
	TenantHash     []byte
}

func (auditRow) TableName() string { return "audit_events" }

// auditTenantHeadRow is the head of one tenant chain (registry.AuditChain).
// It is written in the transaction that appends the event, after the global
// head is locked, so tenant chains are serialised as the global one is.
type auditTenantHeadRow struct {
	TenantID string `gorm:"primaryKey;size:128"`
	Seq      int64  `gorm:"not null"`
	Hash     []byte `gorm:"not null"`
}

func (auditTenantHeadRow) TableName() string { return "audit_tenant_heads" }

// refusalRow aggregates anonymous refusals (registry.Refusal): one row per
// window, source, door, reason class and tenant, capped in number.
type refusalRow struct {
	ID          int64     `gorm:"primaryKey;autoIncrement"`
	WindowStart time.Time `gorm:"not null;uniqueIndex:idx_refusal_key,priority:1"`
	SourceAddr  string    `gorm:"size:128;not null;uniqueIndex:idx_refusal_key,priority:2"`
	Action      string    `gorm:"size:128;not null;uniqueIndex:idx_refusal_key,priority:3"`
	Reason      string    `gorm:"size:64;not null;uniqueIndex:idx_refusal_key,priority:4"`
	TenantID    string    `gorm:"size:128;not null;uniqueIndex:idx_refusal_key,priority:5"`
	Hits        int64     `gorm:"not null"`
	FirstAt     time.Time `gorm:"not null"`
	LastAt      time.Time `gorm:"not null"`
	Sample      string    `gorm:"not null"`
}

func (refusalRow) TableName() string { return "audit_refusals" }

func (r *refusalRow) domain() *registry.Refusal {
	return &registry.Refusal{ID: r.ID, Window: r.WindowStart.UTC(), SourceAddr: r.SourceAddr, Action: r.Action,
		Reason: r.Reason, TenantID: r.TenantID, Count: r.Hits, First: r.FirstAt.UTC(), Last: r.LastAt.UTC(), Sample: r.Sample}
}

// checkpointRow is a signed prune checkpoint (registry.AuditCheckpoint).
type checkpointRow struct {
	ID        int64     `gorm:"primaryKey;autoIncrement"`
	Seq       int64     `gorm:"not null"`
	Hash      []byte    `gorm:"not null"`
	Before    time.Time `gorm:"column:pruned_before;not null"`
	Time      time.Time `gorm:"column:made_at;not null"`
	Tenants   string    `gorm:"not null"` // JSON array of registry.AuditTenantHead
	Signer    []byte    `gorm:"not null"`
	Algorithm string    `gorm:"size:64;not null"`
	Signature []byte    `gorm:"not null"`
}

func (checkpointRow) TableName() string { return "audit_checkpoints" }

// auditHeadRow is the single row (ID 1) holding the last Seq and Hash of the
// chain. Writers lock it (SELECT ... FOR UPDATE on PostgreSQL; the write
// transaction itself on SQLite) so that replicas chain one after another.
type auditHeadRow struct {
	ID   int    `gorm:"primaryKey;autoIncrement:false"`
	Seq  int64  `gorm:"not null"`
	Hash []byte `gorm:"not null"`
}

func (auditHeadRow) TableName() string { return "audit_head" }

// crlCounterRow is the single row (ID 1) holding the last CRL number
// issued; NextCRLNumber increments it in a write transaction.
type crlCounterRow struct {
	ID     int   `gorm:"primaryKey;autoIncrement:false"`
	Number int64 `gorm:"not null"`
	// Revision is bumped in the transaction of every write that revokes a
	// certificate (registry.CRLRevisions.All).
	Revision int64 `gorm:"not null;default:0"`
}

func (crlCounterRow) TableName() string { return "crl_counter" }

// tpmChallengeRow is a pending TPM challenge (registry.TPMChallenge). Used
// rows stay until they expire, so a replay is told apart from an unknown
// ID; PutTPMChallenge sweeps expired rows.
type tpmChallengeRow struct {
	ID         string    `gorm:"primaryKey;size:128"`
	SecretHash []byte    `gorm:"not null"`
	Nonce      []byte    `gorm:"not null"`
	AKPublic   []byte    `gorm:"column:ak_public;not null"`
	EKHash     string    `gorm:"column:ek_hash;size:128;not null"`
	Binding    []byte    `gorm:"not null"`
	Expires    time.Time `gorm:"not null;index"`
	Used       bool      `gorm:"not null;default:false"`
	CreatedAt  time.Time
}

func (tpmChallengeRow) TableName() string { return "tpm_challenges" }

func fromTPMChallenge(c *registry.TPMChallenge) *tpmChallengeRow {
	r := &tpmChallengeRow{
		ID: c.ID, SecretHash: c.SecretHash, Nonce: c.Nonce, AKPublic: c.AKPublic, EKHash: c.EKHash,
		Binding: c.Binding, Expires: ts(c.Expires), CreatedAt: ts(c.CreatedAt),
	}
	// NOT NULL columns: an absent value is stored empty.
	for _, b := range []*[]byte{&r.SecretHash, &r.Nonce, &r.AKPublic, &r.Binding} {
		if *b == nil {
			*b = []byte{}
		}
	}
	return r
}

func (r *tpmChallengeRow) domain() *registry.TPMChallenge {
	return &registry.TPMChallenge{
		ID: r.ID, SecretHash: r.SecretHash, Nonce: r.Nonce, AKPublic: r.AKPublic, EKHash: r.EKHash,
		Binding: r.Binding, Expires: r.Expires.UTC(), CreatedAt: r.CreatedAt.UTC(),
	}
}

func allModels() []any {
	return []any{&tenantRow{}, &deviceRow{}, &certificateRow{}, &tokenRow{}, &adminRow{}, &auditRow{}, &auditHeadRow{},
		&auditTenantHeadRow{}, &refusalRow{}, &checkpointRow{},
		&crlCounterRow{}, &preregistrationRow{}, &tpmRootRow{}, &tpmChallengeRow{}, &deviceMACRow{},
		&idevidCARow{}, &caIssuerRow{}, &bundleFetchRow{}, &renewChallengeRow{}, &crlPartitionRow{}, &deviceMACHistoryRow{}}
}

// ts normalises a time for storage: UTC, microsecond precision (PostgreSQL's
// resolution), so that what is read back equals what was written and hashed.
func ts(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

func encodeList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(l) // []string always marshals
	return string(b)
}

func decodeList(s string) []string {
	var l []string
	if s == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(s), &l); err != nil || len(l) == 0 {
		return nil
	}
	return l
}

func fromTenant(t *registry.Tenant) *tenantRow {
	return &tenantRow{ID: t.ID, Name: t.Name, RequireTPM: t.RequireTPM, Methods: encodeList(t.Methods),
		KeyTypes: encodeList(t.KeyTypes), CertLifetimeSeconds: int64(t.CertLifetime / time.Second),
		RenewGraceSeconds: renewGraceSeconds(t.RenewGrace), CreatedAt: ts(t.CreatedAt)}
}

func (r *tenantRow) domain() *registry.Tenant {
	return &registry.Tenant{ID: r.ID, Name: r.Name, RequireTPM: r.RequireTPM, Methods: decodeList(r.Methods),
		KeyTypes: decodeList(r.KeyTypes), CertLifetime: time.Duration(r.CertLifetimeSeconds) * time.Second,
		RenewGrace: time.Duration(r.RenewGraceSeconds) * time.Second, CreatedAt: r.CreatedAt.UTC()}
}

// renewGraceSeconds stores a tenant's RenewGrace in whole seconds; any
// negative value (disabled) is stored as -1.
func renewGraceSeconds(d time.Duration) int64 {
	if d < 0 {
		return -1
	}
	return int64(d / time.Second)
}

func fromDevice(d *registry.Device) *deviceRow {
	return &deviceRow{
		ID: d.ID, TenantID: d.TenantID, Serial: d.Serial, SerialFolded: registry.FoldSerial(d.Serial), MACs: encodeList(d.MACs),
		Status: string(d.Status), Method: d.Method, EKHash: d.EKHash, AKPub: d.AKPub,
		IDevIDIssuer: d.IDevIDIssuer, IDevIDSerial: d.IDevIDSerial,
		RekeyRequired: d.RekeyRequired, RekeyDeadline: tsPtr(d.RekeyDeadline),
		CreatedAt: ts(d.CreatedAt), UpdatedAt: ts(d.UpdatedAt),
	}
}

func tsPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := ts(*t)
	return &v
}

func (r *deviceRow) domain() *registry.Device {
	return &registry.Device{
		ID: r.ID, TenantID: r.TenantID, Serial: r.Serial, MACs: decodeList(r.MACs),
		Status: registry.DeviceStatus(r.Status), Method: r.Method, EKHash: r.EKHash, AKPub: r.AKPub,
		IDevIDIssuer: r.IDevIDIssuer, IDevIDSerial: r.IDevIDSerial,
		RekeyRequired: r.RekeyRequired, RekeyDeadline: utcPtr(r.RekeyDeadline),
		CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(),
	}
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC()
	return &v
}

func fromCertificate(c *registry.Certificate) *certificateRow {
	r := &certificateRow{
		Serial: c.Serial, Kind: string(c.Kind), TenantID: c.TenantID, Subject: c.Subject,
		SANs: encodeList(c.SANs), NotBefore: ts(c.NotBefore), NotAfter: ts(c.NotAfter), DER: c.DER,
		Status: string(c.Status), RevocationReason: c.RevocationReason, ReplacesSerial: c.ReplacesSerial,
		KeySHA256: c.KeySHA256, TokenHash: c.TokenHash, CRLPartition: c.CRLPartition, CreatedAt: ts(c.CreatedAt), IssuerKID: c.IssuerKeyID,
	}
	if c.DeviceID != "" {
		id := c.DeviceID
		r.DeviceID = &id
	}
	if c.RevokedAt != nil {
		t := ts(*c.RevokedAt)
		r.RevokedAt = &t
	}
	if r.DER == nil {
		r.DER = []byte{}
	}
	return r
}

func (r *certificateRow) domain() *registry.Certificate {
	c := &registry.Certificate{
		Serial: r.Serial, Kind: registry.CertKind(r.Kind), TenantID: r.TenantID, Subject: r.Subject,
		SANs: decodeList(r.SANs), NotBefore: r.NotBefore.UTC(), NotAfter: r.NotAfter.UTC(), DER: r.DER,
		Status: registry.CertStatus(r.Status), RevocationReason: r.RevocationReason,
		ReplacesSerial: r.ReplacesSerial, KeySHA256: r.KeySHA256, TokenHash: r.TokenHash, CRLPartition: r.CRLPartition,
		CreatedAt: r.CreatedAt.UTC(), IssuerKeyID: r.IssuerKID,
	}
	if r.DeviceID != nil {
		c.DeviceID = *r.DeviceID
	}
	if r.RevokedAt != nil {
		t := r.RevokedAt.UTC()
		c.RevokedAt = &t
	}
	return c
}

func fromToken(t *registry.Token) *tokenRow {
	return &tokenRow{
		ID: t.ID, Hash: t.Hash, TenantID: t.TenantID, Serial: t.Serial, ExpiresAt: ts(t.ExpiresAt),
		UsesLeft: t.UsesLeft, Reinstate: t.Reinstate, CreatedBy: t.CreatedBy, CreatedAt: ts(t.CreatedAt),
	}
}

func (r *tokenRow) domain() *registry.Token {
	return &registry.Token{
		ID: r.ID, Hash: r.Hash, TenantID: r.TenantID, Serial: r.Serial, ExpiresAt: r.ExpiresAt.UTC(),
		UsesLeft: r.UsesLeft, Reinstate: r.Reinstate, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.UTC(),
	}
}

func fromAdmin(a *registry.Admin) *adminRow {
	st := string(a.Status)
	if st == "" {
		st = string(registry.AdminActive)
	}
	return &adminRow{Name: a.Name, TenantID: a.TenantID, Role: string(a.Role), Super: a.Super, Status: st,
		RevokedAt: tsPtr(a.RevokedAt), CreatedAt: ts(a.CreatedAt)}
}

func (r *adminRow) domain() *registry.Admin {
	a := &registry.Admin{Name: r.Name, TenantID: r.TenantID, Role: registry.Role(r.Role), Super: r.Super,
		Status: registry.AdminStatus(r.Status), CreatedAt: r.CreatedAt.UTC()}
	if a.Status == "" {
		a.Status = registry.AdminActive
	}
	if r.RevokedAt != nil {
		at := r.RevokedAt.UTC()
		a.RevokedAt = &at
	}
	return a
}

func (r *auditRow) domain() *registry.AuditEvent {
	return &registry.AuditEvent{
		Seq: r.Seq, Time: r.Time.UTC(), TenantID: r.TenantID, Actor: r.Actor, Action: r.Action,
		Target: r.Target, Result: r.Result, Detail: r.Detail, SourceAddr: r.SourceAddr,
		PrevHash: r.PrevHash, Hash: r.Hash,
		TenantSeq: r.TenantSeq, TenantPrevHash: r.TenantPrevHash, TenantHash: r.TenantHash,
	}
}

type tpmRootRow struct {
	Fingerprint string `gorm:"primaryKey;size:64"`
	DER         []byte `gorm:"column:der;not null"`
	Subject     string `gorm:"not null"`
	// Kind is "root" or "intermediate"; rows from before the column are
	// roots (the column's default, see migrateTPMRootKind).
	Kind      string `gorm:"size:16;not null;default:root"`
	AddedBy   string `gorm:"size:256;not null"`
	CreatedAt time.Time
}

func (tpmRootRow) TableName() string { return "tpm_roots" }
