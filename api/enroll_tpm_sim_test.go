//go:build tpmsimulator

package api_test

import (
	"context"
	"testing"

	"go.step.sm/crypto/x509util"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMEnrollOverHTTP runs the two TPM enrollment routes with the typed
// client on simulator evidence, the EK certified by a test manufacturer.
func TestTPMEnrollOverHTTP(t *testing.T) {
	ctx := context.Background()
	f, m, c := newSimFixture(t)
	d := openSimDevice(t, "00000000000000a1", m)
	ch, err := c.TPMChallenge(ctx, d.claim(t, "SN-HTTP-1"))
	if err != nil {
		t.Fatal(err)
	}
	req := d.answer(t, ch, "SN-HTTP-1").Request
	res, err := c.TPMEnroll(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	cert := leafOf(t, res.Certificate)
	id, err := pki.DeviceIdentity(cert, pkitest.TrustDomain)
	if err != nil || id.EKHash != d.ekHash || id.DeviceID != res.DeviceID {
		t.Fatalf("identity = %+v, %v; want EK %s", id, err, d.ekHash)
	}
	if sans, err := x509util.ParseSubjectAlternativeNames(cert); err != nil || len(sans.PermanentIdentifiers) != 1 {
		t.Fatalf("PermanentIdentifiers = %+v, %v", sans.PermanentIdentifiers, err)
	}
	dev, err := f.store.GetDevice(ctx, res.DeviceID)
	if err != nil || dev.Method != "tpm" || dev.EKHash != d.ekHash {
		t.Fatalf("device = %+v, %v", dev, err)
	}

	t.Run("replayed answer", func(t *testing.T) {
		_, err := c.TPMEnroll(ctx, req)
		wantStatus(t, err, 409, wire.SlugChallengeUsed)
	})
	t.Run("wrong secret", func(t *testing.T) {
		ch, err := c.TPMChallenge(ctx, d.claim(t, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		r := d.answer(t, ch, "SN-HTTP-1").Request
		r.ActivatedSecret[0] ^= 1
		_, err = c.TPMEnroll(ctx, r)
		wantStatus(t, err, 403, wire.SlugTPMActivation)
	})
	t.Run("CSR key is not the certified key", func(t *testing.T) {
		ch, err := c.TPMChallenge(ctx, d.claim(t, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		r := d.answer(t, ch, "SN-HTTP-1").Request
		r.CSR = string(f.csr("SN-HTTP-1"))
		_, err = c.TPMEnroll(ctx, r)
		wantStatus(t, err, 403, wire.SlugTPMCertifyInvalid)
	})
	t.Run("EK certificate from an unconfigured root", func(t *testing.T) {
		r := d.claim(t, "SN-HTTP-1")
		r.EKCert = ektest.New(t).EKCert(t, d.ekPub)
		_, err := c.TPMChallenge(ctx, r)
		wantStatus(t, err, 403, wire.SlugTPMUntrustedEK)
	})
	t.Run("tampered AK", func(t *testing.T) {
		r := d.claim(t, "SN-HTTP-1")
		r.AK.CreateSignature = append([]byte(nil), r.AK.CreateSignature...)
		r.AK.CreateSignature[len(r.AK.CreateSignature)-1] ^= 1
		_, err := c.TPMChallenge(ctx, r)
		wantStatus(t, err, 400, wire.SlugTPMInvalidAK)
	})
	t.Run("clone: enrolled EK claims another serial", func(t *testing.T) {
		_, err := c.TPMChallenge(ctx, d.claim(t, "SN-HTTP-2"))
		wantStatus(t, err, 403, wire.SlugCloneSuspect)
	})
	t.Run("same EK re-enrolls", func(t *testing.T) {
		ch, err := c.TPMChallenge(ctx, d.claim(t, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.TPMEnroll(ctx, d.answer(t, ch, "SN-HTTP-1").Request)
		if err != nil {
			t.Fatal(err)
		}
		if again.DeviceID != res.DeviceID {
			t.Errorf("device id %s, want %s", again.DeviceID, res.DeviceID)
		}
	})
}
