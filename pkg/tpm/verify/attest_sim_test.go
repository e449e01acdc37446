//go:build tpmsimulator

package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/smallstep/go-attestation/attest"
)

// TestAttestationSimulator runs the whole round on simulator evidence.
func TestAttestationSimulator(t *testing.T) {
	ctx := context.Background()
	c := NewChallenger(Config{})
	ekPub := simEKPub(t)
	ak, params := simAK(t)
	ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekPub, AK: params, Binding: []byte("serial=SN1")})
	if err != nil {
		t.Fatalf("NewChallenge: %v", err)
	}
	if len(ch.Nonce) != NonceSize || ch.ID == "" || len(ch.Credential.Credential) == 0 || len(ch.Credential.Secret) == 0 {
		t.Fatalf("challenge incomplete: %+v", ch)
	}
	secret := activate(t, ak, ch)
	cp, csr := simKey(t, ak, ch.Nonce)
	res, err := c.Complete(ctx, ch.ID, secret, cp, csr)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	wantHash, _ := EKHash(ekPub)
	if res.EKHash != wantHash {
		t.Errorf("EKHash = %s, want %s", res.EKHash, wantHash)
	}
	if string(res.Binding) != "serial=SN1" {
		t.Errorf("Binding = %q, want the request's", res.Binding)
	}
	if !res.KeyPub.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Error("KeyPub is not the CSR key")
	}
	akPub, _ := attest.ParseAKPublic(attest.TPMVersion20, params.Public)
	if !res.AKPub.(interface{ Equal(crypto.PublicKey) bool }).Equal(akPub.Public) {
		t.Error("AKPub is not the activated AK")
	}

	// Replaying the same, correct answer.
	if _, err := c.Complete(ctx, ch.ID, secret, cp, csr); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("replay: %v, want ErrChallengeUsed", err)
	}
}

// tamperPublic flips attributes in a TPMT_PUBLIC.
func tamperPublic(t *testing.T, public []byte, mod func(*tpm2.TPMAObject)) []byte {
	t.Helper()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		t.Fatal(err)
	}
	mod(&pub.ObjectAttributes)
	return tpm2.Marshal(pub)
}

// TestNewChallengeRejectsAK covers AK evidence that NewChallenge refuses.
func TestNewChallengeRejectsAK(t *testing.T) {
	ctx := context.Background()
	c := NewChallenger(Config{})
	ekPub := simEKPub(t)
	_, params := simAK(t)
	tests := []struct {
		name    string
		mod     func(p *attest.AttestationParameters)
		wantErr string
	}{
		{"AK without restricted bit", func(p *attest.AttestationParameters) {
			p.Public = tamperPublic(t, p.Public, func(a *tpm2.TPMAObject) { a.Restricted = false })
		}, "not limited to attestation"},
		{"AK not fixedTPM", func(p *attest.AttestationParameters) {
			p.Public = tamperPublic(t, p.Public, func(a *tpm2.TPMAObject) { a.FixedTPM = false })
		}, "exportable"},
		{"AK with decrypt", func(p *attest.AttestationParameters) {
			p.Public = tamperPublic(t, p.Public, func(a *tpm2.TPMAObject) { a.Decrypt = true })
		}, "different key"},
		{"creation attestation without TPM_GENERATED", func(p *attest.AttestationParameters) {
			p.CreateAttestation = append([]byte{0, 0, 0, 0}, p.CreateAttestation[4:]...)
		}, "magic"},
		{"creation data of another key", func(p *attest.AttestationParameters) {
			p.CreateData = append(bytes.Clone(p.CreateData), 0)
		}, ""},
		{"signature over creation attestation", func(p *attest.AttestationParameters) {
			p.CreateSignature = bytes.Clone(p.CreateSignature)
			p.CreateSignature[len(p.CreateSignature)-1] ^= 1
		}, "verification error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := params
			tt.mod(&p)
			_, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekPub, AK: p})
			if !errors.Is(err, ErrAKInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewChallenge = %v, want ErrAKInvalid containing %q", err, tt.wantErr)
			}
		})
	}
	if params.CreateAttestation[0] != 0xff {
		t.Fatal("a subtest modified the shared evidence")
	}
}

