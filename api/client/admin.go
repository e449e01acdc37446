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
	"time"
)

// Device is a device as the admin API shows it.
type Device struct {
	ID            string     `json:"id"`
	Tenant        string     `json:"tenant"`
	Serial        string     `json:"serial"`
	MACs          []string   `json:"macs"`
	Status        string     `json:"status"`
	Method        string     `json:"method"`
	RekeyRequired bool       `json:"rekey_required,omitempty"`
	RekeyDeadline *time.Time `json:"rekey_deadline,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// DeviceList is one page of devices; Next, when set, is the After of the
// next page. With status=quarantined the page holds the claims held for an
// admin (Quarantined) instead of devices, and Next is a claim id.
type DeviceList struct {
	Devices     []Device           `json:"devices"`
	Quarantined []QuarantinedClaim `json:"quarantined,omitempty"`
	Next        string             `json:"next,omitempty"`
}

// QuarantinedClaim is an enrollment claim the CA refused as a possible clone
// and holds for an admin: a TPM claiming a serial enrolled with another EK
// (reason "serial-has-other-ek"), or an enrolled EK claiming another serial
// ("ek-has-other-serial"). Nothing was issued to it. Repeats of the same
// claim (serial and EK) are counted in Attempts.
type QuarantinedClaim struct {
	ID     string   `json:"id"`
	Tenant string   `json:"tenant"`
	Serial string   `json:"serial"`
	MACs   []string `json:"macs"`
	EKHash string   `json:"ek_hash"`
	Reason string   `json:"reason"`
	// ConflictDeviceID is the enrolled device the claim collides with, and
	// ConflictEKHash that device's EK hash when the claim was last held
	// (empty for a device without a TPM).
	ConflictDeviceID string     `json:"conflict_device_id,omitempty"`
	ConflictEKHash   string     `json:"conflict_ek_hash,omitempty"`
	SourceAddr       string     `json:"source_addr,omitempty"`
	Attempts         int        `json:"attempts"`
	FirstSeen        time.Time  `json:"first_seen"`
	LastSeen         time.Time  `json:"last_seen"`
	Status           string     `json:"status"` // held, dismissed or released
	DismissedBy      string     `json:"dismissed_by,omitempty"`
	DismissedAt      *time.Time `json:"dismissed_at,omitempty"`
	ReleasedBy       string     `json:"released_by,omitempty"`
	ReleasedAt       *time.Time `json:"released_at,omitempty"`
}

// ReleaseRequest is the body of POST /v1/admin/quarantine/{id}/release.
// Reason is the RFC 5280 reason (name or code) of the certificates the
// release revokes; empty means superseded.
type ReleaseRequest struct {
	Reason string `json:"reason,omitempty"`
}

// ReleaseResponse is the 200 reply to a release: the claim (now released),
// the enrolled device it collided with as it now is (re-bound to the
// claim's TPM, or revoked), the certificates of that device the release
// revoked, and the number of a CRL that lists them (0 when that rebuild
// failed; the CA retries on its schedule).
type ReleaseResponse struct {
	Claim        QuarantinedClaim     `json:"claim"`
	Device       Device               `json:"device"`
	Certificates []RevokedCertificate `json:"certificates"`
	CRLNumber    int64                `json:"crl_number"`
}

// Certificate is a certificate as the admin API shows it.
type Certificate struct {
	Serial           string     `json:"serial"`
	Kind             string     `json:"kind"`
	DeviceID         string     `json:"device_id,omitempty"`
	Subject          string     `json:"subject"`
	SANs             []string   `json:"sans"`
	NotBefore        time.Time  `json:"not_before"`
	NotAfter         time.Time  `json:"not_after"`
	Status           string     `json:"status"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	RevocationReason int        `json:"revocation_reason,omitempty"`
	ReplacesSerial   string     `json:"replaces_serial,omitempty"`
	PEM              string     `json:"pem,omitempty"` // only when fetched one by one
}

// CertificateList is one page of certificates.
type CertificateList struct {
	Certificates []Certificate `json:"certificates"`
	Next         string        `json:"next,omitempty"`
}

// RotateRequest is the body of POST /v1/admin/devices/{id}/rotate: the
// device must re-key at its next renewal; after Deadline, if set, its
// certificates are revoked.
type RotateRequest struct {
	Deadline *time.Time `json:"deadline,omitempty"`
}

// IssueRequest is the body of POST /v1/admin/certificates: a certificate for
// another component from its CSR. Only the CSR's key is used.
type IssueRequest struct {
	CSR        string   `json:"csr"`
	Usage      string   `json:"usage"` // "server" or "client"
	CommonName string   `json:"common_name,omitempty"`
	DNSNames   []string `json:"dns_names,omitempty"`
	IPs        []string `json:"ips,omitempty"`
	Lifetime   string   `json:"lifetime,omitempty"` // Go duration, default 720h
}

// AuditEvent is one audit log entry.
type AuditEvent struct {
	Seq        int64     `json:"seq"`
	Time       time.Time `json:"time"`
	Tenant     string    `json:"tenant,omitempty"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"`
	Target     string    `json:"target,omitempty"`
	Result     string    `json:"result"`
	Detail     string    `json:"detail,omitempty"`
	SourceAddr string    `json:"source_addr,omitempty"`
	Hash       string    `json:"hash"`
}

// AuditList is one page of the audit log; Next is the After of the next page.
type AuditList struct {
	Events []AuditEvent `json:"events"`
	Next   int64        `json:"next,omitempty"`
}

