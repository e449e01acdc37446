package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/api/wire"
)

// TestCertsExpiringEndToEnd: 'ca certs expiring' over the admin API counts
// the active device certificates per tenant and per day, and names the
// device whose renewal window opened while the CA has not seen it (its
// certificate moved back in the registry, as a device offline for 25 days
// would leave it); it is tenant-scoped, and bad windows are refused with
// what to type instead.
func TestCertsExpiringEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	mustRun(t, nil, caBin, append([]string{"tenants", "create", "plant-9"}, admin...)...)
	dirs := t.TempDir()
	ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, filepath.Join(dirs, "a"), "E2E-EXP-A")
	late := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, filepath.Join(dirs, "b"), "E2E-EXP-LATE")
	ca.enrollOK(t, srv, ca.mintToken(t, srv, "--tenant", "plant-9").Token, filepath.Join(dirs, "c"), "E2E-EXP-P9")

	// The late device was last seen 25 days ago, with a 30-day certificate.
	now := time.Now().UTC()
	issued, expires := now.Add(-25*24*time.Hour).Truncate(time.Second), now.Add(5*24*time.Hour).Truncate(time.Second)
	db := ca.openSQL(t)
	if _, err := db.Exec(`UPDATE certificates SET not_before = ?, not_after = ?, created_at = ? WHERE device_id = ? AND status = 'active'`,
		issued, expires, issued, late); err != nil {
		t.Fatal(err)
	}

	forecast := func(args ...string) wire.ExpiryForecast {
		t.Helper()
		res := mustRun(t, nil, caBin, append(append([]string{"certs", "expiring", "--output", "json"}, args...), admin...)...)
		var fc wire.ExpiryForecast
		if err := json.Unmarshal([]byte(res.stdout), &fc); err != nil {
			t.Fatalf("ca certs expiring --output json: %v\n%s", err, res)
		}
		return fc
	}
	fc := forecast("--within", "30d")
	if fc.Total != 3 || len(fc.Tenants) != 2 || fc.Tenants[0].Tenant != "default" || fc.Tenants[0].Total != 2 ||
		fc.Tenants[1].Tenant != "plant-9" || fc.Tenants[1].Total != 1 {
		t.Errorf("30d forecast: %+v", fc)
	}
	if fc.To.Sub(fc.From).Round(time.Second) != 30*24*time.Hour {
		t.Errorf("window %s to %s, want 30 days", fc.From, fc.To)
	}
	lateDay := expires.Format(time.DateOnly)
	found := false
	for _, d := range fc.Tenants[0].Days {
		found = found || (d.Day == lateDay && d.Count == 1)
	}
	if !found {
		t.Errorf("default tenant days %+v: want 1 on %s", fc.Tenants[0].Days, lateDay)
	}
	if fc.OverdueTotal != 1 || len(fc.Overdue) != 1 {
		t.Fatalf("overdue: %d %+v, want the late device only", fc.OverdueTotal, fc.Overdue)
	}
	o := fc.Overdue[0]
	if o.DeviceID != late || o.Serial != "E2E-EXP-LATE" || o.Tenant != "default" || !o.LastSeen.Equal(issued) ||
		!o.NotAfter.Equal(expires) || !o.RenewAfter.After(o.LastSeen) || !o.RenewAfter.Before(now) {
		t.Errorf("overdue device %+v", o)
	}

	if fc := forecast("--within", "7d"); fc.Total != 1 || fc.OverdueTotal != 1 {
		t.Errorf("7d forecast: %+v, want the late device only", fc)
	}
	if fc := forecast("--within", "72h"); fc.Total != 0 || len(fc.Tenants) != 0 || fc.OverdueTotal != 0 {
		t.Errorf("72h forecast: %+v, want nothing", fc)
	}
	if fc := forecast("--within", "30d", "--tenant", "plant-9"); fc.Total != 1 || len(fc.Tenants) != 1 || fc.OverdueTotal != 0 {
		t.Errorf("plant-9 forecast: %+v", fc)
	}

	// The human form names the overdue device.
	res := mustRun(t, nil, caBin, append([]string{"certs", "expiring", "--within", "30d"}, admin...)...)
	for _, want := range []string{"3 device certificates expire", "plant-9", "1 devices will miss their renewal window", "E2E-EXP-LATE", lateDay} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("ca certs expiring: no %q in\n%s", want, res.stdout)
		}
	}

	// A tenant's admin sees its tenant only; another tenant is not found.
	keys := t.TempDir()
	mustRun(t, nil, caBin, append([]string{"admins", "add", "p9-aud", "--role", "auditor", "--tenant", "plant-9", "--out", keys}, admin...)...)
	as := append([]string{"--admin-cert", filepath.Join(keys, "p9-aud.crt"), "--admin-key", filepath.Join(keys, "p9-aud.key")}, admin...)
	res = mustRun(t, nil, caBin, append([]string{"certs", "expiring", "--within", "30d", "--output", "json"}, as...)...)
	var p9 wire.ExpiryForecast
	if err := json.Unmarshal([]byte(res.stdout), &p9); err != nil {
		t.Fatal(err)
	}
	if p9.Total != 1 || len(p9.Tenants) != 1 || p9.Tenants[0].Tenant != "plant-9" || p9.OverdueTotal != 0 {
		t.Errorf("tenant admin's forecast: %+v", p9)
	}
	if res := run(t, nil, caBin, append([]string{"certs", "expiring", "--within", "30d", "--tenant", "default"}, as...)...); res.code != 1 ||
		!strings.Contains(res.stderr, "404") {
		t.Errorf("tenant admin asking for another tenant: %s", res)
	}

	// Bad windows: refused before anything is asked, saying what to type.
	for _, c := range []struct{ within, want string }{
		{"garbage", "not a number of days such as 30d or a duration such as 72h"},
		{"-5d", "must be positive"},
		{"0", "must be positive"},
		{"-1h", "must be positive"},
		{"400d", "longer than 366d"},
		{"3x", "not a number of days"},
	} {
		res := run(t, nil, caBin, append([]string{"certs", "expiring", "--within", c.within}, admin...)...)
		if res.code != 2 || !strings.Contains(res.stderr, c.want) {
			t.Errorf("--within %s: want exit 2 and %q, got %s", c.within, c.want, res)
		}
	}
	if res := run(t, nil, caBin, append([]string{"certs", "expiring", "--limit", "0"}, admin...)...); res.code != 2 {
		t.Errorf("--limit 0: %s", res)
	}
	ca.auditVerify(t)
}
