package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// recordDevice records a device of tenant tn in status st with serial, EK
// hash (TPM method when set) and MACs, and one certificate, as an
// enrollment would.
func (f *revFixture) recordDevice(t *testing.T, tn *registry.Tenant, st registry.DeviceStatus, serial, ek string,
	macs ...string) *registry.Device {
	t.Helper()
	dev := &registry.Device{ID: "dev-" + tn.Name + "-" + serial, TenantID: tn.ID, Serial: serial, MACs: macs,
		Status: st, Method: "token", EKHash: ek}
	if ek != "" {
		dev.Method, dev.AKPub = provision.MethodTPM, []byte("ak of "+ek)
	}
	iss := f.ca.IssueDevice(t, pki.Identity{DeviceID: dev.ID, Tenant: tn.Name, Serial: serial, MACs: macs,
		TrustDomain: "test.devpki", EKHash: ek}, mustKey(t))
	err := f.store.Enroll(context.Background(), &registry.Enrollment{
		Device:      dev,
		Certificate: provision.CertificateRecord(iss.Certificate, registry.KindDevice, tn.ID, dev.ID, time.Now()),
		Audit:       &registry.AuditEvent{TenantID: tn.ID, Actor: "system:test", Action: "enroll", Target: dev.ID, Result: registry.ResultOK},
	})
	if err != nil {
		t.Fatalf("record %s: %v", serial, err)
	}
	return dev
}

// hold records a held claim of tn against device d (nil: none recorded),
// as holdClone does, and returns it.
func (f *revFixture) hold(t *testing.T, tn *registry.Tenant, serial, ek string, reason registry.QuarantineReason,
	d *registry.Device, macs ...string) *registry.Quarantine {
	t.Helper()
	q := &registry.Quarantine{ID: provision.NewUUID(), TenantID: tn.ID, Serial: serial, MACs: macs, EKHash: ek, Reason: reason,
		SourceAddr: "192.0.2.7"}
	if d != nil {
		q.ConflictDeviceID, q.ConflictEKHash = d.ID, d.EKHash
	}
	if err := f.store.HoldClaim(context.Background(), q, &registry.AuditEvent{TenantID: tn.ID, Actor: "anonymous",
		Action: "enroll.clone-suspect", Result: registry.ResultDenied}); err != nil {
		t.Fatalf("hold %s: %v", serial, err)
	}
	return q
}

// snapshot is what a refused release must leave as it was: the claim, the
// devices and their certificates.
func (f *revFixture) snapshot(t *testing.T, q *registry.Quarantine, devs ...*registry.Device) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	if got, err := f.store.GetQuarantine(ctx, q.ID); err == nil {
		fmt.Fprintf(&b, "claim=%s/%s", got.Status, got.ReleasedBy)
	}
	for _, d := range devs {
		got, err := f.store.GetDevice(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, " %s=%s/%s/%v/%x/%s", got.ID, got.Status, got.EKHash, got.MACs, got.AKPub, got.UpdatedAt)
		certs, err := f.store.ListDeviceCertificates(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range certs {
			fmt.Fprintf(&b, " %s=%s", c.Serial, c.Status)
		}
	}
	return b.String()
}

// refused releases q as who and wants an error wrapping want (and saying
// say), a denied audit event for it, and nothing else changed.
func (f *revFixture) refused(t *testing.T, who provision.Actor, q *registry.Quarantine, want error, say string, devs ...*registry.Device) {
	t.Helper()
	before := f.snapshot(t, q, devs...)
	_, err := f.rev.ReleaseQuarantine(context.Background(), who, q.ID, registry.ReasonSuperseded)
	if !errors.Is(err, want) || !strings.Contains(fmt.Sprint(err), say) {
		t.Errorf("release = %v, want %v saying %q", err, want, say)
	}
	if after := f.snapshot(t, q, devs...); after != before {
		t.Errorf("refused release changed the store:\n before %s\n after  %s", before, after)
	}
	if ev := lastAudit(t, f.store); ev.Action != string(provision.ActionQuarantineRelease) || ev.Result != registry.ResultDenied ||
		ev.Target != q.ID {
		t.Errorf("last audit event = %+v, want the refused release of %s", ev, q.ID)
	}
}

