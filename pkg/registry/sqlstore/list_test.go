package sqlstore

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestListPlans asserts, with SQLite's EXPLAIN QUERY PLAN, that every
// admin list filter reads through an index that also gives the page order:
// no full table scan, and no sort of all matches (a temporary b-tree for
// ORDER BY) except after a lookup that finds a handful of rows (serial,
// MAC, EK, device). At a million devices either costs seconds per page
// (docs/BENCHMARKS.md, "A million devices").
func TestListPlans(t *testing.T) {
	s := newSQLite(t)
	soon := time.Now().Add(240 * time.Hour)
	cursor := registry.CertFilter{ExpiringBefore: soon}.Cursor(&registry.Certificate{Serial: "7f", NotAfter: soon.Add(-time.Hour)})
	// The admin API always names a tenant (api scopeTenant), so the
	// status, serial and expiring-before listings are asserted tenant-scoped
	// only: without a tenant they are scans (migrations 00010, 00012).
	devices := []struct {
		name     string
		f        registry.DeviceFilter
		index    string
		sortOkay bool
	}{
		{"first page", registry.DeviceFilter{}, "sqlite_autoindex_devices_1", false},
		{"deep page", registry.DeviceFilter{After: "8"}, "sqlite_autoindex_devices_1", false},
		{"tenant", registry.DeviceFilter{TenantID: "t1"}, "idx_devices_tenant_id", false},
		{"tenant deep page", registry.DeviceFilter{TenantID: "t1", After: "8"}, "idx_devices_tenant_id", false},
		{"tenant and revoked", registry.DeviceFilter{TenantID: "t1", Status: registry.DeviceRevoked}, "idx_devices_tenant_status_id", false},
		{"tenant and status", registry.DeviceFilter{TenantID: "t1", Status: registry.DeviceActive, After: "8"}, "idx_devices_tenant_status_id", false},
		{"serial", registry.DeviceFilter{Serial: "SN-1", TenantID: "t1"}, "ux_devices_tenant_serial_folded", true},
		{"serial, tenant and status", registry.DeviceFilter{Serial: "SN-1", TenantID: "t1", Status: registry.DeviceActive, After: "8"}, "ux_devices_tenant_serial_folded", true},
		{"MAC", registry.DeviceFilter{MAC: "020000000001"}, "device_mac_history", true},
		{"MAC, tenant and status", registry.DeviceFilter{MAC: "020000000001", TenantID: "t1", Status: registry.DeviceActive, After: "8"}, "device_mac_history", true},
		{"EK", registry.DeviceFilter{EKHash: "ab", TenantID: "t1"}, "ux_devices_ek_hash", true},
		{"EK alone", registry.DeviceFilter{EKHash: "ab", Limit: 1}, "ux_devices_ek_hash", true},
		// The re-key sweep's pages: never the primary key from the cursor on.
		{"re-key due", registry.DeviceFilter{RekeyDueBefore: soon}, "idx_devices_rekey_due", true},
		{"re-key due deep page", registry.DeviceFilter{RekeyDueBefore: soon, After: "8"}, "idx_devices_rekey_due", true},
	}
	for _, tc := range devices {
		q, args := s.devicesQuery(tc.f)
		checkPlan(t, s, "devices "+tc.name, "devices", q, args, tc.index, tc.sortOkay)
	}
	certs := []struct {
		name     string
		f        registry.CertFilter
		index    string
		sortOkay bool
	}{
		{"first page", registry.CertFilter{}, "sqlite_autoindex_certificates_1", false},
		{"deep page", registry.CertFilter{After: "7f"}, "sqlite_autoindex_certificates_1", false},
		{"tenant", registry.CertFilter{TenantID: "t1"}, "idx_certificates_tenant_not_after_serial", false},
		{"tenant deep page", registry.CertFilter{TenantID: "t1", After: cursor}, "idx_certificates_tenant_not_after_serial", false},
		{"tenant and kind", registry.CertFilter{TenantID: "t1", Kind: registry.KindDevice, After: cursor}, "idx_certificates_tenant_not_after_serial", false},
		{"tenant and revoked", registry.CertFilter{TenantID: "t1", Status: registry.CertRevoked}, "idx_certificates_tenant_status_not_after", false},
		{"tenant and status", registry.CertFilter{TenantID: "t1", Status: registry.CertActive, After: cursor}, "idx_certificates_tenant_status_not_after", false},
		{"tenant, status and kind", registry.CertFilter{TenantID: "t1", Status: registry.CertActive, Kind: registry.KindDevice}, "idx_certificates_tenant_status_not_after", false},
		{"expiring before, tenant", registry.CertFilter{ExpiringBefore: soon, TenantID: "t1"}, "idx_certificates_tenant_not_after_serial", false},
		{"expiring before, tenant, deep page", registry.CertFilter{ExpiringBefore: soon, TenantID: "t1", After: cursor}, "idx_certificates_tenant_not_after_serial", false},
		{"expiring before, tenant and status", registry.CertFilter{ExpiringBefore: soon, TenantID: "t1", Status: registry.CertActive, After: cursor}, "idx_certificates_tenant_status_not_after", false},
		{"device", registry.CertFilter{DeviceID: "d1", TenantID: "t1", Status: registry.CertActive, ExpiringBefore: soon}, "idx_certificates_device_id", true},
	}
	for _, tc := range certs {
		q, args, err := s.certificatesQuery(tc.f)
		if err != nil {
			t.Fatalf("certificates %s: %v", tc.name, err)
		}
		checkPlan(t, s, "certificates "+tc.name, "certificates", q, args, tc.index, tc.sortOkay)
	}
}

