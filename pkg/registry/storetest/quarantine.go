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

// testQuarantineRelease: releasing a held claim lets its claimant in, in one
// audited transaction. A serial claimed with another EK re-binds the
// enrolled device to that EK (same id, certificates revoked), and the
// claim then re-enrolls it; an EK claimed with another serial revokes the
// enrolled device and frees the EK, and the claim then enrolls a new
// device. Unknown or another tenant's claims, claims not held, claims whose
// device changed and claims whose EK is bound elsewhere are refused with
// nothing written.
func testQuarantineRelease(t *testing.T, s registry.Store) {
	ctx := context.Background()
	def, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	other := mkTenant(t, s, "release-other")
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
	hold := func(serial, ekHash string, reason registry.QuarantineReason, conflict *registry.Device) *registry.Quarantine {
		t.Helper()
		n++
		q := &registry.Quarantine{ID: fmt.Sprintf("qr-%03d", n), TenantID: def.ID, Serial: serial, EKHash: ekHash, Reason: reason}
		if conflict != nil {
			q.ConflictDeviceID, q.ConflictEKHash = conflict.ID, conflict.EKHash
		}
		if err := s.HoldClaim(ctx, q, &registry.AuditEvent{TenantID: def.ID, Actor: "anonymous", Action: "enroll.clone-suspect",
			Result: registry.ResultDenied}); err != nil {
			t.Fatal(err)
		}
		return q
	}
	release := func(id, tenantID string, reason int) (*registry.QuarantineRelease, error) {
		r := &registry.QuarantineRelease{ID: id, TenantID: tenantID, By: "admin:test", Reason: reason,
			Audit: &registry.AuditEvent{TenantID: def.ID, Actor: "admin:test", Action: "quarantine.release", Target: id, Result: registry.ResultOK}}
		return r, s.ReleaseQuarantine(ctx, r)
	}
	// state is what a refused release must leave as it was.
	state := func(q *registry.Quarantine, devs ...*registry.Device) string {
		t.Helper()
		auditN, _ := auditHead(t, s)
		revoked, err := s.ListRevoked(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		out := fmt.Sprintf("audit=%d revoked=%d", auditN, len(revoked))
		if got, err := s.GetQuarantine(ctx, q.ID); err == nil {
			out += fmt.Sprintf(" claim=%s", got.Status)
		}
		for _, d := range devs {
			got, err := s.GetDevice(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			out += fmt.Sprintf(" %s=%s/%s/%s", got.ID, got.Status, got.EKHash, got.UpdatedAt)
		}
		return out
	}
	refused := func(name string, q *registry.Quarantine, tenantID string, want error, devs ...*registry.Device) {
		t.Helper()
		before := state(q, devs...)
		if _, err := release(q.ID, tenantID, registry.ReasonSuperseded); !errors.Is(err, want) {
			t.Errorf("%s: release = %v, want %v", name, err, want)
		}
		if after := state(q, devs...); after != before {
			t.Errorf("%s: refused release changed the store:\n before %s\n after  %s", name, before, after)
		}
	}

	// A serial claimed with another EK (a TPM replaced under RMA).
	a := enroll("RS1", ek('1'))
	oldCerts, err := s.ListDeviceCertificates(ctx, a.ID)
	if err != nil || len(oldCerts) != 1 {
		t.Fatalf("certificates of %s: %d, %v", a.ID, len(oldCerts), err)
	}
	rma := hold("RS1", ek('2'), registry.ReasonSerialOtherEK, a)
	second := hold("RS1", ek('3'), registry.ReasonSerialOtherEK, a) // another claim of the same serial
	if rma.ConflictEKHash != ek('1') {
		t.Fatalf("held claim = %+v, want the conflicting device's EK recorded", rma)
	}
	refused("unknown claim", &registry.Quarantine{ID: "qr-none"}, def.ID, registry.ErrNotFound, a)
	refused("another tenant's claim", rma, other.ID, registry.ErrNotFound, a)
	before := state(rma, a)
	if _, err := release(rma.ID, def.ID, 7); err == nil || state(rma, a) != before {
		t.Errorf("release with reason 7 = %v, want an error and nothing written", err)
	}

	beforeN, _ := auditHead(t, s)
	r, err := release(rma.ID, def.ID, registry.ReasonSuperseded)
	if err != nil {
		t.Fatalf("release of a serial claimed with another EK: %v", err)
	}
	if r.Claim.Status != registry.QuarantineReleased || r.Claim.ReleasedBy != "admin:test" || r.Claim.ReleasedAt == nil {
		t.Errorf("released claim = %+v", r.Claim)
	}
	if got, err := s.GetDevice(ctx, a.ID); err != nil || got.AKPub != nil {
		t.Errorf("released device AK = %q, %v; want none (it belonged to the old TPM)", got.AKPub, err)
	}
	if r.Device.ID != a.ID || r.Device.EKHash != ek('2') || r.Device.Status != registry.DeviceActive || r.Device.Serial != "RS1" {
		t.Errorf("device after release = %+v, want %s re-bound to the claim's EK, active", r.Device, a.ID)
	}
	if len(r.Revoked) != 1 || r.Revoked[0].Serial != oldCerts[0].Serial || r.Revoked[0].RevocationReason != registry.ReasonSuperseded ||
		r.Revoked[0].Status != registry.CertRevoked {
		t.Errorf("revoked = %+v, want %s (superseded)", r.Revoked, oldCerts[0].Serial)
	}
	if c, err := s.GetCertificate(ctx, oldCerts[0].Serial); err != nil || c.Status != registry.CertRevoked || c.RevokedAt == nil ||
		c.RevocationReason != registry.ReasonSuperseded {
		t.Errorf("old certificate after release = %+v, %v", c, err)
	}
	if afterN, _ := auditHead(t, s); afterN != beforeN+1 || r.Audit.Seq == 0 {
		t.Errorf("release wrote %d audit events (seq %d), want 1", afterN-beforeN, r.Audit.Seq)
	}
	if d, err := s.GetDeviceBySerial(ctx, def.ID, "RS1"); err != nil || d.ID != a.ID || d.EKHash != ek('2') {
		t.Errorf("device RS1 after release = %+v, %v", d, err)
	}
	// The claim is now an ordinary same-EK re-enrollment, keeping the id.
	re := reenrolling(t, s, tpmEnrollment("RS1", ek('2')))
	if err := s.Enroll(ctx, re); err != nil || re.Device.ID != a.ID {
		t.Fatalf("re-enrollment of RS1 with the released EK: %v", err)
	}
	refused("released again", rma, def.ID, registry.ErrClaimNotHeld, a)
	if _, err := s.DismissQuarantine(ctx, rma.ID, "admin:test", nil); !errors.Is(err, registry.ErrConflict) {
		t.Errorf("dismissing a released claim = %v, want ErrConflict", err)
	}
	// The other claim of RS1 saw the device with its old EK.
	refused("claim whose device changed EK", second, def.ID, registry.ErrClaimStale, a)

	// An EK claimed with another serial (a TPM moved to a new chassis).
	b := enroll("RE1", ek('4'))
	moved := hold("RE2", ek('4'), registry.ReasonEKOtherSerial, b)
	r, err = release(moved.ID, def.ID, registry.ReasonKeyCompromise)
	if err != nil {
		t.Fatalf("release of an EK claimed with another serial: %v", err)
	}
	if r.Device.ID != b.ID || r.Device.Status != registry.DeviceRevoked || r.Device.EKHash != "" || r.Claim.Status != registry.QuarantineReleased {
		t.Errorf("after release: device %+v, claim %+v; want %s revoked with no EK", r.Device, r.Claim, b.ID)
	}
	if len(r.Revoked) != 1 || r.Revoked[0].RevocationReason != registry.ReasonKeyCompromise {
		t.Errorf("revoked = %+v, want one certificate, keyCompromise", r.Revoked)
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

	// Claims whose device is gone, unknown or not the one described.
	c := enroll("RS3", ek('5'))
	refused("unknown device", hold("RS3", ek('6'), registry.ReasonSerialOtherEK, &registry.Device{ID: "dev-none", EKHash: ek('5')}),
		def.ID, registry.ErrClaimStale, c)
	refused("no device recorded", hold("RS3", ek('7'), registry.ReasonSerialOtherEK, nil), def.ID, registry.ErrClaimStale, c)
	refused("device with another serial", hold("RS4", ek('8'), registry.ReasonSerialOtherEK, c), def.ID, registry.ErrClaimStale, c)
	refused("device without the claimed EK", hold("RS9", ek('9'), registry.ReasonEKOtherSerial, c), def.ID, registry.ErrClaimStale, c)
	dismissed := hold("RS3", ek('a'), registry.ReasonSerialOtherEK, c)
	if _, err := s.DismissQuarantine(ctx, dismissed.ID, "admin:test", nil); err != nil {
		t.Fatal(err)
	}
	refused("dismissed claim", dismissed, def.ID, registry.ErrClaimNotHeld, c)

	// The claim's EK is bound to a third device.
	g := enroll("RS6", ek('b'))
	refused("EK bound elsewhere", hold("RS3", ek('b'), registry.ReasonSerialOtherEK, c), def.ID, registry.ErrEKConflict, c, g)
	verify(t, s)
}
