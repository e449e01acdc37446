package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// enrolled enrolls serial in the default tenant without a token and returns
// the enrollment.
func enrolled(t *testing.T, s registry.Store, serial string) *registry.Enrollment {
	t.Helper()
	e := newEnrollment(t, registry.DefaultTenant, serial, nil)
	if err := s.Enroll(context.Background(), e); err != nil {
		t.Fatalf("Enroll(%s): %v", serial, err)
	}
	return e
}

func revokeEvent(action, target string) *registry.AuditEvent {
	return &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "admin:test", Action: action, Target: target,
		Result: registry.ResultOK}
}

func testRevokeCertificate(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-REV")
	serial := e.Certificate.Serial
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	_, before := auditHead(t, s)

	ev := revokeEvent("cert.revoke", serial)
	c, err := s.RevokeCertificate(ctx, serial, registry.ReasonKeyCompromise, at, ev)
	if err != nil {
		t.Fatalf("RevokeCertificate: %v", err)
	}
	if c.Status != registry.CertRevoked || c.RevokedAt == nil || !c.RevokedAt.Equal(at) || c.RevocationReason != registry.ReasonKeyCompromise {
		t.Errorf("returned certificate = %+v, want revoked at %v for keyCompromise", c, at)
	}
	if ev.Seq != before+1 {
		t.Errorf("audit Seq = %d, want %d", ev.Seq, before+1)
	}
	got, err := s.GetCertificate(ctx, serial)
	if err != nil || got.Status != registry.CertRevoked || got.RevokedAt == nil || !got.RevokedAt.Equal(at) ||
		got.RevocationReason != registry.ReasonKeyCompromise {
		t.Fatalf("GetCertificate after revoke = %+v, %v", got, err)
	}

	// Idempotent: a second revocation changes nothing and writes no event.
	again, err := s.RevokeCertificate(ctx, serial, registry.ReasonSuperseded, time.Time{}, revokeEvent("cert.revoke", serial))
	if !errors.Is(err, registry.ErrAlreadyRevoked) {
		t.Fatalf("second RevokeCertificate err = %v, want ErrAlreadyRevoked", err)
	}
	if again == nil || again.RevocationReason != registry.ReasonKeyCompromise || !again.RevokedAt.Equal(at) {
		t.Errorf("second RevokeCertificate returned %+v, want the unchanged revoked certificate", again)
	}
	if _, last := auditHead(t, s); last != before+1 {
		t.Errorf("audit head after second revoke = %d, want %d (one event)", last, before+1)
	}

	if _, err := s.RevokeCertificate(ctx, "00", 0, time.Time{}, revokeEvent("cert.revoke", "00")); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("RevokeCertificate(unknown) = %v, want ErrNotFound", err)
	}
	// The device itself stays active: only one certificate was revoked.
	if d, err := s.GetDevice(ctx, e.Device.ID); err != nil || d.Status != registry.DeviceActive {
		t.Errorf("device after certificate revoke = %+v, %v", d, err)
	}
	verify(t, s)
}

func testRevokeInvalidReason(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-REASON")
	n, before := auditHead(t, s)
	for _, r := range []int{-1, 7, 11, 99} {
		_, err := s.RevokeCertificate(ctx, e.Certificate.Serial, r, time.Time{}, revokeEvent("cert.revoke", e.Certificate.Serial))
		var ire *registry.InvalidReasonError
		if !errors.Is(err, registry.ErrInvalidReason) || !errors.As(err, &ire) {
			t.Errorf("RevokeCertificate(reason %d) = %v, want an InvalidReasonError", r, err)
		}
		if _, err := s.RevokeDevice(ctx, e.Device.ID, r, revokeEvent("device.revoke", e.Device.ID)); !errors.Is(err, registry.ErrInvalidReason) {
			t.Errorf("RevokeDevice(reason %d) = %v, want ErrInvalidReason", r, err)
		}
	}
	if c, _ := s.GetCertificate(ctx, e.Certificate.Serial); c.Status != registry.CertActive {
		t.Errorf("certificate status = %s after refused revocations", c.Status)
	}
	if n2, last := auditHead(t, s); n2 != n || last != before {
		t.Errorf("audit changed by refused revocations: %d events, want %d", n2, n)
	}
	for r := 0; r <= 10; r++ {
		if err := registry.ValidReason(r); (err == nil) == (r == 7) {
			t.Errorf("ValidReason(%d) = %v", r, err)
		}
	}
}