// TestTenantCertificatePages pages a tenant's certificates, of every status
// and of each, one at a time: soonest-expiring first, a serial breaking a
// tie, none missed or repeated.
func TestTenantCertificatePages(t *testing.T) {
	s := newSQLite(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	for serial, in := range map[string]time.Duration{"a0": 3 * time.Hour, "b0": 2 * time.Hour, "c0": time.Hour, "e0": 2 * time.Hour} {
		enrollTestDevice(t, s, serial, now.Add(in))
	}
	if _, err := s.RevokeCertificate(ctx, "c0", registry.ReasonKeyCompromise, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, &registry.Renewal{OldSerial: "a0", SameKey: true, Certificate: &registry.Certificate{Serial: "d0",
		Kind: registry.KindDevice, Subject: "CN=renewed", NotBefore: now, NotAfter: now.Add(4 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	pages := func(f registry.CertFilter) string {
		var got []string
		for f.Limit = 1; len(got) < 10; {
			page, err := s.ListCertificates(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page[0].Serial)
			f.After = f.Cursor(page[0])
		}
		return strings.Join(got, ",")
	}
	for _, tc := range []struct {
		status registry.CertStatus
		want   string
	}{
		{"", "c0,b0,e0,a0,d0"},
		{registry.CertActive, "b0,e0,d0"},
		{registry.CertSuperseded, "a0"},
		{registry.CertRevoked, "c0"},
	} {
		if got := pages(registry.CertFilter{TenantID: registry.DefaultTenant, Status: tc.status}); got != tc.want {
			t.Errorf("tenant pages, status %q: %s; want %s", tc.status, got, tc.want)
		}
	}
	// Every tenant's: in serial order, the cursor a serial.
	if got := pages(registry.CertFilter{}); got != "a0,b0,c0,d0,e0" {
		t.Errorf("pages of every tenant: %s; want a0,b0,c0,d0,e0", got)
	}
	if _, err := s.ListCertificates(ctx, registry.CertFilter{TenantID: registry.DefaultTenant, After: "b0"}); err == nil ||
		!strings.Contains(err.Error(), "bad page cursor") {
		t.Fatalf("a serial as the cursor of a tenant's listing: %v, want a bad cursor", err)
	}
}

// TestIdentityHoldersPlan: the identity check every enrollment makes finds
// the MAC holders by primary key, never by walking the devices of a status.
func TestIdentityHoldersPlan(t *testing.T) {
	s := newSQLite(t)
	q, args := s.identityHoldersQuery("t1", "SN-1", []string{"020000000001", "020000000002"})
	checkPlan(t, s, "identity holders", "devices", q, args, "sqlite_autoindex_devices_1", true)
	rows, err := s.r.Raw("EXPLAIN QUERY PLAN "+q, args...).Rows()
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(detail, "idx_devices_status") {
			t.Errorf("identity holders walk a status index: %s", detail)
		}
	}
}

func checkPlan(t *testing.T, s *Store, name, table, q string, args []any, index string, sortOkay bool) string {
	t.Helper()
	rows, err := s.r.Raw("EXPLAIN QUERY PLAN "+q, args...).Rows()
	if err != nil {
		t.Fatalf("%s: explain: %v", name, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		plan = append(plan, detail)
	}
	all := strings.Join(plan, "; ")
	t.Logf("%s: %s", name, all)
	for _, d := range plan {
		if d == "SCAN "+table {
			t.Errorf("%s: full scan of %s: %s\n  query: %s", name, table, all, q)
		}
	}
	if !strings.Contains(all, index) {
		t.Errorf("%s: plan does not use %s: %s\n  query: %s", name, index, all, q)
	}
	if !sortOkay && strings.Contains(all, "TEMP B-TREE") {
		t.Errorf("%s: plan sorts every match: %s\n  query: %s", name, all, q)
	}
	return all
}

// TestExpiringCursor pages an expiring-before listing soonest first to the
// end, and refuses a cursor it did not make.
func TestExpiringCursor(t *testing.T) {
	s := newSQLite(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 7 {
		serial := string(rune('a'+i)) + "0"
		enrollTestDevice(t, s, serial, now.Add(time.Duration(7-i)*time.Hour))
	}
	f := registry.CertFilter{ExpiringBefore: now.Add(6*time.Hour + time.Minute), Limit: 2}
	var got []string
	for range 10 {
		page, err := s.ListCertificates(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page {
			got = append(got, c.Serial)
		}
		if len(page) < f.Limit {
			break
		}
		f.After = f.Cursor(page[len(page)-1])
	}
	// a0 expires at now+7h: outside; the rest soonest first.
	if want := "g0 f0 e0 d0 c0 b0"; strings.Join(got, " ") != want {
		t.Fatalf("expiring pages = %v, want %s", got, want)
	}
	f.After = "b0"
	if _, err := s.ListCertificates(ctx, f); err == nil || !strings.Contains(err.Error(), "bad page cursor") {
		t.Fatalf("a serial as the cursor of an expiring listing: %v, want a bad cursor", err)
	}
}

// enrollTestDevice enrolls a device whose one certificate has serial and
// expires at notAfter.
func enrollTestDevice(t *testing.T, s *Store, serial string, notAfter time.Time) {
	t.Helper()
	e := enrollment("SN-"+serial, nil)
	e.Certificate.Serial, e.Certificate.NotBefore, e.Certificate.NotAfter = serial, notAfter.Add(-24*time.Hour), notAfter
	if err := s.Enroll(t.Context(), e); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateListIndexes: a registry from before the list indexes loses the
// single-column indexes they replace and gains the tenant-led ones on Open.
func TestMigrateListIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	asLegacy(t, s) // the baseline: single-column indexes, no MAC history
	err := s.w.Exec(`INSERT INTO devices (id, tenant_id, serial, serial_folded, macs, status, method, ek_hash, created_at, updated_at)
		VALUES ('dev-old', 'default', 'SN-OLD', 'SN-OLD', '["02:00:00:00:00:aa","02:00:00:00:00:bb"]', 'active', 'token', '', ?, ?)`,
		time.Now().UTC(), time.Now().UTC()).Error
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSQLite(t, path)
	defer s.Close()
	for name, want := range map[string]int{"idx_certificates_not_after": 0, "idx_certificates_status": 0,
		"idx_certificates_tenant_not_after_serial": 1, "idx_devices_tenant_id": 1,
		// made by migration 6, dropped by 10
		"idx_certificates_not_after_serial": 0, "idx_certificates_status_serial": 0, "idx_devices_status_id": 0,
		// made by migration 6, dropped by 12
		"idx_devices_serial_folded": 0, "idx_certificates_tenant_serial": 0} {
		if n := s.indexCount(t, name); n != want {
			t.Errorf("index %s: %d, want %d", name, n, want)
		}
	}
	var macs []string
	if err := s.r.Raw("SELECT mac FROM device_mac_history WHERE device_id = 'dev-old' ORDER BY mac").Scan(&macs).Error; err != nil {
		t.Fatal(err)
	}
	if len(macs) != 2 || macs[0] != "02:00:00:00:00:aa" {
		t.Errorf("MAC history of the old device: %v, want both its MACs", macs)
	}
}
