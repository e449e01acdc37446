package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"devpki/api/wire"
)

// ListDevices lists devices; q holds the filters (status, serial, mac,
// after, limit).
func (c *Client) ListDevices(ctx context.Context, q url.Values) (*wire.DeviceList, error) {
	var out wire.DeviceList
	return &out, c.getJSON(ctx, "/v1/admin/devices", q, &out)
}

// ListQuarantined lists the claims held for an admin as possible clones
// (GET /v1/admin/devices?status=quarantined); q may add serial, after and
// limit.
func (c *Client) ListQuarantined(ctx context.Context, q url.Values) (*wire.DeviceList, error) {
	v := url.Values{}
	for k, vs := range q {
		v[k] = vs
	}
	v.Set("status", "quarantined")
	var out wire.DeviceList
	return &out, c.getJSON(ctx, "/v1/admin/devices", v, &out)
}

// DismissQuarantined closes a held claim (role admin): the admin looked into
// it and nothing more is to be done. It does not let the claimant in.
func (c *Client) DismissQuarantined(ctx context.Context, id string) (*wire.QuarantinedClaim, error) {
	var out wire.QuarantinedClaim
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/quarantine/"+url.PathEscape(id)+"/dismiss", "", struct{}{}, &out)
}

// ReleaseQuarantined lets the claimant of a held claim in (role admin), for
// a legitimate hardware change: a serial claimed with another TPM (a TPM or
// mainboard replaced) re-binds the enrolled device to that TPM, keeping its
// id; a TPM claimed with another serial (moved to another chassis) revokes
// the enrolled device and frees the TPM for a new one. The enrolled
// device's certificates are revoked either way (req.Reason; nil or empty
// means superseded). The claimant's next attestation enrolls.
func (c *Client) ReleaseQuarantined(ctx context.Context, id string, req *wire.ReleaseRequest) (*wire.ReleaseResponse, error) {
	if id == "" {
		return nil, errors.New("client: release quarantined claim: empty id")
	}
	if req == nil {
		req = &wire.ReleaseRequest{}
	}
	var out wire.ReleaseResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/admin/quarantine/"+url.PathEscape(id)+"/release", "", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetDevice returns one device.
func (c *Client) GetDevice(ctx context.Context, id string) (*wire.Device, error) {
	var out wire.Device
	return &out, c.getJSON(ctx, "/v1/admin/devices/"+url.PathEscape(id), nil, &out)
}

// ListCertificates lists certificates; q holds the filters (device, kind,
// status, expiring_before (RFC 3339), after, limit).
func (c *Client) ListCertificates(ctx context.Context, q url.Values) (*wire.CertificateList, error) {
	var out wire.CertificateList
	return &out, c.getJSON(ctx, "/v1/admin/certificates", q, &out)
}

// GetCertificate returns one certificate with its PEM.
func (c *Client) GetCertificate(ctx context.Context, serial string) (*wire.Certificate, error) {
	var out wire.Certificate
	return &out, c.getJSON(ctx, "/v1/admin/certificates/"+url.PathEscape(serial), nil, &out)
}

// RotateDevice forces a re-key at the device's next renewal.
func (c *Client) RotateDevice(ctx context.Context, id string, req *wire.RotateRequest) (*wire.Device, error) {
	var out wire.Device
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/rotate", "", req, &out)
}

// ReinstateDevice brings a revoked device back to active (role admin). Its
// certificates stay revoked: a token bound to its serial, or its TPM's
// attestation, re-enrolls it under the same id.
func (c *Client) ReinstateDevice(ctx context.Context, id string) (*wire.Device, error) {
	if id == "" {
		return nil, errors.New("client: reinstate device: empty device id")
	}
	var out wire.Device
	if err := c.doJSON(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/reinstate", "", struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Issue asks the CA for a component certificate.
func (c *Client) Issue(ctx context.Context, req *wire.IssueRequest) (*wire.EnrollResponse, error) {
	var out wire.EnrollResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/certificates", "", req, &out)
}

// ListAudit returns audit events with Seq > after.
func (c *Client) ListAudit(ctx context.Context, after int64, limit int) (*wire.AuditList, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out wire.AuditList
	return &out, c.getJSON(ctx, "/v1/admin/audit", q, &out)
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	u := c.endpoint(path)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("client: GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkStatus(req, resp); err != nil {
		return err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(out); err != nil {
		return fmt.Errorf("client: decode reply to GET %s: %w", path, err)
	}
	return nil
}

// Preregister records a TPM EK for a serial.
func (c *Client) Preregister(ctx context.Context, req *wire.PreregisterRequest) (*wire.Preregistration, error) {
	var out wire.Preregistration
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/preregistrations", "", req, &out)
}

// AddTPMRoot adds a TPM manufacturer root (role admin).
func (c *Client) AddTPMRoot(ctx context.Context, req *wire.AddTPMRootRequest) (*wire.TPMRoot, error) {
	var out wire.TPMRoot
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/tpm/roots", "", req, &out)
}

// ListTPMRoots lists the manufacturer roots added through the API.
func (c *Client) ListTPMRoots(ctx context.Context) ([]wire.TPMRoot, error) {
	var out []wire.TPMRoot
	return out, c.getJSON(ctx, "/v1/admin/tpm/roots", nil, &out)
}
