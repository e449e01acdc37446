package client

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// Problem slugs of TPM attestation enrollment.
const (
	SlugTPMUntrustedEK    = "tpm-untrusted-ek"      // 403: EK certificate not from a configured manufacturer, or a bare EK key not pre-registered
	SlugTPMInvalidAK      = "tpm-invalid-ak"        // 400: AK evidence malformed or not a TPM-made restricted signing key
	SlugTPMActivation     = "tpm-activation-failed" // 403: the activated secret is wrong
	SlugTPMCertifyInvalid = "tpm-certify-invalid"   // 403: certification of the key, its nonce, or CSR key ≠ certified key
	SlugChallengeExpired  = "challenge-expired"     // 410: unknown or expired challenge: start again
	SlugChallengeUsed     = "challenge-used"        // 409: the challenge was already answered
	SlugCloneSuspect      = "clone-suspect"         // 403: serial or EK already enrolled with another EK or serial; held for an admin
	SlugTPMDisabled       = "tpm-disabled"          // 404: the CA has no TPM manufacturer roots configured
	SlugTPMRequired       = "tpm-required"          // 403: the tenant admits only TPM-attested devices; enroll with a TPM
)

// SlugTPMCertifyRequired (403): a TPM-attested device re-keys without a
// certification of the new key by its AK (RenewRequest.Certify), or its AK
// was never recorded (re-enroll by attestation).
const SlugTPMCertifyRequired = "tpm-certify-required"

// TPMAttestationParameters is the AK evidence: TPMT_PUBLIC, TPMS_CREATION_DATA,
// TPMS_ATTEST and TPMT_SIGNATURE, as go-attestation's
// attest.AttestationParameters. Base64 (standard) in JSON.
type TPMAttestationParameters struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"create_data"`
	CreateAttestation []byte `json:"create_attestation"`
	CreateSignature   []byte `json:"create_signature"`
}

// TPMCertificationParameters is the TPM2_Certify of the application key by
// the AK, as go-attestation's attest.CertificationParameters.
type TPMCertificationParameters struct {
	Public            []byte `json:"public"`
	CreateData        []byte `json:"create_data,omitempty"`
	CreateAttestation []byte `json:"create_attestation"`
	CreateSignature   []byte `json:"create_signature"`
}

// TPMChallengeRequest is the body of POST /v1/enroll/tpm/challenge. Exactly
// one of EKCert (DER, as read from the TPM's NV memory) and EKPub (PKIX DER;
// must be pre-registered by an operator) is set.
type TPMChallengeRequest struct {
	EKCert []byte                   `json:"ek_cert,omitempty"`
	EKPub  []byte                   `json:"ek_pub,omitempty"`
	AK     TPMAttestationParameters `json:"ak"`
	Serial string                   `json:"serial"`
	MACs   []string                 `json:"macs,omitempty"`
}

// TPMChallengeResponse is the 200 reply: the encrypted credential for
// TPM2_ActivateCredential (credential blob and encrypted secret), and the
// nonce to certify the application key with.
type TPMChallengeResponse struct {
	ChallengeID string    `json:"challenge_id"`
	Credential  []byte    `json:"credential"`
	Secret      []byte    `json:"secret"`
	Nonce       []byte    `json:"nonce"`
	Expires     time.Time `json:"expires"`
}

// TPMEnrollRequest is the body of POST /v1/enroll/tpm; the 201 reply is an
// EnrollResponse.
type TPMEnrollRequest struct {
	ChallengeID     string                     `json:"challenge_id"`
	ActivatedSecret []byte                     `json:"activated_secret"`
	Certify         TPMCertificationParameters `json:"certify"`
	CSR             string                     `json:"csr"` // PEM; its key is the certified key
}

// TPMChallenge starts TPM attestation enrollment (POST /v1/enroll/tpm/challenge)
// without a bootstrap token: the TPM evidence alone admits the device.
func (c *Client) TPMChallenge(ctx context.Context, req *TPMChallengeRequest) (*TPMChallengeResponse, error) {
	return c.TPMChallengeWithToken(ctx, "", req)
}

// TPMChallengeWithToken is TPMChallenge with a bootstrap token, sent as
// 'Authorization: Bearer <token>' as Enroll sends it; an empty token sends
// none. The device then joins the token's tenant (a serial-bound token must
// name req.Serial), and TPMEnroll spends the token. A refused token is a
// *ResponseError with the same problems as Enroll (token-invalid,
// token-expired, token-spent, token-mismatch).
func (c *Client) TPMChallengeWithToken(ctx context.Context, token string, req *TPMChallengeRequest) (*TPMChallengeResponse, error) {
	var resp TPMChallengeResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/enroll/tpm/challenge", token, req, &resp); err != nil {
		return nil, err
	}
	if resp.ChallengeID == "" || len(resp.Credential) == 0 || len(resp.Secret) == 0 || len(resp.Nonce) == 0 {
		return nil, errors.New("client: tpm challenge: incomplete reply")
	}
	return &resp, nil
}

// TPMEnroll answers a challenge and returns the certificate (POST /v1/enroll/tpm).
func (c *Client) TPMEnroll(ctx context.Context, req *TPMEnrollRequest) (*EnrollResponse, error) {
	var resp EnrollResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/enroll/tpm", "", req, &resp); err != nil {
		return nil, err
	}
	if resp.Certificate == "" {
		return nil, errors.New("client: tpm enroll: reply has no certificate")
	}
	return &resp, nil
}
