package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/api/wire"
)

// TestRevokeEndToEnd: enroll a device, 'ca devices revoke' it, then the CRL
// served at /crl lists its certificate with the reason and verifies against
// the intermediate, and OCSP (GET and POST) answers revoked. Revoking again
// is a no-op; a bad reason is refused with the valid names.
func TestRevokeEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	dir := filepath.Join(t.TempDir(), "state")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dir, "E2E-REVOKE-1")
	cert := readCert(t, filepath.Join(dir, "device.crt"))
	inter := readCerts(t, filepath.Join(dir, "chain.pem"))[0]
	root := readCert(t, filepath.Join(ca.Dir, "root.crt"))
	serial := cert.SerialNumber.Text(16)

	// Issued certificates name their partition CRL and the OCSP responder
	// (config url).
	if len(cert.CRLDistributionPoints) != 1 || !regexp.MustCompile(`/crl/p/[1-9][0-9]*$`).MatchString(cert.CRLDistributionPoints[0]) ||
		len(cert.OCSPServer) != 1 || !strings.HasSuffix(cert.OCSPServer[0], "/ocsp") {
		t.Errorf("device certificate: CRL DP %v, OCSP %v", cert.CRLDistributionPoints, cert.OCSPServer)
	}

	pool := x509.NewCertPool()
	pool.AddCert(root)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	getCRL := func() *x509.RevocationList {
		t.Helper()
		resp, err := hc.Get(srv.URL + "/crl")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET /crl: %s %q", resp.Status, resp.Header.Get("Content-Type"))
		}
		rl, err := x509.ParseRevocationList(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(inter); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		return rl
	}
	before := getCRL()
	if len(before.RevokedCertificateEntries) != 0 {
		t.Fatalf("CRL before any revocation has %d entries", len(before.RevokedCertificateEntries))
	}
	// The partition CRL the certificate names, through the same listener.
	partPath := cert.CRLDistributionPoints[0][strings.Index(cert.CRLDistributionPoints[0], "/crl/p/"):]
	resp, err := hc.Get(srv.URL + partPath)
	if err != nil {
		t.Fatal(err)
	}
	partDER, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	partBefore, err := x509.ParseRevocationList(partDER)
	if err != nil {
		t.Fatalf("partition CRL %s: %v", partPath, err)
	}

	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	out := mustRun(t, nil, caBin, append([]string{"devices", "revoke", id, "--reason", "keyCompromise", "--output", "json"}, admin...)...)
	var rr wire.RevokeResponse
	if err := json.Unmarshal([]byte(out.stdout), &rr); err != nil {
		t.Fatalf("ca devices revoke --output json: %v\n%s", err, out)
	}
	if rr.DeviceID != id || rr.AlreadyRevoked || len(rr.Certificates) != 1 || rr.Certificates[0].Serial != serial ||
		rr.Certificates[0].Reason != "keyCompromise" || rr.CRLNumber <= partBefore.Number.Int64() {
		t.Fatalf("revoke reply %+v", rr)
	}

	after := getCRL()
	var listed bool
	for _, e := range after.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			listed = true
			if e.ReasonCode != ocsp.KeyCompromise {
				t.Errorf("CRL reason %d, want keyCompromise", e.ReasonCode)
			}
		}
	}
	if !listed || after.Number.Cmp(before.Number) <= 0 {
		t.Fatalf("CRL %v (was %v) does not list %s", after.Number, before.Number, serial)
	}

	req, err := ocsp.CreateRequest(cert, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		var hr *http.Response
		if method == http.MethodPost {
			hr, err = hc.Post(srv.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
		} else {
			hr, err = hc.Get(srv.URL + "/ocsp/" + base64.StdEncoding.EncodeToString(req))
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		resp, err := ocsp.ParseResponseForCert(b, cert, inter)
		if err != nil {
			t.Fatalf("OCSP %s: %v", method, err)
		}
		if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.KeyCompromise {
			t.Errorf("OCSP %s: status %d reason %d, want revoked keyCompromise", method, resp.Status, resp.RevocationReason)
		}
	}

	// Again, by certificate: a no-op that exits 0.
	out = mustRun(t, nil, caBin, append([]string{"certs", "revoke", serial, "--reason", "superseded"}, admin...)...)
	if !strings.Contains(out.stdout, "already revoked") {
		t.Errorf("second revoke output:\n%s", out)
	}
	// A bad reason: exit 1 naming the valid ones.
	if res := run(t, nil, caBin, append([]string{"certs", "revoke", serial, "--reason", "stolen"}, admin...)...); res.code != 1 ||
		!strings.Contains(res.stderr, "keyCompromise") {
		t.Errorf("bad reason: want exit 1 listing reasons, got %s", res)
	}
	ca.auditVerify(t)
}