// TestCompleteRejects covers answers that Complete refuses; each runs a fresh
// challenge against real evidence.
func TestCompleteRejects(t *testing.T) {
	ctx := context.Background()
	ekPub := simEKPub(t)
	ak, params := simAK(t)
	otherAK, _ := simAK(t)

	type answer struct {
		secret []byte
		cp     attest.CertificationParameters
		csr    *x509.CertificateRequest
	}
	tests := []struct {
		name    string
		answer  func(t *testing.T, ch *Challenge) answer
		advance time.Duration
		want    error
		wantMsg string
	}{
		{name: "wrong activation secret", want: ErrActivation, answer: func(t *testing.T, ch *Challenge) answer {
			s := activate(t, ak, ch)
			s[0] ^= 1
			cp, csr := simKey(t, ak, ch.Nonce)
			return answer{s, cp, csr}
		}},
		{name: "expired challenge", advance: DefaultTTL + time.Second, want: ErrChallengeExpired, answer: func(t *testing.T, ch *Challenge) answer {
			cp, csr := simKey(t, ak, ch.Nonce)
			return answer{activate(t, ak, ch), cp, csr}
		}},
		{name: "certify over a restricted key (the AK itself)", want: ErrCertify, wantMsg: "restricted", answer: func(t *testing.T, ch *Challenge) answer {
			_, csr := simKey(t, ak, ch.Nonce)
			return answer{activate(t, ak, ch), certifyAKWithItself(t, ak, params, ch.Nonce), csr}
		}},
		{name: "certify over a non-fixedTPM key (tampered)", want: ErrCertify, wantMsg: "exportable", answer: func(t *testing.T, ch *Challenge) answer {
			cp, csr := simKey(t, ak, ch.Nonce)
			cp.Public = tamperPublic(t, cp.Public, func(a *tpm2.TPMAObject) { a.FixedTPM = false })
			return answer{activate(t, ak, ch), cp, csr}
		}},
		{name: "certify extraData is not the nonce", want: ErrCertify, wantMsg: "nonce", answer: func(t *testing.T, ch *Challenge) answer {
			n := bytes.Clone(ch.Nonce)
			n[0] ^= 1
			cp, csr := simKey(t, ak, n)
			return answer{activate(t, ak, ch), cp, csr}
		}},
		{name: "certify signed by another AK", want: ErrCertify, wantMsg: "verification error", answer: func(t *testing.T, ch *Challenge) answer {
			cp, csr := simKey(t, otherAK, ch.Nonce)
			return answer{activate(t, ak, ch), cp, csr}
		}},
		{name: "CSR key is not the certified key", want: ErrCSR, answer: func(t *testing.T, ch *Challenge) answer {
			cp, _ := simKey(t, ak, ch.Nonce)
			return answer{activate(t, ak, ch), cp, mustCSR(t, newECKey(t))}
		}},
		{name: "CSR of another TPM key", want: ErrCSR, answer: func(t *testing.T, ch *Challenge) answer {
			cp, _ := simKey(t, ak, ch.Nonce)
			_, csr := simKey(t, ak, ch.Nonce)
			return answer{activate(t, ak, ch), cp, csr}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
			c := NewChallenger(Config{Now: clock.Now})
			ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekPub, AK: params})
			if err != nil {
				t.Fatal(err)
			}
			a := tt.answer(t, ch)
			clock.Advance(tt.advance)
			_, err = c.Complete(ctx, ch.ID, a.secret, a.cp, a.csr)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Complete = %v, want %v containing %q", err, tt.want, tt.wantMsg)
			}
		})
	}
}

// TestChallengeForAnotherEK: the server encrypted the credential to a key
// taken from a verified EK certificate that is not this TPM's EK, so the
// device cannot recover the secret.
func TestChallengeForAnotherEK(t *testing.T) {
	ctx := context.Background()
	p := newEKPKI(t)
	ekCert := p.leaf(t, nil)
	if err := VerifyEKCertificate(ekCert, pool(p.root), pool(p.inter), p.now); err != nil {
		t.Fatal(err)
	}
	c := NewChallenger(Config{})
	ak, params := simAK(t)
	ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekCert.PublicKey, AK: params})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := ak.ActivateCredential(ctx, steptpmCredential(ch))
	if err == nil {
		// Should the TPM not refuse, what it recovers must still be wrong.
		cp, csr := simKey(t, ak, ch.Nonce)
		if _, err := c.Complete(ctx, ch.ID, secret, cp, csr); !errors.Is(err, ErrActivation) {
			t.Fatalf("Complete = %v, want ErrActivation", err)
		}
		return
	}
	t.Logf("device refused the credential: %v", err)
	cp, csr := simKey(t, ak, ch.Nonce)
	if _, err := c.Complete(ctx, ch.ID, nil, cp, csr); !errors.Is(err, ErrActivation) {
		t.Fatalf("Complete without a secret = %v, want ErrActivation", err)
	}
}
