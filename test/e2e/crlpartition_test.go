package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
	"devpki/pkg/pki"
)

// curlGet fetches u with curl (a relying party that is not Go) into a file
// and returns its path; it fails the test unless curl gets a 2xx.
func curlGet(t *testing.T, u string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "fetched.der")
	out, err := exec.Command("curl", "-sS", "--fail", "--max-time", "10", "-o", f, u).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", u, err, out)
	}
	return f
}

// partitionCRLText checks the DER CRL in file with openssl against the CA
// bundle and returns `openssl crl -text`: signature verified, a critical
// issuing distribution point naming exactly dp, user certificates only.
func partitionCRLText(t *testing.T, file, caFile, dp string) string {
	t.Helper()
	out := openssl(t, "crl", "-inform", "DER", "-in", file, "-CAfile", caFile, "-noout", "-text")
	for _, want := range []string{"verify OK", "X509v3 Issuing Distribution Point: critical", "Only User Certificates"} {
		if !strings.Contains(out, want) {
			t.Fatalf("openssl crl -text of %s lacks %q:\n%s", dp, want, out)
		}
	}
	// Exactly this URI (openssl prints the next field on the same line).
	if !regexp.MustCompile(`URI:` + regexp.QuoteMeta(dp) + `(\s|$)`).MatchString(out) {
		t.Fatalf("openssl crl -text: the IDP does not name %s:\n%s", dp, out)
	}
	return out
}

func lists(crlText string, c *x509.Certificate) bool {
	// openssl prints the serial's bytes: a leading zero nibble included
	// (0BA0…), which big.Int.Text(16) leaves out.
	return strings.Contains(strings.ToUpper(crlText), fmt.Sprintf("SERIAL NUMBER: %X", c.SerialNumber.Bytes()))
}

// crlCheck runs `openssl verify -crl_check` on the device certificate with
// the partition CRL in crlFile (DER) and returns openssl's output and
// whether it verified. openssl matches the CRL's issuing distribution point
// against the certificate's CRL distribution point: a CRL of another scope
// does not count.
func crlCheck(t *testing.T, root, chain, devCrt, crlFile string) (string, bool) {
	t.Helper()
	pemFile := crlFile + ".pem"
	openssl(t, "crl", "-inform", "DER", "-in", crlFile, "-out", pemFile)
	out, err := exec.Command("openssl", "verify", "-crl_check", "-CAfile", root, "-untrusted", chain, "-CRLfile", pemFile, devCrt).CombinedOutput()
	return string(out), err == nil
}

