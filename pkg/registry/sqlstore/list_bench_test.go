package sqlstore

import (
	"context"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// BenchmarkListScale measures one admin list page per filter on an existing
// registry — one filled by test/seed — without HTTP, TLS or the admin-read
// audit append: the query alone, p50 and p99 over b.N pages, each filter
// scoped to a tenant as the admin API scopes it. Set
// DEVPKI_BENCH_REGISTRY to the SQLite file, or DEVPKI_BENCH_POSTGRES_DSN:
//
//	DEVPKI_BENCH_REGISTRY=DIR/registry.db go test -run '^$' -bench BenchmarkListScale -benchtime 500x ./pkg/registry/sqlstore/
//
// Two switches give the pages the admin API's conditions:
// DEVPKI_BENCH_SERVER_CTX=1 reads on a cancellable context in the admin
// lane (a request's), DEVPKI_BENCH_AUDIT=1 commits an admin.read audit event
// after each page (its CPU is in cpu-ms/page, not in the latencies); each
// commit empties every reader's page cache, so the next page reads its
// pages again.
func BenchmarkListScale(b *testing.B) {
	opts := Options{DSN: os.Getenv("DEVPKI_BENCH_REGISTRY")}
	if dsn := os.Getenv("DEVPKI_BENCH_POSTGRES_DSN"); dsn != "" {
		opts = Options{Driver: DriverPostgres, DSN: dsn}
	}
	if opts.DSN == "" {
		b.Skip("DEVPKI_BENCH_REGISTRY (a SQLite registry file) or DEVPKI_BENCH_POSTGRES_DSN not set")
	}
	ctx := context.Background()
	audit := os.Getenv("DEVPKI_BENCH_AUDIT") != ""
	if os.Getenv("DEVPKI_BENCH_SERVER_CTX") != "" {
		c, cancel := context.WithCancel(registry.WithAdminLane(ctx))
		defer cancel()
		ctx = c
	}
	s, err := Open(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var sample []*registry.Device
	for _, after := range []string{"", "3", "7", "b", "e"} {
		page, err := s.ListDevices(ctx, registry.DeviceFilter{After: after, Limit: 200})
		if err != nil {
			b.Fatal(err)
		}
		sample = append(sample, page...)
	}
	if len(sample) == 0 {
		b.Skip("the registry holds no devices: fill it with test/seed")
	}
	pick := func(i int) *registry.Device { return sample[(i*7919)%len(sample)] }
	hexAfter := func(i int) string { return fmt.Sprintf("%04x", (i*40503)&0xffff) }
	soon := time.Now().Add(10 * 24 * time.Hour)
	expAfter := func(i int) string {
		f := registry.CertFilter{ExpiringBefore: soon}
		return f.Cursor(&registry.Certificate{NotAfter: time.Now().Add(time.Duration(1+i%5) * 24 * time.Hour), Serial: hexAfter(i)})
	}
	dev := func(f func(i int) registry.DeviceFilter) func(int) (int, error) {
		return func(i int) (int, error) { l, err := s.ListDevices(ctx, f(i)); return len(l), err }
	}
	cert := func(f func(i int) registry.CertFilter) func(int) (int, error) {
		return func(i int) (int, error) { l, err := s.ListCertificates(ctx, f(i)); return len(l), err }
	}
	tn := func(i int) string { return pick(i).TenantID }
	cases := []struct {
		name string
		run  func(i int) (int, error)
	}{
		{"devices/first-page", dev(func(i int) registry.DeviceFilter { return registry.DeviceFilter{TenantID: tn(i)} })},
		{"devices/deep-page", dev(func(i int) registry.DeviceFilter { return registry.DeviceFilter{TenantID: tn(i), After: hexAfter(i)} })},
		{"devices/serial", dev(func(i int) registry.DeviceFilter {
			return registry.DeviceFilter{TenantID: tn(i), Serial: pick(i).Serial}
		})},
		{"devices/mac", dev(func(i int) registry.DeviceFilter { return registry.DeviceFilter{TenantID: tn(i), MAC: pick(i).MACs[0]} })},
		{"devices/status-revoked", dev(func(i int) registry.DeviceFilter {
			return registry.DeviceFilter{TenantID: tn(i), Status: registry.DeviceRevoked}
		})},
		{"devices/status-revoked-deep", dev(func(i int) registry.DeviceFilter {
			return registry.DeviceFilter{TenantID: tn(i), Status: registry.DeviceRevoked, After: hexAfter(i)}
		})},
		{"certs/first-page", cert(func(i int) registry.CertFilter { return registry.CertFilter{TenantID: tn(i)} })},
		{"certs/deep-page", cert(func(i int) registry.CertFilter { return registry.CertFilter{TenantID: tn(i), After: hexAfter(i)} })},
		{"certs/status-revoked-deep", cert(func(i int) registry.CertFilter {
			return registry.CertFilter{TenantID: tn(i), Status: registry.CertRevoked, After: hexAfter(i)}
		})},
		// The status of most certificates in a renewed fleet, none in a new one.
		{"certs/status-superseded", cert(func(i int) registry.CertFilter {
			return registry.CertFilter{TenantID: tn(i), Status: registry.CertSuperseded}
		})},
		{"certs/status-superseded-deep", cert(func(i int) registry.CertFilter {
			return registry.CertFilter{TenantID: tn(i), Status: registry.CertSuperseded, After: hexAfter(i)}
		})},
		{"certs/expiring-before", cert(func(i int) registry.CertFilter {
			return registry.CertFilter{TenantID: tn(i), ExpiringBefore: soon, Status: registry.CertActive}
		})},
		{"certs/expiring-before-deep", cert(func(i int) registry.CertFilter {
			return registry.CertFilter{TenantID: tn(i), ExpiringBefore: soon, Status: registry.CertActive, After: expAfter(i)}
		})},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			rows := 0
			cpu0 := processCPU()
			for i := 0; b.Loop(); i++ {
				t0 := time.Now()
				n, err := c.run(i)
				lat = append(lat, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				rows += n
				if audit {
					// As the admin API does after each read: a commit,
					// which empties every reader's page cache.
					if err := s.AppendAudit(ctx, &registry.AuditEvent{Actor: "admin:bench", Action: "admin.read", Target: "bench", Result: registry.ResultOK}); err != nil {
						b.Fatal(err)
					}
				}
			}
			cpu := processCPU() - cpu0
			slices.Sort(lat)
			n := len(lat)
			// CPU per page is what the query costs; on a shared host the
			// p99 of wall time also holds the waits for a core.
			b.ReportMetric(float64(cpu)/1e6/float64(n), "cpu-ms/page")
			b.ReportMetric(float64(lat[n/2])/1e6, "p50-ms")
			b.ReportMetric(float64(lat[min(n-1, n*99/100)])/1e6, "p99-ms")
			b.ReportMetric(float64(rows)/float64(n), "rows/page")
		})
	}
}

// processCPU is the user+system CPU time of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
