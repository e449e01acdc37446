//go:build tpmsimulator

package provision_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// certExtraData is what the device certifies a new key over when it renews
// cert: SHA-256 of its DER.
func certExtraData(cert *x509.Certificate) []byte {
	h := sha256.Sum256(cert.Raw)
	return h[:]
}

// TestTPMRekeySimulator: a TPM-attested device re-keys at renewal only to a
// key that its enrolled AK certified over the hash of the certificate it
// presents; every other re-key is refused, audited, and signs nothing.
func TestTPMRekeySimulator(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newTPMFixture(t, m.Roots(), m.Intermediates())
	const serial, mac, macHex = "SN-REKEY-1", "02:00:00:00:00:21", "020000000021"
	d := openSim(t, "00000000000000b1", m)

	ch, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := f.svc.Enroll(ctx, f.tpm, d.answer(t, ch, serial, mac))
	if err != nil {
		t.Fatal(err)
	}
	dev, err := f.store.GetDevice(ctx, enrolled.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	wantAK, err := x509.MarshalPKIXPublicKey(d.ak.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dev.AKPub, wantAK) {
		t.Fatalf("recorded AKPub = %x, want the activated AK %x", dev.AKPub, wantAK)
	}
	cur := enrolled.Certificate

	refused := func(t *testing.T, req *provision.RenewRequest, want error) error {
		t.Helper()
		signed := f.issuer.n.Load()
		req.Peer, req.SourceAddr = cur, "192.0.2.7"
		_, err := f.svc.Renew(ctx, req)
		if !errors.Is(err, want) {
			t.Fatalf("Renew = %v, want %v", err, want)
		}
		if f.issuer.n.Load() != signed {
			t.Error("a certificate was signed")
		}
		if rec, err := f.store.GetCertificate(ctx, cur.SerialNumber.Text(16)); err != nil || rec.Status != registry.CertActive {
			t.Errorf("presented certificate = %+v, %v; want still active", rec, err)
		}
		if ev := lastAudit(t, f.store); ev.Action != "renew" || ev.Result != registry.ResultDenied || ev.Target != dev.ID {
			t.Errorf("audit = %+v, want a denied renew of %s", ev, dev.ID)
		}
		return err
	}

	t.Run("TPM key without certify", func(t *testing.T) {
		_, csr := d.certifiedKey(t, "ak1", certExtraData(cur), serial, mac)
		err := refused(t, &provision.RenewRequest{CSRPEM: csr}, provision.ErrTPMCertifyRequired)
		if !strings.Contains(err.Error(), "certified by the same TPM (enroll rekey on the device)") {
			t.Errorf("error %q does not tell what to do", err)
		}
	})
	t.Run("software key without certify", func(t *testing.T) {
		refused(t, &provision.RenewRequest{CSRPEM: csrFor(t, serial, macHex)}, provision.ErrTPMCertifyRequired)
	})
	t.Run("certify over the wrong extraData", func(t *testing.T) {
		for name, extra := range map[string][]byte{
			"enrollment nonce": ch.Nonce,
			"hash of the cert's PEM": func() []byte {
				h := sha256.Sum256(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cur.Raw}))
				return h[:]
			}(),
			"hash of the cert's key": func() []byte {
				h := sha256.Sum256(cur.RawSubjectPublicKeyInfo)
				return h[:]
			}(),
		} {
			cp, csr := d.certifiedKey(t, "ak1", extra, serial, mac)
			if err := refused(t, &provision.RenewRequest{CSRPEM: csr, Certify: cp}, verify.ErrCertify); !strings.Contains(err.Error(), "extraData") {
				t.Errorf("%s: %v, want an extraData mismatch", name, err)
			}
		}
	})
	t.Run("certify of another key than the CSR's", func(t *testing.T) {
		cp, _ := d.certifiedKey(t, "ak1", certExtraData(cur), serial, mac)
		_, otherCSR := d.certifiedKey(t, "ak1", certExtraData(cur), serial, mac)
		refused(t, &provision.RenewRequest{CSRPEM: otherCSR, Certify: cp}, verify.ErrCertify)
		refused(t, &provision.RenewRequest{CSRPEM: csrFor(t, serial, macHex), Certify: cp}, verify.ErrCertify)
	})
	t.Run("certify by another AK of the same TPM", func(t *testing.T) {
		if _, err := d.tp.EnsureAK(ctx, "ak2"); err != nil {
			t.Fatal(err)
		}
		cp, csr := d.certifiedKey(t, "ak2", certExtraData(cur), serial, mac)
		refused(t, &provision.RenewRequest{CSRPEM: csr, Certify: cp}, verify.ErrCertify)
	})
	t.Run("CSR for another identity", func(t *testing.T) {
		cp, csr := d.certifiedKey(t, "ak1", certExtraData(cur), "SN-OTHER", mac)
		refused(t, &provision.RenewRequest{CSRPEM: csr, Certify: cp}, pki.ErrBadCSR)
	})

	t.Run("same key renews; a certify sent along is ignored", func(t *testing.T) {
		res, err := f.svc.Renew(ctx, &provision.RenewRequest{Peer: cur, Certify: &attest.CertificationParameters{}})
		if err != nil {
			t.Fatal(err)
		}
		if id, err := pki.DeviceIdentity(res.Certificate, "test.devpki"); err != nil || id.EKHash != d.ekHash {
			t.Errorf("identity = %+v, %v; want EK %s", id, err, d.ekHash)
		}
		cur = res.Certificate
	})

	t.Run("attested re-key", func(t *testing.T) {
		cp, csr := d.certifiedKey(t, "ak1", certExtraData(cur), serial, mac)
		res, err := f.svc.Renew(ctx, &provision.RenewRequest{Peer: cur, CSRPEM: csr, Certify: cp, SourceAddr: "192.0.2.7"})
		if err != nil {
			t.Fatal(err)
		}
		if keyEq(res.Certificate, cur) || res.DeviceID != dev.ID {
			t.Fatalf("re-key kept the key or changed the device (%s)", res.DeviceID)
		}
		blk, _ := pem.Decode(csr)
		req, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil || !keysEqual(req.PublicKey, res.Certificate.PublicKey) {
			t.Fatalf("certificate key is not the CSR's (%v)", err)
		}
		if id, err := pki.DeviceIdentity(res.Certificate, "test.devpki"); err != nil || id.EKHash != d.ekHash || id.Serial != serial {
			t.Errorf("identity = %+v, %v; want EK %s", id, err, d.ekHash)
		}
		after, err := f.store.GetDevice(ctx, dev.ID)
		if err != nil || after.Method != provision.MethodTPM || after.EKHash != d.ekHash || !bytes.Equal(after.AKPub, wantAK) {
			t.Errorf("device after re-key = %+v, %v; want Method tpm, same EK and AK", after, err)
		}
		if ev := lastAudit(t, f.store); ev.Action != "rekey" || ev.Result != registry.ResultOK {
			t.Errorf("audit = %+v, want rekey ok", ev)
		}
		// The old certificate's certification cannot re-key the new one.
		old := cur
		cur = res.Certificate
		cp2, csr2 := d.certifiedKey(t, "ak1", certExtraData(old), serial, mac)
		refused(t, &provision.RenewRequest{CSRPEM: csr2, Certify: cp2}, verify.ErrCertify)
	})

	if err := d.tp.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("certify by another TPM's AK", func(t *testing.T) {
		other := openSim(t, "00000000000000b2", m)
		defer other.tp.Close()
		cp, csr := other.certifiedKey(t, "ak1", certExtraData(cur), serial, mac)
		refused(t, &provision.RenewRequest{CSRPEM: csr, Certify: cp}, verify.ErrCertify)
	})
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

func keysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
