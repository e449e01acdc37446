package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// testQuarantine: a held claim is recorded with its audit event; a repeat
// of the same (tenant, serial, EK) updates it (count, last seen) instead of
// adding a record; listing is per tenant, by id, in pages; dismissal is
// audited, once.
func testQuarantine(t *testing.T, s registry.Store) {
	ctx := context.Background()
	def, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	other := mkTenant(t, s, "quarantine-other")
	ekA, ekB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	t0 := time.Now().UTC().Truncate(time.Second)
	n := 0
	claim := func(tenantID, serial, ek string, reason registry.QuarantineReason, at time.Time, macs ...string) *registry.Quarantine {
		t.Helper()
		n++
		q := &registry.Quarantine{
			ID: fmt.Sprintf("q-%03d", n), TenantID: tenantID, Serial: serial, MACs: macs, EKHash: ek, Reason: reason,
			ConflictDeviceID: "dev-" + serial, SourceAddr: fmt.Sprintf("192.0.2.%d", n), LastSeen: at,
		}
		ev := &registry.AuditEvent{TenantID: tenantID, Actor: "anonymous", Action: "enroll.clone-suspect",
			Result: registry.ResultDenied, Detail: "serial " + serial}
		before, _ := auditHead(t, s)
		if err := s.HoldClaim(ctx, q, ev); err != nil {
			t.Fatalf("HoldClaim(%s, %s): %v", serial, ek[:4], err)
		}
		if after, _ := auditHead(t, s); after != before+1 || ev.Seq == 0 || ev.Target != q.ID {
			t.Errorf("HoldClaim audit: %d → %d events, seq %d, target %q (want one more, target %s)", before, after, ev.Seq, ev.Target, q.ID)
		}
		return q
	}

	first := claim(def.ID, "QS1", ekB, registry.ReasonSerialOtherEK, t0, "020000000001")
	if first.ID != "q-001" || first.Attempts != 1 || first.Status != registry.QuarantineHeld || !first.FirstSeen.Equal(t0) ||
		!first.LastSeen.Equal(t0) || first.EKHash != ekB || first.SourceAddr != "192.0.2.1" || first.ConflictDeviceID != "dev-QS1" ||
		!slices.Equal(first.MACs, []string{"020000000001"}) || first.DismissedAt != nil {
		t.Fatalf("first claim = %+v", first)
	}
	// The same claim again, and again: one record, counted.
	claim(def.ID, "QS1", ekB, registry.ReasonSerialOtherEK, t0.Add(time.Minute), "020000000001")
	again := claim(def.ID, "QS1", ekB, registry.ReasonSerialOtherEK, t0.Add(2*time.Minute), "020000000009")
	if again.ID != first.ID || again.Attempts != 3 || !again.FirstSeen.Equal(t0) || !again.LastSeen.Equal(t0.Add(2*time.Minute)) ||
		again.SourceAddr != "192.0.2.3" || !slices.Equal(again.MACs, []string{"020000000009"}) {
		t.Fatalf("repeated claim = %+v, want record %s with 3 attempts", again, first.ID)
	}
	got, err := s.GetQuarantine(ctx, first.ID)
	if err != nil || got.Attempts != 3 || got.TenantID != def.ID || got.Reason != registry.ReasonSerialOtherEK {
		t.Fatalf("GetQuarantine = %+v, %v", got, err)
	}
	if _, err := s.GetQuarantine(ctx, "q-none"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetQuarantine(unknown) = %v, want ErrNotFound", err)
	}
	// Another EK, another serial, another tenant: separate records.
	claim(def.ID, "QS1", ekA, registry.ReasonSerialOtherEK, t0, "020000000002")
	claim(def.ID, "QS2", ekA, registry.ReasonEKOtherSerial, t0)
	claim(other.ID, "QS1", ekB, registry.ReasonSerialOtherEK, t0)

	ids := func(qs []*registry.Quarantine) []string {
		var out []string
		for _, q := range qs {
			out = append(out, q.ID)
		}
		return out
	}
	all, err := s.ListQuarantine(ctx, registry.QuarantineFilter{TenantID: def.ID})
	if err != nil || !slices.Equal(ids(all), []string{"q-001", "q-004", "q-005"}) {
		t.Fatalf("ListQuarantine(default) = %v, %v; want q-001 q-004 q-005", ids(all), err)
	}
	if l, err := s.ListQuarantine(ctx, registry.QuarantineFilter{TenantID: def.ID, Serial: "QS1"}); err != nil || !slices.Equal(ids(l), []string{"q-001", "q-004"}) {
		t.Fatalf("ListQuarantine(serial QS1) = %v, %v; want q-001 q-004", ids(l), err)
	}
	if l, err := s.ListQuarantine(ctx, registry.QuarantineFilter{TenantID: other.ID}); err != nil || !slices.Equal(ids(l), []string{"q-006"}) {
		t.Fatalf("ListQuarantine(other tenant) = %v, %v", ids(l), err)
	}
	var paged []string
	for after := ""; ; {
		page, err := s.ListQuarantine(ctx, registry.QuarantineFilter{TenantID: def.ID, After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d, limit 2", len(page))
		}
		paged = append(paged, ids(page)...)
		after = page[len(page)-1].ID
	}
	if !slices.Equal(paged, ids(all)) {
		t.Fatalf("pages = %v, want %v", paged, ids(all))
	}

	// Dismissal: audited, once; the record leaves the held list.
	before, _ := auditHead(t, s)
	dismissEv := func() *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: def.ID, Actor: "admin:test", Action: "quarantine.dismiss", Target: first.ID, Result: registry.ResultOK}
	}
	d, err := s.DismissQuarantine(ctx, first.ID, "admin:test", dismissEv())
	if err != nil || d.Status != registry.QuarantineDismissed || d.DismissedBy != "admin:test" || d.DismissedAt == nil || d.Attempts != 3 {
		t.Fatalf("DismissQuarantine = %+v, %v", d, err)
	}
	if after, _ := auditHead(t, s); after != before+1 {
		t.Errorf("dismissal wrote %d audit events, want 1", after-before)
	}
	if _, err := s.DismissQuarantine(ctx, first.ID, "admin:test", dismissEv()); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("second dismissal = %v, want ErrConflict", err)
	}
	if _, err := s.DismissQuarantine(ctx, "q-none", "admin:test", dismissEv()); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("dismiss unknown = %v, want ErrNotFound", err)
	}
	if after, _ := auditHead(t, s); after != before+1 {
		t.Errorf("refused dismissals wrote audit events")
	}
	held, err := s.ListQuarantine(ctx, registry.QuarantineFilter{TenantID: def.ID, Status: registry.QuarantineHeld})
	if err != nil || !slices.Equal(ids(held), []string{"q-004", "q-005"}) {
		t.Fatalf("held after dismissal = %v, %v", ids(held), err)
	}
	if l, err := s.ListQuarantine(ctx, registry.QuarantineFilter{Status: registry.QuarantineDismissed}); err != nil || !slices.Equal(ids(l), []string{"q-001"}) {
		t.Fatalf("dismissed = %v, %v", ids(l), err)
	}
	// The same claim after its dismissal is held anew, in a new record.
	anew := claim(def.ID, "QS1", ekB, registry.ReasonSerialOtherEK, t0.Add(time.Hour))
	if anew.ID == first.ID || anew.Attempts != 1 || anew.Status != registry.QuarantineHeld {
		t.Fatalf("claim after dismissal = %+v, want a new held record", anew)
	}
	if d, err := s.GetQuarantine(ctx, first.ID); err != nil || d.Status != registry.QuarantineDismissed || d.Attempts != 3 {
		t.Fatalf("dismissed record after a new claim = %+v, %v", d, err)
	}

	for _, bad := range []*registry.Quarantine{
		{ID: "q-bad", TenantID: def.ID, Serial: "QS9", EKHash: ekA},                                                 // no reason
		{ID: "q-bad", TenantID: def.ID, EKHash: ekA, Reason: registry.ReasonEKOtherSerial},                          // no serial
		{TenantID: def.ID, Serial: "QS9", EKHash: ekA, Reason: registry.ReasonEKOtherSerial},                        // no id
		{ID: "q-bad", TenantID: "no-such-tenant", Serial: "QS9", EKHash: ekA, Reason: registry.ReasonEKOtherSerial}, // unknown tenant
		{ID: "q-bad", TenantID: def.ID, Serial: "QS9", Reason: registry.ReasonSerialOtherEK},                        // no EK
		{ID: "q-bad", TenantID: def.ID, Serial: "QS9", EKHash: ekA, Reason: "mac-and-cheese"},                       // unknown reason
	} {
		if err := s.HoldClaim(ctx, bad, nil); err == nil {
			t.Errorf("HoldClaim(%+v) succeeded", bad)
		}
	}
	verify(t, s)
}