func testRevokeDevice(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-DEVREV")
	other := enrolled(t, s, "SN-DEVKEEP")
	// A second, renewed certificate of the same device, and an expired one.
	now := time.Now()
	renewed := &registry.Certificate{
		Serial: randHex(t, 20), Kind: registry.KindDevice, DeviceID: e.Device.ID, TenantID: registry.DefaultTenant,
		Subject: "CN=" + e.Device.ID, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		DER: []byte{1}, Status: registry.CertActive, ReplacesSerial: e.Certificate.Serial,
	}
	expired := &registry.Certificate{
		Serial: randHex(t, 20), Kind: registry.KindDevice, DeviceID: e.Device.ID, TenantID: registry.DefaultTenant,
		Subject: "CN=" + e.Device.ID, NotBefore: now.Add(-2 * time.Hour), NotAfter: now.Add(-time.Hour),
		DER: []byte{1}, Status: registry.CertSuperseded,
	}
	for _, c := range []*registry.Certificate{renewed, expired} {
		if err := s.RecordCertificate(ctx, c, nil); err != nil {
			t.Fatalf("RecordCertificate: %v", err)
		}
	}
	_, before := auditHead(t, s)
	ev := revokeEvent("device.revoke", e.Device.ID)
	certs, err := s.RevokeDevice(ctx, e.Device.ID, registry.ReasonCessationOfOperation, ev)
	if err != nil {
		t.Fatalf("RevokeDevice: %v", err)
	}
	if len(certs) != 2 {
		t.Fatalf("RevokeDevice revoked %d certificates, want 2 (the expired one is left alone)", len(certs))
	}
	want := map[string]bool{e.Certificate.Serial: true, renewed.Serial: true}
	for _, c := range certs {
		if !want[c.Serial] || c.Status != registry.CertRevoked || c.RevocationReason != registry.ReasonCessationOfOperation || c.RevokedAt == nil {
			t.Errorf("revoked certificate %+v", c)
		}
	}
	if ev.Seq != before+1 {
		t.Errorf("audit Seq = %d, want %d", ev.Seq, before+1)
	}
	if d, err := s.GetDevice(ctx, e.Device.ID); err != nil || d.Status != registry.DeviceRevoked {
		t.Errorf("device after revoke = %+v, %v", d, err)
	}
	for serial, status := range map[string]registry.CertStatus{
		e.Certificate.Serial: registry.CertRevoked, renewed.Serial: registry.CertRevoked,
		expired.Serial: registry.CertSuperseded, other.Certificate.Serial: registry.CertActive,
	} {
		if c, err := s.GetCertificate(ctx, serial); err != nil || c.Status != status {
			t.Errorf("certificate %s: %+v, %v; want status %s", serial, c, err, status)
		}
	}
	if d, _ := s.GetDevice(ctx, other.Device.ID); d.Status != registry.DeviceActive {
		t.Errorf("other device status = %s", d.Status)
	}

	// Idempotent.
	again, err := s.RevokeDevice(ctx, e.Device.ID, registry.ReasonKeyCompromise, revokeEvent("device.revoke", e.Device.ID))
	if !errors.Is(err, registry.ErrAlreadyRevoked) || len(again) != 0 {
		t.Errorf("second RevokeDevice = %v, %v; want ErrAlreadyRevoked and nothing", again, err)
	}
	if _, last := auditHead(t, s); last != before+1 {
		t.Errorf("audit head after second revoke = %d, want %d", last, before+1)
	}
	if c, _ := s.GetCertificate(ctx, renewed.Serial); c.RevocationReason != registry.ReasonCessationOfOperation {
		t.Errorf("second revoke changed the reason to %d", c.RevocationReason)
	}
	if _, err := s.RevokeDevice(ctx, "no-such-device", 0, revokeEvent("device.revoke", "x")); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("RevokeDevice(unknown) = %v, want ErrNotFound", err)
	}
	verify(t, s)
}

