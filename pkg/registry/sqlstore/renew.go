package sqlstore

import (
	"context"
	"database/sql"
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
	err := s.writeAudited(ctx, r.Audit, func(_ *gorm.DB, b *batch) error {
		now := ts(s.now())
		// The guards are the updates' own conditions: the old certificate
		// is an active device certificate, its device active and not told
		// to re-key when the key stays. Only when one matches nothing are
		// the rows read, to say why.
		deviceID, tenantID, err := s.supersedeRenewed(b, r)
		if err != nil {
			return s.whyNotRenewable(b, r, err, false)
		}
		res, err := b.exec(sqlTouchRenewingDevice, false, now, *deviceID, string(registry.DeviceActive), r.SameKey)
		if err != nil {
			return fmt.Errorf("sqlstore: renew %s: device: %w", r.OldSerial, s.translateSQL(err))
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return s.whyNotRenewable(b, r, nil, true)
		}
		cert.DeviceID, cert.TenantID, cert.CreatedAt = deviceID, tenantID, now
		if _, err := b.exec(sqlInsertCertificate,
			cert.Serial, cert.Kind, cert.DeviceID, cert.TenantID, cert.Subject, cert.SANs, cert.NotBefore, cert.NotAfter, cert.DER,
			cert.Status, cert.RevokedAt, cert.RevocationReason, cert.ReplacesSerial, cert.KeySHA256, nil, cert.CRLPartition, cert.CreatedAt,
			cert.IssuerKID); err != nil {
			return fmt.Errorf("sqlstore: renew %s: insert certificate %s: %w", r.OldSerial, cert.Serial, s.translateSQL(err))
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.Certificate.ReplacesSerial, r.Certificate.Status = r.OldSerial, registry.CertActive
	r.Certificate.DeviceID, r.Certificate.TenantID = *cert.DeviceID, cert.TenantID
	r.Certificate.Kind, r.Certificate.CreatedAt = registry.CertKind(cert.Kind), cert.CreatedAt
	return nil
}

// supersedeRenewed marks the renewed certificate superseded if it is an
// active device certificate, and returns its device and tenant; when it is
// not, the error is sql.ErrNoRows.
//
// When the caller named them (Renewal), they are conditions of the update
// instead, and it is an exec: a statement that returns rows runs, in a
// transaction of database/sql, with a goroutine watching the transaction's
// context for each query — a thread woken per renewal for nothing. The
// device and tenant of a certificate never change.
func (s *Store) supersedeRenewed(b *batch, r *registry.Renewal) (*string, string, error) {
	if c := r.Certificate; c.DeviceID != "" && c.TenantID != "" {
		res, err := b.exec(sqlSupersedeRenewedOf, string(registry.CertSuperseded), r.OldSerial, string(registry.CertActive),
			string(registry.KindDevice), c.DeviceID, c.TenantID)
		if err != nil {
			return nil, "", err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil, "", sql.ErrNoRows
		}
		deviceID := c.DeviceID
		return &deviceID, c.TenantID, nil
	}
	var deviceID *string
	var tenantID string
	err := b.scan(sqlSupersedeRenewed, []any{string(registry.CertSuperseded), r.OldSerial, string(registry.CertActive),
		string(registry.KindDevice)}, &deviceID, &tenantID)
	return deviceID, tenantID, err
}

// whyNotRenewable reads the old certificate and its device to say why a
// renewal's guarded updates matched nothing: the supersede (updErr is its
// error, if it failed otherwise than by matching no row) or, when
// superseded is set, the device's.
func (s *Store) whyNotRenewable(b *batch, r *registry.Renewal, updErr error, superseded bool) error {
	if updErr != nil && !errors.Is(updErr, sql.ErrNoRows) {
		return fmt.Errorf("sqlstore: renew %s: supersede: %w", r.OldSerial, s.translateSQL(updErr))
	}
	var kind, tenantID, status string
	var deviceID *string
	if err := b.scan(sqlReadRenewedCert, []any{r.OldSerial}, &kind, &deviceID, &tenantID, &status); err != nil {
		return fmt.Errorf("sqlstore: renew %s: %w", r.OldSerial, s.translateSQL(err))
	}
	if kind != string(registry.KindDevice) || deviceID == nil || !superseded && status != string(registry.CertActive) {
		return fmt.Errorf("%w: certificate %s is %s %s", registry.ErrNotRenewable, r.OldSerial, status, kind)
	}
	var devStatus string
	var rekey bool
	if err := b.scan(sqlReadRenewingDevice, []any{*deviceID}, &devStatus, &rekey); err != nil {
		return fmt.Errorf("sqlstore: renew %s: device: %w", r.OldSerial, s.translateSQL(err))
	}
	switch {
	case devStatus != string(registry.DeviceActive):
		return fmt.Errorf("%w: device %s is %s", registry.ErrDeviceNotActive, *deviceID, devStatus)
	case rekey && r.SameKey:
		return fmt.Errorf("%w: device %s", registry.ErrRekeyRequired, *deviceID)
	}
	return fmt.Errorf("sqlstore: renew %s: %w", r.OldSerial, registry.ErrConflict)
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
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		res := tx.Model(&deviceRow{}).Where("id = ?", deviceID).Updates(map[string]any{
			"rekey_required": required, "rekey_deadline": tsPtr(deadline), "updated_at": ts(s.now()),
		})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: rekey %s: %w", deviceID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("sqlstore: rekey %s: %w", deviceID, registry.ErrNotFound)
		}
		return nil
	})
}
