package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/pressly/goose/v3"
)

// macHistoryChunk is how many devices the backfill reads at a time.
const macHistoryChunk = 2000

// migrateMACHistory is migration 7 (Go, one transaction): it fills
// device_mac_history, made empty by migration 6, from every device's MACs,
// a chunk of devices at a time.
func migrateMACHistory(driver string) *goose.Migration {
	rebind := (&Store{driver: driver}).rebind
	read := rebind("SELECT id, macs FROM devices WHERE id > ? ORDER BY id LIMIT " + strconv.Itoa(macHistoryChunk))
	insert := rebind(sqlRecordMAC)
	return goose.NewGoMigration(7, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
		after := ""
		for {
			rows, err := tx.QueryContext(ctx, read, after)
			if err != nil {
				return fmt.Errorf("fill device MAC history: %w", err)
			}
			type dev struct{ id, macs string }
			var devs []dev
			for rows.Next() {
				var d dev
				if err := rows.Scan(&d.id, &d.macs); err != nil {
					rows.Close()
					return fmt.Errorf("fill device MAC history: %w", err)
				}
				devs = append(devs, d)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("fill device MAC history: %w", err)
			}
			if len(devs) == 0 {
				return nil
			}
			for _, d := range devs {
				for _, m := range decodeList(d.macs) {
					if _, err := tx.ExecContext(ctx, insert, m, d.id); err != nil {
						return fmt.Errorf("fill device MAC history: %s of %s: %w", m, d.id, err)
					}
				}
			}
			after = devs[len(devs)-1].id
		}
	}}, nil)
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
