package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"devpki/api/wire"
)

// LoadClientCertificate reads a TLS client certificate for
// WithClientCertificate: certFile holds the leaf first, then any
// intermediates to send with it (PEM); keyFile its private key (PEM,
// unencrypted PKCS#8, SEC 1 or PKCS#1). A factory IDevID and its key are
// read this way.
func LoadClientCertificate(certFile, keyFile string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client: load client certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return c, nil
}

// EnrollIDevID enrolls through POST /v1/enroll without a bootstrap token:
// the client must present the device's factory IDevID as its TLS client
// certificate (WithClientCertificate), which the CA verifies against the
// manufacturer CAs registered for a tenant. req.CSR must name the IDevID's
// serial.
func (c *Client) EnrollIDevID(ctx context.Context, req *wire.EnrollRequest) (*wire.EnrollResponse, error) {
	var resp wire.EnrollResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/enroll", "", req, &resp); err != nil {
		return nil, err
	}
	if resp.Certificate == "" {
		return nil, errors.New("client: enroll: reply has no certificate")
	}
	return &resp, nil
}

// AddIDevIDRoot trusts a manufacturer's CA certificates (a PEM bundle of
// roots and intermediates) for IDevID enrollment in a tenant (role admin).
// A certificate the tenant trusts already comes back with Added false.
func (c *Client) AddIDevIDRoot(ctx context.Context, req *wire.AddIDevIDRootRequest) ([]wire.IDevIDRoot, error) {
	var out []wire.IDevIDRoot
	return out, c.doJSON(ctx, http.MethodPost, "/v1/admin/idevid/roots", "", req, &out)
}

// ListIDevIDRoots lists the manufacturer IDevID CAs of tenant ("" means
// the admin's own).
func (c *Client) ListIDevIDRoots(ctx context.Context, tenant string) ([]wire.IDevIDRoot, error) {
	var q url.Values
	if tenant != "" {
		q = url.Values{"tenant": {tenant}}
	}
	var out []wire.IDevIDRoot
	return out, c.getJSON(ctx, "/v1/admin/idevid/roots", q, &out)
}
