package storetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// randHex returns n random bytes as lowercase hex.
func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// mkTenant creates a tenant named name.
func mkTenant(t testing.TB, s registry.Store, name string) *registry.Tenant {
	t.Helper()
	tn := &registry.Tenant{ID: "t-" + name, Name: name}
	ev := &registry.AuditEvent{Actor: "system", Action: "tenant.create", Target: tn.ID, Result: registry.ResultOK}
	if err := s.CreateTenant(context.Background(), tn, ev); err != nil {
		t.Fatalf("CreateTenant(%s): %v", name, err)
	}
	return tn
}

// mkToken creates a token with a fresh secret and returns it.
func mkToken(t testing.TB, s registry.Store, tenantID, serial string, uses int, expires time.Time) *registry.Token {
	t.Helper()
	secret := randHex(t, 16)
	sum := sha256.Sum256([]byte(secret))
	tok := &registry.Token{
		ID: "tok-" + randHex(t, 6), Hash: sum[:], TenantID: tenantID, Serial: serial,
		ExpiresAt: expires, UsesLeft: uses, CreatedBy: "admin:test",
	}
	ev := &registry.AuditEvent{TenantID: tenantID, Actor: "admin:test", Action: "token.create", Target: tok.ID, Result: registry.ResultOK}
	if err := s.CreateToken(context.Background(), tok, ev); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}
	return tok
}

// future is an expiry well past any test run.
func future() time.Time { return time.Now().Add(24 * time.Hour) }

// deviceID is the id the suite gives the device (tenant, serial).
func deviceID(tenantID, serial string) string { return "dev-" + tenantID + "-" + serial }

// newEnrollment builds a complete enrollment of serial in tenantID.
func newEnrollment(t testing.TB, tenantID, serial string, tokenHash []byte) *registry.Enrollment {
	t.Helper()
	id := deviceID(tenantID, serial)
	now := time.Now()
	return &registry.Enrollment{
		TokenHash: tokenHash,
		Device: &registry.Device{
			ID: id, TenantID: tenantID, Serial: serial, MACs: []string{randHex(t, 6)},
			Status: registry.DeviceActive, Method: "token",
		},
		Certificate: &registry.Certificate{
			Serial: randHex(t, 20), Kind: registry.KindDevice, DeviceID: id, TenantID: tenantID,
			Subject: "CN=" + id + ",SERIALNUMBER=" + serial, SANs: []string{"spiffe://test/" + tenantID + "/device/" + serial},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(30 * 24 * time.Hour), DER: []byte{0x30, 0x03, 0x02, 0x01, 0x01},
			Status: registry.CertActive,
		},
		Audit: &registry.AuditEvent{
			TenantID: tenantID, Actor: "device:" + id, Action: "enroll", Target: id,
			Result: registry.ResultOK, Detail: "serial=" + serial, SourceAddr: "192.0.2.1:1234",
		},
	}
}

// reenrolling makes e the re-enrollment of the device stored under its
// tenant and serial, as provision makes it once it decided so: Replace is
// the device as read now, Device keeps its id.
func reenrolling(t testing.TB, s registry.Store, e *registry.Enrollment) *registry.Enrollment {
	t.Helper()
	d, err := s.GetDeviceBySerial(context.Background(), e.Device.TenantID, e.Device.Serial)
	if err != nil {
		t.Fatalf("reenrolling: %v", err)
	}
	e.Replace = d
	e.Device.ID, e.Certificate.DeviceID, e.Audit.Target = d.ID, d.ID, d.ID
	return e
}

// auditHead pages through the whole log and returns the number of events and
// the last Seq.
func auditHead(t testing.TB, s registry.Store) (n int, last int64) {
	t.Helper()
	for {
		evs, err := s.ListAudit(context.Background(), last, 500)
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		if len(evs) == 0 {
			return n, last
		}
		n += len(evs)
		last = evs[len(evs)-1].Seq
	}
}

// usesLeft reads a token's remaining uses.
func usesLeft(t testing.TB, s registry.Store, hash []byte) int {
	t.Helper()
	tok, err := s.GetToken(context.Background(), hash)
	if err != nil {
		t.Fatalf("GetToken: %v", err)
	}
	return tok.UsesLeft
}

// snapshot is what a refused enrollment must leave unchanged.
type snapshot struct {
	devErr   error
	device   *registry.Device
	certs    int
	uses     int
	auditLen int
}

func takeSnapshot(t testing.TB, s registry.Store, e *registry.Enrollment, tokenHash []byte) snapshot {
	t.Helper()
	ctx := context.Background()
	var sn snapshot
	sn.device, sn.devErr = s.GetDeviceBySerial(ctx, e.Device.TenantID, e.Device.Serial)
	certs, err := s.ListDeviceCertificates(ctx, e.Device.ID)
	if err != nil {
		t.Fatalf("ListDeviceCertificates: %v", err)
	}
	sn.certs = len(certs)
	if tokenHash != nil {
		if tok, err := s.GetToken(ctx, tokenHash); err == nil {
			sn.uses = tok.UsesLeft
		}
	}
	sn.auditLen, _ = auditHead(t, s)
	return sn
}

// requireUnchanged fails unless the store looks as it did in before and the
// refused certificate was not recorded.
func requireUnchanged(t testing.TB, s registry.Store, e *registry.Enrollment, tokenHash []byte, before snapshot) {
	t.Helper()
	after := takeSnapshot(t, s, e, tokenHash)
	if (before.devErr == nil) != (after.devErr == nil) {
		t.Errorf("device existence changed: before err=%v, after err=%v", before.devErr, after.devErr)
	}
	if before.device != nil && after.device != nil && before.device.UpdatedAt != after.device.UpdatedAt {
		t.Errorf("device was updated: %v -> %v", before.device.UpdatedAt, after.device.UpdatedAt)
	}
	if after.certs != before.certs {
		t.Errorf("device certificates: %d, want %d", after.certs, before.certs)
	}
	if after.uses != before.uses {
		t.Errorf("token uses left: %d, want %d (token spent by a refused enrollment)", after.uses, before.uses)
	}
	if after.auditLen != before.auditLen {
		t.Errorf("audit events: %d, want %d", after.auditLen, before.auditLen)
	}
	if _, err := s.GetCertificate(context.Background(), e.Certificate.Serial); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("GetCertificate of refused enrollment: err=%v, want ErrNotFound", err)
	}
}

// verify fails the test if the audit chain does not verify.
func verify(t testing.TB, s registry.Store) {
	t.Helper()
	if err := s.VerifyAudit(context.Background()); err != nil {
		t.Fatalf("VerifyAudit: %v", err)
	}
}
