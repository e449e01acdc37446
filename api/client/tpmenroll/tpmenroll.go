// Package tpmenroll is the device's half of TPM attestation enrollment with
// a devpki CA: it turns what pkg/tpm reads from the TPM into the two requests
// of api/client (TPMChallenge, TPMEnroll).
//
//	req, _ := tpmenroll.Claim(ctx, t, "devpki-ak", serial, macs)
//	ch, _ := cl.TPMChallenge(ctx, req)
//	ans, _ := tpmenroll.Answer(ctx, t, "devpki-ak", "device-1", ch, serial, macs)
//	resp, _ := cl.TPMEnroll(ctx, ans.Request)
//
// The AK is created once and reused (its blob stays in the TPM state
// directory); every Answer creates a new application key certified over the
// challenge's nonce, so keyName must be new each time.
package tpmenroll

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/smallstep/go-attestation/attest"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/tpm"
)

// Claim returns the challenge request for serial and macs: the EK certificate
// when the TPM holds one (else the bare EK public key, which an operator must
// have pre-registered) and the public area and creation evidence of the AK
// akName, created on first use.
func Claim(ctx context.Context, t *tpm.TPM, akName, serial string, macs []string) (*wire.TPMChallengeRequest, error) {
	ek, err := t.EK(ctx)
	if err != nil {
		return nil, err
	}
	ak, err := t.EnsureAK(ctx, akName)
	if err != nil {
		return nil, err
	}
	p, err := ak.AttestationParameters(ctx)
	if err != nil {
		return nil, err
	}
	req := &wire.TPMChallengeRequest{
		AK: wire.TPMAttestationParameters{
			Public: p.Public, CreateData: p.CreateData,
			CreateAttestation: p.CreateAttestation, CreateSignature: p.CreateSignature,
		},
		Serial: serial,
		MACs:   macs,
	}
	if ek.Certificate != nil {
		req.EKCert = ek.Certificate.Raw
	} else {
		if req.EKPub, err = x509.MarshalPKIXPublicKey(ek.Public); err != nil {
			return nil, fmt.Errorf("encode EK public key: %w", err)
		}
	}
	return req, nil
}

// Answered is the device's reply to a challenge and the key it made.
type Answered struct {
	Request *wire.TPMEnrollRequest
	// Key is the new TPM-resident key; Signer signs with it.
	Key    *tpm.Key
	Signer crypto.Signer
}

// Answer activates the challenge's credential with the AK akName (proving the
// AK lives beside the EK), creates the key keyName in the TPM certified by
// that AK over the challenge nonce, and signs a CSR for serial and macs with
// it.
func Answer(ctx context.Context, t *tpm.TPM, akName, keyName string, ch *wire.TPMChallengeResponse, serial string, macs []string) (*Answered, error) {
	if ch == nil || ch.ChallengeID == "" || len(ch.Nonce) == 0 {
		return nil, errors.New("tpmenroll: incomplete challenge")
	}
	ak, err := t.EnsureAK(ctx, akName)
	if err != nil {
		return nil, err
	}
	secret, err := ak.ActivateCredential(ctx, attest.EncryptedCredential{Credential: ch.Credential, Secret: ch.Secret})
	if err != nil {
		return nil, err
	}
	key, err := t.AttestedKey(ctx, akName, keyName, ch.Nonce)
	if err != nil {
		return nil, err
	}
	cp, err := key.CertificationParameters(ctx)
	if err != nil {
		return nil, err
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		return nil, err
	}
	der, err := pki.NewDeviceCSR(signer, serial, macs)
	if err != nil {
		return nil, fmt.Errorf("build CSR with TPM key %q: %w", keyName, err)
	}
	return &Answered{
		Request: &wire.TPMEnrollRequest{
			ChallengeID:     ch.ChallengeID,
			ActivatedSecret: secret,
			Certify: wire.TPMCertificationParameters{
				Public: cp.Public, CreateData: cp.CreateData,
				CreateAttestation: cp.CreateAttestation, CreateSignature: cp.CreateSignature,
			},
			CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
		},
		Key:    key,
		Signer: signer,
	}, nil
}
