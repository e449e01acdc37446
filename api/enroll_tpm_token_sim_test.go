//go:build tpmsimulator

package api_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"devpki/api/client"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMEnrollWithTokenOverHTTP: token + TPM attestation through the typed
// client (TPMChallengeWithToken) into a tenant that requires TPM
// attestation; a refused token is the same problem as on /v1/enroll and
// stays unspent; a success spends it.
func TestTPMEnrollWithTokenOverHTTP(t *testing.T) {
	ctx := context.Background()
	m := ektest.New(t)
	f := newFixtureTPM(t, &provision.TPMConfig{
		EKRoots: m.Roots(), EKIntermediates: m.Intermediates(), Challenger: verify.NewChallenger(verify.Config{}),
	})
	secure, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "secure", RequireTPM: true, Actor: "admin:test"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(f.url, client.WithRoots(f.ca.Roots()))
	if err != nil {
		t.Fatal(err)
	}
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
	keys := 0
	answer := func(ch *client.TPMChallengeResponse, serial string) *client.TPMEnrollRequest {
		t.Helper()
		secret, err := ak.ActivateCredential(ctx, attestCredential(ch))
		if err != nil {
			t.Fatal(err)
		}
		keys++
		key, err := tp.AttestedKey(ctx, "ak1", fmt.Sprintf("tkey%d", keys), ch.Nonce)
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
	const serial = "SN-HTTP-TOK-1"

	spent := f.mint(provision.TokenSpec{})
	f.mustEnroll(spent, "SN-HTTP-SW-1")
	refusals := []struct {
		name   string
		token  string
		status int
		slug   string
	}{
		{"unknown token", provision.TokenPrefix + "nope", http.StatusUnauthorized, "token-invalid"},
		{"expired token", f.mintAt(f.now.Add(-2*time.Hour), provision.TokenSpec{Tenant: "secure", TTL: time.Hour}), http.StatusUnauthorized, "token-expired"},
		{"spent token", spent, http.StatusUnauthorized, "token-spent"},
		{"serial-bound token, another serial", f.mint(provision.TokenSpec{Tenant: "secure", Serial: "SN-HTTP-TOK-9"}), http.StatusForbidden, "token-mismatch"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			uses, before := f.usesLeft(tt.token), f.counts()
			_, err := c.TPMChallengeWithToken(ctx, tt.token, challengeReq(serial))
			wantProblem(t, err, tt.status, tt.slug)
			if f.usesLeft(tt.token) != uses || f.counts() != before {
				t.Errorf("token uses %d -> %d, rows %+v -> %+v", uses, f.usesLeft(tt.token), before, f.counts())
			}
		})
	}

	t.Run("token + TPM enrolls into the require_tpm tenant", func(t *testing.T) {
		// A software key with a token of that tenant is refused...
		tok := f.mint(provision.TokenSpec{Tenant: "secure"})
		_, err := c.Enroll(ctx, tok, &client.EnrollRequest{CSR: string(f.csr(serial))})
		wantProblem(t, err, http.StatusForbidden, client.SlugTPMRequired)
		if f.usesLeft(tok) != 1 {
			t.Fatal("the refused enrollment spent the token")
		}
		// ...the same token with TPM evidence is admitted, and spent.
		ch, err := c.TPMChallengeWithToken(ctx, tok, challengeReq(serial))
		if err != nil {
			t.Fatal(err)
		}
		if f.usesLeft(tok) != 1 {
			t.Fatal("the challenge spent the token")
		}
		res, err := c.TPMEnroll(ctx, answer(ch, serial))
		if err != nil {
			t.Fatal(err)
		}
		if n := f.usesLeft(tok); n != 0 {
			t.Errorf("token uses left %d, want 0", n)
		}
		blk, _ := pem.Decode([]byte(res.Certificate))
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.DeviceIdentity(cert, pkitest.TrustDomain)
		if err != nil || id.Tenant != "secure" || id.EKHash != ekHash || id.DeviceID != res.DeviceID {
			t.Fatalf("identity = %+v, %v", id, err)
		}
		dev, err := f.store.GetDeviceBySerial(ctx, secure.ID, serial)
		if err != nil || dev.Method != "tpm" || dev.EKHash != ekHash {
			t.Fatalf("device = %+v, %v", dev, err)
		}
		evs := f.auditSince(0)
		if ev := evs[len(evs)-1]; ev.Action != "enroll" || ev.Result != registry.ResultOK || !strings.HasPrefix(ev.Actor, "token:") {
			t.Errorf("audit = %+v", ev)
		}
		// Spent now: the next challenge with it is refused.
		_, err = c.TPMChallengeWithToken(ctx, tok, challengeReq(serial))
		wantProblem(t, err, http.StatusUnauthorized, "token-spent")
	})
	t.Run("without the token the device claims the default tenant", func(t *testing.T) {
		// There its EK is already bound to the device in "secure": a clone
		// suspect, the same EK claiming a second identity.
		_, err := c.TPMChallenge(ctx, challengeReq(serial))
		wantProblem(t, err, http.StatusForbidden, client.SlugCloneSuspect)
	})
}
