package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// testReEnrollSameEK: a TPM enrollment (SameEK, no token) re-enrolls an
// active device only with the EK it is bound to; ListDevices finds devices by
// EK hash.
func testReEnrollSameEK(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ekA, ekB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	tpmEnrollment := func(serial, ek string) *registry.Enrollment {
		e := newEnrollment(t, tn.ID, serial, nil)
		e.SameEK, e.Device.Method, e.Device.EKHash = true, "tpm", ek
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

	noEK := newEnrollment(t, tn.ID, "TPM1", nil)
	if err := s.Enroll(ctx, noEK); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("same serial, no token and no SameEK: %v, want ErrSerialConflict", err)
	}

	again := tpmEnrollment("TPM1", ekA)
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
	verify(t, s)
}