// TestReleaseMACClaim: a claim of a new serial to an enrolled device's MAC
// (no TPM involved), once released, revokes that device — status and
// certificates, with the reason, on the CRL before the answer — keeping its
// EK; the claimant then enrolls with the MAC. Claims whose device is gone,
// in another tenant, no longer has the MAC, or has the claim's serial are
// stale; a claim not held or of another tenant is refused; none of them
// changes anything.
func TestReleaseMACClaim(t *testing.T) {
	ctx := context.Background()
	f := newRevFixture(t)
	tn := mustTenant(t, f.store)
	d := f.device(t, "SN-MAC-1")
	dev, err := f.store.GetDevice(ctx, d.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	mac := dev.MACs[0]
	q := f.hold(t, tn, "SN-MAC-2", "", registry.ReasonMACOtherSerial, dev, mac)

	other := provision.Actor{Kind: provision.ActorAdmin, ID: "mallory", TenantID: "t-other", Source: "192.0.2.66"}
	f.refused(t, other, q, registry.ErrNotFound, "", dev)

	res, err := f.rev.ReleaseQuarantine(ctx, f.admin, q.ID, registry.ReasonKeyCompromise)
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	if res.Claim.ID != q.ID || res.Claim.Status != registry.QuarantineReleased || res.Claim.ReleasedBy != "admin:alice" {
		t.Errorf("claim = %+v", res.Claim)
	}
	if res.Device.ID != dev.ID || res.Device.Status != registry.DeviceRevoked || res.Device.Serial != "SN-MAC-1" ||
		len(res.Device.MACs) != 1 || res.Device.MACs[0] != mac {
		t.Errorf("device = %+v, want %s revoked", res.Device, dev.ID)
	}
	serial := d.Certificate.SerialNumber.Text(16)
	if len(res.Certificates) != 1 || res.Certificates[0].Serial != serial || res.Certificates[0].RevocationReason != registry.ReasonKeyCompromise {
		t.Errorf("certificates = %+v, want %s (keyCompromise)", res.Certificates, serial)
	}
	if _, rl := f.crl(t); res.CRLNumber == 0 || rl.Number.Int64() != res.CRLNumber {
		t.Errorf("CRL number %v, the release said %d", rl.Number, res.CRLNumber)
	} else if reason, ok := crlReason(rl, d.Certificate); !ok || reason != registry.ReasonKeyCompromise {
		t.Errorf("certificate on the CRL: %v, reason %d", ok, reason)
	}
	if ev := lastAudit(t, f.store); ev.Action != string(provision.ActionQuarantineRelease) || ev.Result != registry.ResultOK ||
		ev.Target != q.ID || ev.Actor != "admin:alice" || !strings.Contains(ev.Detail, "mac="+mac) {
		t.Errorf("last audit event = %+v, want the release of %s", ev, q.ID)
	}
	f.refused(t, f.admin, q, registry.ErrClaimNotHeld, "released", dev)
	if _, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-MAC-2", "02:00:00:00:00:0a"); err != nil {
		t.Fatalf("the claimant, after the release: %v", err)
	}

	// A TPM device keeps its EK and AK: the claimant is not its TPM.
	ek := strings.Repeat("e", 64)
	tpmDev := f.recordDevice(t, tn, registry.DeviceActive, "SN-MAC-3", ek, "02000000000b", "02000000000c")
	q = f.hold(t, tn, "SN-MAC-4", "", registry.ReasonMACOtherSerial, tpmDev, "02000000000c")
	if res, err = f.rev.ReleaseQuarantine(ctx, f.admin, q.ID, registry.ReasonSuperseded); err != nil {
		t.Fatal(err)
	}
	if got, err := f.store.GetDevice(ctx, tpmDev.ID); err != nil || got.Status != registry.DeviceRevoked || got.EKHash != ek ||
		string(got.AKPub) != "ak of "+ek || res.Device.EKHash != ek || len(res.Certificates) != 1 {
		t.Errorf("TPM device after release = %+v, %v (%d certificates revoked); want revoked, EK and AK kept", got, err,
			len(res.Certificates))
	}

	// A device already revoked (by an admin, after the claim was held) is
	// still released: what is left of it is revoked.
	revoked := f.recordDevice(t, tn, registry.DeviceActive, "SN-MAC-5", "", "02000000000d")
	q = f.hold(t, tn, "SN-MAC-6", "", registry.ReasonMACOtherSerial, revoked, "02000000000d")
	if _, err := f.rev.RevokeDevice(ctx, f.admin, revoked.ID, registry.ReasonUnspecified); err != nil {
		t.Fatal(err)
	}
	if res, err = f.rev.ReleaseQuarantine(ctx, f.admin, q.ID, registry.ReasonSuperseded); err != nil ||
		res.Device.Status != registry.DeviceRevoked || len(res.Certificates) != 0 {
		t.Errorf("release against a revoked device = %+v, %v", res, err)
	}

	// Stale claims.
	otherTn := mkTenant(t, f.store, "mac-other", false)
	elsewhere := f.recordDevice(t, otherTn, registry.DeviceActive, "SN-MAC-7", "", "02000000000e")
	live := f.recordDevice(t, tn, registry.DeviceActive, "SN-MAC-8", "", "02000000000f")
	for _, c := range []struct {
		name, serial, mac string
		d                 *registry.Device
		say               string
	}{
		{"no device recorded", "SN-MAC-10", "02000000000f", nil, "names no enrolled device"},
		{"device gone", "SN-MAC-10", "02000000000f", &registry.Device{ID: "dev-none"}, "no longer exists"},
		{"device in another tenant", "SN-MAC-10", "02000000000e", elsewhere, "not in the claim's tenant"},
		{"device without the MAC", "SN-MAC-10", "020000000011", live, "no longer has any of the claim's MACs"},
		{"device with the claim's serial", "sn-mac-8", "02000000000f", live, "already has the claim's serial"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := f.hold(t, tn, c.serial, "", registry.ReasonMACOtherSerial, c.d, c.mac)
			devs := []*registry.Device{live, elsewhere}
			f.refused(t, f.admin, q, registry.ErrClaimStale, c.say, devs...)
		})
	}
}

