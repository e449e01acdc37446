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
// SQLite) or e has been rolled back. It makes no decision of its own: every
// write is conditional on what provision decided from its reads, and the
// first one that does not hold is returned, with nothing written:
//
//  1. the token (when e.TokenHash is set) is spent by an UPDATE that
//     re-checks its tenant, its expiry and its uses (registry.Token.Spendable);
//  2. the device is inserted (unique on the folded serial per tenant:
//     ErrSerialConflict) or, with e.Replace, updated only while it is as
//     e.Replace says (else ErrConflict), its older certificates revoked as
//     superseded;
//  3. its MACs are claimed in device_macs (ErrMACConflict when another
//     active device of the tenant holds one); its EK is unique across
//     devices (ErrEKConflict);
//  4. the certificate is inserted and the audit event appended.
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
	dev.Status = string(registry.DeviceActive)
	var old *deviceRow
	if e.Replace != nil {
		old = fromDevice(e.Replace)
	}
	macs := e.Device.MACs
	tokenHash := e.TokenHash

	var ev *registry.AuditEvent
	err := s.write(ctx, func(_ *gorm.DB, b *batch) error {
		var err error
		ev, err = s.enroll(b, tokenHash, dev, old, macs, cert, e.Audit)
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
	case e.Replace != nil && (e.Replace.ID != e.Device.ID || e.Replace.TenantID != e.Device.TenantID ||
		!registry.SameSerial(e.Replace.Serial, e.Device.Serial)):
		return fmt.Errorf("sqlstore: enroll: device %s/%s/%q does not re-enroll device %s/%s/%q",
			e.Device.ID, e.Device.TenantID, e.Device.Serial, e.Replace.ID, e.Replace.TenantID, e.Replace.Serial)
	case e.TokenHash != nil && len(e.TokenHash) == 0:
		return registry.ErrTokenInvalid
	}
	return nil
}

