package client

import (
	"context"
	"errors"
	"net/http"

	"devpki/api/wire"
)

// RenewExpiredChallenge asks the CA for a challenge to renew an expired
// certificate (POST /v1/renew/expired/challenge). No client certificate
// is needed. A certificate expired beyond the CA's grace period is a
// *ResponseError with problem renew-grace-expired: the device must
// re-enroll with a token bound to its serial.
func (c *Client) RenewExpiredChallenge(ctx context.Context, req *wire.ExpiredChallengeRequest) (*wire.ExpiredChallengeResponse, error) {
	var resp wire.ExpiredChallengeResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/renew/expired/challenge", "", req, &resp); err != nil {
		return nil, err
	}
	if resp.ChallengeID == "" || len(resp.Nonce) == 0 {
		return nil, errors.New("client: renewal challenge: incomplete reply")
	}
	return &resp, nil
}

// RenewExpired answers a renewal challenge (POST /v1/renew/expired) and
// returns the new certificate.
func (c *Client) RenewExpired(ctx context.Context, req *wire.RenewExpiredRequest) (*wire.EnrollResponse, error) {
	var resp wire.EnrollResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/renew/expired", "", req, &resp); err != nil {
		return nil, err
	}
	if resp.Certificate == "" {
		return nil, errors.New("client: renew expired: reply has no certificate")
	}
	return &resp, nil
}
