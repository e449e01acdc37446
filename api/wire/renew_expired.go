package wire

import "time"

// ExpiredChallengeRequest is the body of POST /v1/renew/expired/challenge:
// the device's expired certificate. No TLS client certificate is needed
// (an expired one could not authenticate).
type ExpiredChallengeRequest struct {
	Certificate string `json:"certificate"` // PEM leaf
}

// ExpiredChallengeResponse is the CA's challenge: sign the nonce (see
// RenewExpiredRequest.Signature) and answer before Expires.
type ExpiredChallengeResponse struct {
	ChallengeID string    `json:"challenge_id"`
	Nonce       []byte    `json:"nonce"`
	Expires     time.Time `json:"expires"`
}

// RenewExpiredRequest is the body of POST /v1/renew/expired; the answer is
// an EnrollResponse.
type RenewExpiredRequest struct {
	ChallengeID string `json:"challenge_id"`
	Certificate string `json:"certificate"` // PEM leaf, the one the challenge was issued for
	// Signature is the expired certificate's key's signature (as
	// pki.SignDetached makes it) over pki.ExpiredRenewalMessage: the
	// nonce bound to the certificate and to the CSR's DER.
	Signature []byte `json:"signature"`
	// CSR, when set, re-keys (same serial and MACs).
	CSR string `json:"csr,omitempty"`
	// Certify is required of a TPM-attested device: TPM2_Certify, by the AK
	// it enrolled with, of the key being certified (the CSR's, or the
	// current one), over pki.ExpiredRenewalQualifyingData.
	Certify *TPMCertificationParameters `json:"certify,omitempty"`
}