// testRevokedExpiry: what a CRL lists over time — nothing on a fresh
// store, then the revoked certificates until each expires.
func testRevokedExpiry(t *testing.T, s registry.Store) {
	ctx := context.Background()
	now := time.Now()
	if l := eachRevoked(t, s, 0, now); len(l) != 0 {
		t.Fatalf("EachRevoked on a fresh store = %v", l)
	}
	mk := func(notAfter time.Time) *registry.Certificate {
		c := &registry.Certificate{
			Serial: randHex(t, 20), Kind: registry.KindClient, Subject: "CN=x",
			NotBefore: now.Add(-48 * time.Hour), NotAfter: notAfter, DER: []byte{1},
		}
		if err := s.RecordCertificate(ctx, c, nil); err != nil {
			t.Fatalf("RecordCertificate: %v", err)
		}
		return c
	}
	live := mk(now.Add(time.Hour))
	soon := mk(now.Add(2 * time.Minute))
	gone := mk(now.Add(-time.Minute))
	active := mk(now.Add(time.Hour))
	at := now.Add(-time.Hour).UTC().Truncate(time.Second)
	for _, c := range []*registry.Certificate{live, soon, gone} {
		if _, err := s.RevokeCertificate(ctx, c.Serial, registry.ReasonKeyCompromise, at, nil); err != nil {
			t.Fatalf("RevokeCertificate: %v", err)
		}
	}
	l := eachRevoked(t, s, 0, now)
	got := map[string]revokedEntry{}
	for _, e := range l {
		got[e.Serial] = e
	}
	if len(l) != 2 || got[live.Serial].Serial == "" || got[soon.Serial].Serial == "" {
		t.Fatalf("EachRevoked = %+v, want %s and %s only (not the expired %s nor the active %s)",
			l, live.Serial, soon.Serial, gone.Serial, active.Serial)
	}
	if e := got[live.Serial]; e.Reason != registry.ReasonKeyCompromise || !e.RevokedAt.Equal(at) {
		t.Errorf("entry = %+v, want keyCompromise at %v", e, at)
	}
	// Later, the short-lived one has expired and drops out.
	if l := eachRevoked(t, s, 0, now.Add(5*time.Minute)); len(l) != 1 || l[0].Serial != live.Serial {
		t.Errorf("EachRevoked(now+5m) = %+v; want only %s", l, live.Serial)
	}
}

func testNextCRLNumber(t *testing.T, s registry.Store) {
	ctx := context.Background()
	first, err := s.NextCRLNumber(ctx)
	if err != nil {
		t.Fatalf("NextCRLNumber: %v", err)
	}
	if first != 1 {
		t.Errorf("first CRL number = %d, want 1", first)
	}
	const n = 40
	nums := make([]int64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nums[i], errs[i] = s.NextCRLNumber(ctx)
		}()
	}
	wg.Wait()
	seen := map[int64]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent NextCRLNumber: %v", errs[i])
		}
		if nums[i] <= first || nums[i] > first+n || seen[nums[i]] {
			t.Errorf("concurrent NextCRLNumber gave %d (dup or out of range)", nums[i])
		}
		seen[nums[i]] = true
	}
	last, err := s.NextCRLNumber(ctx)
	if err != nil || last != first+n+1 {
		t.Errorf("NextCRLNumber after %d calls = %d, %v; want %d", n, last, err, first+n+1)
	}
}
