package sqlstore

import (
	"context"
	"fmt"
	"time"
)

// The legacy path brings a registry made before versioned migrations (its
// tables exist, goose_db_version does not) to the baseline, migration 1,
// the way devpki always upgraded it: gorm AutoMigrate, then the fixups.
// Everything here is frozen at the baseline: the models below are copies
// of the gorm models as they were when migration 1 was cut, so that a
// later change to models.go (which comes with its own numbered migration)
// never reaches a legacy registry twice. The fixups (migrateQuarantine,
// migrateIdentity, ...) run on the baseline schema: if you change a model
// one of them reads or writes, make the fixup name its columns. Never
// change this file; TestBaselineMatchesLegacy holds the two paths equal.

// legacyMigrate is the schema management of devpki before goose.
func (s *Store) legacyMigrate(ctx context.Context) error {
	db := s.w.WithContext(ctx)
	// A registry from before super-admins: its admins were all made by
	// 'ca init' (nothing else could make one), which now makes a
	// super-admin.
	upgradeAdmins := db.Migrator().HasTable(&legacyAdminRow{}) && !db.Migrator().HasColumn(&legacyAdminRow{}, "super")
	if err := db.AutoMigrate(legacyModels()...); err != nil {
		return fmt.Errorf("sqlstore: migrate: %w", err)
	}
	if upgradeAdmins {
		if err := migrateSuperAdmins(db); err != nil {
			return err
		}
	}
	if err := migrateQuarantine(db); err != nil {
		return err
	}
	if err := migrateHeartbeat(db); err != nil {
		return err
	}
	if err := migrateIdentity(db); err != nil {
		return err
	}
	if err := migrateTPMRootKind(db); err != nil {
		return err
	}
	return s.migrateAuditTenants(ctx)
}

func legacyModels() []any {
	return []any{&legacyTenantRow{}, &legacyDeviceRow{}, &legacyCertificateRow{}, &legacyTokenRow{}, &legacyAdminRow{},
		&legacyAuditRow{}, &legacyAuditHeadRow{}, &legacyAuditTenantHeadRow{}, &legacyRefusalRow{}, &legacyCheckpointRow{},
		&legacyCrlCounterRow{}, &legacyPreregistrationRow{}, &legacyTpmRootRow{}, &legacyTpmChallengeRow{},
		&legacyDeviceMACRow{}, &legacyIdevidCARow{}}
}

// The gorm models at the baseline (copies; see above).

type legacyIdevidCARow struct {
	ID          string           `gorm:"primaryKey;size:128"`
	TenantID    string           `gorm:"size:128;not null;uniqueIndex:ux_idevid_cas_tenant_fp,priority:1"`
	Tenant      *legacyTenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Fingerprint string           `gorm:"size:64;not null;uniqueIndex:ux_idevid_cas_tenant_fp,priority:2"`
	DER         []byte           `gorm:"column:der;not null"`
	Subject     string           `gorm:"not null"`
	Kind        string           `gorm:"size:32;not null"`
	AddedBy     string           `gorm:"size:256;not null"`
	CreatedAt   time.Time
}

func (legacyIdevidCARow) TableName() string { return "idevid_cas" }

type legacyTenantRow struct {
	ID                  string `gorm:"primaryKey;size:128"`
	Name                string `gorm:"size:128;not null;uniqueIndex"`
	RequireTPM          bool   `gorm:"not null"`
	Methods             string `gorm:"not null;default:''"`
	KeyTypes            string `gorm:"not null;default:''"`
	CertLifetimeSeconds int64  `gorm:"not null;default:0"`
	CreatedAt           time.Time
}

func (legacyTenantRow) TableName() string { return "tenants" }

