package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// ApplyRelease implements registry.Store: the conditional write of
// registry.ReleaseWrite, through the committer, with its audit event.
func (s *Store) ApplyRelease(ctx context.Context, w *registry.ReleaseWrite) error {
	switch {
	case w == nil || w.ClaimID == "" || w.DeviceID == "":
		return errors.New("sqlstore: apply release: the claim and device ids are required")
	case w.ExpectStatus == "" || w.Status == "":
		return fmt.Errorf("sqlstore: apply release of claim %s: the expected and new device status are required", w.ClaimID)
	}
	if err := registry.ValidReason(w.Reason); err != nil {
		return fmt.Errorf("sqlstore: apply release of claim %s: %w", w.ClaimID, err)
	}
	var (
		claim   quarantineRow
		dev     deviceRow
		revoked []certificateRow
	)
	err := s.writeRevoking(ctx, w.Audit, revokingRows(&revoked, func(tx *gorm.DB, _ *batch) error {
		claim, dev, revoked = quarantineRow{}, deviceRow{}, nil
		now := ts(s.now())
		if err := tx.Where("id = ?", w.ClaimID).Take(&claim).Error; err != nil {
			return fmt.Errorf("sqlstore: apply release of claim %s: %w", w.ClaimID, translate(err))
		}
		if claim.Status != string(registry.QuarantineHeld) {
			return fmt.Errorf("%w: claim %s is %s", registry.ErrClaimNotHeld, w.ClaimID, claim.Status)
		}
		if err := s.expectDevice(tx, w, &dev); err != nil {
			return err
		}

		err := tx.Where("device_id = ? AND status <> ? AND not_after > ?", dev.ID, string(registry.CertRevoked), now).
			Order("created_at, serial").Find(&revoked).Error
		if err != nil {
			return fmt.Errorf("sqlstore: apply release of claim %s: certificates of device %s: %w", w.ClaimID, dev.ID, translate(err))
		}
		if len(revoked) > 0 {
			serials := make([]string, len(revoked))
			for i := range revoked {
				serials[i] = revoked[i].Serial
				revoked[i].Status, revoked[i].RevokedAt, revoked[i].RevocationReason = string(registry.CertRevoked), &now, w.Reason
			}
			res := tx.Model(&certificateRow{}).Where("serial IN ? AND status <> ?", serials, string(registry.CertRevoked)).
				Updates(map[string]any{"status": string(registry.CertRevoked), "revoked_at": now, "revocation_reason": w.Reason})
			if res.Error != nil {
				return fmt.Errorf("sqlstore: apply release of claim %s: revoke certificates: %w", w.ClaimID, translate(res.Error))
			}
		}

		update := map[string]any{"ek_hash": w.EKHash, "status": string(w.Status), "updated_at": now}
		if w.ClearRekey {
			update["rekey_required"], update["rekey_deadline"] = false, nil
		}
		if w.ClearAK {
			update["ak_pub"] = nil
		}
		if w.SetIDevID {
			update["idevid_issuer"], update["idevid_serial"] = w.IDevIDIssuer, w.IDevIDSerial
		}
		// Conditional on what expectDevice read, in case a write of another
		// replica slipped in between (PostgreSQL, read committed).
		res := tx.Model(&deviceRow{}).Where("id = ? AND ek_hash = ? AND status = ? AND macs = ? AND idevid_issuer = ? AND idevid_serial = ?",
			dev.ID, dev.EKHash, dev.Status, dev.MACs, dev.IDevIDIssuer, dev.IDevIDSerial).Updates(update)
		// The update changes no other unique column than ek_hash (gorm
		// translates the driver's error, which then names no column).
		if errors.Is(res.Error, gorm.ErrDuplicatedKey) || isEKConflict(res.Error) {
			return fmt.Errorf("%w: EK %s is bound to another device than %s (claim %s)",
				registry.ErrEKConflict, w.EKHash, dev.ID, w.ClaimID)
		}
		if res.Error != nil {
			return fmt.Errorf("sqlstore: apply release of claim %s: update device %s: %w", w.ClaimID, dev.ID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: device %s changed while claim %s was being released", registry.ErrClaimStale, dev.ID, w.ClaimID)
		}
		dev.EKHash, dev.Status, dev.UpdatedAt = w.EKHash, string(w.Status), now
		if w.ClearRekey {
			dev.RekeyRequired, dev.RekeyDeadline = false, nil
		}
		if w.ClearAK {
			dev.AKPub = nil
		}
		if w.SetIDevID {
			dev.IDevIDIssuer, dev.IDevIDSerial = w.IDevIDIssuer, w.IDevIDSerial
		}

		res = tx.Model(&quarantineRow{}).Where("id = ? AND status = ?", w.ClaimID, string(registry.QuarantineHeld)).
			Updates(map[string]any{"status": string(registry.QuarantineReleased), "released_by": w.By, "released_at": now})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: apply release of claim %s: %w", w.ClaimID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("%w: claim %s changed while being released", registry.ErrClaimNotHeld, w.ClaimID)
		}
		claim.Status, claim.ReleasedBy, claim.ReleasedAt = string(registry.QuarantineReleased), w.By, &now
		return nil
	}))
	if err != nil {
		return err
	}
	w.Claim, w.Device = claim.domain(), dev.domain()
	w.Revoked = make([]*registry.Certificate, len(revoked))
	for i := range revoked {
		w.Revoked[i] = revoked[i].domain()
	}
	return nil
}

// expectDevice reads into dev the device w releases and checks it still
// has the state w expects, else ErrClaimStale.
func (s *Store) expectDevice(tx *gorm.DB, w *registry.ReleaseWrite, dev *deviceRow) error {
	err := tx.Where("id = ?", w.DeviceID).Take(dev).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return fmt.Errorf("%w: device %s of claim %s no longer exists", registry.ErrClaimStale, w.DeviceID, w.ClaimID)
	}
	if err != nil {
		return fmt.Errorf("sqlstore: apply release of claim %s: read device %s: %w", w.ClaimID, w.DeviceID, translate(err))
	}
	switch {
	case dev.EKHash != w.ExpectEKHash:
		return fmt.Errorf("%w: device %s is bound to EK %q; the release expected EK %q",
			registry.ErrClaimStale, dev.ID, dev.EKHash, w.ExpectEKHash)
	case dev.Status != string(w.ExpectStatus):
		return fmt.Errorf("%w: device %s is %s; the release expected it %s", registry.ErrClaimStale, dev.ID, dev.Status, w.ExpectStatus)
	case dev.IDevIDIssuer != w.ExpectIDevIDIssuer || dev.IDevIDSerial != w.ExpectIDevIDSerial:
		return fmt.Errorf("%w: device %s has IDevID %q %q; the release expected %q %q", registry.ErrClaimStale, dev.ID,
			dev.IDevIDIssuer, dev.IDevIDSerial, w.ExpectIDevIDIssuer, w.ExpectIDevIDSerial)
	case w.ExpectMACs != nil && !slices.Equal(decodeList(dev.MACs), w.ExpectMACs):
		return fmt.Errorf("%w: device %s has MACs %v; the release expected %v",
			registry.ErrClaimStale, dev.ID, decodeList(dev.MACs), w.ExpectMACs)
	}
	return nil
}
