package storetest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// testDeviceAKPub: Device.AKPub is stored on insert, read back by every
// device read, replaced by a same-EK re-enrollment, cleared by a token
// re-enrollment that brings none, left alone by a refused enrollment and by
// renewals.
func testDeviceAKPub(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ek, otherEK := strings.Repeat("d", 64), strings.Repeat("f", 64)
	akA, akB := []byte{0x30, 0x01, 0xaa}, []byte{0x30, 0x02, 0xbb, 0xbb}
	tpmEnrollment := func(ek string, ak []byte) *registry.Enrollment {
		e := newEnrollment(t, tn.ID, "AK1", nil)
		e.Device.Method, e.Device.EKHash, e.Device.AKPub = "tpm", ek, ak
		return e
	}
	wantAK := func(t *testing.T, what string, want []byte) {
		t.Helper()
		id := deviceID(tn.ID, "AK1")
		d, err := s.GetDevice(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d.AKPub, want) {
			t.Errorf("%s: GetDevice AKPub = %x, want %x", what, d.AKPub, want)
		}
		if d, err := s.GetDeviceBySerial(ctx, tn.ID, "AK1"); err != nil || !bytes.Equal(d.AKPub, want) {
			t.Errorf("%s: GetDeviceBySerial AKPub = %x, %v; want %x", what, d.AKPub, err, want)
		}
		l, err := s.ListDevices(ctx, registry.DeviceFilter{Serial: "AK1"})
		if err != nil || len(l) != 1 || !bytes.Equal(l[0].AKPub, want) {
			t.Errorf("%s: ListDevices = %+v, %v; want AKPub %x", what, l, err, want)
		}
	}

	first := tpmEnrollment(ek, akA)
	if err := s.Enroll(ctx, first); err != nil {
		t.Fatal(err)
	}
	wantAK(t, "after TPM enrollment", akA)

	// Renewals (same key and new key) keep the AK.
	r := renewal(t, first.Certificate.Serial, true)
	if err := s.Renew(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.Renew(ctx, renewal(t, r.Certificate.Serial, false)); err != nil {
		t.Fatal(err)
	}
	wantAK(t, "after renewals", akA)

	// Another EK may not take the serial; the stored AK stays.
	if err := s.Enroll(ctx, tpmEnrollment(otherEK, akB)); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("other EK: %v, want ErrSerialConflict", err)
	}
	wantAK(t, "after a refused enrollment", akA)

	// The same EK re-enrolls with a new AK: the new AK replaces the old.
	if err := s.Enroll(ctx, reenrolling(t, s, tpmEnrollment(ek, akB))); err != nil {
		t.Fatalf("same EK, new AK: %v", err)
	}
	wantAK(t, "after same-EK re-enrollment", akB)

	// A token bound to the serial re-enrolls it without attestation: no AK.
	tok := mkToken(t, s, tn.ID, "AK1", 1, future())
	e := reenrolling(t, s, newEnrollment(t, tn.ID, "AK1", tok.Hash))
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatalf("token re-enrollment: %v", err)
	}
	wantAK(t, "after token re-enrollment", nil)

	// Devices enrolled without attestation have none.
	plain := newEnrollment(t, tn.ID, "AK2", nil)
	if err := s.Enroll(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if d, err := s.GetDevice(ctx, plain.Device.ID); err != nil || d.AKPub != nil {
		t.Errorf("token device AKPub = %x, %v; want nil", d.AKPub, err)
	}
	verify(t, s)
}
