package storetest

import (
	"context"
	"errors"
	"testing"

	"devpki/pkg/registry"
)

// testReinstateDevice: a revoked device comes back to active, nothing else
// changes (its certificates stay revoked), with its audit event; an unknown
// or not revoked device is refused and nothing is written.
func testReinstateDevice(t *testing.T, s registry.Store) {
	ctx := context.Background()
	e := enrolled(t, s, "SN-REINSTATE")
	id := e.Device.ID

	// Not revoked: refused, nothing written.
	_, before := auditHead(t, s)
	if _, err := s.ReinstateDevice(ctx, id, revokeEvent("device.reinstate", id)); !errors.Is(err, registry.ErrNotRevoked) {
		t.Fatalf("ReinstateDevice(active) = %v, want ErrNotRevoked", err)
	}
	if _, err := s.ReinstateDevice(ctx, "no-such-device", revokeEvent("device.reinstate", "no-such-device")); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ReinstateDevice(unknown) = %v, want ErrNotFound", err)
	}
	if _, last := auditHead(t, s); last != before {
		t.Fatalf("audit head %d after refused reinstatements, want %d", last, before)
	}

	if _, err := s.RevokeDevice(ctx, id, registry.ReasonKeyCompromise, revokeEvent("device.revoke", id)); err != nil {
		t.Fatal(err)
	}
	revoked, err := s.GetDevice(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, before = auditHead(t, s)
	ev := revokeEvent("device.reinstate", id)
	d, err := s.ReinstateDevice(ctx, id, ev)
	if err != nil {
		t.Fatalf("ReinstateDevice: %v", err)
	}
	if d.ID != id || d.Status != registry.DeviceActive || d.Serial != revoked.Serial || d.TenantID != revoked.TenantID {
		t.Errorf("returned device = %+v, want %s active", d, id)
	}
	if ev.Seq != before+1 {
		t.Errorf("audit Seq = %d, want %d", ev.Seq, before+1)
	}
	got, err := s.GetDevice(ctx, id)
	if err != nil || got.Status != registry.DeviceActive || got.EKHash != revoked.EKHash ||
		got.RekeyRequired != revoked.RekeyRequired || len(got.MACs) != len(revoked.MACs) {
		t.Fatalf("GetDevice after reinstate = %+v, %v; want %+v but active", got, err, revoked)
	}
	c, err := s.GetCertificate(ctx, e.Certificate.Serial)
	if err != nil || c.Status != registry.CertRevoked {
		t.Errorf("certificate after reinstate = %+v, %v; want it still revoked", c, err)
	}
	if rev := eachRevoked(t, s, 0, e.Certificate.NotBefore); !hasSerial(rev, e.Certificate.Serial) {
		t.Errorf("EachRevoked after reinstate = %v; want %s still listed", rev, e.Certificate.Serial)
	}

	// Once active again, a second reinstatement is refused.
	if _, err := s.ReinstateDevice(ctx, id, revokeEvent("device.reinstate", id)); !errors.Is(err, registry.ErrNotRevoked) {
		t.Errorf("second ReinstateDevice = %v, want ErrNotRevoked", err)
	}
	if _, last := auditHead(t, s); last != before+1 {
		t.Errorf("audit head %d, want %d (one event)", last, before+1)
	}
	verify(t, s)
}
