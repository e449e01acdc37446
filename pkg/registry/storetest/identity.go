package storetest

import (
	"context"
	"errors"
	"testing"

	"devpki/pkg/registry"
)

// testMACUnique: a MAC belongs to at most one active device per tenant. A
// new device claiming a MAC of an active one is ErrMACConflict with
// nothing written; the device re-enrolling with its own MACs is fine; once
// the holder is revoked the MAC is free; another tenant's MACs are its own.
func testMACUnique(t *testing.T, s registry.Store) {
	ctx := context.Background()
	other := mkTenant(t, s, "mac-other")
	const mac = "02000000beef"
	withMACs := func(tenantID, serial string, macs ...string) *registry.Enrollment {
		e := newEnrollment(t, tenantID, serial, nil)
		e.Device.MACs = macs
		return e
	}
	holder := withMACs(registry.DefaultTenant, "MAC-1", mac, "02000000bee1")
	if err := s.Enroll(ctx, holder); err != nil {
		t.Fatal(err)
	}
	holders := func(tenantID string, macs ...string) []string {
		t.Helper()
		ds, err := s.IdentityHolders(ctx, tenantID, "NO-SUCH-SERIAL", macs)
		if err != nil {
			t.Fatalf("IdentityHolders(%s, %v): %v", tenantID, macs, err)
		}
		ids := make([]string, len(ds))
		for i, d := range ds {
			ids[i] = d.ID
		}
		return ids
	}
	if got := holders(registry.DefaultTenant, "02000000cafe", mac, "02000000bee1"); len(got) != 1 || got[0] != holder.Device.ID {
		t.Errorf("IdentityHolders = %v, want only %s (once, though it holds two of the MACs)", got, holder.Device.ID)
	}
	if got := holders(other.ID, mac); len(got) != 0 {
		t.Errorf("IdentityHolders in another tenant = %v, want none", got)
	}
	if got := holders(registry.DefaultTenant); len(got) != 0 {
		t.Errorf("IdentityHolders of no MAC = %v, want none", got)
	}
	// The serial (in any case) and a MAC of the same device: the device once.
	if ds, err := s.IdentityHolders(ctx, registry.DefaultTenant, "mac-1", []string{mac}); err != nil || len(ds) != 1 ||
		ds[0].ID != holder.Device.ID || ds[0].Serial != "MAC-1" {
		t.Errorf("IdentityHolders(mac-1, its MAC) = %+v, %v; want %s once", ds, err, holder.Device.ID)
	}
	if ds, err := s.IdentityHolders(ctx, other.ID, "MAC-1", nil); err != nil || len(ds) != 0 {
		t.Errorf("IdentityHolders of a serial in another tenant = %+v, %v; want none", ds, err)
	}
	tok := mkToken(t, s, registry.DefaultTenant, "", 1, future())
	clone := withMACs(registry.DefaultTenant, "MAC-2", "02000000cafe", mac)
	clone.TokenHash = tok.Hash
	before := takeSnapshot(t, s, clone, tok.Hash)
	if err := s.Enroll(ctx, clone); !errors.Is(err, registry.ErrMACConflict) {
		t.Fatalf("new serial with an active device's MAC: %v, want ErrMACConflict", err)
	}
	requireUnchanged(t, s, clone, tok.Hash, before)
	if before.devErr == nil {
		t.Fatal("MAC-2 existed before")
	}
	if err := s.Enroll(ctx, withMACs(other.ID, "MAC-2", mac)); err != nil {
		t.Fatalf("the same MAC in another tenant: %v", err)
	}
	// The claim is held for an admin without an EK (what releasing it does
	// is provision's decision: provision/release.go).
	q := &registry.Quarantine{ID: "q-mac-" + randHex(t, 4), TenantID: registry.DefaultTenant, Serial: "MAC-2",
		MACs: clone.Device.MACs, Reason: registry.ReasonMACOtherSerial, ConflictDeviceID: holder.Device.ID}
	if err := s.HoldClaim(ctx, q, &registry.AuditEvent{TenantID: registry.DefaultTenant, Actor: "token:x",
		Action: "enroll.clone-suspect", Result: registry.ResultDenied}); err != nil {
		t.Fatalf("HoldClaim(MAC claim, no EK): %v", err)
	}
	// Re-enrolling the holder with its own MACs (one dropped) is fine, and
	// the dropped one is free for another device.
	if err := s.Enroll(ctx, reenrolling(t, s, withMACs(registry.DefaultTenant, "MAC-1", mac))); err != nil {
		t.Fatalf("re-enrollment with its own MAC: %v", err)
	}
	if err := s.Enroll(ctx, withMACs(registry.DefaultTenant, "MAC-3", "02000000bee1")); err != nil {
		t.Fatalf("a MAC the holder dropped: %v", err)
	}
	// A revoked holder frees its MACs.
	if _, err := s.RevokeDevice(ctx, holder.Device.ID, registry.ReasonCessationOfOperation, &registry.AuditEvent{
		TenantID: registry.DefaultTenant, Actor: "admin:test", Action: "device.revoke", Target: holder.Device.ID, Result: registry.ResultOK,
	}); err != nil {
		t.Fatal(err)
	}
	if got := holders(registry.DefaultTenant, mac); len(got) != 0 {
		t.Errorf("IdentityHolders of a revoked device's MAC = %v, want none (only active devices hold MACs)", got)
	}
	again := withMACs(registry.DefaultTenant, "MAC-2", mac)
	if err := s.Enroll(ctx, again); err != nil {
		t.Fatalf("the MAC of a revoked device: %v", err)
	}
	if got := holders(registry.DefaultTenant, mac); len(got) != 1 || got[0] != again.Device.ID {
		t.Errorf("IdentityHolders after the MAC moved = %v, want only %s", got, again.Device.ID)
	}
	if got, err := s.ListDevices(ctx, registry.DeviceFilter{TenantID: registry.DefaultTenant, MAC: mac, Status: registry.DeviceActive}); err != nil ||
		len(got) != 1 || got[0].ID != again.Device.ID {
		t.Errorf("active devices with the MAC = %+v, %v; want only %s", got, err, again.Device.ID)
	}
	// Now the revoked holder cannot come back with it.
	back := reenrolling(t, s, withMACs(registry.DefaultTenant, "MAC-1", mac))
	if err := s.Enroll(ctx, back); !errors.Is(err, registry.ErrMACConflict) {
		t.Fatalf("revoked holder re-enrolling with a MAC now taken: %v, want ErrMACConflict", err)
	}
	verify(t, s)
}
