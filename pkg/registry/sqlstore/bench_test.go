package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// BenchmarkEnroll measures durable enrollments per second on a SQLite file
// (WAL, synchronous=FULL). Each parallel goroutine has its own multi-use
// token; every enrollment is a new serial. The sub-benchmarks compare group
// commit (MaxBatch default) with one transaction per enrollment (MaxBatch 1)
// at the same number of concurrent callers.
func BenchmarkEnroll(b *testing.B) {
	for _, bc := range []struct {
		name        string
		maxBatch    int
		parallelism int // goroutines per GOMAXPROCS
	}{
		{"grouped/callers=1xP", 0, 1},
		{"grouped/callers=32xP", 0, 32},
		{"unbatched/callers=32xP", 1, 32},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(context.Background(), Options{DSN: filepath.Join(b.TempDir(), "bench.db"), MaxBatch: bc.maxBatch})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var worker, serial atomic.Int64
			b.SetParallelism(bc.parallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				sum := sha256.Sum256(fmt.Appendf(nil, "bench-token-%d", worker.Add(1)))
				tok := &registry.Token{ID: fmt.Sprintf("tok-%x", sum[:8]), Hash: sum[:], TenantID: registry.DefaultTenant, UsesLeft: 1 << 30,
					ExpiresAt: time.Now().Add(time.Hour)}
				if err := s.CreateToken(ctx, tok, nil); err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					if err := s.Enroll(ctx, enrollment(fmt.Sprintf("SN-%09d", serial.Add(1)), sum[:])); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "enrollments/s")
			if batches, ops := s.BatchStats(); batches > 0 {
				b.ReportMetric(float64(ops)/float64(batches), "ops/batch")
			}
		})
	}
}

// BenchmarkRenew measures durable renewals (new certificate, old one
// superseded, device touched, audit event) on a SQLite file with group
// commit, 32 callers per GOMAXPROCS, and reports the process CPU time per
// renewal (cpu-µs/op): what the registry costs a renewal beyond its wall
// time, which fsync dominates.
func BenchmarkRenew(b *testing.B) {
	s, err := Open(context.Background(), Options{DSN: filepath.Join(b.TempDir(), "bench.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	sum := sha256.Sum256([]byte("bench-renew-token"))
	tok := &registry.Token{ID: "tok-renew", Hash: sum[:], TenantID: registry.DefaultTenant, UsesLeft: 1 << 30,
		ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.CreateToken(ctx, tok, nil); err != nil {
		b.Fatal(err)
	}
	// Each renewal supersedes the device's current certificate: one chain
	// of certificates per device, devices taken round robin.
	const devices = 2000
	current := make([]atomic.Value, devices)
	for i := range devices {
		e := enrollment(fmt.Sprintf("SN-R%06d", i), sum[:])
		if err := s.Enroll(ctx, e); err != nil {
			b.Fatal(err)
		}
		current[i].Store(e.Certificate.Serial)
	}
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(next.Add(1)) % devices
			old := current[i].Load().(string)
			// Serials as the CA makes them: 20 random bytes, so that each
			// renewal's index entries land where a real one's do.
			newSerial := randomSerial()
			r := &registry.Renewal{OldSerial: old, SameKey: true,
				// The device and tenant, as provision names them.
				Certificate: &registry.Certificate{Serial: newSerial, DeviceID: fmt.Sprintf("dev-SN-R%06d", i),
					TenantID: registry.DefaultTenant, Subject: "CN=dev", DER: make([]byte, 700),
					NotBefore: time.Now(), NotAfter: time.Now().Add(90 * 24 * time.Hour), KeySHA256: keyHash(i)},
				Audit: &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:x", Action: "renew", Target: "x",
					Result: registry.ResultOK}}
			if err := s.Renew(ctx, r); err != nil {
				// Two callers raced for one device: the loser's old
				// certificate was superseded. Not what is measured.
				if errors.Is(err, registry.ErrNotRenewable) {
					continue
				}
				b.Error(err)
				return
			}
			current[i].Store(newSerial)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
}

// randomSerial is a certificate serial as pki makes them: 20 random bytes
// in hex.
func randomSerial() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// keyHash is the key hash of device i's key.
func keyHash(i int) []byte {
	sum := sha256.Sum256([]byte("bench-key-" + strconv.Itoa(i)))
	return sum[:]
}
