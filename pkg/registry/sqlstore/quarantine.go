package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// quarantineRow is a claim refused as a possible clone (registry.Quarantine).
type quarantineRow struct {
	ID               string     `gorm:"primaryKey;size:128"`
	TenantID         string     `gorm:"size:128;not null;index"`
	Tenant           *tenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Serial           string     `gorm:"size:256;not null"`
	MACs             string     `gorm:"column:macs;not null"` // JSON array of strings
	EKHash           string     `gorm:"column:ek_hash;size:128;not null"`
	Reason           string     `gorm:"size:64;not null"`
	ConflictDeviceID string     `gorm:"size:128;not null"`
	ConflictEKHash   string     `gorm:"column:conflict_ek_hash;size:128;not null;default:''"`
	// The claimant's IDevID and the conflicting device's (registry.Quarantine).
	IDevIDIssuer         string    `gorm:"column:idevid_issuer;not null;default:''"`
	IDevIDSerial         string    `gorm:"column:idevid_serial;size:128;not null;default:''"`
	ConflictIDevIDIssuer string    `gorm:"column:conflict_idevid_issuer;not null;default:''"`
	ConflictIDevIDSerial string    `gorm:"column:conflict_idevid_serial;size:128;not null;default:''"`
	SourceAddr           string    `gorm:"not null"`
	FirstSeen            time.Time `gorm:"not null"`
	LastSeen             time.Time `gorm:"not null"`
	Attempts             int       `gorm:"not null"`
	Status               string    `gorm:"size:32;not null"`
	DismissedBy          string    `gorm:"size:256;not null"`
	DismissedAt          *time.Time
	ReleasedBy           string `gorm:"size:256;not null;default:''"`
	ReleasedAt           *time.Time
}

func (quarantineRow) TableName() string { return "device_quarantine" }

func (r *quarantineRow) domain() *registry.Quarantine {
	return &registry.Quarantine{
		ID: r.ID, TenantID: r.TenantID, Serial: r.Serial, MACs: decodeList(r.MACs), EKHash: r.EKHash,
		Reason: registry.QuarantineReason(r.Reason), ConflictDeviceID: r.ConflictDeviceID, ConflictEKHash: r.ConflictEKHash,
		IDevIDIssuer: r.IDevIDIssuer, IDevIDSerial: r.IDevIDSerial,
		ConflictIDevIDIssuer: r.ConflictIDevIDIssuer, ConflictIDevIDSerial: r.ConflictIDevIDSerial,
		SourceAddr: r.SourceAddr, FirstSeen: r.FirstSeen.UTC(), LastSeen: r.LastSeen.UTC(), Attempts: r.Attempts,
		Status: registry.QuarantineStatus(r.Status), DismissedBy: r.DismissedBy, DismissedAt: utcPtr(r.DismissedAt),
		ReleasedBy: r.ReleasedBy, ReleasedAt: utcPtr(r.ReleasedAt),
	}
}

// Indexes made by hand: gorm's tags cannot say "unique where".
const (
	// One held record per claim: repeats update it (HoldClaim's upsert
	// names this index as its conflict target).
	sqlIndexHeldClaim = `CREATE UNIQUE INDEX IF NOT EXISTS ux_device_quarantine_held
		ON device_quarantine (tenant_id, serial, ek_hash) WHERE status = 'held'`
	// One device per TPM EK, in every tenant, so that two enrollments of
	// one EK under two serials cannot both commit (checkClone in
	// pkg/provision reads before the transaction). Software-key devices
	// have an empty ek_hash and are left out.
	sqlIndexDeviceEK = `CREATE UNIQUE INDEX IF NOT EXISTS ux_devices_ek_hash ON devices (ek_hash) WHERE ek_hash <> ''`
	sqlDuplicateEKs  = `SELECT ek_hash, COUNT(*) AS n FROM devices WHERE ek_hash <> '' GROUP BY ek_hash HAVING COUNT(*) > 1
		ORDER BY ek_hash LIMIT 10`

	sqlHoldClaim = `INSERT INTO device_quarantine (id, tenant_id, serial, macs, ek_hash, reason, conflict_device_id,
		conflict_ek_hash, idevid_issuer, idevid_serial, conflict_idevid_issuer, conflict_idevid_serial,
		source_addr, first_seen, last_seen, attempts, status, dismissed_by, released_by)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 'held', '', '')
		ON CONFLICT (tenant_id, serial, ek_hash) WHERE status = 'held' DO UPDATE SET
		attempts = device_quarantine.attempts + 1, last_seen = excluded.last_seen, macs = excluded.macs,
		reason = excluded.reason, conflict_device_id = excluded.conflict_device_id,
		conflict_ek_hash = excluded.conflict_ek_hash, idevid_issuer = excluded.idevid_issuer,
		idevid_serial = excluded.idevid_serial, conflict_idevid_issuer = excluded.conflict_idevid_issuer,
		conflict_idevid_serial = excluded.conflict_idevid_serial, source_addr = excluded.source_addr`
)

