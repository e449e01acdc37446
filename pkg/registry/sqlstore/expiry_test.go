package sqlstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

func TestExpiryQueriesSQLite(t *testing.T)   { testExpiryQueries(t, newSQLite(t)) }
func TestExpiryQueriesPostgres(t *testing.T) { testExpiryQueries(t, newPostgres(t)) }

// testExpiryQueries enrolls devices with certificates of known lifetimes
// and checks what the expiry counts and the overdue list select.
func testExpiryQueries(t *testing.T, s *Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	if err := s.CreateTenant(ctx, &registry.Tenant{ID: "t-acme", Name: "acme", CreatedAt: now},
		&registry.AuditEvent{Actor: "system", Action: "tenant.create", Target: "acme", Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}
	type dev struct {
		tenant, serial string
		notBefore      time.Time
		life           time.Duration
	}
	devs := []dev{
		// 30-day certificates: renewal window opens at day 20.
		{registry.DefaultTenant, "FRESH", now.Add(-1 * day), 30 * day},    // expires in 29d, window opens in 19d
		{registry.DefaultTenant, "LATE", now.Add(-25 * day), 30 * day},    // expires in 5d, window opened 5d ago
		{"t-acme", "ACME-LATE", now.Add(-22 * day), 30 * day},             // expires in 8d, window opened 2d ago
		{"t-acme", "ACME-SOON", now.Add(-2 * time.Hour), 3 * day},         // expires in ~3d, window opens in ~2d
		{registry.DefaultTenant, "EXPIRED", now.Add(-31 * day), 30 * day}, // expired yesterday
		{registry.DefaultTenant, "REVOKED", now.Add(-25 * day), 30 * day}, // device revoked below
	}
	ids := map[string]string{}
	for _, d := range devs {
		id := "dev-" + d.serial
		ids[d.serial] = id
		b := make([]byte, 20)
		rand.Read(b)
		err := s.Enroll(ctx, &registry.Enrollment{
			Device: &registry.Device{ID: id, TenantID: d.tenant, Serial: d.serial, Status: registry.DeviceActive, Method: "token"},
			Certificate: &registry.Certificate{Serial: hex.EncodeToString(b), Kind: registry.KindDevice, DeviceID: id, TenantID: d.tenant,
				Subject: "CN=" + id, NotBefore: d.notBefore, NotAfter: d.notBefore.Add(d.life), DER: []byte{0x30, 0x00},
				Status: registry.CertActive, CreatedAt: d.notBefore},
			Audit: &registry.AuditEvent{Actor: "system", Action: "enroll", Target: id, Result: registry.ResultOK},
		})
		if err != nil {
			t.Fatalf("enroll %s: %v", d.serial, err)
		}
	}
	if _, err := s.RevokeDevice(ctx, ids["REVOKED"], registry.ReasonKeyCompromise,
		&registry.AuditEvent{Actor: "system", Action: "device.revoke", Target: ids["REVOKED"], Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		within time.Duration
		want   int64
	}{{7 * day, 2}, {30 * day, 4}, {day, 0}} {
		n, err := s.CountExpiring(ctx, now, now.Add(c.within))
		if err != nil || n != c.want {
			t.Errorf("CountExpiring(%s) = %d, %v; want %d", c.within, n, err, c.want)
		}
	}
	per, err := s.CountExpiringByTenant(ctx, registry.ExpiryFilter{From: now, To: now.Add(30 * day)})
	if err != nil || per[registry.DefaultTenant] != 2 || per["t-acme"] != 2 || len(per) != 2 {
		t.Errorf("CountExpiringByTenant = %v, %v; want default 2, acme 2", per, err)
	}
	per, err = s.CountExpiringByTenant(ctx, registry.ExpiryFilter{TenantID: "t-acme", From: now, To: now.Add(30 * day)})
	if err != nil || per["t-acme"] != 2 || len(per) != 1 {
		t.Errorf("CountExpiringByTenant(acme) = %v, %v", per, err)
	}

	over, total, err := s.ListOverdue(ctx, registry.ExpiryFilter{From: now, To: now.Add(30 * day)}, now)
	if err != nil {
		t.Fatal(err)
	}
	if total != 2 || len(over) != 2 || over[0].DeviceSerial != "LATE" || over[1].DeviceSerial != "ACME-LATE" {
		t.Fatalf("ListOverdue: total %d, %+v; want LATE then ACME-LATE", total, over)
	}
	if o := over[0]; o.DeviceID != ids["LATE"] || o.TenantID != registry.DefaultTenant || !o.IssuedAt.Equal(now.Add(-25*day)) ||
		!o.NotAfter.Equal(now.Add(5*day)) {
		t.Errorf("LATE: %+v", o)
	}
	over, total, err = s.ListOverdue(ctx, registry.ExpiryFilter{TenantID: "t-acme", From: now, To: now.Add(30 * day), Limit: 1}, now)
	if err != nil || total != 1 || len(over) != 1 || over[0].DeviceSerial != "ACME-LATE" {
		t.Errorf("ListOverdue(acme) = %d %+v %v", total, over, err)
	}
	// Two days on, ACME-SOON's window has opened too.
	if _, total, err = s.ListOverdue(ctx, registry.ExpiryFilter{From: now, To: now.Add(30 * day)}, now.Add(2*day+time.Hour)); err != nil || total != 3 {
		t.Errorf("ListOverdue two days on: total %d, %v; want 3", total, err)
	}
}

// TestExpiryCountUsesIndex: the expiring-certificates counts (a metric and
// the forecast's per-day counts), the overdue list and the rollover count
// read their partial covering index alone (active certificates only,
// migration 00008), never the certificates table: their cost is the
// window's slice of the index, not the fleet; the rollover's count of
// active devices reads the covering tenant/status index, never the devices
// table. The queries are the ones the store runs.
func TestExpiryCountUsesIndex(t *testing.T) {
	s := newSQLite(t)
	now := time.Now()
	f := registry.ExpiryFilter{From: now, To: now.Add(30 * 24 * time.Hour)}
	count, page, args, pageArgs := s.overdueQueries(f, now)
	tcount, tpage, targs, tpageArgs := s.overdueQueries(registry.ExpiryFilter{From: f.From, To: f.To, TenantID: "t1"}, now)
	q1, a1 := s.expiringQuery(f.From, f.To, "", false)
	q2, a2 := s.expiringQuery(f.From, f.To, "", true)
	q3, a3 := s.expiringQuery(f.From, f.To, "t1", true)
	for _, tc := range []struct {
		q     string
		args  []any
		index string
	}{
		{q1, a1, "USING COVERING INDEX idx_certificates_expiry"},
		{q2, a2, "USING COVERING INDEX idx_certificates_expiry"},
		{q3, a3, "USING COVERING INDEX idx_certificates_expiry"},
		{count, args, "USING COVERING INDEX idx_certificates_expiry"},
		{tcount, targs, "USING COVERING INDEX idx_certificates_expiry"},
		{page, pageArgs, "USING INDEX idx_certificates_expiry"},
		{tpage, tpageArgs, "USING INDEX idx_certificates_expiry"},
		{s.onIssuerQuery(), []any{"kid", ts(now)}, "USING COVERING INDEX idx_certificates_issuer"},
		{sqlActiveDevicesByTenant, []any{"active"}, "USING COVERING INDEX idx_devices_tenant_status_id"},
	} {
		rows, err := s.r.Raw("EXPLAIN QUERY PLAN "+tc.q, tc.args...).Rows()
		if err != nil {
			t.Fatalf("%s: %v", tc.q, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		joined := strings.Join(plan, "; ")
		t.Logf("%s: %s", tc.q, joined)
		if !strings.Contains(joined, tc.index) || strings.Contains(joined, "SCAN c ") || strings.Contains(joined, "SCAN certificates") ||
			strings.HasSuffix(joined, "SCAN devices") {
			t.Errorf("%s\nplan: %s; want a search %s", tc.q, joined, tc.index)
		}
	}
}
