package verify

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/smallstep/go-attestation/attest"
)

// DefaultTTL is the lifetime of a challenge when Config.TTL is zero.
const DefaultTTL = 60 * time.Second

// NonceSize is the length of the certify nonce in bytes.
const NonceSize = 32

// Config configures a Challenger. The zero value is usable.
type Config struct {
	// Store keeps pending challenges; nil means a new MemoryStore, which is
	// correct only with a single replica.
	Store Store
	// TTL is how long a challenge is accepted; zero means DefaultTTL.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the source of IDs, nonces and activation secrets; nil means
	// crypto/rand.Reader.
	Rand io.Reader
}

// Challenger runs the credential-activation round of TPM attestation:
// NewChallenge checks an AK and encrypts a secret to the EK bound to that AK's
// name; Complete checks the recovered secret and the certification of the
// application key that the CSR carries.
type Challenger struct {
	store Store
	ttl   time.Duration
	now   func() time.Time
	rand  io.Reader
}

// NewChallenger returns a Challenger configured by cfg.
func NewChallenger(cfg Config) *Challenger {
	c := &Challenger{store: cfg.Store, ttl: cfg.TTL, now: cfg.Now, rand: cfg.Rand}
	if c.now == nil {
		c.now = time.Now
	}
	if c.store == nil {
		c.store = &MemoryStore{Now: c.now}
	}
	if c.ttl <= 0 {
		c.ttl = DefaultTTL
	}
	if c.rand == nil {
		c.rand = rand.Reader
	}
	return c
}

// ChallengeRequest is the device's first message.
type ChallengeRequest struct {
	// EKPub is the EK public key: the key of an EK certificate that passed
	// VerifyEKCertificate, or a key whose EKHash is on an allow-list. Never
	// a key sent next to a certificate. It must be RSA: the device
	// activates with its RSA EK.
	EKPub crypto.PublicKey
	// AK is the AK public area, creation data, creation attestation and
	// signature.
	AK attest.AttestationParameters
	// Binding is opaque to the Challenger: it is kept with the pending
	// challenge and returned in Result.Binding, so the caller can tie what
	// the device claimed (serial, MACs, tenant) to the challenge without a
	// store of its own.
	Binding []byte
}

// Challenge is sent back to the device.
type Challenge struct {
	// ID names the challenge in Complete.
	ID string
	// Credential is the encrypted credential for TPM2_ActivateCredential.
	Credential attest.EncryptedCredential
	// Nonce must be the qualifying data of the TPM2_Certify.
	Nonce []byte
	// Expires is when the challenge stops being accepted.
	Expires time.Time
}

// Result is what a completed attestation proved.
type Result struct {
	// EKHash identifies the TPM (see EKHash).
	EKHash string
	// AKPub is the activated AK's public key (RSA): keep it (for instance
	// as PKIX DER) to check later certifications by the same AK with
	// VerifyCertification.
	AKPub crypto.PublicKey
	// KeyPub is the certified application key, equal to the CSR's key.
	KeyPub crypto.PublicKey
	// Binding is ChallengeRequest.Binding.
	Binding []byte
}

// NewChallenge checks req.AK and returns a credential-activation challenge
// encrypted to req.EKPub and bound to the AK's name.
//
// The AK must be an RSA (≥2048) key created by the TPM (TPM_GENERATED
// creation attestation over its creation data, self-signed), with
// fixedTPM, fixedParent, sensitiveDataOrigin, restricted and sign set and
// decrypt clear.
func (c *Challenger) NewChallenge(ctx context.Context, req *ChallengeRequest) (*Challenge, error) {
	if req == nil {
		return nil, fmt.Errorf("new challenge: %w: no request", ErrAKInvalid)
	}
	ekPub, ok := req.EKPub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("new challenge: %w: EK public key is %T, want RSA", ErrEKUntrusted, req.EKPub)
	}
	ekHash, err := EKHash(ekPub)
	if err != nil {
		return nil, fmt.Errorf("new challenge: %w: %w", ErrEKUntrusted, err)
	}
	params := attest.ActivationParameters{
		TPMVersion: attest.TPMVersion20,
		EK:         ekPub,
		AK:         req.AK,
		Rand:       c.rand,
	}
	secret, ec, err := params.Generate()
	if err != nil {
		return nil, fmt.Errorf("new challenge for EK %s: %w: %w", ekHash, ErrAKInvalid, err)
	}
	if err := checkAKAttributes(req.AK.Public); err != nil {
		return nil, fmt.Errorf("new challenge for EK %s: %w: %w", ekHash, ErrAKInvalid, err)
	}
	id := make([]byte, 16)
	nonce := make([]byte, NonceSize)
	if _, err := io.ReadFull(c.rand, id); err != nil {
		return nil, fmt.Errorf("new challenge: read random: %w", err)
	}
	if _, err := io.ReadFull(c.rand, nonce); err != nil {
		return nil, fmt.Errorf("new challenge: read random: %w", err)
	}
	p := &Pending{
		ID:         hex.EncodeToString(id),
		SecretHash: hashSecret(secret),
		Nonce:      nonce,
		AKPublic:   append([]byte(nil), req.AK.Public...),
		EKHash:     ekHash,
		Binding:    append([]byte(nil), req.Binding...),
		Expires:    c.now().Add(c.ttl),
	}
	if err := c.store.Put(ctx, p); err != nil {
		return nil, fmt.Errorf("new challenge: %w", err)
	}
	return &Challenge{
		ID:         p.ID,
		Credential: *ec,
		Nonce:      append([]byte(nil), nonce...),
		Expires:    p.Expires,
	}, nil
}

