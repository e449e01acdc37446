package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/smallstep/go-attestation/attest"
	steptpm "go.step.sm/crypto/tpm"
)

// EK is the TPM's RSA endorsement key.
type EK struct {
	// Public is the EK public key. When Certificate is set it is the
	// certificate's key (go-attestation reads it from there).
	Public crypto.PublicKey
	// Certificate is the EK certificate from the TPM's NV storage, or nil
	// when the TPM has none (the simulator, some firmware TPMs).
	Certificate *x509.Certificate
	// CertificateURL is where the manufacturer publishes the certificate
	// when it is not in NV (Intel), or empty.
	CertificateURL string

	fingerprint string
}

// Fingerprint identifies the EK: "sha256:" and the standard base64 of the
// SHA-256 of its PKIX DER public key (the format of go.step.sm/crypto/tpm).
func (ek *EK) Fingerprint() string { return ek.fingerprint }

// EK returns the RSA EK, the one go-attestation activates credentials with.
func (t *TPM) EK(ctx context.Context) (*EK, error) {
	eks, err := t.tpm.GetEKs(ctx)
	if err != nil {
		return nil, fmt.Errorf("read EK: %w", err)
	}
	for _, e := range eks {
		if _, ok := e.Public().(*rsa.PublicKey); !ok {
			continue
		}
		fp, err := e.Fingerprint()
		if err != nil {
			return nil, fmt.Errorf("read EK: %w", err)
		}
		return &EK{Public: e.Public(), Certificate: e.Certificate(), CertificateURL: e.CertificateURL(), fingerprint: fp}, nil
	}
	return nil, fmt.Errorf("read EK: the TPM has no RSA EK (%d other EKs)", len(eks))
}

// AK is an attestation key: an RSA-2048 restricted signing key, fixed to
// the TPM, its blob in the state directory.
type AK struct {
	name string
	ak   *steptpm.AK
}

// Name returns the AK's name.
func (a *AK) Name() string { return a.name }

// Public returns the AK's public key.
func (a *AK) Public() crypto.PublicKey { return a.ak.Public() }

