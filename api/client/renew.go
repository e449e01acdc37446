package client

import (
	"context"
	"errors"
	"net/http"

	"devpki/api/wire"
)

// Renew renews the device's certificate through POST /v1/renew. The client
// must carry the device's current certificate and key (WithClientCertificate):
// that certificate is the only credential. A nil req renews the same key.
func (c *Client) Renew(ctx context.Context, req *wire.RenewRequest) (*wire.EnrollResponse, error) {
	if req == nil {
		req = &wire.RenewRequest{}
	}
	var resp wire.EnrollResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/renew", "", req, &resp); err != nil {
		return nil, err
	}
	if resp.Certificate == "" {
		return nil, errors.New("client: renew: reply has no certificate")
	}
	return &resp, nil
}

// IsRekeyRequired reports whether err is the CA's 409 rekey-required answer.
func IsRekeyRequired(err error) bool {
	var p *wire.Problem
	return errors.As(err, &p) && p.Slug() == wire.SlugRekeyRequired
}
