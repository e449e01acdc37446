package sqlstore

import (
	"context"
	"crypto/sha256"
	"fmt"
	"path/filepath"
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
