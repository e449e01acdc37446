package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"

	"devpki/api/client"
	"devpki/pkg/pki"
	"devpki/pkg/tpm"
)

// loadIDevID reads --idevid-cert and --idevid-key as the TLS client
// certificate to present, and takes the IDevID's hardware serial as the
// device serial unless --serial names one (the CA refuses a CSR whose
// serial is not the IDevID's).
func loadIDevID(cfg *config) (*tls.Certificate, error) {
	c, err := client.LoadClientCertificate(cfg.IDevIDCert, cfg.IDevIDKey)
	if err != nil {
		return nil, usageErr("--idevid-cert/--idevid-key: %v", err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, usageErr("--idevid-cert %s: %v", cfg.IDevIDCert, err)
	}
	c.Leaf = leaf
	id, err := pki.ParseIDevID(leaf)
	if err != nil {
		return nil, usageErr("--idevid-cert %s: %v", cfg.IDevIDCert, err)
	}
	switch {
	case cfg.Serial == "":
		cfg.Serial = id.Serial
	case !strings.EqualFold(cfg.Serial, id.Serial):
		cfg.logf("--serial %s is not the IDevID's serial %s: the CA will refuse it", cfg.Serial, id.Serial)
	}
	cfg.logf("presenting IDevID %s issued by %s (serial %s)", id.CertSerial, id.Issuer, id.Serial)
	return &c, nil
}

// enrollIDevID enrolls with the factory IDevID the client presents (no
// token): a fresh key, in t when there is a TPM (made there, never leaving
// it), else a software key kept on disk before the CSR leaves.
func enrollIDevID(ctx context.Context, cfg *config, r *retrier, cl *client.Client, t *tpm.TPM, serial string, macs []string, root *x509.Certificate) (*identity, string, error) {
	if t != nil {
		key, _, err := newTPMKey(ctx, t, nil)
		if err != nil {
			return nil, "", tpmHint(fmt.Errorf("TPM: %w", err))
		}
		return enrollToken(ctx, cfg, r, cl, key, serial, macs, root)
	}
	return enrollSoftware(ctx, cfg, r, cl, serial, macs, root)
}
