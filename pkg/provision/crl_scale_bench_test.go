package provision_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scaleEnv reads a positive count from the environment, or def.
func scaleEnv(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}

// seedCRLRegistry makes a SQLite registry holding total client
// certificates, the first revoked of them revoked, spread over parts CRL
// partitions as the issuer spreads them (serial mod parts), in one bulk
// transaction (the store's own schema, made by sqlstore.Open). It returns
// the path and the serials of the active certificates.
func seedCRLRegistry(b *testing.B, total, revoked, parts int) (string, []string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "r.db")
	st, err := sqlstore.Open(context.Background(), sqlstore.Options{DSN: path})
	if err != nil {
		b.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous=OFF")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	ins, err := tx.Prepare(`INSERT INTO certificates (serial, kind, tenant_id, subject, sans, not_before, not_after, der, status,
		revoked_at, revocation_reason, replaces_serial, crl_partition, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	at := now.Add(-time.Hour)
	active := make([]string, 0, total-revoked)
	var buf [20]byte
	start := time.Now()
	for i := range total {
		rand.Read(buf[:])
		buf[0] = buf[0]&0x7f | 0x01
		sn := new(big.Int).SetBytes(buf[:])
		serial := pki.SerialHex(sn)
		status, revAt := string(registry.CertActive), any(nil)
		if i < revoked {
			status, revAt = string(registry.CertRevoked), at
		} else {
			active = append(active, serial)
		}
		if _, err := ins.Exec(serial, string(registry.KindClient), registry.DefaultTenant, "CN=x", "[]", now.Add(-time.Hour),
			now.Add(720*time.Hour), []byte{1}, status, revAt, i%6, "", pki.CRLPartition(sn, parts), now); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	// Into the database file, so that the measurement does not pay for
	// checkpointing the seed.
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d certificates (%d revoked, %d partitions) in %s", total, revoked, parts, time.Since(start).Round(time.Millisecond))
	return path, active
}

// BenchmarkFullCRLScale measures building the full CRL (read every
// revoked, unexpired certificate, take a number, sign) on a registry of
// DEVPKI_CRL_CERTS certificates (default 100,000) of which
// DEVPKI_CRL_REVOKED are revoked (default a tenth):
//
//	DEVPKI_CRL_CERTS=1000000 DEVPKI_CRL_REVOKED=100000 go test -run '^$' -bench FullCRLScale -benchtime 3x ./pkg/provision/
func BenchmarkFullCRLScale(b *testing.B) {
	total := scaleEnv(b, "DEVPKI_CRL_CERTS", 100_000)
	revoked := scaleEnv(b, "DEVPKI_CRL_REVOKED", total/10)
	path, _ := seedCRLRegistry(b, total, revoked, pki.DefaultCRLPartitions)
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Options{DSN: path})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: st, CRLSigner: pkitest.NewCA(b).CA, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	var crl *provision.CRL
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		if crl, err = rev.RebuildCRL(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// CPU time of the process per build: what a noisy shared host does
	// not inflate as it does wall time.
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
	if crl.Entries != revoked {
		b.Fatalf("CRL has %d entries, want %d", crl.Entries, revoked)
	}
	b.ReportMetric(float64(len(crl.DER)), "bytes/crl")
}

// BenchmarkRevokeAckScale measures what an admin waits for: one certificate
// revoked through Revocation (durable commit with its audit event, then its
// partition CRL rebuilt from the registry and signed) on a registry of
// DEVPKI_CRL_CERTS certificates (default 100,000), DEVPKI_CRL_REVOKED
// revoked (default a tenth), in DEVPKI_CRL_PARTITIONS partitions (default
// pki.DefaultCRLPartitions); it reports p50 and p99 of
// the acknowledgement latency:
//
//	DEVPKI_CRL_CERTS=1000000 DEVPKI_CRL_REVOKED=100000 go test -run '^$' -bench RevokeAckScale -benchtime 500x ./pkg/provision/
func BenchmarkRevokeAckScale(b *testing.B) {
	total := scaleEnv(b, "DEVPKI_CRL_CERTS", 100_000)
	revoked := scaleEnv(b, "DEVPKI_CRL_REVOKED", total/10)
	parts := scaleEnv(b, "DEVPKI_CRL_PARTITIONS", pki.DefaultCRLPartitions)
	path, active := seedCRLRegistry(b, total, revoked, parts)
	ctx := context.Background()
	st, err := sqlstore.Open(ctx, sqlstore.Options{DSN: path})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rev, err := provision.NewRevocation(provision.RevocationConfig{
		Store: st, CRLSigner: pkitest.NewCA(b).CA, CRLURL: "http://ca.test/crl",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		b.Fatal(err)
	}
	admin := provision.Actor{Kind: provision.ActorAdmin, ID: "bench", TenantID: registry.DefaultTenant}
	var lat []time.Duration
	i := 0
	cpu0 := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		if i >= len(active) {
			b.Fatal("ran out of active certificates")
		}
		t0 := time.Now()
		res, err := rev.RevokeCertificate(ctx, admin, active[i], registry.ReasonKeyCompromise)
		if err != nil || res.CRLNumber == 0 {
			b.Fatalf("revoke: %+v, %v", res, err)
		}
		lat = append(lat, time.Since(t0))
		i++
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.Logf("%d revocations: p50 %.1f ms, p99 %.1f ms, max %.1f ms", len(lat), q(0.50), q(0.99), q(1))
}