// migrateQuarantine creates the quarantine table and the two partial
// unique indexes. A database made before ux_devices_ek_hash existed may
// hold one EK on several devices (two enrollments that raced past the
// clone check); then Open fails and names them, rather than drop the
// guarantee: an operator revokes the clones and clears their ek_hash
// (UPDATE devices SET ek_hash = ” WHERE id = ...) and opens again.
func migrateQuarantine(db *gorm.DB) error {
	if err := db.AutoMigrate(&legacyQuarantineRow{}); err != nil {
		return fmt.Errorf("sqlstore: migrate quarantine: %w", err)
	}
	if err := db.Exec(sqlIndexHeldClaim).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate quarantine index: %w", err)
	}
	var dups []struct {
		EKHash string
		N      int
	}
	if err := db.Raw(sqlDuplicateEKs).Scan(&dups).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: look for EKs bound to several devices: %w", err)
	}
	if len(dups) > 0 {
		var b strings.Builder
		for _, d := range dups {
			var ids []string
			if err := db.Model(&deviceRow{}).Where("ek_hash = ?", d.EKHash).Order("created_at, id").Pluck("id", &ids).Error; err != nil {
				return fmt.Errorf("sqlstore: migrate: devices of EK %s: %w", d.EKHash, err)
			}
			fmt.Fprintf(&b, "; EK %s: devices %s", d.EKHash, strings.Join(ids, ", "))
		}
		return fmt.Errorf("sqlstore: migrate: cannot make TPM EKs unique: some are bound to more than one device (clones that "+
			"enrolled before this check existed; revoke the clones, set their ek_hash to '' and start again)%s", b.String())
	}
	if err := db.Exec(sqlIndexDeviceEK).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate devices EK index: %w", err)
	}
	return nil
}

// isEKConflict tells a violation of ux_devices_ek_hash from the other
// errors of a device write. Both drivers name the index or its column in
// the message (PostgreSQL: constraint "ux_devices_ek_hash"; SQLite: UNIQUE
// constraint failed: devices.ek_hash), and no other constraint of the
// devices table mentions ek_hash.
func isEKConflict(err error) bool {
	return err != nil && strings.Contains(err.Error(), "ek_hash")
}

