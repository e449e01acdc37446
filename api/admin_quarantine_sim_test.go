//go:build tpmsimulator

package api_test

import (
	"context"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"devpki/api/client"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMCloneHeldOverHTTP: a TPM whose EK is enrolled claims another
// serial; the device gets 403 clone-suspect saying the claim is held, and
// the admin finds it with devices?status=quarantined and dismisses it.
func TestTPMCloneHeldOverHTTP(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newFixtureTPM(t, &provision.TPMConfig{
		EKRoots: m.Roots(), EKIntermediates: m.Intermediates(), Challenger: verify.NewChallenger(verify.Config{}),
	})
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
	admin := f.apiClient(f.adminCert(f.ca, "default", "root", registry.RoleAdmin, ""))
	tp, err := tpm.Open(ctx, "simulator:00000000000000b1", tpm.Options{StateDir: t.TempDir()})
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
	ekCert := m.EKCert(t, ek.Public)
	challengeReq := func(serial string) *client.TPMChallengeRequest {
		return &client.TPMChallengeRequest{
			EKCert: ekCert,
			AK: client.TPMAttestationParameters{Public: params.Public, CreateData: params.CreateData,
				CreateAttestation: params.CreateAttestation, CreateSignature: params.CreateSignature},
			Serial: serial, MACs: []string{mac},
		}
	}
	ch, err := c.TPMChallenge(ctx, challengeReq("SN-HQ-1"))
	if err != nil {
		t.Fatal(err)
	}
	secret, err := ak.ActivateCredential(ctx, attestCredential(ch))
	if err != nil {
		t.Fatal(err)
	}
	key, err := tp.AttestedKey(ctx, "ak1", "key1", ch.Nonce)
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
	der, err := pki.NewDeviceCSR(signer, "SN-HQ-1", []string{mac})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.TPMEnroll(ctx, &client.TPMEnrollRequest{
		ChallengeID: ch.ChallengeID, ActivatedSecret: secret,
		Certify: client.TPMCertificationParameters{Public: cp.Public, CreateData: cp.CreateData,
			CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature},
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
	})
	if err != nil {
		t.Fatal(err)
	}

	for range 2 {
		_, err = c.TPMChallenge(ctx, challengeReq("SN-HQ-2"))
		var re *client.ResponseError
		if !errors.As(err, &re) || re.StatusCode != 403 || re.Problem == nil || re.Problem.Slug() != client.SlugCloneSuspect ||
			!strings.Contains(re.Problem.Detail, "held for an administrator") || strings.Contains(re.Problem.Detail, res.DeviceID) {
			t.Fatalf("clone claim: %v, want 403 clone-suspect saying it is held, without the enrolled device", err)
		}
	}
	l, err := admin.ListQuarantined(ctx, nil)
	if err != nil || len(l.Quarantined) != 1 {
		t.Fatalf("quarantined: %+v, %v", l, err)
	}
	q := l.Quarantined[0]
	if q.Serial != "SN-HQ-2" || q.EKHash != ekHash || q.Reason != string(registry.ReasonEKOtherSerial) ||
		q.ConflictDeviceID != res.DeviceID || q.Attempts != 2 || len(q.MACs) != 1 {
		t.Fatalf("claim = %+v", q)
	}
	if d, err := admin.DismissQuarantined(ctx, q.ID); err != nil || d.Status != "dismissed" {
		t.Fatalf("dismiss: %+v, %v", d, err)
	}
	if l, err := admin.ListQuarantined(ctx, nil); err != nil || len(l.Quarantined) != 0 {
		t.Fatalf("quarantined after dismissal: %+v, %v", l, err)
	}
}
