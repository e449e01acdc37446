package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// RevokeCertificate implements registry.Store.
func (s *Store) RevokeCertificate(ctx context.Context, serial string, reason int, at time.Time,
	audit *registry.AuditEvent) (*registry.Certificate, error) {
	if err := registry.ValidReason(reason); err != nil {
		return nil, fmt.Errorf("sqlstore: revoke certificate %s: %w", serial, err)
	}
	var out *registry.Certificate
	err := s.writeRevoking(ctx, audit, func(tx *gorm.DB, _ *batch) ([]int, bool, error) {
		var row certificateRow
		if err := tx.Where("serial = ?", serial).Take(&row).Error; err != nil {
			return nil, false, fmt.Errorf("sqlstore: revoke certificate %s: %w", serial, translate(err))
		}
		if row.Status == string(registry.CertRevoked) {
			out = row.domain()
			return nil, false, fmt.Errorf("sqlstore: revoke certificate %s: %w", serial, registry.ErrAlreadyRevoked)
		}
		when := ts(at)
		if when.IsZero() {
			when = ts(s.now())
		}
		res := tx.Model(&certificateRow{}).Where("serial = ? AND status <> ?", serial, string(registry.CertRevoked)).
			Updates(map[string]any{"status": string(registry.CertRevoked), "revoked_at": when, "revocation_reason": reason})
		if res.Error != nil {
			return nil, false, fmt.Errorf("sqlstore: revoke certificate %s: %w", serial, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return nil, false, fmt.Errorf("sqlstore: revoke certificate %s: %w", serial, registry.ErrConflict)
		}
		row.Status, row.RevokedAt, row.RevocationReason = string(registry.CertRevoked), &when, reason
		out = row.domain()
		return []int{row.CRLPartition}, true, nil
	})
	if err != nil {
		if errors.Is(err, registry.ErrAlreadyRevoked) {
			return out, err
		}
		return nil, err
	}
	return out, nil
}

// RevokeDevice implements registry.Store.
func (s *Store) RevokeDevice(ctx context.Context, deviceID string, reason int,
	audit *registry.AuditEvent) ([]*registry.Certificate, error) {
	if err := registry.ValidReason(reason); err != nil {
		return nil, fmt.Errorf("sqlstore: revoke device %s: %w", deviceID, err)
	}
	var out []*registry.Certificate
	err := s.writeRevoking(ctx, audit, func(tx *gorm.DB, _ *batch) ([]int, bool, error) {
		out = nil
		var dev deviceRow
		if err := tx.Where("id = ?", deviceID).Take(&dev).Error; err != nil {
			return nil, false, fmt.Errorf("sqlstore: revoke device %s: %w", deviceID, translate(err))
		}
		now := ts(s.now())
		var rows []certificateRow
		err := tx.Where("device_id = ? AND status <> ? AND not_after > ?", deviceID, string(registry.CertRevoked), now).
			Order("created_at, serial").Find(&rows).Error
		if err != nil {
			return nil, false, fmt.Errorf("sqlstore: revoke device %s: list certificates: %w", deviceID, translate(err))
		}
		if dev.Status == string(registry.DeviceRevoked) && len(rows) == 0 {
			return nil, false, fmt.Errorf("sqlstore: revoke device %s: %w", deviceID, registry.ErrAlreadyRevoked)
		}
		if dev.Status != string(registry.DeviceRevoked) {
			res := tx.Model(&deviceRow{}).Where("id = ?", deviceID).
				Updates(map[string]any{"status": string(registry.DeviceRevoked), "updated_at": now})
			if res.Error != nil {
				return nil, false, fmt.Errorf("sqlstore: revoke device %s: %w", deviceID, translate(res.Error))
			}
		}
		if len(rows) > 0 {
			serials := make([]string, len(rows))
			for i := range rows {
				serials[i] = rows[i].Serial
			}
			res := tx.Model(&certificateRow{}).Where("serial IN ?", serials).
				Updates(map[string]any{"status": string(registry.CertRevoked), "revoked_at": now, "revocation_reason": reason})
			if res.Error != nil {
				return nil, false, fmt.Errorf("sqlstore: revoke device %s: certificates: %w", deviceID, translate(res.Error))
			}
		}
		parts := make([]int, len(rows))
		for i := range rows {
			rows[i].Status, rows[i].RevokedAt, rows[i].RevocationReason = string(registry.CertRevoked), &now, reason
			out = append(out, rows[i].domain())
			parts[i] = rows[i].CRLPartition
		}
		return parts, len(rows) > 0, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReinstateDevice implements registry.Store: a conditional write, revoked
// to active, that leaves the device's certificates as they are.
func (s *Store) ReinstateDevice(ctx context.Context, deviceID string, audit *registry.AuditEvent) (*registry.Device, error) {
	var out *registry.Device
	err := s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		out = nil
		var dev deviceRow
		if err := tx.Where("id = ?", deviceID).Take(&dev).Error; err != nil {
			return fmt.Errorf("sqlstore: reinstate device %s: %w", deviceID, translate(err))
		}
		if dev.Status != string(registry.DeviceRevoked) {
			return fmt.Errorf("sqlstore: reinstate device %s (status %s): %w", deviceID, dev.Status, registry.ErrNotRevoked)
		}
		now := ts(s.now())
		res := tx.Model(&deviceRow{}).Where("id = ? AND status = ?", deviceID, string(registry.DeviceRevoked)).
			Updates(map[string]any{"status": string(registry.DeviceActive), "updated_at": now})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: reinstate device %s: %w", deviceID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("sqlstore: reinstate device %s: %w", deviceID, registry.ErrConflict)
		}
		dev.Status, dev.UpdatedAt = string(registry.DeviceActive), now
		out = dev.domain()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// sqlNextCRLNumber increments the counter and returns the new value in one
// statement (RETURNING: SQLite ≥ 3.35, PostgreSQL).
const sqlNextCRLNumber = "UPDATE crl_counter SET number = number + 1 WHERE id = 1 RETURNING number"

// NextCRLNumber implements registry.Store. The increment runs in the
// committer's transaction; the row lock (PostgreSQL) or the single writer
// (SQLite) orders concurrent callers, so no two get the same number.
func (s *Store) NextCRLNumber(ctx context.Context) (int64, error) {
	var n int64
	err := s.write(ctx, func(_ *gorm.DB, b *batch) error {
		if err := b.scan(sqlNextCRLNumber, nil, &n); err != nil {
			return fmt.Errorf("sqlstore: next CRL number: %w", s.translateSQL(err))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
