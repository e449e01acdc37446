package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"devpki/pkg/registry"
)

func renewal(t *testing.T, old string, sameKey bool) *registry.Renewal {
	t.Helper()
	now := time.Now()
	return &registry.Renewal{
		OldSerial: old,
		SameKey:   sameKey,
		Certificate: &registry.Certificate{
			Serial: randHex(t, 20), Kind: registry.KindDevice, Subject: "CN=renewed",
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(30 * 24 * time.Hour), DER: []byte{0x30, 0x03, 0x02, 0x01, 0x02},
		},
		Audit: &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "device:x", Action: "renew", Result: registry.ResultOK},
	}
}

func testRenew(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-RENEW")
	old := e.Certificate.Serial
	r := renewal(t, old, true)
	if err := s.Renew(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCertificate(ctx, r.Certificate.Serial)
	if err != nil || got.ReplacesSerial != old || got.DeviceID != e.Device.ID || got.Status != registry.CertActive {
		t.Fatalf("new certificate %+v, %v", got, err)
	}
	prev, err := s.GetCertificate(ctx, old)
	if err != nil || prev.Status != registry.CertSuperseded || prev.RevokedAt != nil {
		t.Fatalf("old certificate %+v, %v; want superseded, not revoked", prev, err)
	}
	rep, err := s.GetReplacement(ctx, old)
	if err != nil || rep.Serial != r.Certificate.Serial {
		t.Fatalf("GetReplacement: %+v, %v", rep, err)
	}
	if _, err := s.GetReplacement(ctx, r.Certificate.Serial); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetReplacement of the newest: %v, want ErrNotFound", err)
	}
	// The superseded certificate cannot renew again; nothing is written.
	n0, _ := auditHead(t, s)
	if err := s.Renew(ctx, renewal(t, old, true)); !errors.Is(err, registry.ErrNotRenewable) {
		t.Fatalf("renewing a superseded certificate: %v, want ErrNotRenewable", err)
	}
	if err := s.Renew(ctx, renewal(t, "00ff", true)); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("renewing an unknown certificate: %v, want ErrNotFound", err)
	}
	if n1, _ := auditHead(t, s); n1 != n0 {
		t.Fatalf("refused renewals wrote %d audit events", n1-n0)
	}
	verify(t, s)
}

// testRenewNamedDevice: a renewal that names the old certificate's device
// and tenant (as provision does) renews as one that does not; one that names
// another device or tenant is refused and writes nothing.
func testRenewNamedDevice(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-RENEW-NAMED")
	other := enrolled(t, s, "SN-RENEW-OTHER")
	n0, _ := auditHead(t, s)
	for _, c := range []struct{ device, tenant string }{
		{other.Device.ID, registry.DefaultTenant},
		{e.Device.ID, "some-other-tenant"},
	} {
		r := renewal(t, e.Certificate.Serial, true)
		r.Certificate.DeviceID, r.Certificate.TenantID = c.device, c.tenant
		if err := s.Renew(ctx, r); !errors.Is(err, registry.ErrConflict) {
			t.Fatalf("renewal naming device %s, tenant %s: %v, want ErrConflict", c.device, c.tenant, err)
		}
		if _, err := s.GetCertificate(ctx, r.Certificate.Serial); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("refused renewal recorded its certificate: %v", err)
		}
	}
	if n1, _ := auditHead(t, s); n1 != n0 {
		t.Fatalf("refused renewals wrote %d audit events", n1-n0)
	}
	if prev, err := s.GetCertificate(ctx, e.Certificate.Serial); err != nil || prev.Status != registry.CertActive {
		t.Fatalf("old certificate after refused renewals: %+v, %v; want active", prev, err)
	}
	r := renewal(t, e.Certificate.Serial, true)
	r.Certificate.DeviceID, r.Certificate.TenantID = e.Device.ID, registry.DefaultTenant
	if err := s.Renew(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCertificate(ctx, r.Certificate.Serial)
	if err != nil || got.ReplacesSerial != e.Certificate.Serial || got.DeviceID != e.Device.ID || got.TenantID != registry.DefaultTenant ||
		got.Status != registry.CertActive {
		t.Fatalf("new certificate %+v, %v", got, err)
	}
	if prev, err := s.GetCertificate(ctx, e.Certificate.Serial); err != nil || prev.Status != registry.CertSuperseded {
		t.Fatalf("old certificate %+v, %v; want superseded", prev, err)
	}
	if err := s.Renew(ctx, renewal(t, e.Certificate.Serial, true)); !errors.Is(err, registry.ErrNotRenewable) {
		t.Fatalf("renewing the superseded certificate: %v, want ErrNotRenewable", err)
	}
	verify(t, s)
}

