package sqlstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// BenchmarkExpiryQueries times the expiry queries on a registry of N
// devices (DEVPKI_BENCH_DEVICES, default 100,000) in 10 tenants, each with
// an active 30-day certificate issued on a random day of the last 30 and
// a superseded one; 1 % are overdue (not seen for 25 days). Seeding is
// not timed.
//
//	DEVPKI_BENCH_DEVICES=1000000 go test -run '^$' -bench ExpiryQueries -benchtime 5x ./pkg/registry/sqlstore
func BenchmarkExpiryQueries(b *testing.B) {
	n := 100_000
	if v := os.Getenv("DEVPKI_BENCH_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("DEVPKI_BENCH_DEVICES=%q", v)
		}
	}
	ctx := context.Background()
	s := openSQLite(b, filepath.Join(b.TempDir(), "registry.db"))
	defer s.Close()
	now := time.Now().UTC()
	day := 24 * time.Hour
	start := time.Now()
	if err := seedExpiry(s, n, now); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d devices, %d certificates in %s", n, 2*n, time.Since(start).Round(time.Second))
	b.Run("CountExpiring30d", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.CountExpiring(ctx, now, now.Add(30*day)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CountExpiring7d", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.CountExpiring(ctx, now, now.Add(7*day)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Forecast30dAllTenants", func(b *testing.B) {
		for b.Loop() {
			fc, err := provision.ExpiryForecast(ctx, s, provision.Actor{Super: true}, "", 30*day, 100, now)
			if err != nil || fc.OverdueTotal == 0 {
				b.Fatal(fc, err)
			}
		}
	})
	b.Run("Forecast30dOneTenant", func(b *testing.B) {
		for b.Loop() {
			if _, err := provision.ExpiryForecast(ctx, s, provision.Actor{Super: true}, "t3", 30*day, 100, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// seedExpiry writes n devices with their certificates in one transaction.
func seedExpiry(s *Store, n int, now time.Time) error {
	tx, err := s.wsql.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for t := range 10 {
		if _, err := tx.Exec(`INSERT INTO tenants (id, name, require_tpm, methods, key_types, cert_lifetime_seconds, created_at)
			VALUES (?, ?, false, '', '', 0, ?)`, fmt.Sprintf("t%d", t), fmt.Sprintf("tenant-%d", t), now); err != nil {
			return err
		}
	}
	dev, err := tx.Prepare(`INSERT INTO devices (id, tenant_id, serial, serial_folded, macs, status, method, ek_hash, created_at, updated_at)
		VALUES (?, ?, ?, ?, '[]', 'active', 'token', '', ?, ?)`)
	if err != nil {
		return err
	}
	cert, err := tx.Prepare(`INSERT INTO certificates (serial, kind, device_id, tenant_id, subject, sans, not_before, not_after, der, status,
		revocation_reason, replaces_serial, created_at) VALUES (?, 'device', ?, ?, '', '[]', ?, ?, x'30', ?, 0, '', ?)`)
	if err != nil {
		return err
	}
	day := 24 * time.Hour
	for i := range n {
		id, tenant := fmt.Sprintf("d%08d", i), fmt.Sprintf("t%d", i%10)
		// Issued on one of the last 20 days (renewed at two thirds), or
		// 25 days ago for 1 % (overdue).
		issued := now.Add(-time.Duration(i%20)*day - time.Duration(i%3600)*time.Second)
		if i%100 == 0 {
			issued = now.Add(-25 * day)
		}
		if _, err := dev.Exec(id, tenant, id, id, issued, issued); err != nil {
			return err
		}
		if _, err := cert.Exec(fmt.Sprintf("a%039x", i), id, tenant, issued.Add(-30*day), issued, "superseded", issued.Add(-30*day)); err != nil {
			return err
		}
		if _, err := cert.Exec(fmt.Sprintf("b%039x", i), id, tenant, issued, issued.Add(30*day), string(registry.CertActive), issued); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	_, err = s.wsql.Exec("ANALYZE")
	return err
}
