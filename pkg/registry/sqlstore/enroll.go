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

// Enroll implements registry.Store. It queues e for the committer, which
// applies it inside a savepoint of the current group-commit transaction, and
// returns once that transaction has committed (durably: synchronous=FULL on
// SQLite) or e has been rolled back. The checks run in this order and the
// first failing one is returned, with nothing written:
//
//  1. token (when e.TokenHash is set): unknown → ErrTokenInvalid, other
//     tenant → ErrTokenTenantMismatch, expired (ExpiresAt ≤ Now; a zero
//     ExpiresAt never expires) → ErrTokenExpired, bound to another serial →
//     ErrTokenSerialMismatch, no uses left → ErrTokenSpent;
//  2. existing device with the same (tenant, serial): with e.SameEK the
//     device must be active with the same non-empty EKHash (whether or not
//     a token is set), without it the token must be bound to that serial
//     (else ErrSerialConflict); Device.ID must match (else ErrConflict);
//  3. the token is spent with a conditional UPDATE (ErrTokenSpent if another
//     writer spent the last use first).
//
// On success e.Device, e.Certificate and e.Audit carry the stored values
// (timestamps, status, audit Seq and hashes).
func (s *Store) Enroll(ctx context.Context, e *registry.Enrollment) error {
	if err := checkEnrollment(e); err != nil {
		return err
	}
	dev := fromDevice(e.Device)
	cert := fromCertificate(e.Certificate)
	if cert.DeviceID == nil {
		cert.DeviceID = &dev.ID
	}
	if cert.Kind == "" {
		cert.Kind = string(registry.KindDevice)
	}
	if cert.TenantID == "" {
		cert.TenantID = dev.TenantID
	}
	if cert.Status == "" {
		cert.Status = string(registry.CertActive)
	}
	if dev.Status == "" {
		dev.Status = string(registry.DeviceActive)
	}
	tokenHash := e.TokenHash
	sameEK := e.SameEK

	var ev *registry.AuditEvent
	err := s.write(ctx, func(tx *gorm.DB, b *batch) error {
		var err error
		ev, err = s.enroll(tx, b, tokenHash, sameEK, dev, cert, e.Audit)
		return err
	})
	if err != nil {
		return err
	}
	e.Device.Status = registry.DeviceStatus(dev.Status)
	e.Device.CreatedAt, e.Device.UpdatedAt = dev.CreatedAt, dev.UpdatedAt
	e.Certificate.DeviceID, e.Certificate.TenantID = dev.ID, cert.TenantID
	e.Certificate.Kind, e.Certificate.Status = registry.CertKind(cert.Kind), registry.CertStatus(cert.Status)
	e.Certificate.CreatedAt = cert.CreatedAt
	e.Certificate.TokenHash = e.TokenHash
	copyAudit(e.Audit, ev)
	return nil
}

func checkEnrollment(e *registry.Enrollment) error {
	switch {
	case e == nil || e.Device == nil || e.Certificate == nil:
		return errors.New("sqlstore: enroll: device and certificate are required")
	case e.Device.ID == "" || e.Device.TenantID == "" || e.Device.Serial == "":
		return errors.New("sqlstore: enroll: device id, tenant and serial are required")
	case e.Certificate.Serial == "":
		return errors.New("sqlstore: enroll: certificate serial is required")
	case e.Certificate.DeviceID != "" && e.Certificate.DeviceID != e.Device.ID:
		return fmt.Errorf("sqlstore: enroll: certificate is for device %q, not %q", e.Certificate.DeviceID, e.Device.ID)
	case e.TokenHash != nil && len(e.TokenHash) == 0:
		return registry.ErrTokenInvalid
	}
	return nil
}

