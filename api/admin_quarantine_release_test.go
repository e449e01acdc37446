package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/api/wire"
	"devpki/pkg/registry"
)

// tpmDevice records a TPM-attested device (serial, EK hash) with one active
// certificate, as provision's TPM enrollment does.
func (f *fixture) tpmDevice(serial, ek string) *registry.Device {
	f.t.Helper()
	sn := make([]byte, 16)
	rand.Read(sn)
	sn[0] &= 0x7f
	sn[0] |= 0x10
	now := time.Now()
	e := &registry.Enrollment{
		Device: &registry.Device{ID: "dev-" + serial, TenantID: f.tenant.ID, Serial: serial, Method: "tpm", EKHash: ek},
		Certificate: &registry.Certificate{
			Serial: hex.EncodeToString(sn), Kind: registry.KindDevice, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			DER: []byte{1},
		},
		Audit: &registry.AuditEvent{TenantID: f.tenant.ID, Actor: "tpm:" + ek, Action: "enroll", Target: "dev-" + serial, Result: registry.ResultOK},
	}
	if err := f.store.Enroll(context.Background(), e); err != nil {
		f.t.Fatal(err)
	}
	return e.Device
}

// holdAgainst records a held clone claim (serial, ek) against device d, as
// provision does.
func (f *fixture) holdAgainst(tenantID, id, serial, ek string, reason registry.QuarantineReason, d *registry.Device) {
	f.t.Helper()
	q := &registry.Quarantine{ID: id, TenantID: tenantID, Serial: serial, EKHash: ek, Reason: reason,
		ConflictDeviceID: d.ID, ConflictEKHash: d.EKHash, SourceAddr: "192.0.2.9"}
	if err := f.store.HoldClaim(context.Background(), q, &registry.AuditEvent{
		TenantID: tenantID, Actor: "anonymous", Action: "enroll.clone-suspect", Result: registry.ResultDenied,
	}); err != nil {
		f.t.Fatal(err)
	}
}