// EnsureAK returns the AK called name, creating it (RSA-2048 keygen, slow on
// real TPMs: seconds) the first time.
func (t *TPM) EnsureAK(ctx context.Context, name string) (*AK, error) {
	if err := checkName("AK", name); err != nil {
		return nil, err
	}
	ak, err := t.tpm.GetAK(ctx, name)
	if errors.Is(err, steptpm.ErrNotFound) {
		ak, err = t.tpm.CreateAK(ctx, name)
		if errors.Is(err, steptpm.ErrExists) { // another process won the race
			ak, err = t.tpm.GetAK(ctx, name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("AK %q: %w", name, err)
	}
	return &AK{name: name, ak: ak}, nil
}

// AttestationParameters returns the AK's public area, creation data,
// creation attestation and its signature, for the CA's credential
// activation challenge.
func (a *AK) AttestationParameters(ctx context.Context) (attest.AttestationParameters, error) {
	p, err := a.ak.AttestationParameters(ctx)
	if err != nil {
		return p, fmt.Errorf("AK %q attestation parameters: %w", a.name, err)
	}
	return p, nil
}

// ActivateCredential decrypts a credential the CA made for this AK and the
// TPM's RSA EK (TPM2_ActivateCredential) and returns the secret. It fails
// when the credential was made for another AK or another EK.
func (a *AK) ActivateCredential(ctx context.Context, ec attest.EncryptedCredential) ([]byte, error) {
	secret, err := a.ak.ActivateCredential(ctx, steptpm.EncryptedCredential(ec))
	if err != nil {
		return nil, fmt.Errorf("AK %q activate credential: %w", a.name, err)
	}
	return secret, nil
}

// Key is an ECDSA P-256 application key that lives in the TPM (its blob,
// wrapped by the TPM, in the state directory).
type Key struct {
	name string
	key  *steptpm.Key
}

// Name returns the key's name.
func (k *Key) Name() string { return k.name }

// AttestedBy returns the name of the AK that certified the key.
func (k *Key) AttestedBy() string { return k.key.AttestedBy() }

// Public returns the key's public key (*ecdsa.PublicKey).
func (k *Key) Public() crypto.PublicKey { return k.key.Public() }

// AttestedKey creates an ECDSA P-256 key called keyName in the TPM and
// certifies it with the AK akName (TPM2_Certify) over nonce, which the TPM
// returns as TPMS_ATTEST.extraData. The nonce must be 1 to MaxNonceSize
// bytes; 32 is portable. The key is signing-only, fixedTPM, not restricted,
// with an empty authValue and DA protection (see the package doc on
// lockout). keyName must be new: ErrExists otherwise.
func (t *TPM) AttestedKey(ctx context.Context, akName, keyName string, nonce []byte) (*Key, error) {
	if err := checkName("AK", akName); err != nil {
		return nil, err
	}
	if err := checkName("key", keyName); err != nil {
		return nil, err
	}
	if len(nonce) == 0 || len(nonce) > MaxNonceSize {
		return nil, fmt.Errorf("key %q: %w: %d bytes (want 1 to %d)", keyName, ErrBadNonce, len(nonce), MaxNonceSize)
	}
	key, err := t.tpm.AttestKey(ctx, akName, keyName, steptpm.AttestKeyConfig{
		Algorithm: "ECDSA", Size: 256, QualifyingData: nonce,
	})
	if err != nil {
		return nil, fmt.Errorf("create key %q: %w", keyName, mapErr(err))
	}
	return &Key{name: keyName, key: key}, nil
}

// LoadKey returns the key called name from the state directory.
func (t *TPM) LoadKey(ctx context.Context, name string) (*Key, error) {
	if err := checkName("key", name); err != nil {
		return nil, err
	}
	key, err := t.tpm.GetKey(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("load key %q: %w", name, mapErr(err))
	}
	return &Key{name: name, key: key}, nil
}

// CertificationParameters returns the TPM2_Certify made when the key was
// created (over that call's nonce): the key's public area, the attestation
// and the AK's signature over it.
func (k *Key) CertificationParameters(ctx context.Context) (attest.CertificationParameters, error) {
	p, err := k.key.CertificationParameters(ctx)
	if err != nil {
		return p, fmt.Errorf("key %q certification parameters: %w", k.name, err)
	}
	return p, nil
}

// Recertify certifies the key again with the AK that created it, over a
// new nonce. The result is not stored.
func (k *Key) Recertify(ctx context.Context, nonce []byte) (attest.CertificationParameters, error) {
	if len(nonce) == 0 || len(nonce) > MaxNonceSize {
		return attest.CertificationParameters{}, fmt.Errorf("key %q: %w: %d bytes (want 1 to %d)", k.name, ErrBadNonce, len(nonce), MaxNonceSize)
	}
	p, err := k.key.Recertify(ctx, steptpm.RecertifyConfig{QualifyingData: nonce})
	if err != nil {
		return p, fmt.Errorf("key %q recertify: %w", k.name, err)
	}
	return p, nil
}

// Signer returns a crypto.Signer that signs in the TPM (each Sign loads the
// blob, signs and flushes: about 1 ms on swtpm, tens of ms on a discrete
// TPM). It works with x509.CreateCertificateRequest and as the PrivateKey of
// a tls.Certificate; Sign wants a SHA-256 digest.
func (k *Key) Signer(ctx context.Context) (crypto.Signer, error) {
	s, err := k.key.Signer(ctx)
	if err != nil {
		return nil, fmt.Errorf("key %q signer: %w", k.name, mapErr(err))
	}
	pub, ok := s.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("key %q signer: not an ECDSA P-256 key", k.name)
	}
	return &signer{name: k.name, s: s}, nil
}

// signer maps TPM lockout errors to ErrLockout.
type signer struct {
	name string
	s    crypto.Signer
}

func (s *signer) Public() crypto.PublicKey { return s.s.Public() }

func (s *signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.s.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("TPM key %q sign: %w", s.name, mapErr(err))
	}
	return sig, nil
}

// mapErr adds this package's sentinels to errors from step's library. TPM
// warnings reach us flattened to text by go-attestation, so lockout is
// recognised by its message.
func mapErr(err error) error {
	switch {
	case errors.Is(err, steptpm.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, steptpm.ErrExists):
		return fmt.Errorf("%w: %w", ErrExists, err)
	case strings.Contains(err.Error(), "DA lockout mode"):
		return fmt.Errorf("%w: %w", ErrLockout, err)
	}
	return err
}

// DeleteKey removes the key called name. On Linux the TPM holds nothing for
// it (the blob is loaded per use), so this removes its blob from the state
// directory; the key can never be used again.
func (t *TPM) DeleteKey(ctx context.Context, name string) error {
	if err := checkName("key", name); err != nil {
		return err
	}
	if err := t.tpm.DeleteKey(ctx, name); err != nil {
		return fmt.Errorf("delete key %q: %w", name, mapErr(err))
	}
	return nil
}

// KeyNames lists the application keys in the state directory.
func (t *TPM) KeyNames(ctx context.Context) ([]string, error) {
	keys, err := t.tpm.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		names = append(names, k.Name())
	}
	return names, nil
}

// DeleteAK removes the AK called name (its blob in the state directory). A
// TPM2_Clear makes every blob of the old storage hierarchy unloadable; the
// device then deletes its AK and creates a new one with EnsureAK.
func (t *TPM) DeleteAK(ctx context.Context, name string) error {
	if err := checkName("AK", name); err != nil {
		return err
	}
	if err := t.tpm.DeleteAK(ctx, name); err != nil {
		return fmt.Errorf("delete AK %q: %w", name, mapErr(err))
	}
	return nil
}
