// Package pkitest makes throwaway devpki CAs for tests.
package pkitest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"devpki/pkg/pki"
)

// TrustDomain is the trust domain of every TestCA's Issuer.
const TrustDomain = "test.devpki"

// TestCA is a CA created by pki.CreateCA in a test's temporary directory.
type TestCA struct {
	CA       *pki.CA
	Issuer   *pki.Issuer // trust domain TrustDomain, no OCSP/CRL URLs
	Files    *pki.CAFiles
	Password []byte
}

// NewCA creates a fresh CA (encrypted keys on disk in t.TempDir()) and an
// Issuer for it; it fails the test on any error.
func NewCA(t testing.TB) *TestCA {
	t.Helper()
	pw := []byte("pkitest-password")
	files, ca, err := pki.CreateCA(context.Background(), pki.CAOptions{Dir: t.TempDir(), Name: "pkitest", Password: pw})
	if err != nil {
		t.Fatalf("pkitest: create CA: %v", err)
	}
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: ca, TrustDomain: TrustDomain})
	if err != nil {
		t.Fatalf("pkitest: new issuer: %v", err)
	}
	return &TestCA{CA: ca, Issuer: iss, Files: files, Password: pw}
}

// Roots returns a pool holding the root certificate.
func (c *TestCA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.CA.Root)
	return p
}

// Intermediates returns a pool holding the intermediate certificate.
func (c *TestCA) Intermediates() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.CA.Intermediate)
	return p
}

// DeviceKeyAndCSR makes a P-256 device key and its enrollment CSR (via
// pki.NewDeviceCSR) for serial and macs, returned parsed and as PEM.
func (c *TestCA) DeviceKeyAndCSR(t testing.TB, serial string, macs ...string) (crypto.Signer, *x509.CertificateRequest, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pkitest: generate key: %v", err)
	}
	der, err := pki.NewDeviceCSR(key, serial, macs)
	if err != nil {
		t.Fatalf("pkitest: device CSR: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatalf("pkitest: parse CSR: %v", err)
	}
	return key, csr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// IssueDevice issues a default-profile device certificate for id and key
// with the TestCA's Issuer; it fails the test on any error.
func (c *TestCA) IssueDevice(t testing.TB, id pki.Identity, key crypto.Signer) *pki.Issued {
	t.Helper()
	iss, err := c.Issuer.IssueDevice(context.Background(), &pki.DeviceRequest{Identity: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatalf("pkitest: issue device: %v", err)
	}
	return iss
}
