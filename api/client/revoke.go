package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"devpki/api/wire"
)

// RevokeCertificate revokes one certificate by serial (hex) through the
// admin API. The client must carry an admin certificate with role admin.
func (c *Client) RevokeCertificate(ctx context.Context, serial string, req *wire.RevokeRequest) (*wire.RevokeResponse, error) {
	if serial == "" {
		return nil, errors.New("client: revoke certificate: empty serial")
	}
	return c.revoke(ctx, "/v1/admin/certificates/"+url.PathEscape(serial)+"/revoke", req)
}

// RevokeDevice revokes a device and all its certificates through the admin
// API. The client must carry an admin certificate with role admin.
func (c *Client) RevokeDevice(ctx context.Context, deviceID string, req *wire.RevokeRequest) (*wire.RevokeResponse, error) {
	if deviceID == "" {
		return nil, errors.New("client: revoke device: empty device id")
	}
	return c.revoke(ctx, "/v1/admin/devices/"+url.PathEscape(deviceID)+"/revoke", req)
}

func (c *Client) revoke(ctx context.Context, path string, req *wire.RevokeRequest) (*wire.RevokeResponse, error) {
	if req == nil {
		req = &wire.RevokeRequest{}
	}
	var resp wire.RevokeResponse
	if err := c.doJSON(ctx, http.MethodPost, path, "", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