// enroll runs inside the committer's transaction, within a savepoint that is
// rolled back if it returns an error. The common case — a new device with
// one MAC and a live token — takes six prepared statements: spend the
// token, insert the device, free and claim its MAC, insert the certificate,
// then the audit event.
func (s *Store) enroll(b *batch, tokenHash []byte, dev, old *deviceRow, macs []string, cert *certificateRow,
	audit *registry.AuditEvent) (*registry.AuditEvent, error) {
	now := ts(s.now())
	if tokenHash != nil {
		if err := s.spendToken(b, tokenHash, dev.TenantID, now); err != nil {
			return nil, err
		}
	}
	var err error
	var revokedParts []int // the partitions of certificates the re-enrollment revoked
	if old == nil {
		err = s.insertDevice(b, dev, now)
	} else {
		revokedParts, err = s.replaceDevice(b, dev, old, now)
	}
	if err != nil {
		return nil, err
	}
	if err := s.claimMACs(b, dev, macs, old != nil); err != nil {
		return nil, err
	}
	if cert.CreatedAt.IsZero() {
		cert.CreatedAt = now
	}
	_, err = b.exec(sqlInsertCertificate,
		cert.Serial, cert.Kind, cert.DeviceID, cert.TenantID, cert.Subject, cert.SANs, cert.NotBefore, cert.NotAfter, cert.DER,
		cert.Status, cert.RevokedAt, cert.RevocationReason, cert.ReplacesSerial, cert.KeySHA256, tokenHash, cert.CRLPartition, cert.CreatedAt, cert.IssuerKID)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: enroll: insert certificate %s: %w", cert.Serial, s.translateSQL(err))
	}
	var ev *registry.AuditEvent
	if audit != nil {
		if ev, err = b.appendAudit(audit); err != nil {
			return nil, err
		}
	}
	if len(revokedParts) > 0 {
		if err := b.bumpCRLRevisions(revokedParts); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// spendToken takes one use of the token with a conditional UPDATE — the
// rule of registry.Token.Spendable in SQL: expires_at > now (a zero expiry
// is year 1, so never) and uses_left > 0 — and names a refusal by reading
// the token and asking Spendable.
func (s *Store) spendToken(b *batch, hash []byte, tenantID string, now time.Time) error {
	res, err := b.exec(sqlSpendToken, hash, tenantID, now)
	if err != nil {
		return fmt.Errorf("sqlstore: enroll: spend token: %w", s.translateSQL(err))
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	var tok tokenRow
	err = b.scan(sqlReadToken, []any{hash}, &tok.ID, &tok.TenantID, &tok.ExpiresAt, &tok.UsesLeft)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return registry.ErrTokenInvalid
	case err != nil:
		return fmt.Errorf("sqlstore: enroll: read token: %w", s.translateSQL(err))
	case tok.TenantID != tenantID:
		return registry.ErrTokenTenantMismatch
	}
	if err := tok.domain().Spendable(now); err != nil {
		return err
	}
	return registry.ErrTokenSpent
}

// insertDevice inserts a new device; its folded serial already enrolled in
// the tenant is ErrSerialConflict.
func (s *Store) insertDevice(b *batch, dev *deviceRow, now time.Time) error {
	if dev.CreatedAt.IsZero() {
		dev.CreatedAt = now
	}
	if dev.UpdatedAt.IsZero() {
		dev.UpdatedAt = now
	}
	res, err := b.exec(sqlInsertDevice, dev.ID, dev.TenantID, dev.Serial, dev.SerialFolded, dev.MACs, dev.Status, dev.Method,
		dev.EKHash, dev.AKPub, dev.IDevIDIssuer, dev.IDevIDSerial, dev.CreatedAt, dev.UpdatedAt)
	if isEKConflict(err) {
		return fmt.Errorf("%w: EK %s, device %s (serial %q): %v", registry.ErrEKConflict, dev.EKHash, dev.ID, dev.Serial, err)
	}
	if err != nil {
		// A device id already used for another serial.
		return fmt.Errorf("%w: insert device %s: %w", registry.ErrConflict, dev.ID, s.translateSQL(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: serial %q in tenant %s", registry.ErrSerialConflict, dev.Serial, dev.TenantID)
	}
	return nil
}

// replaceDevice re-enrolls old as dev, only while the stored device is
// still as old says, and revokes its earlier certificates as superseded.
// It returns the CRL partitions of the certificates it revoked.
func (s *Store) replaceDevice(b *batch, dev, old *deviceRow, now time.Time) ([]int, error) {
	res, err := b.exec(sqlReplaceDevice, dev.Serial, dev.SerialFolded, dev.MACs, dev.Method, dev.EKHash, dev.AKPub, dev.Status,
		dev.IDevIDIssuer, dev.IDevIDSerial, now,
		old.ID, old.TenantID, old.SerialFolded, old.Status, old.EKHash, old.IDevIDIssuer, old.IDevIDSerial)
	if isEKConflict(err) {
		return nil, fmt.Errorf("%w: EK %s, device %s (serial %q): %v", registry.ErrEKConflict, dev.EKHash, dev.ID, dev.Serial, err)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlstore: enroll: update device %s: %w", dev.ID, s.translateSQL(err))
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return nil, fmt.Errorf("%w: device %s (serial %q) changed since it was read (expected %s, EK %q, IDevID %q %q)",
			registry.ErrConflict, old.ID, old.Serial, old.Status, old.EKHash, old.IDevIDIssuer, old.IDevIDSerial)
	}
	parts, err := s.revokedPartitions(b, dev.ID)
	if err != nil {
		return nil, err
	}
	if _, err := b.exec(sqlSupersedeDevice, string(registry.CertRevoked), now, registry.ReasonSuperseded, dev.ID,
		string(registry.CertActive), string(registry.CertSuperseded)); err != nil {
		return nil, fmt.Errorf("sqlstore: enroll: revoke old certificates: %w", s.translateSQL(err))
	}
	dev.CreatedAt, dev.UpdatedAt = old.CreatedAt, now
	return parts, nil
}

// claimMACs records dev's MACs as its own in device_macs: a re-enrollment
// first drops the ones it had, a MAC left behind by a device that is no
// longer active is freed, and a MAC of another active device of the
// tenant is ErrMACConflict.
func (s *Store) claimMACs(b *batch, dev *deviceRow, macs []string, reenroll bool) error {
	if reenroll {
		if _, err := b.exec(sqlDropDeviceMACs, dev.ID); err != nil {
			return fmt.Errorf("sqlstore: enroll: drop MACs of %s: %w", dev.ID, s.translateSQL(err))
		}
	}
	for _, m := range macs {
		res, err := b.exec(sqlClaimMAC, dev.TenantID, m, dev.ID, string(registry.DeviceActive))
		if err != nil {
			return fmt.Errorf("sqlstore: enroll: claim MAC %s: %w", m, s.translateSQL(err))
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("%w: MAC %s in tenant %s", registry.ErrMACConflict, m, dev.TenantID)
		}
	}
	return s.recordMACs(b, dev.ID, macs)
}
