//go:build swtpm

package provision_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/swtpmtest"
	"devpki/pkg/tpm/verify"
)

// TestTPMEnrollSWTPM enrolls a swtpm whose EK certificate chains to swtpm's
// local CA, configured as the manufacturer root; the same EK certificate is
// refused by a CA that does not have that root.
func TestTPMEnrollSWTPM(t *testing.T) {
	ctx := context.Background()
	spec := swtpmtest.Start(t).Spec()
	roots, inters := swtpmtest.Roots(t), swtpmtest.Intermediates(t)
	d := openDevice(t, spec, func(ek *tpm.EK) []byte {
		if ek.Certificate == nil {
			t.Fatal("swtpm has no EK certificate")
		}
		return ek.Certificate.Raw
	})
	defer d.tp.Close()

	// Without the manufacturer's root the EK is not trusted.
	untrusted := newTPMFixture(t, x509.NewCertPool(), inters)
	if _, err := untrusted.svc.TPMChallenge(ctx, d.challengeRequest(t, "SWTPM-1", "02:00:00:00:00:09")); !errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("unconfigured root: %v, want ErrEKUntrusted", err)
	}

	f := newTPMFixture(t, roots, inters)
	ch, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, "SWTPM-1", "02:00:00:00:00:09"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, "SWTPM-1", "02:00:00:00:00:09"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.DeviceIdentity(res.Certificate, "test.devpki")
	if err != nil || id.EKHash != d.ekHash {
		t.Fatalf("identity = %+v, %v; want EK %s", id, err, d.ekHash)
	}
	dev, err := f.store.GetDevice(ctx, res.DeviceID)
	if err != nil || dev.Method != provision.MethodTPM || dev.EKHash != d.ekHash || dev.Status != registry.DeviceActive {
		t.Fatalf("device = %+v, %v", dev, err)
	}
}
