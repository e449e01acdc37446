package sqlstore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// oldSchemaDB opens a registry at path, turns it back into one from before
// canonical identities (no folded serial, no device_macs, no MAC history), inserts devices
// (id, serial, macs JSON, status) and closes it.
func oldSchemaDB(t *testing.T, path string, devs ...[4]string) {
	t.Helper()
	s := openSQLite(t, path)
	asLegacy(t, s)
	for _, q := range []string{"DROP INDEX ux_devices_tenant_serial_folded", "DROP TABLE device_macs",
		"ALTER TABLE devices DROP COLUMN serial_folded"} {
		if err := s.w.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	for _, d := range devs {
		err := s.w.Exec(`INSERT INTO devices (id, tenant_id, serial, macs, status, method, ek_hash, created_at, updated_at)
			VALUES (?, 'default', ?, ?, ?, 'token', '', ?, ?)`, d[0], d[1], d[2], d[3], now, now).Error
		if err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
}

// TestMigrateIdentity: a registry from before canonical identities gets
// its serials folded and its active devices' MACs recorded; one holding two
// serials that differ only in case, or two active devices sharing a MAC,
// is refused at Open with the devices named.
func TestMigrateIdentity(t *testing.T) {
	ctx := context.Background()
	t.Run("clean", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "registry.db")
		oldSchemaDB(t, path,
			[4]string{"dev-1", "DEV-0001", `["020000000001"]`, "active"},
			[4]string{"dev-2", "DEV-0002", `["020000000001"]`, "revoked"},
		)
		s := openSQLite(t, path)
		d, err := s.GetDeviceBySerial(ctx, registry.DefaultTenant, "dev-0001")
		if err != nil || d.ID != "dev-1" || d.Serial != "DEV-0001" {
			t.Fatalf("GetDeviceBySerial(dev-0001) = %+v, %v", d, err)
		}
		var macs []deviceMACRow
		if err := s.r.Find(&macs).Error; err != nil || len(macs) != 1 || macs[0].DeviceID != "dev-1" {
			t.Fatalf("device_macs = %+v, %v; want the active device's MAC only", macs, err)
		}
		if n := s.indexCount(t, "ux_devices_tenant_serial_folded"); n != 1 {
			t.Fatalf("folded serial index: %d", n)
		}
		// The MAC history is filled from every device, revoked ones too.
		got, err := s.ListDevices(ctx, registry.DeviceFilter{MAC: "020000000001"})
		if err != nil || len(got) != 2 || got[0].ID != "dev-1" || got[1].ID != "dev-2" {
			t.Fatalf("ListDevices(MAC) = %+v, %v; want dev-1 and dev-2", got, err)
		}
	})
	t.Run("serials differing in case", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "registry.db")
		oldSchemaDB(t, path,
			[4]string{"dev-a", "DEV-0001", `["020000000001"]`, "active"},
			[4]string{"dev-b", "dev-0001", `["020000000002"]`, "active"},
		)
		_, err := Open(ctx, Options{DSN: path})
		if err == nil || !strings.Contains(err.Error(), "dev-a") || !strings.Contains(err.Error(), "dev-b") ||
			!strings.Contains(err.Error(), "differ only in case") {
			t.Fatalf("Open = %v, want a refusal naming dev-a and dev-b", err)
		}
	})
	t.Run("active devices sharing a MAC", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "registry.db")
		oldSchemaDB(t, path,
			[4]string{"dev-a", "SN-A", `["020000000001"]`, "active"},
			[4]string{"dev-b", "SN-B", `["020000000001"]`, "active"},
		)
		_, err := Open(ctx, Options{DSN: path})
		if err == nil || !strings.Contains(err.Error(), "dev-a, dev-b") || !strings.Contains(err.Error(), "020000000001") {
			t.Fatalf("Open = %v, want a refusal naming dev-a, dev-b and the MAC", err)
		}
	})
}