type legacyDeviceRow struct {
	ID            string           `gorm:"primaryKey;size:128"`
	TenantID      string           `gorm:"size:128;not null"`
	Tenant        *legacyTenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial        string           `gorm:"size:256;not null"`
	SerialFolded  string           `gorm:"size:256;not null;default:''"`
	MACs          string           `gorm:"column:macs;not null"` // JSON array of strings
	Status        string           `gorm:"size:32;not null"`
	Method        string           `gorm:"size:64;not null"`
	EKHash        string           `gorm:"column:ek_hash;size:128;not null;index"`
	AKPub         []byte           `gorm:"column:ak_pub"`
	IDevIDIssuer  string           `gorm:"column:idevid_issuer;not null;default:''"`
	IDevIDSerial  string           `gorm:"column:idevid_serial;size:128;not null;default:''"`
	RekeyRequired bool             `gorm:"not null;default:false"`
	RekeyDeadline *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

func (legacyDeviceRow) TableName() string { return "devices" }

type legacyCertificateRow struct {
	Serial           string           `gorm:"primaryKey;size:64"`
	Kind             string           `gorm:"size:32;not null"`
	DeviceID         *string          `gorm:"size:128;index"`
	Device           *legacyDeviceRow `gorm:"foreignKey:DeviceID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	TenantID         string           `gorm:"size:128;not null"`
	Subject          string           `gorm:"not null"`
	SANs             string           `gorm:"column:sans;not null"` // JSON array of strings
	NotBefore        time.Time        `gorm:"not null"`
	NotAfter         time.Time        `gorm:"not null;index"`
	DER              []byte           `gorm:"column:der"`
	Status           string           `gorm:"size:32;not null;index"`
	RevokedAt        *time.Time
	RevocationReason int    `gorm:"not null"`
	ReplacesSerial   string `gorm:"size:64;not null"`
	KeySHA256        []byte `gorm:"column:key_sha256;index"`
	TokenHash        []byte `gorm:"column:token_hash"`
	CreatedAt        time.Time
}

func (legacyCertificateRow) TableName() string { return "certificates" }

type legacyTokenRow struct {
	ID        string           `gorm:"primaryKey;size:128"`
	Hash      []byte           `gorm:"not null;uniqueIndex"`
	TenantID  string           `gorm:"size:128;not null;index"`
	Tenant    *legacyTenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial    string           `gorm:"size:256;not null"`
	ExpiresAt time.Time        `gorm:"not null"`
	UsesLeft  int              `gorm:"not null"`
	Reinstate bool             `gorm:"not null;default:false"`
	CreatedBy string           `gorm:"size:256;not null"`
	CreatedAt time.Time
}

func (legacyTokenRow) TableName() string { return "tokens" }

type legacyDeviceMACRow struct {
	TenantID string `gorm:"primaryKey;size:128"`
	MAC      string `gorm:"column:mac;primaryKey;size:32"`
	DeviceID string `gorm:"size:128;not null;index"`
}

func (legacyDeviceMACRow) TableName() string { return "device_macs" }

type legacyPreregistrationRow struct {
	EKHash    string           `gorm:"column:ek_hash;primaryKey;size:128"`
	TenantID  string           `gorm:"size:128;not null"`
	Tenant    *legacyTenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial    string           `gorm:"size:256;not null"`
	MACs      string           `gorm:"column:macs;not null"` // JSON array of strings
	CreatedBy string           `gorm:"size:256;not null"`
	CreatedAt time.Time
}

func (legacyPreregistrationRow) TableName() string { return "tpm_preregistrations" }

type legacyAdminRow struct {
	Name      string `gorm:"primaryKey;size:256"`
	TenantID  string `gorm:"size:128;not null"`
	Role      string `gorm:"size:32;not null"`
	Super     bool   `gorm:"not null;default:false"`
	Status    string `gorm:"size:32;not null;default:'active'"`
	RevokedAt *time.Time
	CreatedAt time.Time
}

func (legacyAdminRow) TableName() string { return "admins" }

type legacyAuditRow struct {
	Seq            int64     `gorm:"primaryKey;autoIncrement:false"`
	Time           time.Time `gorm:"not null"`
	TenantID       string    `gorm:"size:128;not null;index"`
	Actor          string    `gorm:"not null"`
	Action         string    `gorm:"size:128;not null"`
	Target         string    `gorm:"not null"`
	Result         string    `gorm:"size:32;not null"`
	Detail         string    `gorm:"not null"`
	SourceAddr     string    `gorm:"not null"`
	PrevHash       []byte    `gorm:"not null"`
	Hash           []byte    `gorm:"not null"`
	TenantSeq      int64     `gorm:"not null;default:0"`
	TenantPrevHash []byte
	TenantHash     []byte
}

func (legacyAuditRow) TableName() string { return "audit_events" }

type legacyAuditTenantHeadRow struct {
	TenantID string `gorm:"primaryKey;size:128"`
	Seq      int64  `gorm:"not null"`
	Hash     []byte `gorm:"not null"`
}

func (legacyAuditTenantHeadRow) TableName() string { return "audit_tenant_heads" }

type legacyRefusalRow struct {
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

func (legacyRefusalRow) TableName() string { return "audit_refusals" }

type legacyCheckpointRow struct {
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

func (legacyCheckpointRow) TableName() string { return "audit_checkpoints" }

type legacyAuditHeadRow struct {
	ID   int    `gorm:"primaryKey;autoIncrement:false"`
	Seq  int64  `gorm:"not null"`
	Hash []byte `gorm:"not null"`
}

func (legacyAuditHeadRow) TableName() string { return "audit_head" }

type legacyCrlCounterRow struct {
	ID     int   `gorm:"primaryKey;autoIncrement:false"`
	Number int64 `gorm:"not null"`
}

func (legacyCrlCounterRow) TableName() string { return "crl_counter" }

type legacyTpmChallengeRow struct {
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

func (legacyTpmChallengeRow) TableName() string { return "tpm_challenges" }

type legacyTpmRootRow struct {
	Fingerprint string `gorm:"primaryKey;size:64"`
	DER         []byte `gorm:"column:der;not null"`
	Subject     string `gorm:"not null"`
	Kind        string `gorm:"size:16;not null;default:root"`
	AddedBy     string `gorm:"size:256;not null"`
	CreatedAt   time.Time
}

func (legacyTpmRootRow) TableName() string { return "tpm_roots" }

type legacyQuarantineRow struct {
	ID                   string           `gorm:"primaryKey;size:128"`
	TenantID             string           `gorm:"size:128;not null;index"`
	Tenant               *legacyTenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial               string           `gorm:"size:256;not null"`
	MACs                 string           `gorm:"column:macs;not null"` // JSON array of strings
	EKHash               string           `gorm:"column:ek_hash;size:128;not null"`
	Reason               string           `gorm:"size:64;not null"`
	ConflictDeviceID     string           `gorm:"size:128;not null"`
	ConflictEKHash       string           `gorm:"column:conflict_ek_hash;size:128;not null;default:''"`
	IDevIDIssuer         string           `gorm:"column:idevid_issuer;not null;default:''"`
	IDevIDSerial         string           `gorm:"column:idevid_serial;size:128;not null;default:''"`
	ConflictIDevIDIssuer string           `gorm:"column:conflict_idevid_issuer;not null;default:''"`
	ConflictIDevIDSerial string           `gorm:"column:conflict_idevid_serial;size:128;not null;default:''"`
	SourceAddr           string           `gorm:"not null"`
	FirstSeen            time.Time        `gorm:"not null"`
	LastSeen             time.Time        `gorm:"not null"`
	Attempts             int              `gorm:"not null"`
	Status               string           `gorm:"size:32;not null"`
	DismissedBy          string           `gorm:"size:256;not null"`
	DismissedAt          *time.Time
	ReleasedBy           string `gorm:"size:256;not null;default:''"`
	ReleasedAt           *time.Time
}

func (legacyQuarantineRow) TableName() string { return "device_quarantine" }

type legacyHeartbeatRow struct {
	ID    int   `gorm:"primaryKey;autoIncrement:false"`
	Beats int64 `gorm:"not null"`
}

func (legacyHeartbeatRow) TableName() string { return "heartbeat" }
