package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"devpki/pkg/registry"
)

// BenchmarkEnrollScale measures what a durable enrollment costs the store
// in a seeded registry: process CPU and page faults per enrollment, 32
// callers per GOMAXPROCS so that the group commit batches them as it does
// under load. Each enrollment is shaped as the server makes one — a
// version 7 (time-ordered) UUID device id as provision.NewUUID makes, a
// random 20-byte certificate serial, a random device serial and MAC (the
// worst case: a fleet enrolling in no order), an audit event.
// It adds b.N devices to the registry (a seeded registry only: test/seed):
//
//	DEVPKI_BENCH_REGISTRY=DIR/registry.db go test -run '^$' -bench BenchmarkEnrollScale -benchtime 3000x ./pkg/registry/sqlstore/
//
// Run it against registries of different sizes in one sitting and compare
// cpu-µs/op.
func BenchmarkEnrollScale(b *testing.B) {
	dsn := os.Getenv("DEVPKI_BENCH_REGISTRY")
	if dsn == "" {
		b.Skip("DEVPKI_BENCH_REGISTRY (a seeded SQLite registry file) not set")
	}
	ctx := context.Background()
	s, err := Open(ctx, Options{DSN: dsn})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	sum := sha256.Sum256(fmt.Appendf(nil, "bench-scale-token-%d", time.Now().UnixNano()))
	tok := &registry.Token{ID: fmt.Sprintf("tok-%x", sum[:8]), Hash: sum[:], TenantID: registry.DefaultTenant, UsesLeft: 1 << 30,
		ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.CreateToken(ctx, tok, nil); err != nil {
		b.Fatal(err)
	}
	run := make([]byte, 4)
	rand.Read(run)
	der := make([]byte, 700)
	b.SetParallelism(32)
	cpu0, flt0 := processCPU(), minorFaults()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := uuid.Must(uuid.NewV7()).String()
			serial := make([]byte, 20)
			rand.Read(serial)
			mac := make([]byte, 4)
			rand.Read(mac)
			e := &registry.Enrollment{
				TokenHash: sum[:],
				Device: &registry.Device{ID: id, TenantID: registry.DefaultTenant, Method: "token",
					Serial: fmt.Sprintf("BENCH-%x-%x", run, serial[:6]),
					MACs:   []string{fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3])}},
				Certificate: &registry.Certificate{Serial: fmt.Sprintf("%x", serial), Subject: "CN=" + id, DER: der,
					NotBefore: time.Now(), NotAfter: time.Now().Add(30 * 24 * time.Hour), KeySHA256: serial},
				Audit: &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:" + id, Action: "enroll",
					Target: id, Result: registry.ResultOK},
			}
			if err := s.Enroll(ctx, e); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	b.ReportMetric(float64(minorFaults()-flt0)/float64(b.N), "faults/op")
	if batches, ops := s.BatchStats(); batches > 0 {
		b.ReportMetric(float64(ops)/float64(batches), "ops/batch")
	}
}

// minorFaults is the process's minor page faults so far.
func minorFaults() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}
