package client

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// RevokeRequest is the body of POST /v1/admin/certificates/{serial}/revoke
// and POST /v1/admin/devices/{id}/revoke. Reason is an RFC 5280 reason name
// ("keyCompromise", "cessationOfOperation", ...) or its decimal code; empty
// means "unspecified". The server also accepts a JSON number.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

// RevokedCertificate is one certificate in a RevokeResponse.
type RevokedCertificate struct {
	Serial     string    `json:"serial"` // lowercase hex
	DeviceID   string    `json:"device_id,omitempty"`
	RevokedAt  time.Time `json:"revoked_at"`
	Reason     string    `json:"reason"` // RFC 5280 name
	ReasonCode int       `json:"reason_code"`
}

// RevokeResponse is the 200 reply to a revocation. A repeated revocation is
// not an error: AlreadyRevoked is true and nothing changed.
type RevokeResponse struct {
	Serial         string               `json:"serial,omitempty"`    // certificate revocations
	DeviceID       string               `json:"device_id,omitempty"` // device revocations
	AlreadyRevoked bool                 `json:"already_revoked"`
	Certificates   []RevokedCertificate `json:"certificates"` // revoked by this call (or, repeated, the certificate as it is)
	// CRLNumber is the number of a CRL published after the revocation that
	// lists it; 0 when that rebuild failed (the CA retries on its schedule).
	CRLNumber int64 `json:"crl_number"`
}

// RevokeCertificate revokes one certificate by serial (hex) through the
// admin API. The client must carry an admin certificate with role admin.
func (c *Client) RevokeCertificate(ctx context.Context, serial string, req *RevokeRequest) (*RevokeResponse, error) {
	if serial == "" {
		return nil, errors.New("client: revoke certificate: empty serial")
	}
	return c.revoke(ctx, "/v1/admin/certificates/"+url.PathEscape(serial)+"/revoke", req)
}

// RevokeDevice revokes a device and all its certificates through the admin
// API. The client must carry an admin certificate with role admin.
func (c *Client) RevokeDevice(ctx context.Context, deviceID string, req *RevokeRequest) (*RevokeResponse, error) {
	if deviceID == "" {
		return nil, errors.New("client: revoke device: empty device id")
	}
	return c.revoke(ctx, "/v1/admin/devices/"+url.PathEscape(deviceID)+"/revoke", req)
}

func (c *Client) revoke(ctx context.Context, path string, req *RevokeRequest) (*RevokeResponse, error) {
	if req == nil {
		req = &RevokeRequest{}
	}
	var resp RevokeResponse
	if err := c.doJSON(ctx, http.MethodPost, path, "", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
