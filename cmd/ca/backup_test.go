package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreRelocatesAbsolutePaths: files ca.yaml names by absolute path
// (the registry, a TPM EK root) are restored under DIR/restored with --dir,
// and the restored ca.yaml names them there; the restored registry verifies
// and counts as the backup did. In place (--config), they go back where
// they were.
func TestRestoreRelocatesAbsolutePaths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "ca")
	if err := run(ctx, []string{"init", "--dir", dir, "--dev"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// Move the registry out of the CA directory and trust an EK root by
	// absolute path, as a packaged install does.
	state := filepath.Join(base, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(state, "registry.db")
	if err := os.Rename(filepath.Join(dir, fileDB), db); err != nil {
		t.Fatal(err)
	}
	ekRoot := filepath.Join(base, "ek-root.pem")
	root, err := os.ReadFile(filepath.Join(dir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ekRoot, root, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, fileConfig)
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DB.DSN, cfg.TPM.EKRoots = db, []string{ekRoot}
	if err := writeConfig(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}

	backup := filepath.Join(base, "b.tgz")
	var out bytes.Buffer
	if err := run(ctx, []string{"backup", "--config", cfgPath, "--out", backup}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	m, err := readBackup(backup, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		if f.Role == "ca.yaml" || f.Role == "registry" || strings.HasPrefix(f.Role, "tpm.") {
			continue
		}
		if strings.Contains(f.Path, "password") {
			t.Errorf("backup holds %s", f.Path)
		}
	}

	fresh := filepath.Join(base, "fresh")
	if err := run(ctx, []string{"restore", "--from", backup, "--dir", fresh}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfig(filepath.Join(fresh, fileConfig))
	if err != nil {
		t.Fatal(err)
	}
	if got.DB.DSN != filepath.Join("restored", "registry-registry.db") || len(got.TPM.EKRoots) != 1 ||
		got.TPM.EKRoots[0] != filepath.Join("restored", "tpm.ek_roots.0-ek-root.pem") {
		t.Fatalf("restored ca.yaml: db.dsn %q, tpm.ek_roots %q", got.DB.DSN, got.TPM.EKRoots)
	}
	if b, err := os.ReadFile(got.Path(got.TPM.EKRoots[0])); err != nil || !bytes.Equal(b, root) {
		t.Errorf("restored EK root: %v", err)
	}
	counts, err := countLive(ctx, "sqlite", got.DSN())
	if err != nil || counts != m.Registry {
		t.Errorf("restored registry counts %+v (%v), backup's %+v", counts, err, m.Registry)
	}
	if err := run(ctx, []string{"audit", "verify", "--config", filepath.Join(fresh, fileConfig)}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Errorf("audit verify on the restored CA: %v", err)
	}

	// In place: the registry goes back to its absolute path, only with
	// --force while it exists.
	err = run(ctx, []string{"restore", "--from", backup, "--config", cfgPath}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), db) {
		t.Fatalf("restore over an existing registry without --force: %v, want a refusal naming %s", err, db)
	}
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"restore", "--from", backup, "--config", cfgPath, "--force"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(db); err != nil {
		t.Errorf("in-place restore: registry not back at %s: %v", db, err)
	}
}

// TestRestoreFlags: the flag mistakes are usage errors that write nothing.
func TestRestoreFlags(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "x")
	for _, args := range [][]string{
		{"restore", "--dir", dir},
		{"restore", "--from", "b.tgz"},
		{"restore", "--from", "b.tgz", "--dir", dir, "--config", "ca.yaml"},
		{"restore", "--from", "b.tgz", "--dir", dir, "--owner", "no-such-user-devpki"},
		{"backup", "--config", "ca.yaml"},
	} {
		err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
		if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
			t.Errorf("%v: wrote %s", args, dir)
		}
	}
}

// TestBackupPostgresWithoutPgDump: a PostgreSQL backup without pg_dump in
// PATH says what to install, before it touches the database.
func TestBackupPostgresWithoutPgDump(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := backupPostgres(context.Background(), "host=/nonexistent dbname=x", filepath.Join(t.TempDir(), "d"), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "pg_dump not found") || !strings.Contains(err.Error(), "postgresql-client") {
		t.Errorf("backup without pg_dump: %v", err)
	}
}
