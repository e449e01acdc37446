package provision_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry/sqlstore"
)

// BenchmarkEnrollTenantTTL measures token enrollment (SQLite registry,
// 16 clients per core) with the tenant cached for DefaultTenantTTL against
// reading it at every enrollment (TenantTTL < 0), to show what the cache
// saves on the hot path.
func BenchmarkEnrollTenantTTL(b *testing.B) {
	for _, bc := range []struct {
		name string
		ttl  time.Duration
	}{{"cached", 0}, {"read-each-enrollment", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			tca := pkitest.NewCA(b)
			store, err := sqlstore.Open(ctx, sqlstore.Options{DSN: b.TempDir() + "/r.db"})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			svc, err := provision.New(provision.Config{Store: store, Issuer: tca.Issuer, TrustDomain: "test.devpki", TenantTTL: bc.ttl})
			if err != nil {
				b.Fatal(err)
			}
			tok, _, err := provision.MintToken(ctx, store, time.Now(), provision.TokenSpec{Uses: 1_000_000})
			if err != nil {
				b.Fatal(err)
			}
			csrs := make([][]byte, b.N)
			for i := range csrs {
				_, _, csrs[i] = tca.DeviceKeyAndCSR(b, fmt.Sprintf("SN-B-%d", i), "02:00:00:00:00:01")
			}
			att := provision.TokenAttestor{Store: store}
			var next atomic.Int64
			b.SetParallelism(16) // 32 clients on 2 cores: group commit at work, as under load
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					if _, err := svc.Enroll(ctx, att, &provision.Request{Credential: tok, CSRPEM: csrs[i]}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
