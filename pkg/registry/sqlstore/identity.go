package sqlstore

import (
	"fmt"
	"strings"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// Canonical identities: a serial is unique per tenant on its fold
// (registry.FoldSerial), a MAC belongs to at most one active device per
// tenant (device_macs).
const (
	sqlIndexSerialFolded = `CREATE UNIQUE INDEX IF NOT EXISTS ux_devices_tenant_serial_folded
		ON devices (tenant_id, serial_folded)`
	// The exact-serial index of older registries: implied by the folded
	// one, and one more b-tree to write per enrollment.
	sqlDropIndexSerial = `DROP INDEX IF EXISTS ux_devices_tenant_serial`
	sqlDuplicateFolded = `SELECT tenant_id, serial_folded FROM devices GROUP BY tenant_id, serial_folded
		HAVING COUNT(*) > 1 ORDER BY tenant_id, serial_folded LIMIT 10`
)

// migrateIdentity fills serial_folded and device_macs for devices written
// before they existed, then makes the folded serial unique. A registry that
// holds two devices of one tenant whose serials differ only in case, or two
// active devices of one tenant sharing a MAC, cannot get these guarantees:
// Open then fails and names them, rather than start without them. An
// operator revokes or renames one of each pair and opens again.
func migrateIdentity(db *gorm.DB) error {
	var rows []deviceRow
	err := db.Select("id", "tenant_id", "serial", "macs", "status").Where("serial_folded = ''").Find(&rows).Error
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: read devices without a folded serial: %w", err)
	}
	if len(rows) > 0 {
		err := db.Transaction(func(tx *gorm.DB) error {
			for _, r := range rows {
				if err := tx.Model(&deviceRow{}).Where("id = ?", r.ID).
					Update("serial_folded", registry.FoldSerial(r.Serial)).Error; err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("sqlstore: migrate: fold serials: %w", err)
		}
	}
	var dups []struct {
		TenantID     string
		SerialFolded string
	}
	if err := db.Raw(sqlDuplicateFolded).Scan(&dups).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: look for serials that differ only in case: %w", err)
	}
	if len(dups) > 0 {
		var b strings.Builder
		for _, d := range dups {
			var devs []deviceRow
			if err := db.Select("id", "serial").Where("tenant_id = ? AND serial_folded = ?", d.TenantID, d.SerialFolded).
				Order("created_at, id").Find(&devs).Error; err != nil {
				return fmt.Errorf("sqlstore: migrate: devices of serial %q: %w", d.SerialFolded, err)
			}
			fmt.Fprintf(&b, "; tenant %s:", d.TenantID)
			for _, dv := range devs {
				fmt.Fprintf(&b, " %s (serial %q)", dv.ID, dv.Serial)
			}
		}
		return fmt.Errorf("sqlstore: migrate: cannot make serials unique regardless of case: some tenants hold several "+
			"devices whose serials differ only in case (enrolled before serials were compared case-insensitively; "+
			"revoke the duplicates, change their serial and start again)%s", b.String())
	}
	if err := db.Exec(sqlIndexSerialFolded).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate devices folded serial index: %w", err)
	}
	if err := db.Exec(sqlDropIndexSerial).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: drop the exact-serial index: %w", err)
	}
	return migrateMACs(db)
}

// migrateMACs fills device_macs from the active devices when it is empty
// and devices exist (a registry made before it existed).
func migrateMACs(db *gorm.DB) error {
	var n int64
	if err := db.Model(&deviceMACRow{}).Limit(1).Count(&n).Error; err != nil || n > 0 {
		if err != nil {
			return fmt.Errorf("sqlstore: migrate: read device MACs: %w", err)
		}
		return nil
	}
	var devs []deviceRow
	if err := db.Select("id", "tenant_id", "macs").Where("status = ?", string(registry.DeviceActive)).
		Order("created_at, id").Find(&devs).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: read active devices: %w", err)
	}
	type key struct{ tenant, mac string }
	owner := make(map[key]string)
	var clash []string
	var macs []deviceMACRow
	for _, d := range devs {
		for _, m := range decodeList(d.MACs) {
			k := key{d.TenantID, m}
			if other, ok := owner[k]; ok {
				if other != d.ID {
					clash = append(clash, fmt.Sprintf("tenant %s MAC %s: devices %s, %s", d.TenantID, m, other, d.ID))
				}
				continue
			}
			owner[k] = d.ID
			macs = append(macs, deviceMACRow{TenantID: d.TenantID, MAC: m, DeviceID: d.ID})
		}
	}
	if len(clash) > 0 {
		if len(clash) > 10 {
			clash = append(clash[:10], "...")
		}
		return fmt.Errorf("sqlstore: migrate: cannot make MACs unique among active devices: some active devices of one "+
			"tenant share a MAC (enrolled before this check existed; revoke the clones and start again); %s",
			strings.Join(clash, "; "))
	}
	if len(macs) == 0 {
		return nil
	}
	if err := db.CreateInBatches(macs, 500).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: record device MACs: %w", translate(err))
	}
	return nil
}
