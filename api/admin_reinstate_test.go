package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// TestAdminReinstate: POST /v1/admin/devices/:id/reinstate brings a revoked
// device of the caller's tenant back to active (admins only), its
// certificates staying revoked; a device not revoked is 409, another
// tenant's or an unknown one 404, and a serial-bound token then re-enrolls
// it under the same id.
func TestAdminReinstate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	operator := f.apiClient(f.adminCert(f.ca, "default", "op", registry.RoleOperator, ""))
	other := &registry.Tenant{ID: "t-other", Name: "other"}
	if err := f.store.CreateTenant(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	olgaCert := f.adminCert(f.ca, "other", "olga", "", "")
	if err := f.store.PutAdmin(ctx, &registry.Admin{Name: "olga", TenantID: other.ID, Role: registry.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	olga := f.apiClient(olgaCert)
	er, _ := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-REIN")

	_, err := admin.ReinstateDevice(ctx, er.DeviceID)
	wantStatus(t, err, http.StatusConflict, "conflict")
	if _, err := f.rev.RevokeDevice(ctx, provision.AdminActor("root", f.tenant.ID, ""), er.DeviceID, registry.ReasonKeyCompromise); err != nil {
		t.Fatal(err)
	}
	_, err = operator.ReinstateDevice(ctx, er.DeviceID)
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	_, err = olga.ReinstateDevice(ctx, er.DeviceID)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = admin.ReinstateDevice(ctx, "no-such-device")
	wantStatus(t, err, http.StatusNotFound, "not-found")
	if d := f.device("SN-REIN"); d.Status != registry.DeviceRevoked {
		t.Fatalf("device after refused reinstatements: %+v", d)
	}

	seq := f.lastSeq()
	d, err := admin.ReinstateDevice(ctx, er.DeviceID)
	if err != nil || d.ID != er.DeviceID || d.Status != "active" || d.Tenant != "default" || d.Serial != "SN-REIN" {
		t.Fatalf("reinstate: %+v, %v", d, err)
	}
	audited := false
	for _, ev := range f.auditSince(seq) {
		audited = audited || (ev.Action == string(provision.ActionDeviceReinstate) && ev.Target == er.DeviceID &&
			ev.Actor == "admin:root" && ev.Result == registry.ResultOK && ev.SourceAddr == "127.0.0.1")
	}
	if !audited {
		t.Error("no audit event for the reinstatement")
	}
	certs, err := admin.ListCertificates(ctx, map[string][]string{"device": {er.DeviceID}})
	if err != nil || len(certs.Certificates) != 1 || certs.Certificates[0].Status != "revoked" {
		t.Fatalf("certificates after reinstate: %+v, %v; want the one revoked", certs, err)
	}
	again, _ := f.mustEnroll(f.mint(provision.TokenSpec{Serial: "SN-REIN"}), "SN-REIN")
	if again.DeviceID != er.DeviceID {
		t.Errorf("re-enrolled as %s, want %s", again.DeviceID, er.DeviceID)
	}
}

// TestAdminOtherTenant pins what an admin gets for another tenant's
// objects (today: 404 for reads, rotate, reinstate, dismiss and release;
// 403 for revocations and tokens) and that none of them changes anything.
func TestAdminOtherTenant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	other := &registry.Tenant{ID: "t-other", Name: "other"}
	if err := f.store.CreateTenant(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	olgaCert := f.adminCert(f.ca, "other", "olga", "", "")
	if err := f.store.PutAdmin(ctx, &registry.Admin{Name: "olga", TenantID: other.ID, Role: registry.RoleAdmin}, nil); err != nil {
		t.Fatal(err)
	}
	olga := f.apiClient(olgaCert)
	er, _ := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-OTHER")
	held := f.holdClaim(f.tenant.ID, "q-x", "SN-OTHER-CLONE", strings.Repeat("ab", 32))
	dev := f.device("SN-OTHER")
	certs, err := f.store.ListDeviceCertificates(ctx, dev.ID)
	if err != nil || len(certs) != 1 {
		t.Fatal(certs, err)
	}
	before := f.counts()

	_, err = olga.GetDevice(ctx, er.DeviceID)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.GetCertificate(ctx, certs[0].Serial)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.RotateDevice(ctx, er.DeviceID, nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.ReinstateDevice(ctx, er.DeviceID)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.DismissQuarantined(ctx, held.ID)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.ReleaseQuarantined(ctx, held.ID, nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.RevokeDevice(ctx, er.DeviceID, nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.RevokeCertificate(ctx, certs[0].Serial, nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = olga.CreateToken(ctx, &wire.TokenCreateRequest{})
	wantStatus(t, err, http.StatusNotFound, "not-found")

	if after := f.counts(); after != before {
		t.Errorf("rows changed: %+v -> %+v", before, after)
	}
	if d := f.device("SN-OTHER"); d.Status != registry.DeviceActive || d.RekeyRequired {
		t.Errorf("device after other-tenant requests: %+v", d)
	}
	if c, _ := f.store.GetCertificate(ctx, certs[0].Serial); c.Status != registry.CertActive {
		t.Errorf("certificate after other-tenant requests: %+v", c)
	}
	if q, _ := f.store.GetQuarantine(ctx, held.ID); q.Status != registry.QuarantineHeld {
		t.Errorf("claim after other-tenant requests: %+v", q)
	}
}
