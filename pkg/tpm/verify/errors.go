// Package verify is the server side of TPM attestation: it checks an EK
// certificate against manufacturer roots, runs the credential-activation
// round that proves an AK lives in the same TPM as that EK, and checks the
// TPM2_Certify of an application key against the activated AK, a nonce and a
// CSR. It needs no TPM and no cgo.
package verify

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them, so
// callers map them with errors.Is.
var (
	// ErrEKUntrusted means the EK certificate does not chain to a configured
	// manufacturer root, lacks the TPM SAN attributes or the EK EKU, or
	// carries an unhandled critical extension.
	ErrEKUntrusted = errors.New("tpm verify: EK not trusted")
	// ErrAKInvalid means the AK evidence (public area, creation data,
	// creation attestation or its signature) is malformed or the AK is not a
	// TPM-generated restricted signing key.
	ErrAKInvalid = errors.New("tpm verify: AK invalid")
	// ErrActivation means the activated secret does not match the challenge.
	ErrActivation = errors.New("tpm verify: credential activation failed")
	// ErrCertify means the certification of the application key is invalid:
	// bad structure or signature, a restricted or non-fixedTPM key,
	// extraData different from the challenge nonce, or (VerifyCertification)
	// a certified key other than the expected one.
	ErrCertify = errors.New("tpm verify: key certification invalid")
	// ErrCSR means the CSR signature is invalid or its public key differs
	// from the certified key.
	ErrCSR = errors.New("tpm verify: CSR does not match certified key")
	// ErrChallengeNotFound means no challenge has the given ID.
	ErrChallengeNotFound = errors.New("tpm verify: challenge not found")
	// ErrChallengeExpired means the challenge's TTL has passed.
	ErrChallengeExpired = errors.New("tpm verify: challenge expired")
	// ErrChallengeUsed means the challenge was already consumed.
	ErrChallengeUsed = errors.New("tpm verify: challenge already used")
)
