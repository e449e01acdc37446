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
		e.SameEK, e.Device.Method, e.Device.EKHash = true, "tpm", ek
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
