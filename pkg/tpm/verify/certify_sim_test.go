//go:build tpmsimulator

package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/smallstep/go-attestation/attest"
)

// TestVerifyCertification runs VerifyCertification on simulator evidence: a
// key certified by an AK over extraData, checked against the AK's public key
// as the registry stores it (PKIX DER, parsed back).
func TestVerifyCertification(t *testing.T) {
	ak, params := simAK(t)
	otherAK, otherParams := simAK(t)
	akPub := akPublicKey(t, params)
	otherAKPub := akPublicKey(t, otherParams)
	// Round trip through PKIX DER: what registry.Device.AKPub holds.
	der, err := x509.MarshalPKIXPublicKey(akPub)
	if err != nil {
		t.Fatal(err)
	}
	if akPub, err = x509.ParsePKIXPublicKey(der); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("the certificate being renewed"))
	extra := sum[:]
	cp, csr := simKey(t, ak, extra)
	key := csr.PublicKey

	if err := VerifyCertification(akPub, cp, extra, key); err != nil {
		t.Fatalf("VerifyCertification(valid) = %v", err)
	}

	wrongExtra := bytes.Clone(extra)
	wrongExtra[0] ^= 1
	otherCP, otherCSR := simKey(t, ak, extra)
	byOtherAK, _ := simKey(t, otherAK, extra)
	tamperedSig := cp
	tamperedSig.CreateSignature = bytes.Clone(cp.CreateSignature)
	tamperedSig.CreateSignature[len(tamperedSig.CreateSignature)-1] ^= 1
	swappedPublic := cp
	swappedPublic.Public = otherCP.Public
	noMagic := cp
	noMagic.CreateAttestation = append([]byte{0, 0, 0, 0}, cp.CreateAttestation[4:]...)

	tests := []struct {
		name    string
		akPub   crypto.PublicKey
		cp      attest.CertificationParameters
		extra   []byte
		want    crypto.PublicKey
		wantMsg string
	}{
		{"wrong extraData", akPub, cp, wrongExtra, key, "extraData"},
		{"empty extraData", akPub, cp, nil, key, "qualifying data"},
		{"extraData with a trailing byte", akPub, cp, append(bytes.Clone(extra), 0), key, "extraData"},
		{"restricted key (the AK certified by itself)", akPub, certifyAKWithItself(t, ak, params, extra), extra, akPub, "restricted"},
		{"certified by another AK", akPub, byOtherAK, extra, key, "verification error"},
		{"checked against another AK", otherAKPub, cp, extra, key, "verification error"},
		{"AK public key that is not RSA", newECKey(t).Public(), cp, extra, key, "RSA"},
		{"certified key is not want (software key)", akPub, cp, extra, newECKey(t).Public(), "not the expected key"},
		{"certified key is not want (another TPM key)", akPub, cp, extra, otherCSR.PublicKey, "not the expected key"},
		{"no want", akPub, cp, extra, nil, "not the expected key"},
		{"signature tampered", akPub, tamperedSig, extra, key, "verification error"},
		{"public area of another key", akPub, swappedPublic, extra, otherCSR.PublicKey, "different key"},
		{"attestation without TPM_GENERATED", akPub, noMagic, extra, key, "magic"},
		{"no evidence", akPub, attest.CertificationParameters{}, extra, key, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyCertification(tt.akPub, tt.cp, tt.extra, tt.want)
			if !errors.Is(err, ErrCertify) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("VerifyCertification = %v, want ErrCertify containing %q", err, tt.wantMsg)
			}
		})
	}
}

func akPublicKey(t *testing.T, params attest.AttestationParameters) crypto.PublicKey {
	t.Helper()
	p, err := attest.ParseAKPublic(attest.TPMVersion20, params.Public)
	if err != nil {
		t.Fatal(err)
	}
	return p.Public
}

// TestCompleteResultAKPub: the AK that Complete returns is the one
// VerifyCertification later accepts, and Complete and VerifyCertification
// agree on the same evidence.
func TestCompleteResultAKPub(t *testing.T) {
	ctx := context.Background()
	c := NewChallenger(Config{})
	ak, params := simAK(t)
	ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: simEKPub(t), AK: params})
	if err != nil {
		t.Fatal(err)
	}
	cp, csr := simKey(t, ak, ch.Nonce)
	res, err := c.Complete(ctx, ch.ID, activate(t, ak, ch), cp, csr)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyCertification(res.AKPub, cp, ch.Nonce, res.KeyPub); err != nil {
		t.Fatalf("VerifyCertification of the enrollment's evidence = %v", err)
	}
	sum := sha256.Sum256([]byte("renewal"))
	rekey, rekeyCSR := simKey(t, ak, sum[:])
	if err := VerifyCertification(res.AKPub, rekey, sum[:], rekeyCSR.PublicKey); err != nil {
		t.Fatalf("VerifyCertification of a new key = %v", err)
	}
}
