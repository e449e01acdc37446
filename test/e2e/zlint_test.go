package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki/pkitest/zlinttest"
)

// zlintAllow is the allowlist for what a running CA issued: a warning is
// allowed only with a reason that holds for that certificate.
func zlintAllow(c *x509.Certificate) zlinttest.Allow {
	allow := zlinttest.Allow{}
	// RFC 5280 §4.2.1.13: a CRL DP SHOULD name an http:// or ldap:// URI.
	// A CA serving without a plain-HTTP listener (http_listen/http_url
	// unset) names its https:// URL; certificates naming http:// (ca serve
	// --http-listen, on in --dev: TestZlintEndToEnd) do not fire it and do
	// not get the allowance.
	https := len(c.CRLDistributionPoints) > 0
	for _, u := range c.CRLDistributionPoints {
		https = https && strings.HasPrefix(u, "https://")
	}
	if https {
		allow["w_distribution_point_missing_ldap_or_uri"] = "the CA has no plain-HTTP publication URL: its CRL is only at " + c.CRLDistributionPoints[0]
	}
	return allow
}

// TestZlintEndToEnd lints, with zlint's RFC and community lints, what a real
// `ca serve --dev` hands out: the root and intermediate, its TLS and admin
// certificates, an enrolled device's certificate, component server and
// client certificates from `ca issue`, the OCSP responder's certificate as
// it comes in an OCSP response, and the CRL at the URL a certificate names
// (with entries with and without a reason).
func TestZlintEndToEnd(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "devdata")
	srv := startServer(t, "--dev", "--dir", dir)
	b := waitBanner(t, srv)
	admin := []string{"--config", filepath.Join(dir, "ca.yaml"), "--ca", srv.URL}

	state := filepath.Join(t.TempDir(), "device")
	mustRun(t, nil, enrollBin, enrollArgs(srv, b.fingerprint, b.token, state, "ZLINT-0001")...)
	device := readCert(t, filepath.Join(state, "device.crt"))

	// Component certificates through `ca issue`, as an operator makes them.
	comp := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrFile := filepath.Join(comp, "c.csr")
	if err := os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), 0o600); err != nil {
		t.Fatal(err)
	}
	serverFile, clientFile := filepath.Join(comp, "server.crt"), filepath.Join(comp, "client.crt")
	mustRun(t, nil, caBin, append([]string{"issue", "--csr", csrFile, "--server", "--cn", "broker.plant.example",
		"--dns", "broker.plant.example", "--ip", "127.0.0.1", "--out", serverFile}, admin...)...)
	mustRun(t, nil, caBin, append([]string{"issue", "--csr", csrFile, "--client", "--cn", "ingest", "--out", clientFile}, admin...)...)
	compServer, compClient := readCerts(t, serverFile)[0], readCerts(t, clientFile)[0]

	root := readCert(t, filepath.Join(dir, "root.crt"))
	inter := readCert(t, filepath.Join(dir, "intermediate.crt"))
	for _, c := range []struct {
		what string
		cert *x509.Certificate
	}{
		{"root.crt", root},
		{"intermediate.crt", inter},
		{"server.crt (the CA's TLS)", readCerts(t, filepath.Join(dir, "server.crt"))[0]},
		{"admin.crt", readCerts(t, filepath.Join(dir, "admin.crt"))[0]},
		{"device.crt", device},
		{"component server", compServer},
		{"component client", compClient},
	} {
		zlinttest.Certificate(t, c.what, c.cert.Raw, zlintAllow(c.cert))
	}

	// Revocation information from the URLs the device certificate names,
	// fetched as a relying party would (trusting only the root).
	if len(device.OCSPServer) != 1 || len(device.CRLDistributionPoints) != 1 {
		t.Fatalf("device certificate: OCSP %v, CRL DP %v; want one of each", device.OCSPServer, device.CRLDistributionPoints)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	fetch := func(method, url string, body []byte) []byte {
		t.Helper()
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/ocsp-request")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %s %v", method, url, resp.Status, err)
		}
		return b
	}

	ocspReq, err := ocsp.CreateRequest(device, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ocsp.ParseResponseForCert(fetch(http.MethodPost, device.OCSPServer[0], ocspReq), device, inter)
	if err != nil {
		t.Fatalf("OCSP response: %v", err)
	}
	if r.Status != ocsp.Good || r.Certificate == nil {
		t.Fatalf("OCSP response: status %d, responder certificate included %v; want good with one", r.Status, r.Certificate != nil)
	}
	zlinttest.Certificate(t, "OCSP responder (from a response)", r.Certificate.Raw, zlintAllow(r.Certificate))

	// The CRL with two entries: one with a reason (reasonCode extension)
	// and one unspecified (no extension, as RFC 5280 asks).
	mustRun(t, nil, caBin, append([]string{"certs", "revoke", compClient.SerialNumber.Text(16), "--reason", "keyCompromise"}, admin...)...)
	mustRun(t, nil, caBin, append([]string{"certs", "revoke", compServer.SerialNumber.Text(16)}, admin...)...)
	// The full CRL lists both; the client's partition CRL (its CRL DP)
	// lists it with an issuing distribution point. Both lint clean.
	fullURL, _, _ := strings.Cut(device.CRLDistributionPoints[0], "/crl/p/")
	fullURL += "/crl"
	part := fetch(http.MethodGet, compClient.CRLDistributionPoints[0], nil)
	if rl, err := x509.ParseRevocationList(part); err != nil || len(rl.RevokedCertificateEntries) != 1 {
		t.Fatalf("partition CRL %s: %v, %v; want the client's entry", compClient.CRLDistributionPoints[0], rl, err)
	}
	zlinttest.CRL(t, "partition CRL at "+compClient.CRLDistributionPoints[0], part, nil)
	der := fetch(http.MethodGet, fullURL, nil)
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if len(crl.RevokedCertificateEntries) != 2 {
		t.Fatalf("CRL has %d entries, want the 2 revoked component certificates", len(crl.RevokedCertificateEntries))
	}
	zlinttest.CRL(t, "CRL at "+fullURL, der, nil)
}
