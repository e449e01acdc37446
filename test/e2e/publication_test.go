package e2e

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// plainGet fetches u over plain HTTP (no TLS: what a relying party that
// does not trust the CA yet can do) and returns the status, headers and body.
func plainGet(t *testing.T, u string) (int, http.Header, []byte) {
	t.Helper()
	if !strings.HasPrefix(u, "http://") {
		t.Fatalf("%s is not a plain-HTTP URL", u)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// isPartitionURL reports whether u is a partition CRL URL under base:
// base/crl/p/<n>.
func isPartitionURL(u, base string) bool {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `/crl/p/[1-9][0-9]*$`).MatchString(u)
}

// openssl runs openssl with args and returns its combined output; it fails
// the test unless openssl exits 0.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// publicationURLs are the revocation and issuer URLs a certificate names;
// each must be exactly one plain http:// URL.
func publicationURLs(t *testing.T, c *x509.Certificate) (crl, ocspURL, issuers string) {
	t.Helper()
	if len(c.CRLDistributionPoints) != 1 || len(c.OCSPServer) != 1 || len(c.IssuingCertificateURL) != 1 {
		t.Fatalf("certificate names CRL DP %v, OCSP %v, caIssuers %v: want one each",
			c.CRLDistributionPoints, c.OCSPServer, c.IssuingCertificateURL)
	}
	crl, ocspURL, issuers = c.CRLDistributionPoints[0], c.OCSPServer[0], c.IssuingCertificateURL[0]
	for _, u := range []string{crl, ocspURL, issuers} {
		if p, err := url.Parse(u); err != nil || p.Scheme != "http" || p.Host == "" {
			t.Fatalf("certificate names %q, want an http:// URL", u)
		}
	}
	return crl, ocspURL, issuers
}

// TestPublicationEndToEnd: with `ca serve --http-listen`, an enrolled
// device's certificate names http:// URLs for its CRL DP, AIA OCSP and AIA
// caIssuers; a relying party fetches the CRL and asks OCSP over plain HTTP
// at exactly those URLs and checks them with openssl (good, then revoked
// after `ca devices revoke`), and the caIssuers URL serves the issuing CA.
// The plain listener serves nothing else.
func TestPublicationEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := startServer(t, "--config", ca.Config, "--http-listen", "127.0.0.1:0")
	state := filepath.Join(t.TempDir(), "state")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, state, "E2E-PUB-1")
	devCrt := filepath.Join(state, "device.crt")
	cert := readCert(t, devCrt)
	inter := readCerts(t, filepath.Join(state, "chain.pem"))[0]
	crlURL, ocspURL, issuersURL := publicationURLs(t, cert)

	// The listener the server announced is the one certificates name.
	m := regexp.MustCompile(`msg="serving publication" addr=(http://\S+)`).FindStringSubmatch(srv.stderr.String())
	if m == nil {
		t.Fatalf("no 'serving publication' line in the server log:\n%s", srv.stderr)
	}
	// The CRL DP names the certificate's partition CRL (crl.partitions).
	if !isPartitionURL(crlURL, m[1]) || ocspURL != m[1]+"/ocsp" || issuersURL != m[1]+"/ca.crt" {
		t.Errorf("certificate names %s, %s, %s; the listener is %s", crlURL, ocspURL, issuersURL, m[1])
	}

	work := t.TempDir()
	caFile := filepath.Join(work, "ca-bundle.pem")
	bundle, err := os.ReadFile(filepath.Join(ca.Dir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := os.ReadFile(filepath.Join(state, "chain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, append(bundle, chainPEM...), 0o600); err != nil {
		t.Fatal(err)
	}

	// caIssuers: the issuing CA, DER.
	code, h, der := plainGet(t, issuersURL)
	if code != http.StatusOK || h.Get("Content-Type") != "application/pkix-cert" || !bytes.Equal(der, inter.Raw) {
		t.Fatalf("GET %s: %d %q, issuing CA: %v", issuersURL, code, h.Get("Content-Type"), bytes.Equal(der, inter.Raw))
	}
	issuerDER := filepath.Join(work, "issuer.der")
	if err := os.WriteFile(issuerDER, der, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := openssl(t, "x509", "-inform", "DER", "-in", issuerDER, "-noout", "-subject"); !strings.Contains(out, inter.Subject.CommonName) {
		t.Errorf("openssl x509 of the caIssuers certificate: %s, want %s", out, inter.Subject.CommonName)
	}
	// The leaf verifies with the root and the fetched issuer only.
	openssl(t, "verify", "-CAfile", filepath.Join(ca.Dir, "root.crt"), "-untrusted", filepath.Join(state, "chain.pem"), devCrt)

	checkCRL := func(wantListed bool) {
		t.Helper()
		code, h, b := plainGet(t, crlURL)
		if code != http.StatusOK || h.Get("Content-Type") != "application/pkix-crl" ||
			!strings.Contains(h.Get("Cache-Control"), "max-age=") || h.Get("Expires") == "" || h.Get("Last-Modified") == "" {
			t.Fatalf("GET %s: %d, headers %v", crlURL, code, h)
		}
		f := filepath.Join(work, "crl.der")
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out := openssl(t, "crl", "-inform", "DER", "-in", f, "-CAfile", caFile, "-noout", "-text")
		if !strings.Contains(out, "verify OK") {
			t.Fatalf("openssl crl -CAfile: no 'verify OK':\n%s", out)
		}
		listed := strings.Contains(strings.ToUpper(out), strings.ToUpper(cert.SerialNumber.Text(16)))
		if listed != wantListed {
			t.Errorf("CRL lists the device certificate: %v, want %v\n%s", listed, wantListed, out)
		}
	}
	checkOCSP := func(want string) {
		t.Helper()
		out := openssl(t, "ocsp", "-issuer", filepath.Join(state, "chain.pem"), "-cert", devCrt, "-url", ocspURL,
			"-CAfile", caFile, "-timeout", "10")
		if !strings.Contains(out, "Response verify OK") || !strings.Contains(out, devCrt+": "+want) {
			t.Fatalf("openssl ocsp -url %s: want verified %q:\n%s", ocspURL, want, out)
		}
		// GET too (RFC 6960 appendix A.1), at the same URL.
		req, err := ocsp.CreateRequest(cert, inter, nil)
		if err != nil {
			t.Fatal(err)
		}
		code, h, b := plainGet(t, ocspURL+"/"+url.QueryEscape(base64.StdEncoding.EncodeToString(req)))
		if code != http.StatusOK || h.Get("Content-Type") != "application/ocsp-response" {
			t.Fatalf("GET OCSP: %d %q", code, h.Get("Content-Type"))
		}
		r, err := ocsp.ParseResponseForCert(b, cert, inter)
		if err != nil {
			t.Fatal(err)
		}
		if st := map[int]string{ocsp.Good: "good", ocsp.Revoked: "revoked"}[r.Status]; st != want {
			t.Errorf("GET OCSP: status %d, want %s", r.Status, want)
		}
		if exp, err := http.ParseTime(h.Get("Expires")); err != nil || exp.After(r.NextUpdate) ||
			!strings.Contains(h.Get("Cache-Control"), "max-age=") {
			t.Errorf("GET OCSP cache headers %v, nextUpdate %v", h, r.NextUpdate)
		}
	}
	checkCRL(false)
	checkOCSP("good")

	mustRun(t, nil, caBin, "devices", "revoke", id, "--reason", "keyCompromise", "--config", ca.Config, "--ca", srv.URL)
	checkCRL(true)
	checkOCSP("revoked")

	// Only publication is served in the clear.
	base := m[1]
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/v1/enroll"}, {http.MethodPost, "/v1/renew"}, {http.MethodGet, "/v1/admin/devices"},
		{http.MethodPost, "/v1/admin/tokens"}, {http.MethodGet, "/healthz"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s on the plain listener: %d, want 404", tc.method, tc.path, resp.StatusCode)
		}
	}
	for _, p := range []string{"/v1/ca/roots", "/v1/ca/chain"} {
		if code, _, b := plainGet(t, base+p); code != http.StatusOK || !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
			t.Errorf("GET %s: %d", p, code)
		}
	}
	ca.auditVerify(t)
}

// TestDevModePublication: `ca serve --dev` publishes over plain HTTP on
// 127.0.0.1:8080 or, when that is taken, a free port, prints it, and the
// certificates it issues name exactly that listener.
func TestDevModePublication(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "devdata")
	srv := startServer(t, "--dev", "--dir", dir)
	b := waitBanner(t, srv)
	m := regexp.MustCompile(`published over plain HTTP at (http://127\.0\.0\.1:\d+)\b`).FindStringSubmatch(srv.stdout.String())
	if m == nil {
		t.Fatalf("ca serve --dev: no plain-HTTP URL printed:\n%s", srv.stdout)
	}
	state := filepath.Join(t.TempDir(), "state")
	mustRun(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", b.fingerprint, "--token", b.token,
		"--dir", state, "--serial", "E2E-DEVPUB-1", "--mac", macFor("E2E-DEVPUB-1"))
	cert := readCert(t, filepath.Join(state, "device.crt"))
	crlURL, ocspURL, issuersURL := publicationURLs(t, cert)
	if !isPartitionURL(crlURL, m[1]) || ocspURL != m[1]+"/ocsp" || issuersURL != m[1]+"/ca.crt" {
		t.Fatalf("certificate names %s %s %s, dev mode printed %s", crlURL, ocspURL, issuersURL, m[1])
	}
	code, _, der := plainGet(t, crlURL)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d", crlURL, code)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(readCerts(t, filepath.Join(state, "chain.pem"))[0]); err != nil {
		t.Errorf("CRL from %s: %v", crlURL, err)
	}
}

// TestInitHTTPPublication: 'ca init --http-listen --http-url' writes both
// keys to ca.yaml; a listener on all interfaces without --http-url is
// refused before anything is written (certificates would name no
// reachable host).
func TestInitHTTPPublication(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	pw := filepath.Join(base, "pw")
	if err := os.WriteFile(pw, []byte(testPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(base, "bad")
	res := run(t, nil, caBin, "init", "--dir", bad, "--password-file", pw, "--http-listen", "0.0.0.0:80")
	if res.code == 0 || !strings.Contains(res.stderr, "http_url") {
		t.Fatalf("ca init --http-listen 0.0.0.0:80 without --http-url: want a refusal naming http_url, got %s", res)
	}
	requireNoFile(t, filepath.Join(bad, "ca.yaml"))

	dir := filepath.Join(base, "ca")
	mustRun(t, nil, caBin, "init", "--dir", dir, "--password-file", pw, "--ip", "127.0.0.1",
		"--http-listen", "0.0.0.0:80", "--http-url", "http://pki.example.net/")
	b, err := os.ReadFile(filepath.Join(dir, "ca.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"http_listen: 0.0.0.0:80", "http_url: http://pki.example.net\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("ca.yaml lacks %q:\n%s", want, b)
		}
	}
}
