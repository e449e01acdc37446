package sqlstore

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrateAKPub: a SQLite database from before devices.ak_pub opens, gains
// the column, and its devices read back with no AK.
func TestMigrateAKPub(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	asLegacy(t, s)
	if err := s.w.Exec("ALTER TABLE devices DROP COLUMN ak_pub").Error; err != nil {
		t.Fatal(err)
	}
	insertOldDevice(t, s)
	s.Close()

	s = openSQLite(t, path)
	defer s.Close()
	var n int
	if err := s.r.Raw("SELECT COUNT(*) FROM pragma_table_info('devices') WHERE name = 'ak_pub'").Scan(&n).Error; err != nil || n != 1 {
		t.Fatalf("ak_pub columns after migration: %d, %v", n, err)
	}
	checkAKPubMigrated(t, s)
}

// TestPostgresMigrateAKPub is TestMigrateAKPub on PostgreSQL.
func TestPostgresMigrateAKPub(t *testing.T) {
	s := newPostgres(t)
	if strings.Contains(pgDSN(t), "://") {
		t.Skip("migration test needs a key=value DSN")
	}
	var schema string
	if err := s.r.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
		t.Fatal(err)
	}
	asLegacy(t, s)
	if err := s.w.Exec("ALTER TABLE devices DROP COLUMN ak_pub").Error; err != nil {
		t.Fatal(err)
	}
	insertOldDevice(t, s)
	s.Close()

	s, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: pgDSN(t) + " search_path=" + schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkAKPubMigrated(t, s)
}

// insertOldDevice inserts a TPM device as the schema before ak_pub did.
func insertOldDevice(t *testing.T, s *Store) {
	t.Helper()
	now := time.Now().UTC()
	err := s.w.Exec(`INSERT INTO devices (id, tenant_id, serial, macs, status, method, ek_hash, created_at, updated_at)
		VALUES ('dev-old', 'default', 'OLD-1', '[]', 'active', 'tpm', ?, ?, ?)`, strings.Repeat("9", 64), now, now).Error
	if err != nil {
		t.Fatal(err)
	}
}

// checkAKPubMigrated: the old device has no AK, and the column takes one.
func checkAKPubMigrated(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	d, err := s.GetDevice(ctx, "dev-old")
	if err != nil || d.AKPub != nil || d.Method != "tpm" {
		t.Fatalf("old device after migration = %+v, %v; want Method tpm and no AKPub", d, err)
	}
	ak := []byte{0x30, 0x00, 0x01}
	if err := s.w.Exec("UPDATE devices SET ak_pub = ? WHERE id = 'dev-old'", ak).Error; err != nil {
		t.Fatal(err)
	}
	if d, err := s.GetDevice(ctx, "dev-old"); err != nil || !bytes.Equal(d.AKPub, ak) {
		t.Fatalf("AKPub = %x, %v; want %x", d.AKPub, err, ak)
	}
}