// testEKUnique: a TPM EK binds one device, in every tenant: a second
// device with the same EK is ErrEKConflict with nothing written, also
// when two such enrollments race.
func testEKUnique(t *testing.T, s registry.Store) {
	ctx := context.Background()
	def, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	other := mkTenant(t, s, "ek-other")
	tpmEnrollment := func(tenantID, serial, ek string) *registry.Enrollment {
		e := newEnrollment(t, tenantID, serial, nil)
		e.Device.Method, e.Device.EKHash = "tpm", ek
		return e
	}
	ek := strings.Repeat("d", 64)
	if err := s.Enroll(ctx, tpmEnrollment(def.ID, "EK1", ek)); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*registry.Enrollment{tpmEnrollment(def.ID, "EK2", ek), tpmEnrollment(other.ID, "EK1", ek)} {
		before := takeSnapshot(t, s, e, nil)
		if err := s.Enroll(ctx, e); !errors.Is(err, registry.ErrEKConflict) {
			t.Fatalf("EK of device EK1 enrolled as %s/%s: %v, want ErrEKConflict", e.Device.TenantID, e.Device.Serial, err)
		}
		requireUnchanged(t, s, e, nil, before)
	}
	// Software-key devices (no EK) are not affected.
	for _, serial := range []string{"SW1", "SW2"} {
		if err := s.Enroll(ctx, newEnrollment(t, def.ID, serial, nil)); err != nil {
			t.Fatalf("software-key device %s: %v", serial, err)
		}
	}

	// Two enrollments of one EK under two serials, at once: one wins.
	for round := range 5 {
		ek := fmt.Sprintf("%064x", round+1)
		es := []*registry.Enrollment{
			tpmEnrollment(def.ID, fmt.Sprintf("RACE%d-A", round), ek),
			tpmEnrollment(def.ID, fmt.Sprintf("RACE%d-B", round), ek),
		}
		errs := make([]error, len(es))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, e := range es {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = s.Enroll(ctx, e)
			}()
		}
		close(start)
		wg.Wait()
		won, lost := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, registry.ErrEKConflict):
				lost++
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if won != 1 || lost != 1 {
			t.Fatalf("round %d: %d enrollments won, %d lost; want one each (%v)", round, won, lost, errs)
		}
		if devs, err := s.ListDevices(ctx, registry.DeviceFilter{EKHash: ek}); err != nil || len(devs) != 1 {
			t.Fatalf("round %d: devices of the EK = %d, %v; want 1", round, len(devs), err)
		}
	}
	verify(t, s)
}

