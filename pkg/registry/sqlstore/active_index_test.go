package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestActiveIndexesFollowRenewals: the expiry and rollover counts read
// partial indexes of the active certificates (migration 00008). A renewal
// takes the superseded certificate out of them and puts its successor in;
// a revocation takes it out; the counts follow, on both dialects.
func TestActiveIndexesFollowRenewals(t *testing.T) {
	dialects(t, func(t *testing.T, driver string, newDB func() string) {
		ctx := context.Background()
		s, err := Open(ctx, Options{Driver: driver, DSN: newDB()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		now := time.Now()
		day := 24 * time.Hour
		e := enrollment("SN-ACTIVE", mustToken(t, s, "tok-active", 1))
		e.Certificate.NotBefore, e.Certificate.NotAfter, e.Certificate.IssuerKeyID = now.Add(-day), now.Add(10*day), "kid"
		if err := s.Enroll(ctx, e); err != nil {
			t.Fatal(err)
		}
		check := func(when string, expiring, onIssuer int64) {
			t.Helper()
			n, err := s.CountExpiring(ctx, now, now.Add(60*day))
			if err != nil || n != expiring {
				t.Errorf("%s: CountExpiring = %d, %v; want %d", when, n, err, expiring)
			}
			byTenant, err := s.CountExpiringByTenant(ctx, registry.ExpiryFilter{From: now, To: now.Add(60 * day)})
			if err != nil || byTenant[registry.DefaultTenant] != expiring {
				t.Errorf("%s: CountExpiringByTenant = %v, %v; want %d", when, byTenant, err, expiring)
			}
			st, err := s.RolloverStatus(ctx, "kid", now)
			var got int64
			for _, tn := range st {
				got += tn.OnIssuer
			}
			if err != nil || got != onIssuer {
				t.Errorf("%s: RolloverStatus = %+v, %v; want %d on the issuer", when, st, err, onIssuer)
			}
			if driver != DriverSQLite {
				return
			}
			// The indexes themselves hold the active certificates only.
			var inExpiry, inIssuer int64
			s.r.Raw("SELECT COUNT(*) FROM certificates INDEXED BY idx_certificates_expiry WHERE status = 'active' AND kind = 'device' AND not_after > ?", ts(now.Add(-365*day))).Scan(&inExpiry)
			s.r.Raw("SELECT COUNT(*) FROM certificates INDEXED BY idx_certificates_issuer WHERE status = 'active' AND issuer_kid = 'kid'").Scan(&inIssuer)
			if inExpiry != expiring || inIssuer != onIssuer {
				t.Errorf("%s: %d entries in idx_certificates_expiry, %d in idx_certificates_issuer; want %d and %d",
					when, inExpiry, inIssuer, expiring, onIssuer)
			}
		}
		check("enrolled", 1, 1)
		old := e.Certificate.Serial
		for i := range 3 {
			serial := fmt.Sprintf("%040x", i+1)
			r := &registry.Renewal{OldSerial: old, SameKey: true, Certificate: &registry.Certificate{Serial: serial, Subject: "CN=x",
				DER: []byte{2}, NotBefore: now, NotAfter: now.Add(20 * day), IssuerKeyID: "kid"},
				Audit: &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:x", Action: "renew", Target: "x", Result: registry.ResultOK}}
			if err := s.Renew(ctx, r); err != nil {
				t.Fatal(err)
			}
			old = serial
			check(fmt.Sprintf("renewal %d", i+1), 1, 1)
		}
		var total int64
		s.r.Raw("SELECT COUNT(*) FROM certificates").Scan(&total)
		if total != 4 {
			t.Fatalf("%d certificates, want 4 (one active, three superseded)", total)
		}
		if _, err := s.RevokeDevice(ctx, e.Device.ID, registry.ReasonKeyCompromise,
			&registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "admin:a", Action: "revoke", Target: e.Device.ID, Result: registry.ResultOK}); err != nil {
			t.Fatal(err)
		}
		check("revoked", 0, 0)
	})
}
