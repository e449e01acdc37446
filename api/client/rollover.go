package client

import (
	"context"
	"net/http"

	"devpki/api/wire"
)

// RolloverPrepare is POST /v1/admin/rollover/prepare.
func (c *Client) RolloverPrepare(ctx context.Context, root bool) (*wire.RolloverStepResponse, error) {
	var out wire.RolloverStepResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/rollover/prepare", "", &wire.RolloverPrepareRequest{Root: root}, &out)
}

// RolloverActivate is POST /v1/admin/rollover/activate.
func (c *Client) RolloverActivate(ctx context.Context) (*wire.RolloverStepResponse, error) {
	var out wire.RolloverStepResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/rollover/activate", "", struct{}{}, &out)
}

// RolloverRetire is POST /v1/admin/rollover/retire.
func (c *Client) RolloverRetire(ctx context.Context) (*wire.RolloverStepResponse, error) {
	var out wire.RolloverStepResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/rollover/retire", "", struct{}{}, &out)
}

// RolloverStatus is GET /v1/admin/rollover/status.
func (c *Client) RolloverStatus(ctx context.Context) (*wire.RolloverStatusResponse, error) {
	var out wire.RolloverStatusResponse
	return &out, c.getJSON(ctx, "/v1/admin/rollover/status", nil, &out)
}
