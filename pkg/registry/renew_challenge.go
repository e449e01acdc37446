package registry

import "time"

// RenewChallenge is a pending challenge of the renewal of an expired
// certificate: the device proves it still holds the certificate's key by
// signing Nonce. It lives in the registry, so any replica sharing the
// database completes it, and is consumed once (ConsumeRenewChallenge
// returns ErrChallengeNotFound, ErrChallengeUsed or ErrChallengeExpired as
// for TPM challenges).
type RenewChallenge struct {
	// ID names the challenge; the device sends it back.
	ID string
	// Nonce is the fresh random value the device signs.
	Nonce []byte
	// CertSerial is the serial (hex) of the expired certificate the
	// challenge was issued for; only that certificate may answer it.
	CertSerial string
	// Expires is when the challenge stops being accepted.
	Expires time.Time
	// CreatedAt is set by the store when zero.
	CreatedAt time.Time
}
