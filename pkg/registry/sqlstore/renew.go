package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// Renew implements registry.Store: checks, the new certificate, the old one
// superseded and the audit event, in one savepoint of the group commit.
func (s *Store) Renew(ctx context.Context, r *registry.Renewal) error {
	if r == nil || r.OldSerial == "" || r.Certificate == nil || r.Certificate.Serial == "" {
		return errors.New("sqlstore: renew: old serial and certificate are required")
	}
	cert := fromCertificate(r.Certificate)
	cert.ReplacesSerial = r.OldSerial
	if cert.Kind == "" {
		cert.Kind = string(registry.KindDevice)
	}
	cert.Status = string(registry.CertActive)
	var ev *registry.AuditEvent
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		now := ts(s.now())
		var old certificateRow
		if err := tx.Where("serial = ?", r.OldSerial).Take(&old).Error; err != nil {
			return fmt.Errorf("sqlstore: renew %s: %w", r.OldSerial, translate(err))
		}
		if old.Kind != string(registry.KindDevice) || old.DeviceID == nil || old.Status != string(registry.CertActive) {
			return fmt.Errorf("%w: certificate %s is %s %s", registry.ErrNotRenewable, r.OldSerial, old.Status, old.Kind)
		}
		var dev deviceRow
		if err := tx.Where("id = ?", *old.DeviceID).Take(&dev).Error; err != nil {
			return fmt.Errorf("sqlstore: renew %s: device: %w", r.OldSerial, translate(err))
		}
		if dev.Status != string(registry.DeviceActive) {
			return fmt.Errorf("%w: device %s is %s", registry.ErrDeviceNotActive, dev.ID, dev.Status)
		}
		if dev.RekeyRequired && r.SameKey {
			return fmt.Errorf("%w: device %s", registry.ErrRekeyRequired, dev.ID)
		}
		cert.DeviceID, cert.TenantID, cert.CreatedAt = old.DeviceID, old.TenantID, now
		if err := tx.Create(cert).Error; err != nil {
			return fmt.Errorf("sqlstore: renew %s: insert certificate %s: %w", r.OldSerial, cert.Serial, translate(err))
		}
		res := tx.Model(&certificateRow{}).Where("serial = ? AND status = ?", r.OldSerial, string(registry.CertActive)).
			Update("status", string(registry.CertSuperseded))
		if res.Error != nil || res.RowsAffected != 1 {
			return fmt.Errorf("sqlstore: renew %s: supersede: %w", r.OldSerial, errors.Join(translate(res.Error), registry.ErrConflict))
		}
		upd := map[string]any{"updated_at": now}
		if !r.SameKey && dev.RekeyRequired {
			upd["rekey_required"], upd["rekey_deadline"] = false, nil
		}
		if err := tx.Model(&deviceRow{}).Where("id = ?", dev.ID).Updates(upd).Error; err != nil {
			return fmt.Errorf("sqlstore: renew %s: device: %w", r.OldSerial, translate(err))
		}
		if r.Audit == nil {
			return nil
		}
		var err error
		ev, err = b.appendAudit(r.Audit)
		return err
	})
	if err != nil {
		return err
	}
	r.Certificate.ReplacesSerial, r.Certificate.Status = r.OldSerial, registry.CertActive
	r.Certificate.DeviceID, r.Certificate.TenantID = *cert.DeviceID, cert.TenantID
	r.Certificate.Kind, r.Certificate.CreatedAt = registry.CertKind(cert.Kind), cert.CreatedAt
	copyAudit(r.Audit, ev)
	return nil
}

// GetReplacement implements registry.Store.
func (s *Store) GetReplacement(ctx context.Context, serial string) (*registry.Certificate, error) {
	var r certificateRow
	if err := s.get(ctx, "replacement of "+serial, &r, "replaces_serial = ?", serial); err != nil {
		return nil, err
	}
	return r.domain(), nil
}

// RequireRekey implements registry.Store.
func (s *Store) RequireRekey(ctx context.Context, deviceID string, required bool, deadline *time.Time, audit *registry.AuditEvent) error {
	if !required {
		deadline = nil
	}
	var ev *registry.AuditEvent
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		res := tx.Model(&deviceRow{}).Where("id = ?", deviceID).Updates(map[string]any{
			"rekey_required": required, "rekey_deadline": tsPtr(deadline), "updated_at": ts(s.now()),
		})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: rekey %s: %w", deviceID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("sqlstore: rekey %s: %w", deviceID, registry.ErrNotFound)
		}
		if audit == nil {
			return nil
		}
		var err error
		ev, err = b.appendAudit(audit)
		return err
	})
	if err != nil {
		return err
	}
	copyAudit(audit, ev)
	return nil
}

// ListCertificatesByKey implements registry.Store.
func (s *Store) ListCertificatesByKey(ctx context.Context, keyHash []byte) ([]*registry.Certificate, error) {
	var rows []certificateRow
	err := s.r.WithContext(ctx).Where("key_sha256 = ?", keyHash).Order("created_at, serial").Limit(100).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("sqlstore: certificates by key: %w", translate(err))
	}
	out := make([]*registry.Certificate, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}