// ListDevices lists devices; q holds the filters (status, serial, mac,
// after, limit).
func (c *Client) ListDevices(ctx context.Context, q url.Values) (*DeviceList, error) {
	var out DeviceList
	return &out, c.getJSON(ctx, "/v1/admin/devices", q, &out)
}

// ListQuarantined lists the claims held for an admin as possible clones
// (GET /v1/admin/devices?status=quarantined); q may add serial, after and
// limit.
func (c *Client) ListQuarantined(ctx context.Context, q url.Values) (*DeviceList, error) {
	v := url.Values{}
	for k, vs := range q {
		v[k] = vs
	}
	v.Set("status", "quarantined")
	var out DeviceList
	return &out, c.getJSON(ctx, "/v1/admin/devices", v, &out)
}

// DismissQuarantined closes a held claim (role admin): the admin looked into
// it and nothing more is to be done. It does not let the claimant in.
func (c *Client) DismissQuarantined(ctx context.Context, id string) (*QuarantinedClaim, error) {
	var out QuarantinedClaim
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/quarantine/"+url.PathEscape(id)+"/dismiss", "", struct{}{}, &out)
}

// ReleaseQuarantined lets the claimant of a held claim in (role admin), for
// a legitimate hardware change: a serial claimed with another TPM (a TPM or
// mainboard replaced) re-binds the enrolled device to that TPM, keeping its
// id; a TPM claimed with another serial (moved to another chassis) revokes
// the enrolled device and frees the TPM for a new one. The enrolled
// device's certificates are revoked either way (req.Reason; nil or empty
// means superseded). The claimant's next attestation enrolls.
func (c *Client) ReleaseQuarantined(ctx context.Context, id string, req *ReleaseRequest) (*ReleaseResponse, error) {
	if id == "" {
		return nil, errors.New("client: release quarantined claim: empty id")
	}
	if req == nil {
		req = &ReleaseRequest{}
	}
	var out ReleaseResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/admin/quarantine/"+url.PathEscape(id)+"/release", "", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetDevice returns one device.
func (c *Client) GetDevice(ctx context.Context, id string) (*Device, error) {
	var out Device
	return &out, c.getJSON(ctx, "/v1/admin/devices/"+url.PathEscape(id), nil, &out)
}

// ListCertificates lists certificates; q holds the filters (device, kind,
// status, expiring_before (RFC 3339), after, limit).
func (c *Client) ListCertificates(ctx context.Context, q url.Values) (*CertificateList, error) {
	var out CertificateList
	return &out, c.getJSON(ctx, "/v1/admin/certificates", q, &out)
}

// GetCertificate returns one certificate with its PEM.
func (c *Client) GetCertificate(ctx context.Context, serial string) (*Certificate, error) {
	var out Certificate
	return &out, c.getJSON(ctx, "/v1/admin/certificates/"+url.PathEscape(serial), nil, &out)
}

// RotateDevice forces a re-key at the device's next renewal.
func (c *Client) RotateDevice(ctx context.Context, id string, req *RotateRequest) (*Device, error) {
	var out Device
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/devices/"+url.PathEscape(id)+"/rotate", "", req, &out)
}

// Issue asks the CA for a component certificate.
func (c *Client) Issue(ctx context.Context, req *IssueRequest) (*EnrollResponse, error) {
	var out EnrollResponse
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/certificates", "", req, &out)
}

// ListAudit returns audit events with Seq > after.
func (c *Client) ListAudit(ctx context.Context, after int64, limit int) (*AuditList, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out AuditList
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

// PreregisterRequest is the body of POST /v1/admin/preregistrations: a TPM
// EK public key bound to a device serial (and MACs) before the device first
// boots, for TPM enrollment without an EK certificate.
type PreregisterRequest struct {
	Serial string   `json:"serial"`
	MACs   []string `json:"macs,omitempty"`
	EKPub  string   `json:"ek_pub"` // PEM "PUBLIC KEY", or base64 of the PKIX DER
}

// Preregistration is the 201 reply.
type Preregistration struct {
	EKHash string   `json:"ek_hash"`
	Serial string   `json:"serial"`
	MACs   []string `json:"macs,omitempty"`
}

// Preregister records a TPM EK for a serial.
func (c *Client) Preregister(ctx context.Context, req *PreregisterRequest) (*Preregistration, error) {
	var out Preregistration
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/preregistrations", "", req, &out)
}

// TPMRoot is a TPM manufacturer root added through the admin API.
type TPMRoot struct {
	Fingerprint string    `json:"fingerprint"`
	Subject     string    `json:"subject"`
	AddedBy     string    `json:"added_by,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// AddTPMRootRequest is the body of POST /v1/admin/tpm/roots.
type AddTPMRootRequest struct {
	PEM string `json:"pem"` // one CA certificate
}

// AddTPMRoot adds a TPM manufacturer root (role admin).
func (c *Client) AddTPMRoot(ctx context.Context, req *AddTPMRootRequest) (*TPMRoot, error) {
	var out TPMRoot
	return &out, c.doJSON(ctx, http.MethodPost, "/v1/admin/tpm/roots", "", req, &out)
}

// ListTPMRoots lists the manufacturer roots added through the API.
func (c *Client) ListTPMRoots(ctx context.Context) ([]TPMRoot, error) {
	var out []TPMRoot
	return out, c.getJSON(ctx, "/v1/admin/tpm/roots", nil, &out)
}
