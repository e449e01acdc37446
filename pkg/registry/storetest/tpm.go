package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// testReEnrollSameEK: an enrollment that does not name the device it
// re-enrolls (Replace) never takes an enrolled serial, whatever its EK; one
// that does re-enrolls it only while the device is as Replace says (status
// and EK), else ErrConflict; a revoked device is re-enrolled (reinstated)
// only by an enrollment that expects it revoked. ListDevices finds devices
// by EK hash.
func testReEnrollSameEK(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ekA, ekB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	tpmEnrollment := func(serial, ek string) *registry.Enrollment {
		e := newEnrollment(t, tn.ID, serial, nil)
		e.Device.Method, e.Device.EKHash = "tpm", ek
		return e
	}
	if err := s.Enroll(ctx, tpmEnrollment("TPM1", ekA)); err != nil {
		t.Fatalf("first TPM enrollment: %v", err)
	}
	got, err := s.ListDevices(ctx, registry.DeviceFilter{EKHash: ekA})
	if err != nil || len(got) != 1 || got[0].Serial != "TPM1" || got[0].EKHash != ekA || got[0].Method != "tpm" {
		t.Fatalf("ListDevices(EKHash) = %+v, %v", got, err)
	}
	if got, err := s.ListDevices(ctx, registry.DeviceFilter{EKHash: ekB}); err != nil || len(got) != 0 {
		t.Fatalf("ListDevices(other EK) = %+v, %v", got, err)
	}

	other := tpmEnrollment("TPM1", ekB)
	before := takeSnapshot(t, s, other, nil)
	if err := s.Enroll(ctx, other); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("same serial, other EK: %v, want ErrSerialConflict", err)
	}
	requireUnchanged(t, s, other, nil, before)

	if err := s.Enroll(ctx, tpmEnrollment("TPM1", ekA)); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("same serial, same EK, not a re-enrollment: %v, want ErrSerialConflict", err)
	}
	noEK := newEnrollment(t, tn.ID, "tpm1", nil)
	if err := s.Enroll(ctx, noEK); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("same serial in another case: %v, want ErrSerialConflict", err)
	}

	// A re-enrollment that expected another EK than the stored one: the
	// device changed since it was read.
	stale := reenrolling(t, s, tpmEnrollment("TPM1", ekB))
	stale.Replace.EKHash = ekB
	before = takeSnapshot(t, s, stale, nil)
	if err := s.Enroll(ctx, stale); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("re-enrollment expecting EK B: %v, want ErrConflict", err)
	}
	requireUnchanged(t, s, stale, nil, before)

	again := reenrolling(t, s, tpmEnrollment("TPM1", ekA))
	if err := s.Enroll(ctx, again); err != nil {
		t.Fatalf("same serial, same EK: %v", err)
	}
	certs, err := s.ListDeviceCertificates(ctx, again.Device.ID)
	if err != nil || len(certs) != 2 {
		t.Fatalf("certificates after re-enrollment = %d, %v; want 2", len(certs), err)
	}
	for _, c := range certs {
		want := registry.CertRevoked
		if c.Serial == again.Certificate.Serial {
			want = registry.CertActive
		}
		if c.Status != want {
			t.Errorf("certificate %s is %s, want %s", c.Serial, c.Status, want)
		}
	}

	if _, err := s.RevokeDevice(ctx, again.Device.ID, 1, &registry.AuditEvent{
		TenantID: tn.ID, Actor: "admin:test", Action: "device.revoke", Target: again.Device.ID, Result: registry.ResultOK,
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Enroll(ctx, tpmEnrollment("TPM1", ekA)); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("revoked device, same EK: %v, want ErrSerialConflict", err)
	}
	// A re-enrollment read before the revocation finds the device changed.
	stale = tpmEnrollment("TPM1", ekA)
	stale.Replace = again.Device
	if err := s.Enroll(ctx, stale); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("re-enrollment expecting the device active after its revocation: %v, want ErrConflict", err)
	}
	// One that expects it revoked (provision's reinstatement) brings it back.
	back := reenrolling(t, s, tpmEnrollment("TPM1", ekA))
	if back.Replace.Status != registry.DeviceRevoked {
		t.Fatalf("device status %s, want revoked", back.Replace.Status)
	}
	if err := s.Enroll(ctx, back); err != nil {
		t.Fatalf("reinstating re-enrollment: %v", err)
	}
	if d, err := s.GetDevice(ctx, back.Device.ID); err != nil || d.Status != registry.DeviceActive || d.ID != again.Device.ID {
		t.Errorf("device after reinstatement = %+v, %v; want active, same id", d, err)
	}
	verify(t, s)
}

// testPreregistration: an EK hash is pre-registered once, with audit, and
// read back.
func testPreregistration(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ek := strings.Repeat("c", 64)
	if _, err := s.GetPreregistration(ctx, ek); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetPreregistration(unknown) = %v, want ErrNotFound", err)
	}
	audit := func() *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: tn.ID, Actor: "admin:test", Action: "tpm.preregister", Target: ek, Result: registry.ResultOK}
	}
	p := &registry.Preregistration{EKHash: ek, TenantID: tn.ID, Serial: "PRE-1", MACs: []string{"020000000001"}, CreatedBy: "admin:test"}
	n, _ := auditHead(t, s)
	if err := s.PutPreregistration(ctx, p, audit()); err != nil {
		t.Fatal(err)
	}
	if m, _ := auditHead(t, s); m != n+1 {
		t.Errorf("audit events %d → %d, want one more", n, m)
	}
	got, err := s.GetPreregistration(ctx, ek)
	if err != nil || got.Serial != "PRE-1" || got.TenantID != tn.ID || len(got.MACs) != 1 || got.MACs[0] != "020000000001" || got.CreatedAt.IsZero() {
		t.Fatalf("GetPreregistration = %+v, %v", got, err)
	}
	dup := *p
	dup.Serial = "PRE-2"
	if err := s.PutPreregistration(ctx, &dup, audit()); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("second PutPreregistration = %v, want ErrAlreadyExists", err)
	}
	if m, _ := auditHead(t, s); m != n+1 {
		t.Errorf("a refused pre-registration wrote an audit event")
	}
	verify(t, s)
}