// caBundle writes root + chain into one PEM file for openssl -CAfile.
func caBundle(t *testing.T, ca *testCA, chain string) string {
	t.Helper()
	root, err := os.ReadFile(filepath.Join(ca.Dir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := os.ReadFile(chain)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(f, append(root, ch...), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCRLPartitionEndToEnd: a device certificate names its partition CRL
// (/crl/p/<n>) on the plain listener; curl fetches it there, openssl
// verifies it and reads a critical IDP naming that same URL; `openssl
// verify -crl_check` with it accepts the certificate. Once `ca devices
// revoke` returns, the partition CRL already lists it and -crl_check
// refuses the certificate; the full /crl lists it too. The HTTPS listener
// serves the same partition; a partition that is not one is a 404 problem.
func TestCRLPartitionEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := startServer(t, "--config", ca.Config, "--http-listen", "127.0.0.1:0")
	state := filepath.Join(t.TempDir(), "state")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, state, "E2E-PART-1")
	devCrt, chain := filepath.Join(state, "device.crt"), filepath.Join(state, "chain.pem")
	cert := readCert(t, devCrt)
	m := regexp.MustCompile(`msg="serving publication" addr=(http://\S+)`).FindStringSubmatch(srv.stderr.String())
	if m == nil {
		t.Fatalf("no 'serving publication' line:\n%s", srv.stderr)
	}
	dp, _, _ := publicationURLs(t, cert)
	if !isPartitionURL(dp, m[1]) {
		t.Fatalf("CRL DP %s is not a partition under %s", dp, m[1])
	}
	if p := pki.CertCRLPartition(cert); p < 1 || p > pki.DefaultCRLPartitions || p != pki.CRLPartition(cert.SerialNumber, pki.DefaultCRLPartitions) {
		t.Fatalf("certificate names partition %d, serial maps to %d", p, pki.CRLPartition(cert.SerialNumber, pki.DefaultCRLPartitions))
	}
	bundle := caBundle(t, ca, chain)
	root := filepath.Join(ca.Dir, "root.crt")

	out := partitionCRLText(t, curlGet(t, dp), bundle, dp)
	if lists(out, cert) {
		t.Fatalf("partition CRL lists the certificate before its revocation:\n%s", out)
	}
	if vout, ok := crlCheck(t, root, chain, devCrt, curlGet(t, dp)); !ok || !strings.Contains(vout, ": OK") {
		t.Fatalf("openssl verify -crl_check with the partition CRL: %v\n%s", ok, vout)
	}

	mustRun(t, nil, caBin, "devices", "revoke", id, "--reason", "keyCompromise", "--config", ca.Config, "--ca", srv.URL)
	// Acknowledged: the partition CRL already lists it (no waiting).
	crlFile := curlGet(t, dp)
	if out := partitionCRLText(t, crlFile, bundle, dp); !lists(out, cert) || !strings.Contains(out, "Key Compromise") {
		t.Fatalf("partition CRL after the acknowledged revocation does not list it (keyCompromise):\n%s", out)
	}
	if vout, ok := crlCheck(t, root, chain, devCrt, crlFile); ok || !strings.Contains(vout, "certificate revoked") {
		t.Errorf("openssl verify -crl_check after revocation: verified=%v\n%s", ok, vout)
	}
	full := openssl(t, "crl", "-inform", "DER", "-in", curlGet(t, m[1]+"/crl"), "-CAfile", bundle, "-noout", "-text")
	if !lists(full, cert) || strings.Contains(full, "Issuing Distribution Point") {
		t.Errorf("the full CRL does not list the revocation, or has an IDP:\n%s", full)
	}

	// The HTTPS listener serves the same partition.
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, root))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	path := strings.TrimPrefix(dp, m[1])
	resp, err := hc.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" ||
		!strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") || resp.Header.Get("ETag") == "" {
		t.Fatalf("HTTPS GET %s: %d %v", path, resp.StatusCode, resp.Header)
	}
	rl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatal(err)
	}
	if idp, err := pki.ParseIDP(rl); err != nil || idp == nil || idp.URI != dp {
		t.Errorf("HTTPS partition CRL IDP %+v, %v; want %s", idp, err, dp)
	}

	for _, bad := range []string{"0", "4097", "x", "007"} {
		code, h, body := plainGet(t, m[1]+"/crl/p/"+bad)
		var p wire.Problem
		if code != http.StatusNotFound || h.Get("Content-Type") != "application/problem+json" ||
			json.Unmarshal(body, &p) != nil || p.Slug() != wire.SlugNotFound || !strings.Contains(p.Detail, "partition") {
			t.Errorf("GET /crl/p/%s: %d %q %s", bad, code, h.Get("Content-Type"), body)
		}
	}
	ca.auditVerify(t)
}

