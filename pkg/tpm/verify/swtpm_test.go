//go:build swtpm

package verify

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"testing"
	"time"

	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/storage"

	"devpki/pkg/tpm/swtpmtest"
)

// TestSWTPMAttestation verifies swtpm's real EK certificate chain against its
// local CA, then runs the whole attestation round on that EK.
func TestSWTPMAttestation(t *testing.T) {
	ctx := context.Background()
	sw := swtpmtest.Start(t)
	roots, inters := swtpmtest.Roots(t), swtpmtest.Intermediates(t)

	dev, err := steptpm.New(steptpm.WithDeviceName(sw.Socket), steptpm.WithStore(storage.NewDirstore(t.TempDir())), steptpm.WithDisableDownload())
	if err != nil {
		t.Fatal(err)
	}
	eks, err := dev.GetEKs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ekDER []byte
	for _, ek := range eks {
		if _, ok := ek.Public().(*rsa.PublicKey); ok && ek.Certificate() != nil {
			ekDER = ek.Certificate().Raw
		}
	}
	if ekDER == nil {
		t.Fatal("swtpm has no RSA EK certificate")
	}
	ekCert, err := ParseEKCertificate(ekDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEKCertificate(ekCert, roots, inters, time.Now()); err != nil {
		t.Fatalf("VerifyEKCertificate(swtpm EK): %v", err)
	}
	other := newEKPKI(t)
	if err := VerifyEKCertificate(ekCert, pool(other.root), inters, time.Now()); !errors.Is(err, ErrEKUntrusted) {
		t.Fatalf("VerifyEKCertificate with an unconfigured root = %v, want ErrEKUntrusted", err)
	}

	ak, err := dev.CreateAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	params, err := ak.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := NewChallenger(Config{})
	ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekCert.PublicKey, AK: params})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := ak.ActivateCredential(ctx, steptpm.EncryptedCredential(ch.Credential))
	if err != nil {
		t.Fatal(err)
	}
	key, err := dev.AttestKey(ctx, "ak1", "key1", steptpm.AttestKeyConfig{Algorithm: "ECDSA", Size: 256, QualifyingData: ch.Nonce})
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
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "swtpm-device"}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Complete(ctx, ch.ID, secret, cp, csr)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if want, _ := EKHash(ekCert.PublicKey); res.EKHash != want {
		t.Fatalf("EKHash = %s, want %s", res.EKHash, want)
	}
	if _, err := c.Complete(ctx, ch.ID, secret, cp, csr); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("replay = %v, want ErrChallengeUsed", err)
	}
}
