package storetest

import (
	"context"
	"errors"
	"testing"

	"devpki/pkg/registry"
)

// testIDevIDCAs: manufacturer CAs are kept per tenant, unique per (tenant,
// fingerprint) — the same certificate again is ErrAlreadyExists and writes
// nothing, the same certificate in another tenant is its own record — each
// add is audited in its transaction, and bad records are refused.
func testIDevIDCAs(t *testing.T, s registry.Store) {
	ctx := context.Background()
	def, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	other := mkTenant(t, s, "idevid-other")
	fp := randHex(t, 32)
	mk := func(id, tenantID string, kind registry.IDevIDCAKind) *registry.IDevIDCA {
		return &registry.IDevIDCA{ID: id, TenantID: tenantID, Fingerprint: fp, DER: []byte{0x30, 0x00},
			Subject: "CN=Maker Root", Kind: kind, AddedBy: "admin:x"}
	}
	ev := func(tenantID string) *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: tenantID, Actor: "admin:x", Action: "idevid.ca.add", Target: fp, Result: registry.ResultOK}
	}
	before, _ := auditHead(t, s)
	root := mk("ica-1", def.ID, registry.IDevIDRoot)
	if err := s.PutIDevIDCA(ctx, root, ev(def.ID)); err != nil {
		t.Fatalf("PutIDevIDCA: %v", err)
	}
	if root.CreatedAt.IsZero() {
		t.Fatal("PutIDevIDCA left CreatedAt zero")
	}
	if n, _ := auditHead(t, s); n != before+1 {
		t.Fatalf("audit events: %d, want %d", n, before+1)
	}
	// The same certificate again in the tenant: refused, nothing written.
	if err := s.PutIDevIDCA(ctx, mk("ica-2", def.ID, registry.IDevIDRoot), ev(def.ID)); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Fatalf("same fingerprint again: %v, want ErrAlreadyExists", err)
	}
	// In another tenant it is that tenant's.
	if err := s.PutIDevIDCA(ctx, mk("ica-3", other.ID, registry.IDevIDIntermediate), ev(other.ID)); err != nil {
		t.Fatalf("same certificate in another tenant: %v", err)
	}
	for _, bad := range []*registry.IDevIDCA{
		nil,
		{ID: "ica-4", TenantID: def.ID, Fingerprint: randHex(t, 32), DER: []byte{0x30, 0x00}, Kind: "leaf"},
		{ID: "ica-5", TenantID: def.ID, Fingerprint: randHex(t, 32), Kind: registry.IDevIDRoot},
		{ID: "", TenantID: def.ID, Fingerprint: randHex(t, 32), DER: []byte{0x30, 0x00}, Kind: registry.IDevIDRoot},
		{ID: "ica-6", TenantID: "no-such-tenant", Fingerprint: randHex(t, 32), DER: []byte{0x30, 0x00}, Kind: registry.IDevIDRoot},
	} {
		if err := s.PutIDevIDCA(ctx, bad, ev(def.ID)); err == nil {
			t.Fatalf("PutIDevIDCA(%+v) accepted", bad)
		}
	}
	if n, _ := auditHead(t, s); n != before+2 {
		t.Fatalf("audit events after refusals: %d, want %d (refusals write nothing)", n, before+2)
	}

	got, err := s.ListIDevIDCAs(ctx, def.ID)
	if err != nil || len(got) != 1 || got[0].ID != "ica-1" || got[0].Kind != registry.IDevIDRoot || got[0].Fingerprint != fp ||
		got[0].Subject != "CN=Maker Root" || got[0].AddedBy != "admin:x" || string(got[0].DER) != "\x30\x00" || got[0].TenantID != def.ID {
		t.Fatalf("ListIDevIDCAs(default) = %+v, %v", got, err)
	}
	got, err = s.ListIDevIDCAs(ctx, other.ID)
	if err != nil || len(got) != 1 || got[0].ID != "ica-3" || got[0].Kind != registry.IDevIDIntermediate {
		t.Fatalf("ListIDevIDCAs(other) = %+v, %v", got, err)
	}
	if got, err := s.ListIDevIDCAs(ctx, ""); err != nil || len(got) != 2 {
		t.Fatalf("ListIDevIDCAs(all) = %d, %v; want 2", len(got), err)
	}
	verify(t, s)
}