// TestReleaseEKClaims: the decisions of a release of a TPM clone claim,
// without a TPM. A serial claimed with another EK re-binds its device
// (serials compared case-insensitively); an EK claimed with another serial
// revokes its device and frees the EK. Claims whose device is gone, not
// recorded, in another tenant, has another serial, has changed EK or
// already has the claim's EK are stale; the claim's EK on another device
// is an EK conflict naming it; none of them changes anything.
func TestReleaseEKClaims(t *testing.T) {
	ctx := context.Background()
	f := newRevFixture(t)
	tn := mustTenant(t, f.store)
	ek := func(c string) string { return strings.Repeat(c, 64) }

	a := f.recordDevice(t, tn, registry.DeviceActive, "SN-EK-1", ek("1"), "020000000101")
	q := f.hold(t, tn, "sn-ek-1", ek("2"), registry.ReasonSerialOtherEK, a)
	res, err := f.rev.ReleaseQuarantine(ctx, f.admin, q.ID, registry.ReasonSuperseded)
	if err != nil {
		t.Fatalf("release: %v", err)
	}
	if res.Device.ID != a.ID || res.Device.EKHash != ek("2") || res.Device.Status != registry.DeviceActive || res.Device.AKPub != nil ||
		len(res.Certificates) != 1 {
		t.Errorf("release = device %+v, certificates %+v", res.Device, res.Certificates)
	}
	if ev := lastAudit(t, f.store); ev.Result != registry.ResultOK || !strings.Contains(ev.Detail, "previous_ek="+ek("1")) {
		t.Errorf("audit = %+v", ev)
	}

	b := f.recordDevice(t, tn, registry.DeviceActive, "SN-EK-3", ek("3"))
	q = f.hold(t, tn, "SN-EK-4", ek("3"), registry.ReasonEKOtherSerial, b)
	if res, err = f.rev.ReleaseQuarantine(ctx, f.admin, q.ID, registry.ReasonSuperseded); err != nil {
		t.Fatalf("release: %v", err)
	}
	if res.Device.ID != b.ID || res.Device.EKHash != "" || res.Device.Status != registry.DeviceRevoked || res.Device.AKPub != nil {
		t.Errorf("release = device %+v", res.Device)
	}

	otherTn := mkTenant(t, f.store, "ek-other", false)
	elsewhere := f.recordDevice(t, otherTn, registry.DeviceActive, "SN-EK-5", ek("5"))
	c := f.recordDevice(t, tn, registry.DeviceActive, "SN-EK-6", ek("6"))
	changed := *c
	changed.EKHash = ek("7") // as the claim saw it, before c's TPM changed
	devs := []*registry.Device{a, c, elsewhere}
	for _, tc := range []struct {
		name, serial, ek string
		reason           registry.QuarantineReason
		d                *registry.Device
		want             error
		say              string
	}{
		{"no device recorded", "SN-EK-6", ek("8"), registry.ReasonSerialOtherEK, nil, registry.ErrClaimStale, "names no enrolled device"},
		{"device gone", "SN-EK-6", ek("8"), registry.ReasonSerialOtherEK, &registry.Device{ID: "dev-none", EKHash: ek("6")},
			registry.ErrClaimStale, "no longer exists"},
		{"device in another tenant", "SN-EK-5", ek("8"), registry.ReasonSerialOtherEK, elsewhere, registry.ErrClaimStale,
			"not in the claim's tenant"},
		{"device with another serial", "SN-EK-9", ek("8"), registry.ReasonSerialOtherEK, c, registry.ErrClaimStale, "has serial"},
		{"device changed EK", "SN-EK-6", ek("8"), registry.ReasonSerialOtherEK, &changed, registry.ErrClaimStale, "now bound to EK"},
		{"device already on the claim's EK", "SN-EK-6", ek("6"), registry.ReasonSerialOtherEK, c, registry.ErrClaimStale,
			"already bound to the claim's EK"},
		{"device without the claimed EK", "SN-EK-9", ek("8"), registry.ReasonEKOtherSerial, c, registry.ErrClaimStale,
			"no longer bound to the claim's EK"},
		{"device with the claim's serial", "sn-ek-6", ek("6"), registry.ReasonEKOtherSerial, c, registry.ErrClaimStale,
			"already has the claim's serial"},
		{"EK bound to another device", "SN-EK-6", ek("2"), registry.ReasonSerialOtherEK, c, registry.ErrEKConflict, a.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := f.hold(t, tn, tc.serial, tc.ek, tc.reason, tc.d)
			f.refused(t, f.admin, q, tc.want, tc.say, devs...)
		})
	}
}