func hashSecret(s []byte) []byte {
	h := sha256.Sum256(s)
	return h[:]
}

// checkAKAttributes adds to attest's checks the ones it leaves out: sign set
// and decrypt clear. It repeats the others so they do not rest on one
// library alone.
func checkAKAttributes(public []byte) error {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return fmt.Errorf("parse AK public area: %w", err)
	}
	a := pub.ObjectAttributes
	switch {
	case !a.SignEncrypt:
		return errors.New("AK lacks the sign attribute")
	case a.Decrypt:
		return errors.New("AK has the decrypt attribute")
	case !a.Restricted:
		return errors.New("AK is not restricted")
	case !a.FixedTPM || !a.FixedParent:
		return errors.New("AK is not fixedTPM and fixedParent")
	case !a.SensitiveDataOrigin:
		return errors.New("AK was not generated by the TPM")
	}
	return nil
}

// Complete finishes challenge id. The challenge is consumed by the first
// call, whatever its outcome. It checks, in order: the activated secret
// (constant time); the certification under exactly the AK bound into the
// challenge, with the challenge nonce as extraData (the checks of
// VerifyCertification: structure, signature, fixedTPM, not restricted, sign,
// extraData); and that the CSR is self-signed by the certified key
// (ErrCSR otherwise).
func (c *Challenger) Complete(ctx context.Context, id string, activatedSecret []byte, certify attest.CertificationParameters, csr *x509.CertificateRequest) (*Result, error) {
	p, err := c.store.Consume(ctx, id, c.now())
	if err != nil {
		return nil, fmt.Errorf("complete challenge: %w", err)
	}
	if len(activatedSecret) == 0 || subtle.ConstantTimeCompare(hashSecret(activatedSecret), p.SecretHash) != 1 {
		return nil, fmt.Errorf("complete challenge %q for EK %s: %w: secret mismatch", id, p.EKHash, ErrActivation)
	}
	akPub, err := attest.ParseAKPublic(attest.TPMVersion20, p.AKPublic)
	if err != nil {
		return nil, fmt.Errorf("complete challenge %q: %w: %w", id, ErrAKInvalid, err)
	}
	keyPub, err := certifiedKey(akPub.Public, certify, p.Nonce)
	if err != nil {
		return nil, fmt.Errorf("complete challenge %q for EK %s: %w", id, p.EKHash, err)
	}
	if err := checkCSR(csr, keyPub); err != nil {
		return nil, fmt.Errorf("complete challenge %q for EK %s: %w", id, p.EKHash, err)
	}
	return &Result{EKHash: p.EKHash, AKPub: akPub.Public, KeyPub: keyPub, Binding: p.Binding}, nil
}

// checkCSR requires csr to be self-signed by key.
func checkCSR(csr *x509.CertificateRequest, key crypto.PublicKey) error {
	if csr == nil {
		return fmt.Errorf("%w: no CSR", ErrCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("%w: %w", ErrCSR, err)
	}
	k, ok := key.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(csr.PublicKey) {
		return fmt.Errorf("%w: CSR public key is not the certified key", ErrCSR)
	}
	return nil
}
