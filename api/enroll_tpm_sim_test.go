//go:build tpmsimulator

package api_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"github.com/smallstep/go-attestation/attest"
	"go.step.sm/crypto/x509util"

	"devpki/api/client"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMEnrollOverHTTP runs the two TPM enrollment routes with the typed
// client on simulator evidence, the EK certified by a test manufacturer.
func TestTPMEnrollOverHTTP(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newFixtureTPM(t, &provision.TPMConfig{
		EKRoots: m.Roots(), EKIntermediates: m.Intermediates(), Challenger: verify.NewChallenger(verify.Config{}),
	})
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.Open(ctx, "simulator:00000000000000a1", tpm.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ekHash, _ := verify.EKHash(ek.Public)
	ak, err := tp.EnsureAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	params, err := ak.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	challengeReq := func(ekCert []byte, serial string) *client.TPMChallengeRequest {
		return &client.TPMChallengeRequest{
			EKCert: ekCert,
			AK: client.TPMAttestationParameters{Public: params.Public, CreateData: params.CreateData,
				CreateAttestation: params.CreateAttestation, CreateSignature: params.CreateSignature},
			Serial: serial, MACs: []string{mac},
		}
	}
	ekCert := m.EKCert(t, ek.Public)
	keys := 0
	answer := func(ch *client.TPMChallengeResponse, serial string) *client.TPMEnrollRequest {
		t.Helper()
		secret, err := ak.ActivateCredential(ctx, attestCredential(ch))
		if err != nil {
			t.Fatal(err)
		}
		keys++
		key, err := tp.AttestedKey(ctx, "ak1", "key"+string(rune('0'+keys)), ch.Nonce)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := key.CertificationParameters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		signer, err := key.Signer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		der, err := pki.NewDeviceCSR(signer, serial, []string{mac})
		if err != nil {
			t.Fatal(err)
		}
		return &client.TPMEnrollRequest{
			ChallengeID: ch.ChallengeID, ActivatedSecret: secret,
			Certify: client.TPMCertificationParameters{Public: cp.Public, CreateData: cp.CreateData,
				CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature},
			CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		}
	}
	wantProblem := func(t *testing.T, err error, status int, slug string) {
		t.Helper()
		var re *client.ResponseError
		if !errors.As(err, &re) || re.Problem == nil || re.StatusCode != status || re.Problem.Slug() != slug {
			t.Fatalf("error = %v, want %d %s", err, status, slug)
		}
	}

	ch, err := c.TPMChallenge(ctx, challengeReq(ekCert, "SN-HTTP-1"))
	if err != nil {
		t.Fatal(err)
	}
	req := answer(ch, "SN-HTTP-1")
	res, err := c.TPMEnroll(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(res.Certificate))
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.DeviceIdentity(cert, pkitest.TrustDomain)
	if err != nil || id.EKHash != ekHash || id.DeviceID != res.DeviceID {
		t.Fatalf("identity = %+v, %v; want EK %s", id, err, ekHash)
	}
	if sans, err := x509util.ParseSubjectAlternativeNames(cert); err != nil || len(sans.PermanentIdentifiers) != 1 {
		t.Fatalf("PermanentIdentifiers = %+v, %v", sans.PermanentIdentifiers, err)
	}
	dev, err := f.store.GetDevice(ctx, res.DeviceID)
	if err != nil || dev.Method != "tpm" || dev.EKHash != ekHash {
		t.Fatalf("device = %+v, %v", dev, err)
	}

	t.Run("replayed answer", func(t *testing.T) {
		_, err := c.TPMEnroll(ctx, req)
		wantProblem(t, err, 409, client.SlugChallengeUsed)
	})
	t.Run("wrong secret", func(t *testing.T) {
		ch, err := c.TPMChallenge(ctx, challengeReq(ekCert, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		r := answer(ch, "SN-HTTP-1")
		r.ActivatedSecret[0] ^= 1
		_, err = c.TPMEnroll(ctx, r)
		wantProblem(t, err, 403, client.SlugTPMActivation)
	})
	t.Run("CSR key is not the certified key", func(t *testing.T) {
		ch, err := c.TPMChallenge(ctx, challengeReq(ekCert, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		r := answer(ch, "SN-HTTP-1")
		r.CSR = string(f.csr("SN-HTTP-1"))
		_, err = c.TPMEnroll(ctx, r)
		wantProblem(t, err, 403, client.SlugTPMCertifyInvalid)
	})
	t.Run("EK certificate from an unconfigured root", func(t *testing.T) {
		_, err := c.TPMChallenge(ctx, challengeReq(ektest.New(t).EKCert(t, ek.Public), "SN-HTTP-1"))
		wantProblem(t, err, 403, client.SlugTPMUntrustedEK)
	})
	t.Run("tampered AK", func(t *testing.T) {
		r := challengeReq(ekCert, "SN-HTTP-1")
		r.AK.CreateSignature = append([]byte(nil), r.AK.CreateSignature...)
		r.AK.CreateSignature[len(r.AK.CreateSignature)-1] ^= 1
		_, err := c.TPMChallenge(ctx, r)
		wantProblem(t, err, 400, client.SlugTPMInvalidAK)
	})
	t.Run("clone: enrolled EK claims another serial", func(t *testing.T) {
		_, err := c.TPMChallenge(ctx, challengeReq(ekCert, "SN-HTTP-2"))
		wantProblem(t, err, 403, client.SlugCloneSuspect)
	})
	t.Run("same EK re-enrolls", func(t *testing.T) {
		ch, err := c.TPMChallenge(ctx, challengeReq(ekCert, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.TPMEnroll(ctx, answer(ch, "SN-HTTP-1"))
		if err != nil {
			t.Fatal(err)
		}
		if again.DeviceID != res.DeviceID {
			t.Errorf("device id %s, want %s", again.DeviceID, res.DeviceID)
		}
	})
}

// attestCredential is the challenge's credential as the device's TPM takes it.
func attestCredential(ch *client.TPMChallengeResponse) attest.EncryptedCredential {
	return attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret}
}