// setPublication points every replica's certificates at one plain-HTTP URL
// (as behind a load balancer) and shortens crl.refresh, the bound within
// which a replica shows another's revocation.
func setPublication(t *testing.T, ca *testCA, httpURL string, refresh time.Duration) {
	t.Helper()
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte("\n    refresh: 1m0s\n")) {
		t.Fatalf("ca.yaml has no crl.refresh of 1m:\n%s", cfg)
	}
	cfg = bytes.Replace(cfg, []byte("\n    refresh: 1m0s\n"), []byte("\n    refresh: "+refresh.String()+"\n"), 1)
	cfg = append(cfg, []byte("http_url: "+httpURL+"\n")...)
	if err := os.WriteFile(ca.Config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCRLPartitionReplicas: two `ca serve` replicas on one registry (the
// SQLite file; one PostgreSQL database with DEVPKI_TEST_POSTGRES_DSN),
// certificates naming one publication URL. A device enrolled through A is
// revoked through A: A's partition CRL lists it when the revoke returns;
// B's partition CRL (IDP the certificate's CRL DP, a higher CRL number than
// A's: the numbers live in the database), B's full CRL and B's OCSP — whose
// good answer was cached before — show it within crl.refresh (polled up to
// a generous multiple of it; no timing is asserted).
func TestCRLPartitionReplicas(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		crlPartitionReplicas(t, initCA(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
		if dsn == "" || strings.Contains(dsn, "://") {
			t.Skip("DEVPKI_TEST_POSTGRES_DSN not set (key=value form)")
		}
		ca := initCA(t)
		usePostgres(t, ca, freshPostgresDB(t, dsn))
		crlPartitionReplicas(t, ca)
	})
}

func crlPartitionReplicas(t *testing.T, ca *testCA) {
	const refresh = 2 * time.Second
	httpA, httpB := freePort(t), freePort(t)
	setPublication(t, ca, "http://"+httpA, refresh)
	a := startServer(t, "--config", ca.Config, "--http-listen", httpA)
	b := startServer(t, "--config", ca.Config, "--http-listen", httpB)
	if !strings.Contains(b.stderr.String(), `msg="serving publication" addr=http://`+httpB) {
		t.Fatalf("replica B does not publish at %s:\n%s", httpB, b.stderr)
	}

	state := filepath.Join(t.TempDir(), "state")
	id := ca.enrollOK(t, a, ca.mintToken(t, a).Token, state, "E2E-PARTREP-1")
	devCrt, chain := filepath.Join(state, "device.crt"), filepath.Join(state, "chain.pem")
	cert := readCert(t, devCrt)
	inter := readCerts(t, chain)[0]
	dp, ocspURL, _ := publicationURLs(t, cert)
	if !isPartitionURL(dp, "http://"+httpA) {
		t.Fatalf("CRL DP %s, want a partition under http://%s", dp, httpA)
	}
	path := strings.TrimPrefix(dp, "http://"+httpA)
	onB := "http://" + httpB + path
	bundle := caBundle(t, ca, chain)

	crlNumber := func(text string) string {
		m := regexp.MustCompile(`X509v3 CRL Number: \n\s+(\d+)`).FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no CRL number in:\n%s", text)
		}
		return m[1]
	}
	if out := partitionCRLText(t, curlGet(t, onB), bundle, dp); lists(out, cert) {
		t.Fatal("B's partition CRL lists the certificate before its revocation")
	}
	ocspOnB := func() int {
		t.Helper()
		req, err := ocsp.CreateRequest(cert, inter, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(strings.Replace(ocspURL, httpA, httpB, 1), "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		r, err := ocsp.ParseResponseForCert(body, cert, inter)
		if err != nil {
			t.Fatalf("B's OCSP answer: %v", err)
		}
		return r.Status
	}
	if st := ocspOnB(); st != ocsp.Good { // now cached on B
		t.Fatalf("B's OCSP before the revocation: %d", st)
	}

	mustRun(t, nil, caBin, "devices", "revoke", id, "--reason", "keyCompromise", "--config", ca.Config, "--ca", a.URL)
	outA := partitionCRLText(t, curlGet(t, dp), bundle, dp)
	if !lists(outA, cert) {
		t.Fatalf("A's partition CRL does not list the acknowledged revocation:\n%s", outA)
	}

	// Poll B up to a generous multiple of the bound; how soon is measured,
	// not asserted.
	deadline := time.Now().Add(10*refresh + 20*time.Second)
	var outB string
	for {
		outB = partitionCRLText(t, curlGet(t, onB), bundle, dp)
		if lists(outB, cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's partition CRL never listed A's revocation:\n%s", outB)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var nA, nB int
	fmt.Sscan(crlNumber(outA), &nA)
	fmt.Sscan(crlNumber(outB), &nB)
	if nB <= nA {
		t.Errorf("B's partition CRL number %d is not above A's %d", nB, nA)
	}
	if vout, ok := crlCheck(t, filepath.Join(ca.Dir, "root.crt"), chain, devCrt, curlGet(t, onB)); ok || !strings.Contains(vout, "certificate revoked") {
		t.Errorf("openssl verify -crl_check with B's partition CRL: verified=%v\n%s", ok, vout)
	}
	for ocspOnB() != ocsp.Revoked {
		if time.Now().After(deadline) {
			t.Fatal("B's OCSP never said revoked")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		full := openssl(t, "crl", "-inform", "DER", "-in", curlGet(t, "http://"+httpB+"/crl"), "-CAfile", bundle, "-noout", "-text")
		if lists(full, cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's full CRL never listed A's revocation:\n%s", full)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ca.auditVerify(t)
}
