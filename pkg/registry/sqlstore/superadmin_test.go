package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"devpki/pkg/registry"
)

// TestMigrateSuperAdmins: a registry from before super-admins opens with
// its bootstrap admin (role admin, default tenant) a super-admin, as 'ca
// init' makes it now; other admins are left as they were, and a later
// open changes nothing (an admin an operator demoted stays demoted).
func TestMigrateSuperAdmins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openSQLite(t, path)
	asLegacy(t, s)
	if err := s.w.Exec("ALTER TABLE admins DROP COLUMN super").Error; err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, a := range []struct{ name, tenant, role string }{
		{"admin", registry.DefaultTenant, string(registry.RoleAdmin)},
		{"reader", registry.DefaultTenant, string(registry.RoleAuditor)},
	} {
		if err := s.w.Exec("INSERT INTO admins (name, tenant_id, role, created_at) VALUES (?, ?, ?, ?)", a.name, a.tenant, a.role, now).Error; err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s = openSQLite(t, path)
	ctx := context.Background()
	if a, err := s.GetAdmin(ctx, "admin"); err != nil || !a.Super {
		t.Fatalf("bootstrap admin after the upgrade: %+v, %v; want a super-admin", a, err)
	}
	if a, err := s.GetAdmin(ctx, "reader"); err != nil || a.Super {
		t.Fatalf("auditor after the upgrade: %+v, %v; want no super-admin", a, err)
	}
	if err := s.w.Exec("UPDATE admins SET super = ? WHERE name = 'admin'", false).Error; err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSQLite(t, path)
	defer s.Close()
	if a, err := s.GetAdmin(ctx, "admin"); err != nil || a.Super {
		t.Fatalf("a reopen promoted the admin again: %+v, %v", a, err)
	}
}
