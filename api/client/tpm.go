package client

import (
	"context"
	"errors"
	"net/http"

	"devpki/api/wire"
)

// TPMChallenge starts TPM attestation enrollment (POST /v1/enroll/tpm/challenge)
// without a bootstrap token: the TPM evidence alone admits the device.
func (c *Client) TPMChallenge(ctx context.Context, req *wire.TPMChallengeRequest) (*wire.TPMChallengeResponse, error) {
	return c.TPMChallengeWithToken(ctx, "", req)
}

// TPMChallengeWithToken is TPMChallenge with a bootstrap token, sent as
// 'Authorization: Bearer <token>' as Enroll sends it; an empty token sends
// none. The device then joins the token's tenant (a serial-bound token must
// name req.Serial), and TPMEnroll spends the token. A refused token is a
// *ResponseError with the same problems as Enroll (token-invalid,
// token-expired, token-spent, token-mismatch).
func (c *Client) TPMChallengeWithToken(ctx context.Context, token string, req *wire.TPMChallengeRequest) (*wire.TPMChallengeResponse, error) {
	var resp wire.TPMChallengeResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/enroll/tpm/challenge", token, req, &resp); err != nil {
		return nil, err
	}
	if resp.ChallengeID == "" || len(resp.Credential) == 0 || len(resp.Secret) == 0 || len(resp.Nonce) == 0 {
		return nil, errors.New("client: tpm challenge: incomplete reply")
	}
	return &resp, nil
}

// TPMEnroll answers a challenge and returns the certificate (POST /v1/enroll/tpm).
func (c *Client) TPMEnroll(ctx context.Context, req *wire.TPMEnrollRequest) (*wire.EnrollResponse, error) {
	var resp wire.EnrollResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/enroll/tpm", "", req, &resp); err != nil {
		return nil, err
	}
	if resp.Certificate == "" {
		return nil, errors.New("client: tpm enroll: reply has no certificate")
	}
	return &resp, nil
}
