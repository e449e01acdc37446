package sqlstore

import (
	"fmt"

	"gorm.io/gorm"
)

// The single-column indexes of older registries that the list indexes
// (models.go) make redundant: each is a prefix of one of them, and one more
// b-tree to write per enrollment.
var redundantListIndexes = []string{"idx_certificates_not_after", "idx_certificates_status"}

// macHistoryChunk is how many devices migrateListIndexes reads at a time.
const macHistoryChunk = 2000

// migrateListIndexes drops the indexes the list indexes replace and, for a
// registry made before device_mac_history existed (the table is empty while
// some device names a MAC), fills it from every device's MACs in one
// transaction, a chunk of devices at a time. It is idempotent: a crash
// before the commit leaves the table empty and the next Open fills it.
func migrateListIndexes(db *gorm.DB) error {
	for _, name := range redundantListIndexes {
		if db.Migrator().HasIndex(&certificateRow{}, name) {
			if err := db.Migrator().DropIndex(&certificateRow{}, name); err != nil {
				return fmt.Errorf("sqlstore: migrate: drop index %s: %w", name, err)
			}
		}
	}
	var n int64
	if err := db.Model(&deviceMACHistoryRow{}).Limit(1).Count(&n).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: read device MAC history: %w", translate(err))
	}
	if n > 0 {
		return nil
	}
	var any int64
	if err := db.Model(&deviceRow{}).Where("macs NOT IN ?", []string{"", "[]", "null"}).Limit(1).Count(&any).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: look for devices with MACs: %w", translate(err))
	}
	if any == 0 {
		return nil
	}
	err := db.Transaction(func(tx *gorm.DB) error {
		after := ""
		for {
			var devs []deviceRow
			if err := tx.Select("id", "macs").Where("id > ?", after).Order("id").Limit(macHistoryChunk).Find(&devs).Error; err != nil {
				return err
			}
			if len(devs) == 0 {
				return nil
			}
			var rows []deviceMACHistoryRow
			for _, d := range devs {
				for _, m := range decodeList(d.MACs) {
					rows = append(rows, deviceMACHistoryRow{MAC: m, DeviceID: d.ID})
				}
			}
			if len(rows) > 0 {
				if err := tx.CreateInBatches(rows, 500).Error; err != nil {
					return err
				}
			}
			after = devs[len(devs)-1].ID
		}
	})
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: fill device MAC history: %w", translate(err))
	}
	return nil
}

// sqlRecordMAC adds a MAC a device names to device_mac_history.
const sqlRecordMAC = `INSERT INTO device_mac_history (mac, device_id) VALUES (?, ?) ON CONFLICT (mac, device_id) DO NOTHING`

// recordMACs keeps device_mac_history: every MAC a device has named.
func (s *Store) recordMACs(b *batch, deviceID string, macs []string) error {
	for _, m := range macs {
		if _, err := b.exec(sqlRecordMAC, m, deviceID); err != nil {
			return fmt.Errorf("sqlstore: enroll: record MAC %s of %s: %w", m, deviceID, s.translateSQL(err))
		}
	}
	return nil
}
