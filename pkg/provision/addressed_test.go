package provision_test

import (
	"context"
	"errors"
	"testing"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// admitAs is an attestor that admits into a tenant with no token (as an
// IDevID admission would).
type admitAs struct{ tenantID string }

func (a admitAs) Admit(context.Context, *provision.Request) (*provision.Admission, error) {
	return &provision.Admission{Method: "test", TenantID: a.tenantID, Actor: provision.SystemActor("test", a.tenantID)}, nil
}

// TestAddressedTenant: a request addressed to a tenant (Request.Tenant, an
// EST label) is refused before anything is signed or spent when its
// admission is into another tenant — registry.ErrTokenTenantMismatch for a
// token, provision.ErrForbidden for another credential — and an unknown
// tenant is registry.ErrNotFound; addressed to its own tenant it enrolls.
func TestAddressedTenant(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	acme := mkTenant(t, f.store, "acme", false)
	def := mustTenant(t, f.store)
	signed := f.issuer.n.Load()
	for _, tc := range []struct {
		name   string
		a      provision.Attestor
		token  string
		tenant string
		want   error
	}{
		{"token of default at acme", provision.TokenAttestor{Store: f.store}, f.mint(t, provision.TokenSpec{}), "acme", registry.ErrTokenTenantMismatch},
		{"token at an unknown tenant", provision.TokenAttestor{Store: f.store}, f.mint(t, provision.TokenSpec{}), "nosuch", registry.ErrNotFound},
		{"other credential of default at acme", admitAs{def.ID}, "", "acme", provision.ErrForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, csr := f.ca.DeviceKeyAndCSR(t, "SN-ADDR", macFor("SN-ADDR"))
			_, err := f.svc.Enroll(ctx, tc.a, &provision.Request{Credential: tc.token, CSRPEM: csr, Tenant: tc.tenant})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.token != "" {
				if tok, err := f.store.GetToken(ctx, provision.HashToken(tc.token)); err != nil || tok.UsesLeft != 1 {
					t.Errorf("token after the refusal: %+v, %v", tok, err)
				}
			}
		})
	}
	if n := f.issuer.n.Load(); n != signed {
		t.Fatalf("%d signatures for refused requests", n-signed)
	}
	_, _, csr := f.ca.DeviceKeyAndCSR(t, "SN-ADDR", macFor("SN-ADDR"))
	res, err := f.svc.Enroll(ctx, provision.TokenAttestor{Store: f.store},
		&provision.Request{Credential: f.mint(t, provision.TokenSpec{Tenant: "acme"}), CSRPEM: csr, Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := f.store.GetDevice(ctx, res.DeviceID); err != nil || d.TenantID != acme.ID {
		t.Fatalf("device %+v, %v: want in acme", d, err)
	}
}