// racyStore changes the device a release was decided for just before the
// release is written, as another replica could.
type racyStore struct {
	registry.Store
	change func(ctx context.Context)
}

func (s *racyStore) ApplyRelease(ctx context.Context, w *registry.ReleaseWrite) error {
	s.change(ctx)
	return s.Store.ApplyRelease(ctx, w)
}

// TestReleaseDecidedOnStaleRead: a device that changes between the read
// release decides on and the write (a re-key, a revocation, another TPM)
// makes the write refuse with ErrClaimStale, writing nothing of the
// release.
func TestReleaseDecidedOnStaleRead(t *testing.T) {
	ctx := context.Background()
	f := newRevFixture(t)
	tn := mustTenant(t, f.store)
	ek := func(c string) string { return strings.Repeat(c, 64) }
	racy := &racyStore{Store: f.store}
	rev, err := provision.NewRevocation(provision.RevocationConfig{Store: racy, CRLSigner: f.ca.CA})
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name   string
		reason registry.QuarantineReason
		change func(ctx context.Context, d *registry.Device) error
	}{
		{"revoked meanwhile", registry.ReasonSerialOtherEK, func(ctx context.Context, d *registry.Device) error {
			_, err := f.store.RevokeDevice(ctx, d.ID, registry.ReasonUnspecified, nil)
			return err
		}},
		{"re-bound by another release meanwhile", registry.ReasonSerialOtherEK, func(ctx context.Context, d *registry.Device) error {
			q := f.hold(t, tn, d.Serial, ek("f"), registry.ReasonSerialOtherEK, d)
			return f.store.ApplyRelease(ctx, &registry.ReleaseWrite{ClaimID: q.ID, By: "admin:bob", DeviceID: d.ID,
				ExpectEKHash: d.EKHash, ExpectStatus: d.Status, EKHash: ek("f"), Status: registry.DeviceActive,
				Reason: registry.ReasonSuperseded})
		}},
		{"MACs changed meanwhile", registry.ReasonMACOtherSerial, func(ctx context.Context, d *registry.Device) error {
			e := *d
			e.MACs = append([]string{"020000000299"}, d.MACs...)
			return f.store.Enroll(ctx, &registry.Enrollment{Replace: d, Device: &e, Certificate: &registry.Certificate{
				Serial: fmt.Sprintf("7%039x", time.Now().UnixNano()), Kind: registry.KindDevice, NotBefore: time.Now(),
				NotAfter: time.Now().Add(time.Hour), DER: []byte{1}}})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serial := fmt.Sprintf("SN-RACE-%d", i)
			d := f.recordDevice(t, tn, registry.DeviceActive, serial, ek(fmt.Sprint(i+1)), fmt.Sprintf("0200000002%02x", i))
			claimSerial, claimEK := serial, ek("a")
			if tc.reason == registry.ReasonMACOtherSerial {
				claimSerial, claimEK = serial+"-NEW", ""
			}
			q := f.hold(t, tn, claimSerial, claimEK, tc.reason, d, d.MACs...)
			racy.change = func(ctx context.Context) {
				if err := tc.change(ctx, d); err != nil {
					t.Fatalf("change: %v", err)
				}
			}
			_, err := rev.ReleaseQuarantine(ctx, f.admin, q.ID, registry.ReasonSuperseded)
			if !errors.Is(err, registry.ErrClaimStale) {
				t.Fatalf("release = %v, want ErrClaimStale", err)
			}
			if got, err := f.store.GetQuarantine(ctx, q.ID); err != nil || got.Status != registry.QuarantineHeld {
				t.Errorf("claim = %+v, %v; want still held", got, err)
			}
			if got, err := f.store.GetDevice(ctx, d.ID); err != nil || got.EKHash == claimEK {
				t.Errorf("device = %+v, %v; want it not re-bound", got, err)
			}
		})
	}
}
