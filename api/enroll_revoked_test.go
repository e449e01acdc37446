package api_test

import (
	"context"
	"net/http"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestEnrollRevokedDevice: over HTTP, a serial-bound token for a device an
// admin revoked gets 409 device-revoked and is not spent; a token minted
// through the admin API with "reinstate" re-enrolls it.
func TestEnrollRevokedDevice(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	const serial = "SN-HTTP-REVOKED"
	first, _ := f.mustEnroll(f.mint(provision.TokenSpec{}), serial)
	if _, err := f.store.RevokeDevice(ctx, first.DeviceID, registry.ReasonKeyCompromise, &registry.AuditEvent{
		TenantID: f.tenant.ID, Actor: "admin:test", Action: "device.revoke", Target: first.DeviceID, Result: registry.ResultOK,
	}); err != nil {
		t.Fatal(err)
	}
	bound := f.mint(provision.TokenSpec{Serial: serial})
	resp, b := f.enroll(bound, f.csr(serial))
	if p := problemOf(t, resp, b, http.StatusConflict); p.Slug() != wire.SlugDeviceRevoked {
		t.Fatalf("slug %q, want %s", p.Slug(), wire.SlugDeviceRevoked)
	}
	if tok, err := f.store.GetToken(ctx, provision.HashToken(bound)); err != nil || tok.UsesLeft != 1 {
		t.Fatalf("token after the refusal: %+v, %v; want unspent", tok, err)
	}

	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	if _, err := admin.CreateToken(ctx, &wire.TokenCreateRequest{Reinstate: true}); err == nil {
		t.Fatal("a reinstate token without a serial was minted")
	}
	tr, err := admin.CreateToken(ctx, &wire.TokenCreateRequest{Serial: serial, Reinstate: true})
	if err != nil || !tr.Reinstate {
		t.Fatalf("CreateToken(reinstate) = %+v, %v", tr, err)
	}
	resp, b = f.enroll(tr.Token, f.csr(serial))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("reinstate token: %d %s", resp.StatusCode, b)
	}
	if d, err := f.store.GetDevice(ctx, first.DeviceID); err != nil || d.Status != registry.DeviceActive {
		t.Fatalf("device after reinstatement = %+v, %v", d, err)
	}
}
