package sqlstore

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestMigrateTPMRootKind: a SQLite registry from before tpm_roots.kind
// opens, and the manufacturer roots it held read back as roots.
func TestMigrateTPMRootKind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	asLegacy(t, s)
	if err := s.w.Exec("ALTER TABLE tpm_roots DROP COLUMN kind").Error; err != nil {
		t.Fatal(err)
	}
	insertOldTPMRoot(t, s)
	s.Close()

	s = openSQLite(t, path)
	defer s.Close()
	checkTPMRootKindMigrated(t, s)
}

// TestPostgresMigrateTPMRootKind is TestMigrateTPMRootKind on PostgreSQL.
func TestPostgresMigrateTPMRootKind(t *testing.T) {
	s := newPostgres(t)
	if strings.Contains(pgDSN(t), "://") {
		t.Skip("migration test needs a key=value DSN")
	}
	var schema string
	if err := s.r.Raw("SELECT current_schema()").Scan(&schema).Error; err != nil {
		t.Fatal(err)
	}
	asLegacy(t, s)
	if err := s.w.Exec("ALTER TABLE tpm_roots DROP COLUMN kind").Error; err != nil {
		t.Fatal(err)
	}
	insertOldTPMRoot(t, s)
	s.Close()

	s, err := Open(context.Background(), Options{Driver: DriverPostgres, DSN: pgDSN(t) + " search_path=" + schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkTPMRootKindMigrated(t, s)
}

func insertOldTPMRoot(t *testing.T, s *Store) {
	t.Helper()
	err := s.w.Exec(`INSERT INTO tpm_roots (fingerprint, der, subject, added_by, created_at) VALUES (?, ?, 'CN=Old Maker Root', 'admin:old', ?)`,
		strings.Repeat("ab", 32), []byte{0x30, 0x00}, time.Now().UTC()).Error
	if err != nil {
		t.Fatal(err)
	}
}

func checkTPMRootKindMigrated(t *testing.T, s *Store) {
	t.Helper()
	got, err := s.ListTPMRoots(context.Background())
	if err != nil || len(got) != 1 || got[0].Subject != "CN=Old Maker Root" || got[0].Kind != registry.TPMRootCA {
		t.Fatalf("TPM roots after migration: %+v, %v; want the old root, kind root", got, err)
	}
}
