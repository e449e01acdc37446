package api_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"

	"devpki/api/wire"
	"devpki/pkg/metrics"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// scrape GETs /metrics with client and parses it; it fails the test unless
// the answer is 200.
func (f *fixture) scrape(t *testing.T, c *http.Client) metrics.Families {
	t.Helper()
	resp, b, err := f.do(c, http.MethodGet, "/metrics", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	fs, err := metrics.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestMetricsAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// Every admin role may scrape.
	for _, role := range []registry.Role{registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor} {
		c := f.newClient(ptr(f.adminCert(f.ca, "default", "m-"+string(role), role, "")))
		fs := f.scrape(t, c)
		if _, ok := fs["go_goroutines"]; !ok {
			t.Errorf("%s: no Go runtime metrics", role)
		}
		if _, ok := fs["process_cpu_seconds_total"]; !ok {
			t.Errorf("%s: no process metrics", role)
		}
	}
	before := f.scrape(t, f.newClient(ptr(f.adminCert(f.ca, "default", "m-reader", registry.RoleAuditor, ""))))

	// Anonymous: 401. A device certificate: 403. A revoked admin: 403.
	resp, b, err := f.do(f.client, http.MethodGet, "/metrics", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	problemOf(t, resp, b, http.StatusUnauthorized)
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-METRICS-DEV")
	resp, b, err = f.do(f.newClient(ptr(deviceTLSCert(t, er, key))), http.MethodGet, "/metrics", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	problemOf(t, resp, b, http.StatusForbidden)
	resp, b, err = f.do(f.newClient(ptr(f.adminCert(f.ca, "default", "m-gone", registry.RoleAuditor, registry.CertRevoked))),
		http.MethodGet, "/metrics", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	problemOf(t, resp, b, http.StatusForbidden)

	after := f.scrape(t, f.newClient(ptr(f.adminCert(f.ca, "default", "m-reader2", registry.RoleAuditor, ""))))
	if d := after.Count("devpki_auth_failures_total", "door", "admin") - before.Count("devpki_auth_failures_total", "door", "admin"); d != 3 {
		t.Errorf("admin auth failures moved by %v, want 3", d)
	}
}

func TestMetricsCountEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	reader := f.newClient(ptr(f.adminCert(f.ca, "default", "m-reader", registry.RoleAuditor, "")))
	admin := ptr(f.adminCert(f.ca, "default", "m-admin", registry.RoleAdmin, ""))
	before := f.scrape(t, reader)

	// Two enrollments, one refused token, one refused replayed serial.
	er, key := f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-MET-1")
	f.mustEnroll(f.mint(provision.TokenSpec{}), "SN-MET-2")
	resp, b := f.enroll("dpk_"+strings.Repeat("x", 40), f.csr("SN-MET-3"))
	problemOf(t, resp, b, http.StatusUnauthorized)
	resp, b = f.enroll(f.mint(provision.TokenSpec{}), f.csr("SN-MET-1"))
	problemOf(t, resp, b, http.StatusConflict)

	// One renewal, one renewal without a certificate.
	resp, b, err := f.do(f.newClient(ptr(deviceTLSCert(t, er, key))), http.MethodPost, "/v1/renew", "", "application/json", strings.NewReader("{}"))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %v %d %s", err, resp.StatusCode, b)
	}
	var renewed wire.EnrollResponse
	decodeInto(t, b, &renewed)
	resp, b, err = f.do(f.client, http.MethodPost, "/v1/renew", "", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	problemOf(t, resp, b, http.StatusUnauthorized)

	// A revocation, then OCSP for it (revoked) and for a good one.
	cert := parseCertPEM(t, renewed.Certificate)
	resp, b = f.revoke(admin, certPath(cert), `{"reason":"keyCompromise"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d %s", resp.StatusCode, b)
	}
	f.ocspPOST(t, cert)
	good := f.mustEnrollCert(t, "SN-MET-4")
	f.ocspPOST(t, good)
	f.ocspPOST(t, good) // from the cache: counted as good again
	resp, _, err = f.do(f.client, http.MethodPost, "/ocsp", "", "application/ocsp-request", strings.NewReader("not ocsp"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("malformed OCSP: %v %d", err, resp.StatusCode)
	}
	rl, _ := f.getCRL(t)

	after := f.scrape(t, reader)
	moved := func(name string, labels ...string) float64 {
		return after.Count(name, labels...) - before.Count(name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"devpki_enrollments_total", []string{"method", "token", "result", "ok"}, 3},
		{"devpki_enrollments_total", []string{"method", "token", "result", "token-invalid"}, 1},
		{"devpki_enrollments_total", []string{"method", "token", "result", "serial-conflict"}, 1},
		{"devpki_renewals_total", []string{"result", "ok"}, 1},
		{"devpki_renewals_total", []string{"result", "unauthenticated"}, 1},
		{"devpki_revocations_total", []string{"reason", "keyCompromise"}, 1},
		{"devpki_ocsp_responses_total", []string{"status", "revoked"}, 1},
		{"devpki_ocsp_responses_total", []string{"status", "good"}, 2},
		{"devpki_ocsp_responses_total", []string{"status", "malformed"}, 1},
		{"devpki_auth_failures_total", []string{"door", "enroll"}, 2}, // the bad token and the serial probe
		{"devpki_auth_failures_total", []string{"door", "renew"}, 1},
	} {
		if got := moved(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n, ok := after.Value("devpki_crl_number"); !ok || int64(n) != rl.Number.Int64() {
		t.Errorf("devpki_crl_number %v (%v), served CRL number %v", n, ok, rl.Number)
	}
	if n, _ := after.Value("devpki_crl_build_seconds"); n < 1 {
		t.Errorf("devpki_crl_build_seconds counted %v builds, want at least the one after the revocation", n)
	}
	// Every registry write goes through the committer: at least one
	// transaction per committed enrollment and renewal (4), each observed.
	if n := moved("devpki_registry_batch_size"); n < 4 {
		t.Errorf("devpki_registry_batch_size observed %v more transactions, want at least 4", n)
	}
	if n := moved("devpki_registry_commit_seconds"); n < 4 {
		t.Errorf("devpki_registry_commit_seconds observed %v more transactions, want at least 4", n)
	}
}

func decodeInto(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

func parseCertPEM(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) mustEnrollCert(t *testing.T, serial string) *x509.Certificate {
	t.Helper()
	er, _ := f.mustEnroll(f.mint(provision.TokenSpec{}), serial)
	return parseCertPEM(t, er.Certificate)
}
