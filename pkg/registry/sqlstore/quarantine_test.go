package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestMigrateEKIndex: a database from before the quarantine table and the
// EK index opens and gets both; one whose devices share an EK (clones that
// raced past the old check) is refused with the devices named.
func TestMigrateEKIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	// Back to the old schema.
	asLegacy(t, s)
	for _, q := range []string{"DROP INDEX ux_devices_ek_hash", "DROP TABLE device_quarantine",
		"DROP INDEX ux_devices_tenant_serial_folded", "DROP TABLE device_macs",
		"ALTER TABLE devices DROP COLUMN serial_folded"} {
		if err := s.w.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC()
	ins := func(id, serial, ek string) {
		t.Helper()
		err := s.w.Exec(`INSERT INTO devices (id, tenant_id, serial, macs, status, method, ek_hash, created_at, updated_at)
			VALUES (?, 'default', ?, '[]', 'active', 'tpm', ?, ?, ?)`, id, serial, ek, now, now).Error
		if err != nil {
			t.Fatal(err)
		}
	}
	ins("dev-1", "S1", strings.Repeat("e", 64))
	ins("dev-2", "S2", "")
	ins("dev-3", "S3", "")
	s.Close()

	s = openSQLite(t, path)
	if n := s.indexCount(t, "ux_devices_ek_hash"); n != 1 {
		t.Fatalf("EK index after migration: %d", n)
	}
	asLegacy(t, s)
	s.w.Exec("DROP INDEX ux_devices_ek_hash")
	s.w.Exec("DROP INDEX ux_devices_tenant_serial_folded")
	s.w.Exec("ALTER TABLE devices DROP COLUMN serial_folded")
	ins("dev-4", "S4", strings.Repeat("e", 64))
	s.Close()

	_, err := Open(context.Background(), Options{DSN: path})
	if err == nil || !strings.Contains(err.Error(), "dev-1, dev-4") || !strings.Contains(err.Error(), strings.Repeat("e", 64)) {
		t.Fatalf("Open with two devices on one EK: %v, want an error naming dev-1 and dev-4", err)
	}
}

func (s *Store) indexCount(t *testing.T, name string) int {
	t.Helper()
	var n int
	if err := s.r.Raw("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?", name).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPostgresReplicasEKRace: two replicas on one database enroll one TPM
// EK under two serials at once, in separate transactions; the EK index lets
// exactly one commit.
func TestPostgresReplicasEKRace(t *testing.T) {
	a, b := newPostgresPair(t)
	ctx := context.Background()
	for round := range 10 {
		ek := fmt.Sprintf("%064x", round+1)
		stores := []*Store{a, b}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				serial := fmt.Sprintf("R%d-%d", round, i)
				id := "dev-" + serial
				e := &registry.Enrollment{
					Device: &registry.Device{ID: id, TenantID: registry.DefaultTenant, Serial: serial, Method: "tpm", EKHash: ek},
					Certificate: &registry.Certificate{
						Serial: fmt.Sprintf("%x%02d%d", ek[:8], round, i), Kind: registry.KindDevice, DeviceID: id,
						NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), DER: []byte{1},
					},
				}
				<-start
				errs[i] = stores[i].Enroll(ctx, e)
			}()
		}
		close(start)
		wg.Wait()
		ok, lost := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, registry.ErrEKConflict):
				lost++
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if ok != 1 || lost != 1 {
			t.Fatalf("round %d: %d won, %d lost (%v); want one each", round, ok, lost, errs)
		}
	}
}

// TestMigrateQuarantineRelease: a quarantine table from before release
// (no conflict_ek_hash, released_by, released_at) gets the columns, and
// its held claims read back with them empty.
func TestMigrateQuarantineRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	asLegacy(t, s)
	for _, q := range []string{
		"ALTER TABLE device_quarantine DROP COLUMN conflict_ek_hash",
		"ALTER TABLE device_quarantine DROP COLUMN released_by",
		"ALTER TABLE device_quarantine DROP COLUMN released_at",
		`INSERT INTO device_quarantine (id, tenant_id, serial, macs, ek_hash, reason, conflict_device_id, source_addr,
			first_seen, last_seen, attempts, status, dismissed_by)
			VALUES ('q-old', 'default', 'S1', '[]', 'ee', 'serial-has-other-ek', 'dev-1', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, 'held', '')`,
	} {
		if err := s.w.Exec(q).Error; err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openSQLite(t, path)
	defer s.Close()
	q, err := s.GetQuarantine(context.Background(), "q-old")
	if err != nil || q.Status != registry.QuarantineHeld || q.ConflictEKHash != "" || q.ReleasedBy != "" || q.ReleasedAt != nil {
		t.Fatalf("old claim after migration = %+v, %v", q, err)
	}
}