// testDeviceIDevID: a device keeps the IDevID it enrolled with; a
// re-enrollment expecting another IDevID than the stored one is
// ErrConflict and writes nothing; one expecting it overwrites it.
func testDeviceIDevID(t *testing.T, s registry.Store) {
	ctx := context.Background()
	def, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnrollment(t, def.ID, "IDEV-1", nil)
	e.Device.Method, e.Device.IDevIDIssuer, e.Device.IDevIDSerial = "idevid", "CN=Maker CA,O=Maker", "01ab"
	if err := s.Enroll(ctx, e); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	d, err := s.GetDevice(ctx, e.Device.ID)
	if err != nil || d.IDevIDIssuer != "CN=Maker CA,O=Maker" || d.IDevIDSerial != "01ab" || d.Method != "idevid" {
		t.Fatalf("GetDevice = %+v, %v", d, err)
	}
	stale := reenrolling(t, s, newEnrollment(t, def.ID, "IDEV-1", nil))
	stale.Replace.IDevIDSerial = "02cd"
	stale.Device.IDevIDIssuer, stale.Device.IDevIDSerial = "CN=Maker CA,O=Maker", "02cd"
	before := takeSnapshot(t, s, stale, nil)
	if err := s.Enroll(ctx, stale); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("re-enrollment expecting another IDevID: %v, want ErrConflict", err)
	}
	requireUnchanged(t, s, stale, nil, before)

	re := reenrolling(t, s, newEnrollment(t, def.ID, "IDEV-1", nil))
	re.Device.Method, re.Device.IDevIDIssuer, re.Device.IDevIDSerial = "idevid", "CN=Other Maker", "03"
	if err := s.Enroll(ctx, re); err != nil {
		t.Fatalf("re-enrollment: %v", err)
	}
	if d, err := s.GetDevice(ctx, e.Device.ID); err != nil || d.IDevIDIssuer != "CN=Other Maker" || d.IDevIDSerial != "03" {
		t.Fatalf("after re-enrollment: %+v, %v", d, err)
	}

	// A claim of its serial by another IDevID is held with both IDevIDs,
	// and a release re-binds the device to the claimant's.
	q := &registry.Quarantine{ID: "qi-1", TenantID: def.ID, Serial: "IDEV-1", Reason: registry.ReasonSerialOtherIDevID,
		IDevIDIssuer: "CN=Maker CA,O=Maker", IDevIDSerial: "04", ConflictDeviceID: d.ID,
		ConflictIDevIDIssuer: "CN=Other Maker", ConflictIDevIDSerial: "03"}
	if err := s.HoldClaim(ctx, q, &registry.AuditEvent{TenantID: def.ID, Actor: "idevid:x", Action: "enroll.clone-suspect",
		Result: registry.ResultDenied}); err != nil {
		t.Fatalf("HoldClaim: %v", err)
	}
	if q.IDevIDSerial != "04" || q.ConflictIDevIDSerial != "03" || q.ConflictIDevIDIssuer != "CN=Other Maker" || q.EKHash != "" {
		t.Fatalf("held claim = %+v", q)
	}
	noID := &registry.Quarantine{ID: "qi-2", TenantID: def.ID, Serial: "IDEV-1", Reason: registry.ReasonSerialOtherIDevID}
	if err := s.HoldClaim(ctx, noID, nil); err == nil {
		t.Fatal("HoldClaim of an IDevID claim without its IDevID accepted")
	}
	w := func(expectSerial string) *registry.ReleaseWrite {
		return &registry.ReleaseWrite{ClaimID: q.ID, By: "admin:test", DeviceID: d.ID, ExpectStatus: registry.DeviceActive,
			ExpectIDevIDIssuer: "CN=Other Maker", ExpectIDevIDSerial: expectSerial,
			Status: registry.DeviceActive, SetIDevID: true, IDevIDIssuer: q.IDevIDIssuer, IDevIDSerial: q.IDevIDSerial,
			Reason: registry.ReasonSuperseded}
	}
	if err := s.ApplyRelease(ctx, w("99")); !errors.Is(err, registry.ErrClaimStale) {
		t.Fatalf("release expecting another IDevID: %v, want ErrClaimStale", err)
	}
	rw := w("03")
	if err := s.ApplyRelease(ctx, rw); err != nil {
		t.Fatalf("ApplyRelease: %v", err)
	}
	if rw.Device.IDevIDSerial != "04" || rw.Device.IDevIDIssuer != "CN=Maker CA,O=Maker" || len(rw.Revoked) != 1 {
		t.Fatalf("released device = %+v, revoked %d", rw.Device, len(rw.Revoked))
	}
	if d, err := s.GetDevice(ctx, d.ID); err != nil || d.IDevIDSerial != "04" || d.Status != registry.DeviceActive {
		t.Fatalf("device after release = %+v, %v", d, err)
	}
	verify(t, s)
}
