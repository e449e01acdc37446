//go:build tpmsimulator

package provision_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestRenewExpiredTPMSimulator: a TPM-attested device renews its expired
// certificate only with its key certified by the AK it activated at
// enrollment over the challenge (the TPM key also signs the nonce): same
// key by TPM2_Certify again (Recertify), or a new key of the same TPM.
// Without the certification, over other data, or by another AK, it is
// refused after the proof and signs nothing.
func TestRenewExpiredTPMSimulator(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newExpiredFixture(t, 0)
	cfg := &provision.TPMConfig{EKRoots: m.Roots(), EKIntermediates: m.Intermediates(), Challenger: verify.NewChallenger(verify.Config{})}
	svc, err := provision.New(provision.Config{
		Store: f.store, Issuer: rootedIssuer{f.issuer, f.ca.CA.Root}, TrustDomain: "test.devpki", TPM: cfg,
		Lifetime: time.Hour, Now: func() time.Time { return time.Unix(0, f.clock.Load()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.svc = svc
	const serial, mac = "SN-EXP-TPM", "02:00:00:00:00:31"
	d := openSim(t, "00000000000000c1", m)
	defer d.tp.Close()
	ch, err := svc.TPMChallenge(ctx, d.challengeRequest(t, serial, mac))
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := svc.Enroll(ctx, tpmAttestor(f.store, cfg), d.answer(t, ch, serial, mac))
	if err != nil {
		t.Fatal(err)
	}
	key, err := d.tp.LoadKey(ctx, "key1")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cur := enrolled.Certificate
	f.at(cur, time.Hour)

	// answer asks for a challenge for cur and answers it signed by the TPM
	// key, with certify made from the nonce and csr (nil: same key).
	answer := func(t *testing.T, certify func(nonce []byte) *attest.CertificationParameters, csr []byte) (*provision.Result, error) {
		t.Helper()
		ch, err := svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(cur)})
		if err != nil {
			t.Fatal(err)
		}
		var csrDER []byte
		if csr != nil {
			blk, _ := pem.Decode(csr)
			csrDER = blk.Bytes
		}
		_, sig, err := pki.SignDetached(rand.Reader, signer, pki.ExpiredRenewalMessage(ch.Nonce, cur, csrDER))
		if err != nil {
			t.Fatal(err)
		}
		var cp *attest.CertificationParameters
		if certify != nil {
			cp = certify(ch.Nonce)
		}
		return svc.RenewExpired(ctx, &provision.RenewExpiredRequest{
			ChallengeID: ch.ID, CertPEM: certPEM(cur), Signature: sig, CSRPEM: csr, Certify: cp, SourceAddr: "192.0.2.7",
		})
	}
	// recertify has the AK certify the enrolled key again over qd(nonce).
	recertify := func(qd func(nonce []byte) []byte) func([]byte) *attest.CertificationParameters {
		return func(nonce []byte) *attest.CertificationParameters {
			cp, err := key.Recertify(ctx, qd(nonce))
			if err != nil {
				t.Fatal(err)
			}
			return &cp
		}
	}
	right := recertify(func(nonce []byte) []byte { return pki.ExpiredRenewalQualifyingData(nonce, cur) })

	refusals := []struct {
		name    string
		certify func([]byte) *attest.CertificationParameters
		want    error
	}{
		{"no certification", nil, provision.ErrTPMCertifyRequired},
		{"certified over the bare nonce", recertify(func(nonce []byte) []byte { return nonce }), verify.ErrCertify},
		{"certified over another nonce", recertify(func([]byte) []byte {
			return pki.ExpiredRenewalQualifyingData(make([]byte, 32), cur)
		}), verify.ErrCertify},
		{"another key certified", func(nonce []byte) *attest.CertificationParameters {
			cp, _ := d.certifiedKey(t, "ak1", pki.ExpiredRenewalQualifyingData(nonce, cur), serial, mac)
			return cp
		}, verify.ErrCertify},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			signed := f.issuer.n.Load()
			if _, err := answer(t, tc.certify, nil); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if f.issuer.n.Load() != signed {
				t.Fatal("a refused renewal signed")
			}
			if ev := lastAudit(t, f.store); ev.Action != "renew-expired" || ev.Result != registry.ResultDenied {
				t.Fatalf("audit %+v, want a denied renew-expired", ev)
			}
		})
	}

	res, err := answer(t, right, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !keyEq(res.Certificate, cur) {
		t.Fatal("same-key renewal changed the key")
	}
	if id, err := pki.DeviceIdentity(res.Certificate, "test.devpki"); err != nil || id.EKHash != d.ekHash {
		t.Fatalf("identity %+v, %v; want EK %s kept", id, err, d.ekHash)
	}

	// Expired again: re-key to a new key of the same TPM, certified over
	// the challenge as it is created; the CSR is bound by the old key's
	// signature.
	cur = res.Certificate
	f.at(cur, time.Hour)
	var csr []byte
	rekeyed, err := func() (*provision.Result, error) {
		ch, err := svc.RenewExpiredChallenge(ctx, &provision.ExpiredChallengeRequest{CertPEM: certPEM(cur)})
		if err != nil {
			return nil, err
		}
		var cp *attest.CertificationParameters
		cp, csr = d.certifiedKey(t, "ak1", pki.ExpiredRenewalQualifyingData(ch.Nonce, cur), serial, mac)
		blk, _ := pem.Decode(csr)
		_, sig, err := pki.SignDetached(rand.Reader, signer, pki.ExpiredRenewalMessage(ch.Nonce, cur, blk.Bytes))
		if err != nil {
			return nil, err
		}
		return svc.RenewExpired(ctx, &provision.RenewExpiredRequest{ChallengeID: ch.ID, CertPEM: certPEM(cur), Signature: sig,
			CSRPEM: csr, Certify: cp})
	}()
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(csr)
	req, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil || !keysEqual(req.PublicKey, rekeyed.Certificate.PublicKey) {
		t.Fatalf("re-keyed certificate does not hold the CSR's key (%v)", err)
	}
	if id, err := pki.DeviceIdentity(rekeyed.Certificate, "test.devpki"); err != nil || id.EKHash != d.ekHash {
		t.Fatalf("identity %+v, %v; want EK %s kept", id, err, d.ekHash)
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}
