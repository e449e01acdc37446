//go:build tpmsimulator

package provision_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"testing"

	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMReleaseHeldClaim: a held clone claim released by an admin enrolls
// on its next attempt. A serial claimed by a new TPM (RMA) keeps the
// device id; the same TPM claimed with a new serial (moved chassis) gets a
// new device. Either way the enrolled device's certificates are revoked,
// on the CRL before ReleaseQuarantine returns, and the release is audited.
func TestTPMReleaseHeldClaim(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newTPMFixture(t, m.Roots(), m.Intermediates())
	rev, err := provision.NewRevocation(provision.RevocationConfig{Store: f.store, CRLSigner: f.ca.CA,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tn := mustTenant(t, f.store)
	admin := provision.Actor{Kind: provision.ActorAdmin, ID: "test", TenantID: tn.ID, Source: "192.0.2.200"}
	const mac = "02:00:00:00:00:0b"
	enroll := func(t *testing.T, d *simDevice, serial string) (*provision.Result, error) {
		t.Helper()
		ch, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
		if err != nil {
			return nil, err
		}
		return f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, serial, mac))
	}
	// onCRL fails unless the certificate is revoked in the registry with
	// reason and listed by CRL number n.
	onCRL := func(t *testing.T, cert *x509.Certificate, reason int, n int64) {
		t.Helper()
		rec, err := f.store.GetCertificate(ctx, cert.SerialNumber.Text(16))
		if err != nil || rec.Status != registry.CertRevoked || rec.RevocationReason != reason {
			t.Errorf("certificate %x: %+v, %v; want revoked with reason %d", cert.SerialNumber, rec, err, reason)
		}
		crl, err := rev.CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(crl.DER)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 || crl.Number != n || rl.Number.Cmp(big.NewInt(n)) != 0 {
			t.Errorf("CRL number %d (%v), the release said %d", crl.Number, rl.Number, n)
		}
		for _, e := range rl.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return
			}
		}
		t.Errorf("certificate %x not on CRL %d", cert.SerialNumber, crl.Number)
	}
	released := func(t *testing.T, id string) {
		t.Helper()
		ev := lastAudit(t, f.store)
		if ev.Action != "quarantine.release" || ev.Result != registry.ResultOK || ev.Target != id || ev.Actor != "admin:test" {
			t.Errorf("last audit event = %+v, want the release of %s", ev, id)
		}
		if q, err := f.store.GetQuarantine(ctx, id); err != nil || q.Status != registry.QuarantineReleased || q.ReleasedBy != "admin:test" {
			t.Errorf("claim after release = %+v, %v", q, err)
		}
	}

	old := openSim(t, "00000000000000c1", m)
	first, err := enroll(t, old, "SN-REL-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := old.tp.Close(); err != nil {
		t.Fatal(err)
	}
	d := openSim(t, "00000000000000c2", m)
	defer d.tp.Close()

	var second *provision.Result
	t.Run("serial with a new TPM keeps its device", func(t *testing.T) {
		_, err := enroll(t, d, "SN-REL-1")
		id := provision.QuarantineID(err)
		if !errors.Is(err, provision.ErrCloneSuspect) || id == "" {
			t.Fatalf("new TPM claiming SN-REL-1: %v, want held", err)
		}
		q, err := f.store.GetQuarantine(ctx, id)
		if err != nil || q.Reason != registry.ReasonSerialOtherEK || q.ConflictDeviceID != first.DeviceID || q.ConflictEKHash != old.ekHash {
			t.Fatalf("claim = %+v, %v", q, err)
		}
		other := provision.Actor{Kind: provision.ActorAdmin, ID: "other", TenantID: "t-other"}
		if _, err := rev.ReleaseQuarantine(ctx, other, id, registry.ReasonSuperseded); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("release by another tenant's admin: %v, want ErrNotFound", err)
		}
		res, err := rev.ReleaseQuarantine(ctx, admin, id, registry.ReasonSuperseded)
		if err != nil {
			t.Fatal(err)
		}
		if res.Device.ID != first.DeviceID || res.Device.EKHash != d.ekHash || res.Device.Status != registry.DeviceActive ||
			len(res.Certificates) != 1 || res.Certificates[0].Serial != first.Certificate.SerialNumber.Text(16) {
			t.Errorf("release = device %+v, certificates %+v", res.Device, res.Certificates)
		}
		released(t, id)
		onCRL(t, first.Certificate, registry.ReasonSuperseded, res.CRLNumber)
		if _, err := rev.ReleaseQuarantine(ctx, admin, id, registry.ReasonSuperseded); !errors.Is(err, registry.ErrClaimNotHeld) {
			t.Errorf("second release: %v, want ErrClaimNotHeld", err)
		}

		second, err = enroll(t, d, "SN-REL-1")
		if err != nil {
			t.Fatalf("the released claim: %v, want enrolled", err)
		}
		if second.DeviceID != first.DeviceID {
			t.Errorf("device id %s after the release, want %s kept", second.DeviceID, first.DeviceID)
		}
		if dev, err := f.store.GetDevice(ctx, first.DeviceID); err != nil || dev.EKHash != d.ekHash || dev.Status != registry.DeviceActive {
			t.Errorf("device = %+v, %v", dev, err)
		}
	})
	if second == nil {
		t.FailNow()
	}

	t.Run("TPM in a new chassis gets a new device", func(t *testing.T) {
		_, err := enroll(t, d, "SN-REL-2")
		id := provision.QuarantineID(err)
		if !errors.Is(err, provision.ErrCloneSuspect) || id == "" {
			t.Fatalf("enrolled TPM claiming SN-REL-2: %v, want held", err)
		}
		res, err := rev.ReleaseQuarantine(ctx, admin, id, registry.ReasonCessationOfOperation)
		if err != nil {
			t.Fatal(err)
		}
		if res.Device.ID != first.DeviceID || res.Device.Status != registry.DeviceRevoked || res.Device.EKHash != "" ||
			len(res.Certificates) != 1 || res.Certificates[0].Serial != second.Certificate.SerialNumber.Text(16) {
			t.Errorf("release = device %+v, certificates %+v", res.Device, res.Certificates)
		}
		released(t, id)
		onCRL(t, second.Certificate, registry.ReasonCessationOfOperation, res.CRLNumber)

		third, err := enroll(t, d, "SN-REL-2")
		if err != nil {
			t.Fatalf("the released claim: %v, want enrolled", err)
		}
		if third.DeviceID == first.DeviceID {
			t.Errorf("SN-REL-2 enrolled as %s, the revoked device; want a new one", third.DeviceID)
		}
		if devs, err := f.store.ListDevices(ctx, registry.DeviceFilter{EKHash: d.ekHash}); err != nil || len(devs) != 1 || devs[0].ID != third.DeviceID {
			t.Errorf("devices of the TPM = %+v, %v; want only %s", devs, err, third.DeviceID)
		}
		// The old serial is not handed back to the TPM: its device is revoked.
		if _, err := enroll(t, d, "SN-REL-1"); err == nil {
			t.Error("the TPM re-claimed SN-REL-1 after moving")
		}
	})
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}
