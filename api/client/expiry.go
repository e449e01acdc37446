package client

import (
	"context"
	"net/url"

	"devpki/api/wire"
)

// ExpiryForecast asks GET /v1/admin/certificates/expiring with q (within,
// and optionally tenant and limit).
func (c *Client) ExpiryForecast(ctx context.Context, q url.Values) (*wire.ExpiryForecast, error) {
	var out wire.ExpiryForecast
	return &out, c.getJSON(ctx, "/v1/admin/certificates/expiring", q, &out)
}
