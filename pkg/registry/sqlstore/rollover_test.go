package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// seedRollover inserts n active devices of the default tenant, each with an
// active certificate: the first onNew from issuer "new", the others from
// "old"; the first fetched have fetched the bundle naming "new". Rows go in
// through gorm batches, as a benchmark helper (no audit).
func seedRollover(t testing.TB, s *Store, n, onNew, fetched int) {
	t.Helper()
	now := ts(time.Now())
	const chunk = 1000
	for start := 0; start < n; start += chunk {
		var devs []deviceRow
		var certs []certificateRow
		var fetches []bundleFetchRow
		for i := start; i < min(n, start+chunk); i++ {
			id := fmt.Sprintf("dev-%07d", i)
			devs = append(devs, deviceRow{ID: id, TenantID: registry.DefaultTenant, Serial: "S" + strconv.Itoa(i),
				SerialFolded: "s" + strconv.Itoa(i), MACs: "[]", Status: string(registry.DeviceActive), Method: "token",
				EKHash: "", CreatedAt: now, UpdatedAt: now})
			kid := "old"
			if i < onNew {
				kid = "new"
			}
			did := id
			certs = append(certs, certificateRow{Serial: fmt.Sprintf("%040x", i+1), Kind: string(registry.KindDevice), DeviceID: &did,
				TenantID: registry.DefaultTenant, Subject: "CN=" + id, SANs: "[]", NotBefore: now, NotAfter: now.Add(720 * time.Hour),
				DER: []byte{1}, Status: string(registry.CertActive), IssuerKID: kid, CreatedAt: now})
			if i < fetched {
				fetches = append(fetches, bundleFetchRow{DeviceID: id, IssuerKID: "new", TenantID: registry.DefaultTenant, FetchedAt: now})
			}
		}
		if err := s.w.CreateInBatches(devs, 500).Error; err != nil {
			t.Fatal(err)
		}
		if err := s.w.CreateInBatches(certs, 500).Error; err != nil {
			t.Fatal(err)
		}
		if len(fetches) > 0 {
			if err := s.w.CreateInBatches(fetches, 500).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
}

func testRolloverStore(t *testing.T, s *Store) {
	ctx := context.Background()
	seedRollover(t, s, 20, 7, 3)
	// An expired and a revoked new-issuer certificate do not count.
	if err := s.w.Exec("UPDATE certificates SET not_after = ? WHERE serial = ?", ts(time.Now().Add(-time.Hour)), fmt.Sprintf("%040x", 1)).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.w.Exec("UPDATE certificates SET status = ? WHERE serial = ?", string(registry.CertRevoked), fmt.Sprintf("%040x", 2)).Error; err != nil {
		t.Fatal(err)
	}
	// A fetch is counted once per device, and an unknown device records nothing.
	for _, d := range []string{"dev-0000010", "dev-0000010", "nobody"} {
		if err := s.RecordBundleFetch(ctx, d, "new", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.RolloverStatus(ctx, "new", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []registry.RolloverTenant{{TenantID: registry.DefaultTenant, Devices: 20, OnIssuer: 5, FetchedBundle: 4}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("RolloverStatus: %+v, want %+v", got, want)
	}

	// The issuer state machine: conditional writes, nothing written out of order.
	init := &registry.CAIssuer{KeyID: "old", CertPEM: "c", RootPEM: "r", KeyURI: "k", NotAfter: time.Now().Add(time.Hour)}
	if wrote, err := s.RegisterInitialIssuer(ctx, init); err != nil || !wrote {
		t.Fatalf("RegisterInitialIssuer: %v %v", wrote, err)
	}
	if wrote, err := s.RegisterInitialIssuer(ctx, &registry.CAIssuer{KeyID: "other", CertPEM: "c"}); err != nil || wrote {
		t.Fatalf("second RegisterInitialIssuer wrote %v: %v", wrote, err)
	}
	if err := s.ActivateIssuer(ctx, "new", time.Now(), nil); !errors.Is(err, registry.ErrRolloverOrder) {
		t.Fatalf("activate before prepare: %v", err)
	}
	if err := s.RetireIssuer(ctx, "old", time.Now(), nil); !errors.Is(err, registry.ErrRolloverOrder) {
		t.Fatalf("retire the active issuer: %v", err)
	}
	next := &registry.CAIssuer{KeyID: "new", CertPEM: "c2", RootPEM: "r", KeyURI: "k2", NotAfter: time.Now().Add(time.Hour)}
	if err := s.PrepareIssuer(ctx, next, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareIssuer(ctx, &registry.CAIssuer{KeyID: "third", CertPEM: "c3", RootPEM: "r"}, nil); !errors.Is(err, registry.ErrRolloverOrder) {
		t.Fatalf("prepare twice: %v", err)
	}
	if err := s.ActivateIssuer(ctx, "new", time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareIssuer(ctx, &registry.CAIssuer{KeyID: "third", CertPEM: "c3", RootPEM: "r"}, nil); !errors.Is(err, registry.ErrRolloverOrder) {
		t.Fatalf("prepare during the overlap: %v", err)
	}
	if err := s.RetireIssuer(ctx, "old", time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	rows, err := s.ListIssuers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].State != registry.IssuerRetired || rows[1].State != registry.IssuerActive || rows[1].ActivatedAt == nil {
		t.Fatalf("issuers: %+v %+v", rows[0], rows[1])
	}
}

func TestRolloverSQLite(t *testing.T)   { testRolloverStore(t, newSQLite(t)) }
func TestRolloverPostgres(t *testing.T) { testRolloverStore(t, newPostgres(t)) }

// BenchmarkRolloverStatus times the rollover status query over
// DEVPKI_BENCH_DEVICES devices (default 100,000), a third on the new
// issuer and a half having fetched its bundle; SQLite, and PostgreSQL when
// DEVPKI_TEST_POSTGRES_DSN is set.
//
//	go test -run '^$' -bench BenchmarkRolloverStatus -benchtime 20x ./pkg/registry/sqlstore/
func BenchmarkRolloverStatus(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("DEVPKI_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	stores := map[string]func(testing.TB) *Store{"sqlite": newSQLite}
	if os.Getenv("DEVPKI_TEST_POSTGRES_DSN") != "" {
		stores["postgres"] = newPostgres
	}
	for name, open := range stores {
		b.Run(fmt.Sprintf("%s/devices=%d", name, n), func(b *testing.B) {
			s := open(b)
			seedRollover(b, s, n, n/3, n/2)
			if name == "postgres" {
				s.w.Exec("VACUUM ANALYZE") // as autovacuum would: index-only scans need the visibility map
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				got, err := s.RolloverStatus(ctx, "new", time.Now())
				if err != nil || len(got) != 1 || got[0].OnIssuer != int64(n/3) || got[0].FetchedBundle != int64(n/2) {
					b.Fatalf("%+v %v", got, err)
				}
			}
		})
	}
}