// HoldClaim implements registry.Store.
func (s *Store) HoldClaim(ctx context.Context, q *registry.Quarantine, audit *registry.AuditEvent) error {
	switch {
	case q == nil || q.ID == "" || q.TenantID == "" || q.Serial == "":
		return errors.New("sqlstore: hold claim: id, tenant and serial are required")
	case q.Reason != registry.ReasonSerialOtherEK && q.Reason != registry.ReasonEKOtherSerial &&
		q.Reason != registry.ReasonMACOtherSerial && q.Reason != registry.ReasonSerialOtherIDevID:
		return fmt.Errorf("sqlstore: hold claim: unknown reason %q", q.Reason)
	case q.Reason == registry.ReasonSerialOtherIDevID && (q.IDevIDIssuer == "" || q.IDevIDSerial == ""):
		return fmt.Errorf("sqlstore: hold claim: reason %s needs the claimant's IDevID issuer and serial", q.Reason)
	case q.EKHash == "" && q.Reason != registry.ReasonMACOtherSerial && q.Reason != registry.ReasonSerialOtherIDevID:
		return fmt.Errorf("sqlstore: hold claim: reason %s needs the EK hash", q.Reason)
	}
	seen := ts(q.LastSeen)
	if seen.IsZero() {
		seen = ts(s.now())
	}
	var stored quarantineRow
	var ev *registry.AuditEvent
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		_, err := b.exec(sqlHoldClaim, q.ID, q.TenantID, q.Serial, encodeList(q.MACs), q.EKHash, string(q.Reason),
			q.ConflictDeviceID, q.ConflictEKHash, q.IDevIDIssuer, q.IDevIDSerial, q.ConflictIDevIDIssuer, q.ConflictIDevIDSerial,
			q.SourceAddr, seen, seen)
		if err != nil {
			return fmt.Errorf("sqlstore: hold claim of %s/%s: %w", q.TenantID, q.Serial, s.translateSQL(err))
		}
		err = tx.Where("tenant_id = ? AND serial = ? AND ek_hash = ? AND status = ?",
			q.TenantID, q.Serial, q.EKHash, string(registry.QuarantineHeld)).Take(&stored).Error
		if err != nil {
			return fmt.Errorf("sqlstore: hold claim: read back: %w", translate(err))
		}
		if audit == nil {
			return nil
		}
		a := *audit
		if a.Target == "" {
			a.Target = stored.ID
		}
		ev, err = b.appendAudit(&a)
		return err
	})
	if err != nil {
		return err
	}
	*q = *stored.domain()
	if audit != nil && ev != nil {
		copyAudit(audit, ev)
		audit.Target = ev.Target
	}
	return nil
}

// GetQuarantine implements registry.Store.
func (s *Store) GetQuarantine(ctx context.Context, id string) (*registry.Quarantine, error) {
	var r quarantineRow
	if err := s.get(ctx, "quarantine "+id, &r, "id = ?", id); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// ListQuarantine implements registry.Store.
func (s *Store) ListQuarantine(ctx context.Context, f registry.QuarantineFilter) ([]*registry.Quarantine, error) {
	q := s.rd(ctx).Model(&quarantineRow{})
	if f.TenantID != "" {
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	if f.Status != "" {
		q = q.Where("status = ?", string(f.Status))
	}
	if f.Serial != "" {
		q = q.Where("serial = ?", f.Serial)
	}
	if f.After != "" {
		q = q.Where("id > ?", f.After)
	}
	var rows []quarantineRow
	if err := q.Order("id").Limit(pageLimit(f.Limit)).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list quarantine: %w", translate(err))
	}
	out := make([]*registry.Quarantine, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// DismissQuarantine implements registry.Store.
func (s *Store) DismissQuarantine(ctx context.Context, id, by string, audit *registry.AuditEvent) (*registry.Quarantine, error) {
	now := ts(s.now())
	var row quarantineRow
	err := s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		if err := tx.Where("id = ?", id).Take(&row).Error; err != nil {
			return fmt.Errorf("sqlstore: dismiss quarantine %s: %w", id, translate(err))
		}
		if row.Status != string(registry.QuarantineHeld) {
			return fmt.Errorf("%w: quarantine %s is already %s", registry.ErrConflict, id, row.Status)
		}
		res := tx.Model(&quarantineRow{}).Where("id = ? AND status = ?", id, string(registry.QuarantineHeld)).
			Updates(map[string]any{"status": string(registry.QuarantineDismissed), "dismissed_by": by, "dismissed_at": now})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: dismiss quarantine %s: %w", id, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: quarantine %s changed while being dismissed", registry.ErrConflict, id)
		}
		row.Status, row.DismissedBy, row.DismissedAt = string(registry.QuarantineDismissed), by, &now
		return nil
	})
	if err != nil {
		return nil, err
	}
	return row.domain(), nil
}
