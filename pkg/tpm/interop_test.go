package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/swtpmtest"
	"devpki/pkg/tpm/verify"
)

// enrollAgainstVerify runs the whole attestation round between this package
// (device) and pkg/tpm/verify (server). With roots set the server trusts the
// EK by its certificate; without, by its public key (an allow-list).
func enrollAgainstVerify(t *testing.T, spec string, roots, intermediates *x509.CertPool) {
	t.Helper()
	ctx := context.Background()
	tp, err := tpm.Open(ctx, spec, tpm.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()

	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ekPub := ek.Public
	if roots != nil {
		if err := verify.VerifyEKCertificate(ek.Certificate, roots, intermediates, time.Now()); err != nil {
			t.Fatalf("server: EK certificate: %v", err)
		}
		ekPub = ek.Certificate.PublicKey
	}
	ak, err := tp.EnsureAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	akParams, err := ak.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch := verify.NewChallenger(verify.Config{})
	c, err := ch.NewChallenge(ctx, &verify.ChallengeRequest{EKPub: ekPub, AK: akParams})
	if err != nil {
		t.Fatalf("server: challenge: %v", err)
	}
	secret, err := ak.ActivateCredential(ctx, c.Credential)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tp.AttestedKey(ctx, "ak1", "tls", c.Nonce)
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
	der, err := pki.NewDeviceCSR(signer, "SN-1", []string{"0a0b0c0d0e0f"})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ch.Complete(ctx, c.ID, secret, cp, csr)
	if err != nil {
		t.Fatalf("server: complete: %v", err)
	}
	if !res.KeyPub.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("server certified another key")
	}
	if want, _ := verify.EKHash(ekPub); res.EKHash != want {
		t.Fatalf("EK hash %s, want %s", res.EKHash, want)
	}
	// Replaying the answer is refused.
	if _, err := ch.Complete(ctx, c.ID, secret, cp, csr); !errors.Is(err, verify.ErrChallengeUsed) && !errors.Is(err, verify.ErrChallengeNotFound) {
		t.Fatalf("replayed answer: %v", err)
	}
}

// TestSWTPMWithVerify trusts the swtpm EK through swtpm's per-machine local
// CA, as a manufacturer root.
func TestSWTPMWithVerify(t *testing.T) {
	spec := swtpmtest.Start(t).Spec()
	enrollAgainstVerify(t, spec, swtpmtest.Roots(t), swtpmtest.Intermediates(t))
}