func testRenewRekeyRequired(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-ROTATE")
	deadline := time.Now().Add(48 * time.Hour)
	if err := s.RequireRekey(ctx, e.Device.ID, true, &deadline, revokeEvent("device.rotate", e.Device.ID)); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDevice(ctx, e.Device.ID)
	if err != nil || !d.RekeyRequired || d.RekeyDeadline == nil || d.RekeyDeadline.Sub(deadline).Abs() > time.Second {
		t.Fatalf("device after RequireRekey: %+v, %v", d, err)
	}
	if err := s.Renew(ctx, renewal(t, e.Certificate.Serial, true)); !errors.Is(err, registry.ErrRekeyRequired) {
		t.Fatalf("same-key renewal after rotate: %v, want ErrRekeyRequired", err)
	}
	if err := s.Renew(ctx, renewal(t, e.Certificate.Serial, false)); err != nil {
		t.Fatalf("new-key renewal after rotate: %v", err)
	}
	if d, _ := s.GetDevice(ctx, e.Device.ID); d.RekeyRequired || d.RekeyDeadline != nil {
		t.Fatalf("re-key did not clear the flag: %+v", d)
	}
	if err := s.RequireRekey(ctx, "no-such-device", true, nil, nil); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("RequireRekey of an unknown device: %v", err)
	}
	verify(t, s)
}

func testRenewRevoked(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-RENEW-REVOKED")
	if _, err := s.RevokeDevice(ctx, e.Device.ID, registry.ReasonKeyCompromise, revokeEvent("device.revoke", e.Device.ID)); err != nil {
		t.Fatal(err)
	}
	err := s.Renew(ctx, renewal(t, e.Certificate.Serial, true))
	if !errors.Is(err, registry.ErrNotRenewable) && !errors.Is(err, registry.ErrDeviceNotActive) {
		t.Fatalf("renewal of a revoked device: %v", err)
	}
	verify(t, s)
}

// testCertificateKeyAndToken: an enrollment records its certificate's key
// hash and the token it spent, which a resent answer is matched on
// (provision's replay of a lost answer).
func testCertificateKeyAndToken(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tok := mkToken(t, s, registry.DefaultTenant, "", 1, future())
	e := newEnrollment(t, registry.DefaultTenant, "SN-BYKEY", tok.Hash)
	e.Certificate.KeySHA256 = []byte(randHex(t, 32))
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCertificate(ctx, e.Certificate.Serial)
	if err != nil || string(got.KeySHA256) != string(e.Certificate.KeySHA256) || string(got.TokenHash) != string(tok.Hash) {
		t.Fatalf("GetCertificate: %+v, %v; want the enrolled certificate with its key hash and token hash", got, err)
	}
}

