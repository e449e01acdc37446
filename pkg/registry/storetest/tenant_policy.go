package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"devpki/pkg/registry"
)

// testTenantPolicy: ListTenants lists every tenant by name;
// SetTenantRequireTPM changes the policy with its audit event, and an
// unknown tenant is ErrNotFound with nothing written.
func testTenantPolicy(t *testing.T, s registry.Store) {
	ctx := context.Background()
	mkTenant(t, s, "zeta")
	acme := mkTenant(t, s, "acme")
	got, err := s.ListTenants(ctx)
	if err != nil {
		t.Fatalf("ListTenants: %v", err)
	}
	var names []string
	for _, tn := range got {
		names = append(names, tn.Name)
		if tn.RequireTPM || tn.ID == "" || tn.CreatedAt.IsZero() {
			t.Errorf("new tenant %+v: want an id, a creation time and RequireTPM false", tn)
		}
	}
	if want := "acme,default,zeta"; strings.Join(names, ",") != want {
		t.Fatalf("ListTenants names = %v, want %s", names, want)
	}

	for _, require := range []bool{true, true, false} {
		n, _ := auditHead(t, s)
		ev := &registry.AuditEvent{TenantID: acme.ID, Actor: "admin:test", Action: "tenant.update", Target: acme.ID, Result: registry.ResultOK}
		if err := s.SetTenantRequireTPM(ctx, acme.ID, require, ev); err != nil {
			t.Fatalf("SetTenantRequireTPM(%v): %v", require, err)
		}
		if ev.Seq == 0 || len(ev.Hash) == 0 {
			t.Errorf("audit event not stored: %+v", ev)
		}
		if after, _ := auditHead(t, s); after != n+1 {
			t.Errorf("audit events %d, want %d", after, n+1)
		}
		for _, get := range []func() (*registry.Tenant, error){
			func() (*registry.Tenant, error) { return s.GetTenant(ctx, "acme") },
			func() (*registry.Tenant, error) { return s.GetTenantByID(ctx, acme.ID) },
		} {
			if tn, err := get(); err != nil || tn.RequireTPM != require {
				t.Fatalf("after SetTenantRequireTPM(%v): %+v, %v", require, tn, err)
			}
		}
	}
	if tn, err := s.GetTenant(ctx, "zeta"); err != nil || tn.RequireTPM {
		t.Errorf("another tenant changed: %+v, %v", tn, err)
	}

	n, _ := auditHead(t, s)
	ev := &registry.AuditEvent{Actor: "admin:test", Action: "tenant.update", Target: "nope", Result: registry.ResultOK}
	if err := s.SetTenantRequireTPM(ctx, "t-nope", true, ev); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("SetTenantRequireTPM(unknown) = %v, want ErrNotFound", err)
	}
	if after, _ := auditHead(t, s); after != n {
		t.Errorf("audit events after a refused update: %d, want %d", after, n)
	}
	verify(t, s)
}

// testReEnrollSameEKWithToken: a TPM enrollment that also spends a token
// checks and spends the token in the same transaction; a re-enrollment
// whose expectation of the device no longer holds (another EK) spends
// nothing, whatever the token.
func testReEnrollSameEKWithToken(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ekA, ekB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	tpmEnrollment := func(serial, ek string, tok *registry.Token) *registry.Enrollment {
		e := newEnrollment(t, tn.ID, serial, tok.Hash)
		e.Device.Method, e.Device.EKHash = "tpm", ek
		return e
	}

	first := mkToken(t, s, tn.ID, "", 1, future())
	if err := s.Enroll(ctx, tpmEnrollment("TPMT1", ekA, first)); err != nil {
		t.Fatalf("token + TPM enrollment: %v", err)
	}
	if n := usesLeft(t, s, first.Hash); n != 0 {
		t.Errorf("token uses left %d, want 0", n)
	}

	bound := mkToken(t, s, tn.ID, "TPMT1", 1, future())
	other := tpmEnrollment("TPMT1", ekB, bound)
	before := takeSnapshot(t, s, other, bound.Hash)
	if err := s.Enroll(ctx, other); !errors.Is(err, registry.ErrSerialConflict) {
		t.Fatalf("serial-bound token, other EK: %v, want ErrSerialConflict", err)
	}
	requireUnchanged(t, s, other, bound.Hash, before)
	other = reenrolling(t, s, tpmEnrollment("TPMT1", ekB, bound))
	other.Replace.EKHash = ekB
	if err := s.Enroll(ctx, other); !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("serial-bound token, re-enrollment expecting EK B: %v, want ErrConflict", err)
	}
	requireUnchanged(t, s, other, bound.Hash, before)

	unbound := mkToken(t, s, tn.ID, "", 1, future())
	again := reenrolling(t, s, tpmEnrollment("TPMT1", ekA, unbound))
	if err := s.Enroll(ctx, again); err != nil {
		t.Fatalf("unbound token, same EK (a reset): %v", err)
	}
	if n := usesLeft(t, s, unbound.Hash); n != 0 {
		t.Errorf("token uses left after the reset %d, want 0", n)
	}
	if n := usesLeft(t, s, bound.Hash); n != 1 {
		t.Errorf("refused token uses left %d, want 1", n)
	}
	verify(t, s)
}