// enroll runs inside the committer's transaction, within a savepoint that is
// rolled back if it returns an error. The common case — a new device with a
// live token — takes four prepared statements: read the token, insert the
// device (ON CONFLICT DO NOTHING tells an existing serial apart), spend the
// token, insert the certificate; then the audit event.
func (s *Store) enroll(tx *gorm.DB, b *batch, tokenHash []byte, sameEK bool, dev *deviceRow, cert *certificateRow,
	audit *registry.AuditEvent) (*registry.AuditEvent, error) {
	now := ts(s.now())

	var tok tokenRow
	if tokenHash != nil {
		err := b.scan(sqlReadToken,
			[]any{tokenHash}, &tok.TenantID, &tok.Serial, &tok.ExpiresAt, &tok.UsesLeft)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil, registry.ErrTokenInvalid
		case err != nil:
			return nil, fmt.Errorf("sqlstore: enroll: read token: %w", s.translateSQL(err))
		case tok.TenantID != dev.TenantID:
			return nil, registry.ErrTokenTenantMismatch
		case !tok.ExpiresAt.IsZero() && !now.Before(tok.ExpiresAt):
			return nil, registry.ErrTokenExpired
		case tok.Serial != "" && tok.Serial != dev.Serial:
			return nil, registry.ErrTokenSerialMismatch
		case tok.UsesLeft <= 0:
			return nil, registry.ErrTokenSpent
		}
	}

	if dev.CreatedAt.IsZero() {
		dev.CreatedAt = now
	}
	if dev.UpdatedAt.IsZero() {
		dev.UpdatedAt = now
	}
	res, err := b.exec(sqlInsertDevice,
		dev.ID, dev.TenantID, dev.Serial, dev.MACs, dev.Status, dev.Method, dev.EKHash, dev.AKPub, dev.CreatedAt, dev.UpdatedAt)
	if isEKConflict(err) {
		return nil, fmt.Errorf("%w: EK %s, device %s (serial %q): %v", registry.ErrEKConflict, dev.EKHash, dev.ID, dev.Serial, err)
	}
	if err != nil {
		// A device id already used for another serial.
		return nil, fmt.Errorf("%w: insert device %s: %w", registry.ErrConflict, dev.ID, s.translateSQL(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if err := s.reenroll(tx, tokenHash, &tok, sameEK, dev, now); err != nil {
			return nil, err
		}
	}

	if tokenHash != nil {
		res, err := b.exec(sqlSpendToken, tokenHash)
		if err != nil {
			return nil, fmt.Errorf("sqlstore: enroll: spend token: %w", s.translateSQL(err))
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return nil, registry.ErrTokenSpent
		}
	}

	if cert.CreatedAt.IsZero() {
		cert.CreatedAt = now
	}
	_, err = b.exec(sqlInsertCertificate,
		cert.Serial, cert.Kind, cert.DeviceID, cert.TenantID, cert.Subject, cert.SANs, cert.NotBefore, cert.NotAfter, cert.DER,
		cert.Status, cert.RevokedAt, cert.RevocationReason, cert.ReplacesSerial, cert.KeySHA256, tokenHash, cert.CreatedAt)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: enroll: insert certificate %s: %w", cert.Serial, s.translateSQL(err))
	}
	if audit == nil {
		return nil, nil
	}
	return b.appendAudit(audit)
}

// reenroll handles an enrollment whose (tenant, serial) is already a device:
// allowed only with a token bound to that serial (or, with sameEK, only for
// an active device bound to the same EK, token or not) and the same device
// id; it revokes the device's earlier certificates as superseded.
func (s *Store) reenroll(tx *gorm.DB, tokenHash []byte, tok *tokenRow, sameEK bool, dev *deviceRow, now time.Time) error {
	var old deviceRow
	if err := tx.Where("tenant_id = ? AND serial = ?", dev.TenantID, dev.Serial).Take(&old).Error; err != nil {
		return fmt.Errorf("sqlstore: enroll: read device: %w", translate(err))
	}
	switch {
	case sameEK:
		if old.EKHash == "" || old.EKHash != dev.EKHash || old.Status != string(registry.DeviceActive) {
			return fmt.Errorf("%w: %s/%s is device %s (%s, EK %q)", registry.ErrSerialConflict, dev.TenantID, dev.Serial, old.ID, old.Status, old.EKHash)
		}
		if old.ID != dev.ID {
			return fmt.Errorf("%w: %s/%s is device %s, not %s", registry.ErrConflict, dev.TenantID, dev.Serial, old.ID, dev.ID)
		}
	case tokenHash == nil || tok.Serial != dev.Serial:
		return fmt.Errorf("%w: %s/%s is device %s", registry.ErrSerialConflict, dev.TenantID, dev.Serial, old.ID)
	case old.ID != dev.ID:
		return fmt.Errorf("%w: %s/%s is device %s, not %s", registry.ErrConflict, dev.TenantID, dev.Serial, old.ID, dev.ID)
	}
	res := tx.Model(&certificateRow{}).
		Where("device_id = ? AND status IN ?", dev.ID, []string{string(registry.CertActive), string(registry.CertSuperseded)}).
		Updates(map[string]any{
			"status":            string(registry.CertRevoked),
			"revoked_at":        now,
			"revocation_reason": registry.ReasonSuperseded,
		})
	if res.Error != nil {
		return fmt.Errorf("sqlstore: enroll: revoke old certificates: %w", translate(res.Error))
	}
	dev.Status, dev.CreatedAt, dev.UpdatedAt = string(registry.DeviceActive), old.CreatedAt, now
	res = tx.Model(&deviceRow{}).Where("id = ?", dev.ID).Updates(map[string]any{
		"macs": dev.MACs, "method": dev.Method, "ek_hash": dev.EKHash, "ak_pub": dev.AKPub,
		"status": dev.Status, "updated_at": now,
	})
	if isEKConflict(res.Error) {
		return fmt.Errorf("%w: EK %s, device %s (serial %q): %v", registry.ErrEKConflict, dev.EKHash, dev.ID, dev.Serial, res.Error)
	}
	if res.Error != nil {
		return fmt.Errorf("sqlstore: enroll: update device: %w", translate(res.Error))
	}
	return nil
}