func testTPMRoots(t *testing.T, s registry.Store) {
	ctx := context.Background()
	r := &registry.TPMRoot{Fingerprint: randHex(t, 32), DER: []byte{0x30, 0x00}, Subject: "CN=Maker Root", AddedBy: "admin:x"}
	if err := s.PutTPMRoot(ctx, r, revokeEvent("tpm.root.add", r.Fingerprint)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTPMRoot(ctx, r, nil); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("second PutTPMRoot: %v, want ErrAlreadyExists", err)
	}
	if r.Kind != registry.TPMRootCA {
		t.Errorf("PutTPMRoot without a kind: kind %q, want root", r.Kind)
	}
	got, err := s.ListTPMRoots(ctx)
	if err != nil || len(got) != 1 || got[0].Fingerprint != r.Fingerprint || got[0].Subject != r.Subject || got[0].Kind != registry.TPMRootCA {
		t.Fatalf("ListTPMRoots: %+v, %v", got, err)
	}
	// An intermediate keeps its kind; an unknown kind is refused.
	in := &registry.TPMRoot{Fingerprint: randHex(t, 32), DER: []byte{0x30, 0x00}, Subject: "CN=Maker Issuing CA",
		Kind: registry.TPMIntermediate, AddedBy: "admin:x", CreatedAt: r.CreatedAt.Add(time.Second)}
	if err := s.PutTPMRoot(ctx, in, revokeEvent("tpm.root.add", in.Fingerprint)); err != nil {
		t.Fatal(err)
	}
	bad := &registry.TPMRoot{Fingerprint: randHex(t, 32), DER: []byte{0x30, 0x00}, Subject: "CN=X", Kind: "leaf"}
	if err := s.PutTPMRoot(ctx, bad, revokeEvent("tpm.root.add", bad.Fingerprint)); err == nil {
		t.Fatal("PutTPMRoot with kind leaf succeeded")
	}
	got, err = s.ListTPMRoots(ctx)
	if err != nil || len(got) != 2 || got[1].Fingerprint != in.Fingerprint || got[1].Kind != registry.TPMIntermediate {
		t.Fatalf("ListTPMRoots after an intermediate: %+v, %v", got, err)
	}
	verify(t, s)
}

// testCertificateAndDevice: the joined lookup returns what GetCertificate
// and GetDevice return, a nil device for a certificate without one, and
// ErrNotFound for an unknown serial.
func testCertificateAndDevice(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-JOINED")
	wantCert, err := s.GetCertificate(ctx, e.Certificate.Serial)
	if err != nil {
		t.Fatal(err)
	}
	wantDev, err := s.GetDevice(ctx, e.Device.ID)
	if err != nil {
		t.Fatal(err)
	}
	cert, dev, err := s.GetCertificateAndDevice(ctx, e.Certificate.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cert, wantCert) {
		t.Errorf("certificate\n%+v\nwant GetCertificate's\n%+v", cert, wantCert)
	}
	if !reflect.DeepEqual(dev, wantDev) {
		t.Errorf("device\n%+v\nwant GetDevice's\n%+v", dev, wantDev)
	}

	now := time.Now().UTC().Truncate(time.Second)
	admin := &registry.Certificate{Serial: randHex(t, 20), Kind: registry.KindAdmin, Subject: "CN=joined", NotBefore: now,
		NotAfter: now.Add(time.Hour), DER: []byte{1}, Status: registry.CertActive}
	if err := s.RecordCertificate(ctx, admin, &registry.AuditEvent{Actor: "system", Action: "cert.issue", Target: admin.Serial}); err != nil {
		t.Fatal(err)
	}
	cert, dev, err = s.GetCertificateAndDevice(ctx, admin.Serial)
	if err != nil || cert == nil || cert.Serial != admin.Serial || cert.Kind != registry.KindAdmin || dev != nil {
		t.Fatalf("certificate without a device: %+v, %+v, %v; want it and a nil device", cert, dev, err)
	}
	if cert, dev, err := s.GetCertificateAndDevice(ctx, randHex(t, 20)); !errors.Is(err, registry.ErrNotFound) || cert != nil || dev != nil {
		t.Fatalf("unknown serial: %+v, %+v, %v; want ErrNotFound", cert, dev, err)
	}
}
