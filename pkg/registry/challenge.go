package registry

import (
	"errors"
	"time"
)

// Errors of ConsumeTPMChallenge.
var (
	// ErrChallengeNotFound: no pending challenge has this ID (never issued,
	// or swept after it expired).
	ErrChallengeNotFound = errors.New("registry: TPM challenge not found")
	// ErrChallengeUsed: the challenge was already consumed.
	ErrChallengeUsed = errors.New("registry: TPM challenge already used")
	// ErrChallengeExpired: the challenge had expired when it was consumed;
	// it is consumed all the same.
	ErrChallengeExpired = errors.New("registry: TPM challenge expired")
)

// MaxChallengeSweep bounds how many expired challenges one
// PutTPMChallenge deletes. Each put adds one row and removes up to this
// many expired ones, so the table holds about as many rows as challenges
// issued within one TTL.
const MaxChallengeSweep = 100

// TPMChallenge is the server's half of a pending TPM credential-activation
// challenge, kept in the registry so that any replica sharing the database
// can complete it. It holds nothing that answers the challenge: only the
// hash of the activation secret.
type TPMChallenge struct {
	// ID names the challenge; the device sends it back.
	ID string
	// SecretHash is the SHA-256 of the activation secret; never the secret.
	SecretHash []byte
	// Nonce must come back as the certification's qualifying data.
	Nonce []byte
	// AKPublic is the TPMT_PUBLIC of the AK bound into the credential.
	AKPublic []byte
	// EKHash is the hash of the EK the credential was encrypted to.
	EKHash string
	// Binding is opaque to the registry: what the device claimed (tenant,
	// serial, MACs, token), kept for the completion.
	Binding []byte
	// Expires is when the challenge stops being accepted.
	Expires time.Time
	// CreatedAt is set by the store when zero.
	CreatedAt time.Time
}
