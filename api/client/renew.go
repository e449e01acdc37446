package client

import (
	"context"
	"errors"
	"net/http"
)

// RenewRequest is the body of POST /v1/renew: empty to renew the same key,
// or a CSR naming the same identity to re-key.
type RenewRequest struct {
	CSR string `json:"csr,omitempty"` // PEM "CERTIFICATE REQUEST"
	// Certify is the TPM2_Certify of the CSR's key by the AK the device
	// enrolled with, its qualifying data (extraData) the SHA-256 of the DER
	// of the client certificate presented on this connection (the one being
	// renewed). Required to re-key a TPM-attested device (else 403
	// tpm-certify-required; an invalid one is 403 tpm-certify-invalid);
	// ignored for the same key and for devices not enrolled by TPM
	// attestation.
	Certify *TPMCertificationParameters `json:"certify,omitempty"`
}

// SlugRekeyRequired is the problem type slug the CA answers when an admin
// forced a re-key: renew again with a new key's CSR.
const SlugRekeyRequired = "rekey-required"

// Renew renews the device's certificate through POST /v1/renew. The client
// must carry the device's current certificate and key (WithClientCertificate):
// that certificate is the only credential. A nil req renews the same key.
func (c *Client) Renew(ctx context.Context, req *RenewRequest) (*EnrollResponse, error) {
	if req == nil {
		req = &RenewRequest{}
	}
	var resp EnrollResponse
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
	var p *Problem
	return errors.As(err, &p) && p.Slug() == SlugRekeyRequired
}