// testApplyRelease: ApplyRelease is one conditional write, all of it or
// none of it. It writes what the caller decided — a device re-bound to the
// claim's EK (re-key and AK cleared), revoked with its EK freed, or revoked
// keeping its EK — revokes the device's unrevoked, unexpired certificates,
// marks the claim released and appends the audit event. It refuses, with
// nothing written: an unknown claim (ErrNotFound), a claim not held
// (ErrClaimNotHeld), a device gone or not in the expected state — EK,
// status, MACs — (ErrClaimStale), a new EK bound to another device
// (ErrEKConflict, from the unique EK index, after certificates were
// already revoked within the write), and bad arguments. Of two releases
// racing for one claim or one device, one wins.
func testApplyRelease(t *testing.T, s registry.Store) {
	ctx := context.Background()
	def, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ek := func(c byte) string { return strings.Repeat(string(c), 64) }
	tpmEnrollment := func(serial, ekHash string) *registry.Enrollment {
		e := newEnrollment(t, def.ID, serial, nil)
		e.Device.Method, e.Device.EKHash = "tpm", ekHash
		e.Device.AKPub = []byte("ak of " + ekHash)
		return e
	}
	enroll := func(serial, ekHash string) *registry.Device {
		t.Helper()
		e := tpmEnrollment(serial, ekHash)
		if err := s.Enroll(ctx, e); err != nil {
			t.Fatalf("enroll %s: %v", serial, err)
		}
		return e.Device
	}
	n := 0
	hold := func(serial, ekHash string, reason registry.QuarantineReason, conflict *registry.Device, macs ...string) *registry.Quarantine {
		t.Helper()
		n++
		q := &registry.Quarantine{ID: fmt.Sprintf("qr-%03d", n), TenantID: def.ID, Serial: serial, MACs: macs, EKHash: ekHash,
			Reason: reason, ConflictDeviceID: conflict.ID, ConflictEKHash: conflict.EKHash}
		if err := s.HoldClaim(ctx, q, &registry.AuditEvent{TenantID: def.ID, Actor: "anonymous", Action: "enroll.clone-suspect",
			Result: registry.ResultDenied}); err != nil {
			t.Fatalf("hold %s: %v", serial, err)
		}
		return q
	}
	// rebind is the write of a serial claimed with another EK: d re-bound
	// to newEK, active.
	rebind := func(q *registry.Quarantine, d *registry.Device, newEK string) *registry.ReleaseWrite {
		return &registry.ReleaseWrite{ClaimID: q.ID, By: "admin:test", DeviceID: d.ID,
			ExpectEKHash: d.EKHash, ExpectStatus: d.Status, EKHash: newEK, Status: registry.DeviceActive,
			ClearRekey: true, ClearAK: true, Reason: registry.ReasonSuperseded,
			Audit: &registry.AuditEvent{TenantID: def.ID, Actor: "admin:test", Action: "quarantine.release", Target: q.ID,
				Result: registry.ResultOK}}
	}
	// state is what a refused write must leave as it was.
	state := func(q *registry.Quarantine, devs ...*registry.Device) string {
		t.Helper()
		auditN, _ := auditHead(t, s)
		revoked := eachRevoked(t, s, 0, time.Now())
		out := fmt.Sprintf("audit=%d revoked=%d", auditN, len(revoked))
		if got, err := s.GetQuarantine(ctx, q.ID); err == nil {
			out += fmt.Sprintf(" claim=%s/%s", got.Status, got.ReleasedBy)
		}
		for _, d := range devs {
			got, err := s.GetDevice(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			out += fmt.Sprintf(" %s=%s/%s/%v/%x/%v/%s", got.ID, got.Status, got.EKHash, got.MACs, got.AKPub, got.RekeyRequired, got.UpdatedAt)
			certs, err := s.ListDeviceCertificates(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range certs {
				out += fmt.Sprintf(" %s=%s", c.Serial, c.Status)
			}
		}
		return out
	}
	refused := func(name string, w *registry.ReleaseWrite, want error, devs ...*registry.Device) {
		t.Helper()
		q := &registry.Quarantine{ID: w.ClaimID}
		before := state(q, devs...)
		err := s.ApplyRelease(ctx, w)
		if want == nil && err == nil || want != nil && !errors.Is(err, want) {
			t.Errorf("%s: ApplyRelease = %v, want %v", name, err, want)
		}
		if after := state(q, devs...); after != before {
			t.Errorf("%s: refused write changed the store:\n before %s\n after  %s", name, before, after)
		}
		if w.Claim != nil || w.Device != nil || w.Revoked != nil {
			t.Errorf("%s: refused write filled its results: %+v %+v %+v", name, w.Claim, w.Device, w.Revoked)
		}
	}

	// Re-bind a device to the claim's EK (a TPM replaced under RMA).
	a := enroll("RS1", ek('1'))
	deadline := time.Now().Add(time.Hour)
	if err := s.RequireRekey(ctx, a.ID, true, &deadline, nil); err != nil {
		t.Fatal(err)
	}
	if a, err = s.GetDevice(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	oldCerts, err := s.ListDeviceCertificates(ctx, a.ID)
	if err != nil || len(oldCerts) != 1 {
		t.Fatalf("certificates of %s: %d, %v", a.ID, len(oldCerts), err)
	}
	rma := hold("RS1", ek('2'), registry.ReasonSerialOtherEK, a)

	with := func(f func(w *registry.ReleaseWrite)) *registry.ReleaseWrite {
		w := rebind(rma, a, ek('2'))
		f(w)
		return w
	}
	refused("unknown claim", with(func(w *registry.ReleaseWrite) { w.ClaimID = "qr-none" }), registry.ErrNotFound, a)
	refused("unknown device", with(func(w *registry.ReleaseWrite) { w.DeviceID = "dev-none" }), registry.ErrClaimStale, a)
	refused("device with another EK", with(func(w *registry.ReleaseWrite) { w.ExpectEKHash = ek('9') }), registry.ErrClaimStale, a)
	refused("device with another status", with(func(w *registry.ReleaseWrite) { w.ExpectStatus = registry.DeviceRevoked }), registry.ErrClaimStale, a)
	refused("device with other MACs", with(func(w *registry.ReleaseWrite) { w.ExpectMACs = []string{"020000000099"} }), registry.ErrClaimStale, a)
	refused("reason 7", with(func(w *registry.ReleaseWrite) { w.Reason = 7 }), registry.ErrInvalidReason, a)
	refused("no claim id", with(func(w *registry.ReleaseWrite) { w.ClaimID = "" }), nil, a)
	refused("no device id", with(func(w *registry.ReleaseWrite) { w.DeviceID = "" }), nil, a)
	refused("no new status", with(func(w *registry.ReleaseWrite) { w.Status = "" }), nil, a)
	refused("no expected status", with(func(w *registry.ReleaseWrite) { w.ExpectStatus = "" }), nil, a)

	beforeN, _ := auditHead(t, s)
	w := with(func(w *registry.ReleaseWrite) { w.ExpectMACs = a.MACs })
	if err := s.ApplyRelease(ctx, w); err != nil {
		t.Fatalf("re-bind: %v", err)
	}
	if w.Claim.ID != rma.ID || w.Claim.Status != registry.QuarantineReleased || w.Claim.ReleasedBy != "admin:test" || w.Claim.ReleasedAt == nil {
		t.Errorf("released claim = %+v", w.Claim)
	}
	if got, err := s.GetQuarantine(ctx, rma.ID); err != nil || got.Status != registry.QuarantineReleased || got.ReleasedBy != "admin:test" {
		t.Errorf("stored claim = %+v, %v", got, err)
	}
	for _, d := range []*registry.Device{w.Device, mustDevice(t, s, a.ID)} {
		if d.ID != a.ID || d.EKHash != ek('2') || d.Status != registry.DeviceActive || d.Serial != "RS1" || d.RekeyRequired ||
			d.RekeyDeadline != nil || d.AKPub != nil || !slices.Equal(d.MACs, a.MACs) || d.Method != "tpm" {
			t.Errorf("device after re-bind = %+v, want %s on the claim's EK, active, no re-key, no AK", d, a.ID)
		}
	}
	if len(w.Revoked) != 1 || w.Revoked[0].Serial != oldCerts[0].Serial || w.Revoked[0].RevocationReason != registry.ReasonSuperseded ||
		w.Revoked[0].Status != registry.CertRevoked || w.Revoked[0].RevokedAt == nil {
		t.Errorf("revoked = %+v, want %s (superseded)", w.Revoked, oldCerts[0].Serial)
	}
	if c, err := s.GetCertificate(ctx, oldCerts[0].Serial); err != nil || c.Status != registry.CertRevoked || c.RevokedAt == nil ||
		c.RevocationReason != registry.ReasonSuperseded {
		t.Errorf("old certificate after re-bind = %+v, %v", c, err)
	}
	if afterN, _ := auditHead(t, s); afterN != beforeN+1 || w.Audit.Seq == 0 || w.Audit.Hash == nil {
		t.Errorf("re-bind wrote %d audit events (seq %d), want 1", afterN-beforeN, w.Audit.Seq)
	}
	if d, err := s.GetDeviceBySerial(ctx, def.ID, "RS1"); err != nil || d.ID != a.ID || d.EKHash != ek('2') {
		t.Errorf("device RS1 after release = %+v, %v", d, err)
	}
	// The claim is now an ordinary same-EK re-enrollment, keeping the id.
	re := reenrolling(t, s, tpmEnrollment("RS1", ek('2')))
	if err := s.Enroll(ctx, re); err != nil || re.Device.ID != a.ID {
		t.Fatalf("re-enrollment of RS1 with the released EK: %v", err)
	}
	a = mustDevice(t, s, a.ID)
	refused("released again", rebind(rma, a, ek('2')), registry.ErrClaimNotHeld, a)
	if _, err := s.DismissQuarantine(ctx, rma.ID, "admin:test", nil); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("dismissing a released claim = %v, want ErrConflict", err)
	}
	dismissed := hold("RS1", ek('3'), registry.ReasonSerialOtherEK, a)
	if _, err := s.DismissQuarantine(ctx, dismissed.ID, "admin:test", nil); err != nil {
		t.Fatal(err)
	}
	refused("dismissed claim", rebind(dismissed, a, ek('3')), registry.ErrClaimNotHeld, a)

	// Revoke a device and free its EK (its TPM moved to a new chassis).
	b := enroll("RE1", ek('4'))
	moved := hold("RE2", ek('4'), registry.ReasonEKOtherSerial, b)
	w = &registry.ReleaseWrite{ClaimID: moved.ID, By: "admin:test", DeviceID: b.ID, ExpectEKHash: ek('4'), ExpectStatus: registry.DeviceActive,
		Status: registry.DeviceRevoked, ClearAK: true, Reason: registry.ReasonKeyCompromise}
	if err := s.ApplyRelease(ctx, w); err != nil {
		t.Fatalf("revoke and free the EK: %v", err)
	}
	if d := mustDevice(t, s, b.ID); d.Status != registry.DeviceRevoked || d.EKHash != "" || d.AKPub != nil || w.Device.EKHash != "" ||
		w.Claim.Status != registry.QuarantineReleased {
		t.Errorf("after release: device %+v, claim %+v; want %s revoked with no EK", d, w.Claim, b.ID)
	}
	if len(w.Revoked) != 1 || w.Revoked[0].RevocationReason != registry.ReasonKeyCompromise {
		t.Errorf("revoked = %+v, want one certificate, keyCompromise", w.Revoked)
	}
	if certs, err := s.ListDeviceCertificates(ctx, b.ID); err != nil || len(certs) != 1 || certs[0].Status != registry.CertRevoked {
		t.Errorf("certificates of %s = %+v, %v", b.ID, certs, err)
	}
	ne := tpmEnrollment("RE2", ek('4'))
	if err := s.Enroll(ctx, ne); err != nil {
		t.Fatalf("enrollment of RE2 with the freed EK: %v", err)
	}
	if devs, err := s.ListDevices(ctx, registry.DeviceFilter{EKHash: ek('4')}); err != nil || len(devs) != 1 || devs[0].ID == b.ID {
		t.Errorf("devices of the freed EK = %+v, %v; want only the new one", devs, err)
	}

	// Revoke a device keeping its EK, expecting its MACs (a MAC claimed by
	// a new serial; such a claim may have no EK). An expired certificate
	// is left as it is.
	current := tpmEnrollment("RM1", ek('5'))
	if err := s.Enroll(ctx, current); err != nil {
		t.Fatal(err)
	}
	m := current.Device
	expired := *current.Certificate
	expired.Serial, expired.NotBefore, expired.NotAfter = randHex(t, 20), time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)
	if err := s.RecordCertificate(ctx, &expired, nil); err != nil {
		t.Fatal(err)
	}
	macClaim := hold("RM2", "", registry.ReasonMACOtherSerial, m, m.MACs...)
	if macClaim.EKHash != "" || macClaim.Reason != registry.ReasonMACOtherSerial || !slices.Equal(macClaim.MACs, m.MACs) {
		t.Fatalf("MAC claim = %+v", macClaim)
	}
	macWrite := func() *registry.ReleaseWrite {
		return &registry.ReleaseWrite{ClaimID: macClaim.ID, By: "admin:test", DeviceID: m.ID, ExpectEKHash: m.EKHash,
			ExpectStatus: registry.DeviceActive, ExpectMACs: m.MACs, EKHash: m.EKHash, Status: registry.DeviceRevoked,
			Reason: registry.ReasonCessationOfOperation}
	}
	stale := macWrite()
	stale.ExpectMACs = append([]string{"020000000077"}, m.MACs...)
	refused("device without the expected MACs", stale, registry.ErrClaimStale, m)
	w = macWrite()
	if err := s.ApplyRelease(ctx, w); err != nil {
		t.Fatalf("revoke keeping the EK: %v", err)
	}
	if d := mustDevice(t, s, m.ID); d.Status != registry.DeviceRevoked || d.EKHash != ek('5') || string(d.AKPub) != "ak of "+ek('5') ||
		!slices.Equal(d.MACs, m.MACs) {
		t.Errorf("device after release = %+v, want revoked with its EK, AK and MACs", d)
	}
	if len(w.Revoked) != 1 || w.Revoked[0].Serial != current.Certificate.Serial || w.Revoked[0].RevocationReason != registry.ReasonCessationOfOperation {
		t.Errorf("revoked = %+v, want only the unexpired certificate %s", w.Revoked, current.Certificate.Serial)
	}
	if c, err := s.GetCertificate(ctx, expired.Serial); err != nil || c.Status != registry.CertActive {
		t.Errorf("expired certificate after release = %+v, %v; want it not revoked", c, err)
	}

	// A new EK bound to a third device: the unique EK index refuses the
	// device update after the write revoked the device's certificates;
	// all of it is rolled back.
	c := enroll("RS3", ek('6'))
	g := enroll("RS6", ek('7'))
	taken := hold("RS3", ek('7'), registry.ReasonSerialOtherEK, c)
	refused("EK bound elsewhere", rebind(taken, c, ek('7')), registry.ErrEKConflict, c, g)

	// Two writes for one claim, or for one device, at once: one wins; the
	// other finds the claim not held, or the device changed.
	race := func(name string, ws []*registry.ReleaseWrite, lose error) {
		t.Helper()
		errs := make([]error, len(ws))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, w := range ws {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = s.ApplyRelease(ctx, w)
			}()
		}
		close(start)
		wg.Wait()
		won, lost := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, lose):
				lost++
			default:
				t.Errorf("%s: %v", name, err)
			}
		}
		if won != 1 || lost != len(ws)-1 {
			t.Errorf("%s: %d won, %d lost (%v); want one winner", name, won, lost, errs)
		}
	}
	r1 := enroll("RR1", ek('8'))
	one := hold("RR1", ek('9'), registry.ReasonSerialOtherEK, r1)
	race("one claim", []*registry.ReleaseWrite{rebind(one, r1, ek('9')), rebind(one, r1, ek('9'))}, registry.ErrClaimNotHeld)
	r2 := enroll("RR2", ek('a'))
	x, y := hold("RR2", ek('b'), registry.ReasonSerialOtherEK, r2), hold("RR2", ek('c'), registry.ReasonSerialOtherEK, r2)
	race("one device", []*registry.ReleaseWrite{rebind(x, r2, ek('b')), rebind(y, r2, ek('c'))}, registry.ErrClaimStale)
	verify(t, s)
}

func mustDevice(t testing.TB, s registry.Store, id string) *registry.Device {
	t.Helper()
	d, err := s.GetDevice(context.Background(), id)
	if err != nil {
		t.Fatalf("device %s: %v", id, err)
	}
	return d
}