// TestAdminQuarantineRelease: POST /v1/admin/quarantine/:id/release lets a
// held claimant in (admin only, in the caller's tenant, audited, CRL
// rebuilt before the answer); claims unknown or of another tenant are 404;
// claims not held, whose device changed, or whose EK is bound elsewhere are
// 409 with nothing changed. devices?status=quarantined&all=true lists
// closed claims with their status.
func TestAdminQuarantineRelease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	operator := f.apiClient(f.adminCert(f.ca, "default", "op", registry.RoleOperator, ""))
	other := &registry.Tenant{ID: "t-other", Name: "other"}
	if err := f.store.CreateTenant(ctx, other, nil); err != nil {
		t.Fatal(err)
	}
	ek := func(c string) string { return strings.Repeat(c, 64) }

	rma := f.tpmDevice("SN-RL-1", ek("1"))
	f.holdAgainst(f.tenant.ID, "q-rma", "SN-RL-1", ek("2"), registry.ReasonSerialOtherEK, rma)
	f.holdAgainst(f.tenant.ID, "q-rma-2", "SN-RL-1", ek("3"), registry.ReasonSerialOtherEK, rma)
	f.holdAgainst(other.ID, "q-other", "SN-RL-1", ek("2"), registry.ReasonSerialOtherEK, rma)

	_, err := admin.ReleaseQuarantined(ctx, "no-such-claim", nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = admin.ReleaseQuarantined(ctx, "q-other", nil)
	wantStatus(t, err, http.StatusNotFound, "not-found")
	_, err = operator.ReleaseQuarantined(ctx, "q-rma", nil)
	wantStatus(t, err, http.StatusForbidden, "forbidden")
	_, err = admin.ReleaseQuarantined(ctx, "q-rma", &wire.ReleaseRequest{Reason: "7"})
	wantStatus(t, err, http.StatusBadRequest, "bad-reason")
	if d := f.device("SN-RL-1"); d.EKHash != ek("1") || d.Status != registry.DeviceActive {
		t.Fatalf("device after refused releases: %+v", d)
	}

	// A new TPM in SN-RL-1: the device is re-bound, keeps its id.
	seq := f.lastSeq()
	res, err := admin.ReleaseQuarantined(ctx, "q-rma", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Claim.Status != "released" || res.Claim.ReleasedBy != "admin:root" || res.Claim.ReleasedAt == nil ||
		res.Device.ID != rma.ID || res.Device.Status != "active" || len(res.Certificates) != 1 ||
		res.Certificates[0].Reason != "superseded" || res.CRLNumber == 0 {
		t.Fatalf("release = %+v", res)
	}
	if d := f.device("SN-RL-1"); d.ID != rma.ID || d.EKHash != ek("2") {
		t.Fatalf("device after release: %+v", d)
	}
	audited := false
	for _, ev := range f.auditSince(seq) {
		audited = audited || (ev.Action == "quarantine.release" && ev.Target == "q-rma" && ev.Actor == "admin:root" &&
			ev.Result == registry.ResultOK && strings.Contains(ev.Detail, ek("1")))
	}
	if !audited {
		t.Error("no audit event for the release")
	}
	if crl, err := f.rev.CRL(ctx); err != nil || crl.Number != res.CRLNumber {
		t.Errorf("CRL %+v, %v; want number %d", crl, err, res.CRLNumber)
	}

	conflict := func(id, want string) {
		t.Helper()
		_, err := admin.ReleaseQuarantined(ctx, id, nil)
		wantStatus(t, err, http.StatusConflict, "conflict")
		var re *client.ResponseError
		if errors.As(err, &re) && !strings.Contains(re.Problem.Detail, want) {
			t.Errorf("release %s: detail %q, want it to say %q", id, re.Problem.Detail, want)
		}
	}
	conflict("q-rma", "released by admin:root")
	conflict("q-rma-2", "Look again") // its device has another EK now
	if _, err := admin.DismissQuarantined(ctx, "q-rma-2"); err != nil {
		t.Fatal(err)
	}
	conflict("q-rma-2", "dismissed by admin:root")
	third := f.tpmDevice("SN-RL-3", ek("4"))
	f.holdAgainst(f.tenant.ID, "q-taken", "SN-RL-3", ek("2"), registry.ReasonSerialOtherEK, third) // EK 2 is SN-RL-1's now
	conflict("q-taken", rma.ID)
	if d := f.device("SN-RL-3"); d.EKHash != ek("4") || d.Status != registry.DeviceActive {
		t.Fatalf("device after a refused release: %+v", d)
	}

	// The TPM of SN-RL-3 in a new chassis SN-RL-4: SN-RL-3 is revoked.
	f.holdAgainst(f.tenant.ID, "q-moved", "SN-RL-4", ek("4"), registry.ReasonEKOtherSerial, third)
	res, err = admin.ReleaseQuarantined(ctx, "q-moved", &wire.ReleaseRequest{Reason: "keyCompromise"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Device.ID != third.ID || res.Device.Status != "revoked" || len(res.Certificates) != 1 || res.Certificates[0].Reason != "keyCompromise" {
		t.Fatalf("release = %+v", res)
	}
	if d := f.device("SN-RL-3"); d.EKHash != "" || d.Status != registry.DeviceRevoked {
		t.Fatalf("device after release: %+v", d)
	}

	// Listing: held only by default, every claim with its status with all.
	l, err := admin.ListQuarantined(ctx, nil)
	if err != nil || len(l.Quarantined) != 1 || l.Quarantined[0].ID != "q-taken" {
		t.Fatalf("held claims: %+v, %v; want q-taken only", l, err)
	}
	l, err = admin.ListQuarantined(ctx, url.Values{"all": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range l.Quarantined {
		got = append(got, q.ID+"="+q.Status)
	}
	if strings.Join(got, " ") != "q-moved=released q-rma=released q-rma-2=dismissed q-taken=held" {
		t.Errorf("all claims: %v", got)
	}
	_, err = admin.ListQuarantined(ctx, url.Values{"all": {"yes"}})
	wantStatus(t, err, http.StatusBadRequest, "bad-request")
}
