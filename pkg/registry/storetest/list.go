package storetest

import (
	"context"
	"testing"
	"time"

	"devpki/pkg/registry"
)

func testListDevices(t *testing.T, s registry.Store) {
	ctx := context.Background()
	other := mkTenant(t, s, "other-list")
	var mac string
	for i := 0; i < 7; i++ {
		e := enrolled(t, s, "SN-LIST-"+string(rune('A'+i)))
		if i == 3 {
			mac = e.Device.MACs[0]
		}
	}
	if _, err := s.RevokeDevice(ctx, deviceID(registry.DefaultTenant, "SN-LIST-B"), registry.ReasonUnspecified, nil); err != nil {
		t.Fatal(err)
	}
	oe := newEnrollment(t, other.ID, "SN-LIST-OTHER", nil)
	if err := s.Enroll(ctx, oe); err != nil {
		t.Fatal(err)
	}
	// Keyset pages of 3 cover the default tenant's 7 devices exactly once.
	seen := map[string]bool{}
	after := ""
	for pages := 0; ; pages++ {
		page, err := s.ListDevices(ctx, registry.DeviceFilter{TenantID: registry.DefaultTenant, After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		for _, d := range page {
			if seen[d.ID] || d.TenantID != registry.DefaultTenant {
				t.Fatalf("device %s twice or from another tenant", d.ID)
			}
			seen[d.ID] = true
		}
		after = page[len(page)-1].ID
	}
	if len(seen) != 7 {
		t.Fatalf("pages held %d devices, want 7", len(seen))
	}
	for _, tc := range []struct {
		name string
		f    registry.DeviceFilter
		want int
	}{
		{"revoked", registry.DeviceFilter{Status: registry.DeviceRevoked}, 1},
		{"serial", registry.DeviceFilter{Serial: "SN-LIST-C"}, 1},
		{"mac", registry.DeviceFilter{MAC: mac}, 1},
		{"other tenant", registry.DeviceFilter{TenantID: other.ID}, 1},
		{"no match", registry.DeviceFilter{Serial: "nope"}, 0},
	} {
		got, err := s.ListDevices(ctx, tc.f)
		if err != nil || len(got) != tc.want {
			t.Errorf("%s: %d devices, %v; want %d", tc.name, len(got), err, tc.want)
		}
	}
}

func testListCertificates(t *testing.T, s registry.Store) {
	ctx := context.Background()
	a := enrolled(t, s, "SN-CERTS-A")
	b := enrolled(t, s, "SN-CERTS-B")
	if _, err := s.RevokeCertificate(ctx, b.Certificate.Serial, registry.ReasonKeyCompromise, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    registry.CertFilter
		want int
	}{
		{"device", registry.CertFilter{DeviceID: a.Device.ID}, 1},
		{"revoked", registry.CertFilter{Status: registry.CertRevoked}, 1},
		{"expiring soon", registry.CertFilter{ExpiringBefore: time.Now().Add(24 * time.Hour)}, 0},
		{"expiring within 60 days", registry.CertFilter{ExpiringBefore: time.Now().Add(60 * 24 * time.Hour), Kind: registry.KindDevice}, 2},
		{"page of one", registry.CertFilter{Limit: 1}, 1},
	} {
		got, err := s.ListCertificates(ctx, tc.f)
		if err != nil || len(got) != tc.want {
			t.Errorf("%s: %d certificates, %v; want %d", tc.name, len(got), err, tc.want)
		}
	}
	first, _ := s.ListCertificates(ctx, registry.CertFilter{Limit: 1})
	rest, _ := s.ListCertificates(ctx, registry.CertFilter{After: first[0].Serial})
	if len(rest) != 1 || rest[0].Serial == first[0].Serial {
		t.Fatalf("second page %+v", rest)
	}
	// Each status within the tenant, after a renewal.
	r := renewal(t, a.Certificate.Serial, true)
	if err := s.Renew(ctx, r); err != nil {
		t.Fatal(err)
	}
	for status, want := range map[registry.CertStatus]string{
		registry.CertActive: r.Certificate.Serial, registry.CertSuperseded: a.Certificate.Serial, registry.CertRevoked: b.Certificate.Serial,
	} {
		got, err := s.ListCertificates(ctx, registry.CertFilter{TenantID: registry.DefaultTenant, Status: status})
		if err != nil || len(got) != 1 || got[0].Serial != want || got[0].Status != status {
			t.Errorf("tenant's %s certificates: %+v, %v; want %s", status, got, err, want)
		}
		f := registry.CertFilter{TenantID: registry.DefaultTenant, Status: status}
		if len(got) == 1 {
			f.After = f.Cursor(got[0])
		}
		if got, err := s.ListCertificates(ctx, f); err != nil || len(got) != 0 {
			t.Errorf("tenant's %s certificates after the last: %+v, %v; want none", status, got, err)
		}
	}
}
