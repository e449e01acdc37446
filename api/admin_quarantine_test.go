package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// holdClaim records a held clone claim in tenantID, as provision does.
func (f *fixture) holdClaim(tenantID, id, serial, ek string) *registry.Quarantine {
	f.t.Helper()
	q := &registry.Quarantine{
		ID: id, TenantID: tenantID, Serial: serial, MACs: []string{"020000000001"}, EKHash: ek,
		Reason: registry.ReasonSerialOtherEK, ConflictDeviceID: "dev-" + serial, SourceAddr: "192.0.2.9",
	}
	if err := f.store.HoldClaim(context.Background(), q, &registry.AuditEvent{
		TenantID: tenantID, Actor: "anonymous", Action: "enroll.clone-suspect", Result: registry.ResultDenied,
	}); err != nil {
		f.t.Fatal(err)
	}
	return q
}

// TestAdminQuarantine: devices?status=quarantined lists the held claims of
// the caller's tenant in pages; dismiss is for admins, audited, once, and
// only in the caller's tenant.
func TestAdminQuarantine(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	operator := f.apiClient(f.adminCert(f.ca, "default", "op", registry.RoleOperator, ""))
	auditor := f.apiClient(f.adminCert(f.ca, "default", "aud", registry.RoleAuditor, ""))
	other := &registry.Tenant{ID: "t-other", Name: "other"}
	if err := f.store.CreateTenant(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	ek := strings.Repeat("ab", 32)
	for i := 1; i <= 3; i++ {
		f.holdClaim(f.tenant.ID, fmt.Sprintf("q-%d", i), fmt.Sprintf("SN-QA-%d", i), ek)
	}
	f.holdClaim(f.tenant.ID, "q-ignored", "SN-QA-1", ek) // a repeat: counted, no new record
	f.holdClaim(other.ID, "q-other", "SN-QA-1", ek)

	// Pages of two, for every role; only this tenant's claims.
	var got []string
	page, err := auditor.ListQuarantined(ctx, url.Values{"limit": {"2"}})
	if err != nil || len(page.Quarantined) != 2 || page.Next != "q-2" || len(page.Devices) != 0 {
		t.Fatalf("first page %+v, %v", page, err)
	}
	for _, q := range page.Quarantined {
		got = append(got, q.ID)
	}
	page, err = operator.ListQuarantined(ctx, url.Values{"limit": {"2"}, "after": {page.Next}})
	if err != nil || len(page.Quarantined) != 1 || page.Next != "" {
		t.Fatalf("second page %+v, %v", page, err)
	}
	got = append(got, page.Quarantined[0].ID)
	if strings.Join(got, " ") != "q-1 q-2 q-3" {
		t.Fatalf("listed %v, want q-1 q-2 q-3", got)
	}
	first, err := admin.ListQuarantined(ctx, url.Values{"serial": {"SN-QA-1"}})
	if err != nil || len(first.Quarantined) != 1 {
		t.Fatalf("serial filter: %+v, %v", first, err)
	}
	q := first.Quarantined[0]
	if q.ID != "q-1" || q.Tenant != "default" || q.Attempts != 2 || q.EKHash != ek || q.Reason != "serial-has-other-ek" ||
		q.ConflictDeviceID != "dev-SN-QA-1" || q.Status != "held" || len(q.MACs) != 1 || q.FirstSeen.IsZero() || q.LastSeen.Before(q.FirstSeen) {
		t.Fatalf("claim = %+v", q)
	}
	for _, bad := range []url.Values{{"limit": {"0"}}, {"mac": {"02:00:00:00:00:01"}}} {
		_, err := admin.ListQuarantined(ctx, bad)
		wantStatus(t, err, http.StatusBadRequest, "bad-request")
	}

	// Dismissal.
	_, err = operator.DismissQuarantined(ctx, "q-2")
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	_, err = auditor.DismissQuarantined(ctx, "q-2")
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	_, err = admin.DismissQuarantined(ctx, "no-such-claim")
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = admin.DismissQuarantined(ctx, "q-other")
	wantStatus(t, err, http.StatusNotFound, "not-found")
	if oq, err := f.store.GetQuarantine(ctx, "q-other"); err != nil || oq.Status != registry.QuarantineHeld {
		t.Fatalf("other tenant's claim after a refused dismissal: %+v, %v", oq, err)
	}
	seq := f.lastSeq()
	d, err := admin.DismissQuarantined(ctx, "q-2")
	if err != nil || d.Status != "dismissed" || d.DismissedBy != "admin:root" || d.DismissedAt == nil || time.Since(*d.DismissedAt) > time.Minute {
		t.Fatalf("dismiss: %+v, %v", d, err)
	}
	dismissed := false
	for _, ev := range f.auditSince(seq) {
		dismissed = dismissed || (ev.Action == "quarantine.dismiss" && ev.Target == "q-2" && ev.Actor == "admin:root" && ev.Result == registry.ResultOK)
	}
	if !dismissed {
		t.Fatal("no audit event for the dismissal")
	}
	_, err = admin.DismissQuarantined(ctx, "q-2")
	wantStatus(t, err, http.StatusConflict, "conflict")
	l, err := admin.ListQuarantined(ctx, nil)
	if err != nil || len(l.Quarantined) != 2 || l.Quarantined[0].ID != "q-1" || l.Quarantined[1].ID != "q-3" {
		t.Fatalf("held after dismissal: %+v, %v", l, err)
	}
}
