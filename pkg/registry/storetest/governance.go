package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// testTenantPolicyFields: UpdateTenantPolicy writes every policy field
// with its audit event and reads back as written (empty lists and a zero
// lifetime included); an unknown tenant is ErrNotFound with nothing
// written. CreateTenant stores a policy given at creation.
func testTenantPolicyFields(t *testing.T, s registry.Store) {
	ctx := context.Background()
	made := &registry.Tenant{Name: "plant", Methods: []string{"tpm"}, KeyTypes: []string{"ecdsa-p384"}, CertLifetime: 2 * time.Hour}
	if err := s.CreateTenant(ctx, made, &registry.AuditEvent{Actor: "admin:test", Action: "tenant.create", Target: "plant", Result: registry.ResultOK}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetTenant(ctx, "plant")
	if err != nil || !reflect.DeepEqual(got.Methods, made.Methods) || !reflect.DeepEqual(got.KeyTypes, made.KeyTypes) || got.CertLifetime != made.CertLifetime {
		t.Fatalf("created %+v, read %+v, %v", made, got, err)
	}
	for _, want := range []registry.Tenant{
		{ID: got.ID, Name: "plant", RequireTPM: true, Methods: []string{"token", "tpm"}, KeyTypes: []string{"rsa", "ed25519"}, CertLifetime: 90 * time.Minute},
		{ID: got.ID, Name: "plant"},
	} {
		n, _ := auditHead(t, s)
		ev := &registry.AuditEvent{TenantID: got.ID, Actor: "admin:test", Action: "tenant.update", Target: got.ID, Result: registry.ResultOK}
		if err := s.UpdateTenantPolicy(ctx, &want, ev); err != nil {
			t.Fatalf("UpdateTenantPolicy(%+v): %v", want, err)
		}
		if after, _ := auditHead(t, s); after != n+1 {
			t.Errorf("audit events %d, want %d", after, n+1)
		}
		tn, err := s.GetTenantByID(ctx, got.ID)
		if err != nil || tn.RequireTPM != want.RequireTPM || len(tn.Methods) != len(want.Methods) || len(tn.KeyTypes) != len(want.KeyTypes) ||
			tn.CertLifetime != want.CertLifetime || (len(want.Methods) > 0 && !reflect.DeepEqual(tn.Methods, want.Methods)) {
			t.Fatalf("after UpdateTenantPolicy(%+v): %+v, %v", want, tn, err)
		}
	}
	n, _ := auditHead(t, s)
	ev := &registry.AuditEvent{Actor: "admin:test", Action: "tenant.update", Target: "nope", Result: registry.ResultOK}
	if err := s.UpdateTenantPolicy(ctx, &registry.Tenant{ID: "t-nope", RequireTPM: true}, ev); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("UpdateTenantPolicy(unknown) = %v, want ErrNotFound", err)
	}
	if after, _ := auditHead(t, s); after != n {
		t.Errorf("audit events after a refused update: %d, want %d", after, n)
	}
	verify(t, s)
}

// testAdminLifecycle: CreateAdmin inserts (a name taken is
// ErrAlreadyExists, nothing written), ListAdmins lists by name with Super
// and Status, RevokeAdmin marks revoked once (again: ErrAlreadyRevoked,
// unknown: ErrNotFound, nothing written either way).
func testAdminLifecycle(t *testing.T, s registry.Store) {
	ctx := context.Background()
	tn, err := s.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	ev := func(target string) *registry.AuditEvent {
		return &registry.AuditEvent{TenantID: tn.ID, Actor: "admin:test", Action: "admin.create", Target: target, Result: registry.ResultOK}
	}
	if err := s.CreateAdmin(ctx, &registry.Admin{Name: "zoe", TenantID: tn.ID, Role: registry.RoleAuditor}, ev("zoe")); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAdmin(ctx, &registry.Admin{Name: "boss", TenantID: tn.ID, Role: registry.RoleAdmin, Super: true}, ev("boss")); err != nil {
		t.Fatal(err)
	}
	n, _ := auditHead(t, s)
	if err := s.CreateAdmin(ctx, &registry.Admin{Name: "zoe", TenantID: tn.ID, Role: registry.RoleAdmin}, ev("zoe")); !errors.Is(err, registry.ErrAlreadyExists) {
		t.Errorf("CreateAdmin(taken) = %v, want ErrAlreadyExists", err)
	}
	if after, _ := auditHead(t, s); after != n {
		t.Errorf("audit events after a refused create: %d, want %d", after, n)
	}
	list, err := s.ListAdmins(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "boss" || !list[0].Super || list[1].Name != "zoe" || list[1].Role != registry.RoleAuditor ||
		list[1].Status != registry.AdminActive || list[1].Super {
		t.Fatalf("ListAdmins: %+v, %v", list, err)
	}
	at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	if err := s.RevokeAdmin(ctx, "zoe", at, ev("zoe")); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetAdmin(ctx, "zoe")
	if err != nil || a.Status != registry.AdminRevoked || a.RevokedAt == nil || !a.RevokedAt.Equal(at) {
		t.Fatalf("after RevokeAdmin: %+v, %v", a, err)
	}
	n, _ = auditHead(t, s)
	if err := s.RevokeAdmin(ctx, "zoe", at, ev("zoe")); !errors.Is(err, registry.ErrAlreadyRevoked) {
		t.Errorf("RevokeAdmin(again) = %v, want ErrAlreadyRevoked", err)
	}
	if err := s.RevokeAdmin(ctx, "nobody", at, ev("nobody")); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("RevokeAdmin(unknown) = %v, want ErrNotFound", err)
	}
	if after, _ := auditHead(t, s); after != n {
		t.Errorf("audit events after refused revocations: %d, want %d", after, n)
	}
	if b, _ := s.GetAdmin(ctx, "boss"); b.Status != registry.AdminActive {
		t.Errorf("another admin changed: %+v", b)
	}
	verify(t, s)
}
