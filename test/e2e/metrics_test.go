package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/metrics"
)

// adminHTTPClient presents the CA's own admin certificate (ca init's
// admin.crt, admin.key) and trusts its root.
func (c *testCA) adminHTTPClient(t *testing.T) *http.Client {
	t.Helper()
	key, err := pemutil.Read(filepath.Join(c.Dir, "admin.key"), pemutil.WithPassword([]byte(testPassphrase)))
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key}
	for _, ct := range readCerts(t, filepath.Join(c.Dir, "admin.crt")) {
		cert.Certificate = append(cert.Certificate, ct.Raw)
	}
	return c.httpClient(t, &cert)
}

// httpClient trusts the CA's root and presents cert (nil: none).
func (c *testCA) httpClient(t *testing.T, cert *tls.Certificate) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(c.Dir, "root.crt")))
	cfg := &tls.Config{RootCAs: roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// get GETs url with hc and returns the status and body.
func get(t *testing.T, hc *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// scrapeMetrics GETs url with hc, requires 200 and parses the text format
// with the Prometheus client library's parser.
func scrapeMetrics(t *testing.T, hc *http.Client, url string) metrics.Families {
	t.Helper()
	status, b := get(t, hc, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, b)
	}
	fs, err := metrics.Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return fs
}

// TestMetricsEndToEnd: ca serve with --metrics-listen; real enrollments,
// a refused token, a renewal and a revocation move the counters scraped
// over HTTPS with the admin certificate; the CRL number scraped is the
// served CRL's; anonymous scrapes get 401, a device certificate 403; the
// plain metrics listener serves the same registry and nothing else.
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	metricsAddr := freePort(t)
	srv := startServer(t, "--config", ca.Config, "--metrics-listen", metricsAddr)
	admin := ca.adminHTTPClient(t)
	before := scrapeMetrics(t, admin, srv.URL+"/metrics")
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_cpu_seconds_total",
		"devpki_crl_number", "devpki_certificates_expiring"} {
		if _, ok := before[name]; !ok {
			t.Errorf("no %s in the scrape", name)
		}
	}

	dir1, dir2 := filepath.Join(t.TempDir(), "d1"), filepath.Join(t.TempDir(), "d2")
	ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dir1, "E2E-MET-1")
	id2 := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dir2, "E2E-MET-2")
	bad := run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, "dpk_unknownunknownunknownunknown", filepath.Join(t.TempDir(), "d3"), "E2E-MET-3")...)
	if bad.code == 0 {
		t.Fatalf("enroll with an unknown token succeeded:\n%s", bad)
	}
	mustRun(t, nil, enrollBin, "renew", "--dir", dir1)
	adminArgs := []string{"--config", ca.Config, "--ca", srv.URL}
	mustRun(t, nil, caBin, append([]string{"devices", "revoke", id2, "--reason", "keyCompromise"}, adminArgs...)...)

	after := scrapeMetrics(t, admin, srv.URL+"/metrics")
	moved := func(name string, labels ...string) float64 {
		return after.Count(name, labels...) - before.Count(name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"devpki_enrollments_total", []string{"method", "token", "result", "ok"}, 2},
		{"devpki_enrollments_total", []string{"method", "token", "result", "token-invalid"}, 1},
		{"devpki_renewals_total", []string{"result", "ok"}, 1},
		{"devpki_revocations_total", []string{"reason", "keyCompromise"}, 1},
		{"devpki_auth_failures_total", []string{"door", "enroll"}, 1},
	} {
		if got := moved(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v moved by %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := moved("devpki_registry_batch_size"); n < 3 {
		t.Errorf("devpki_registry_batch_size observed %v transactions, want at least 3", n)
	}

	// The CRL number scraped is the one of the CRL served.
	status, der := get(t, admin, srv.URL+"/crl")
	if status != http.StatusOK {
		t.Fatalf("GET /crl: %d", status)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	// A revocation rebuilds its partition's CRL; the full CRL is built
	// when asked for (above), so scrape again to see its number.
	full := scrapeMetrics(t, admin, srv.URL+"/metrics")
	if v, ok := full.Value("devpki_crl_number"); !ok || int64(v) != rl.Number.Int64() {
		t.Errorf("devpki_crl_number %v, served CRL number %v", v, rl.Number)
	}

	// Who may scrape.
	if status, b := get(t, ca.httpClient(t, nil), srv.URL+"/metrics"); status != http.StatusUnauthorized {
		t.Errorf("anonymous GET /metrics: %d %s, want 401", status, b)
	}
	if status, b := get(t, deviceClient(t, dir1), srv.URL+"/metrics"); status != http.StatusForbidden {
		t.Errorf("device GET /metrics: %d %s, want 403", status, b)
	}
	third := scrapeMetrics(t, admin, srv.URL+"/metrics")
	if d := third.Count("devpki_auth_failures_total", "door", "admin") - after.Count("devpki_auth_failures_total", "door", "admin"); d != 2 {
		t.Errorf("admin auth failures moved by %v, want 2", d)
	}

	// The plain listener: the same registry, GET /metrics only.
	plain := &http.Client{Timeout: 10 * time.Second}
	pm := scrapeMetrics(t, plain, "http://"+metricsAddr+"/metrics")
	if got, want := pm.Count("devpki_enrollments_total", "method", "token", "result", "ok"),
		third.Count("devpki_enrollments_total", "method", "token", "result", "ok"); got != want {
		t.Errorf("plain listener: %v enrollments, HTTPS %v", got, want)
	}
	if status, _ := get(t, plain, "http://"+metricsAddr+"/crl"); status != http.StatusNotFound {
		t.Errorf("plain metrics listener GET /crl: %d, want 404", status)
	}
	resp, err := plain.Post("http://"+metricsAddr+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("plain metrics listener POST /metrics: %d, want 405", resp.StatusCode)
	}

	// A fresh server counts the expiring certificates at its first scrape:
	// device 1's renewed certificate (30 days, the default lifetime); device
	// 2's is revoked, device 1's first superseded.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	srv = ca.serve(t)
	fresh := scrapeMetrics(t, admin, srv.URL+"/metrics")
	if v, ok := fresh.Value("devpki_certificates_expiring", "within", "30d"); !ok || v != 1 {
		t.Errorf("devpki_certificates_expiring{within=30d} = %v (%v), want 1", v, ok)
	}
	if v, ok := fresh.Value("devpki_certificates_expiring", "within", "7d"); !ok || v != 0 {
		t.Errorf("devpki_certificates_expiring{within=7d} = %v (%v), want 0", v, ok)
	}
	ca.auditVerify(t)
}

// TestMetricsDisabledAndBadConfig: metrics.enabled false serves no
// /metrics; a bad metrics_listen and a metrics_listen with metrics
// disabled are refused at start with what to fix.
func TestMetricsDisabledAndBadConfig(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	res := run(t, nil, caBin, "serve", "--config", ca.Config, "--metrics-listen", "not-an-address")
	if res.code != 2 || !strings.Contains(res.stderr, `metrics_listen: "not-an-address" is not host:port`) {
		t.Errorf("bad --metrics-listen: %s", res)
	}
	f, err := os.OpenFile(ca.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("metrics:\n  enabled: false\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	res = run(t, nil, caBin, "serve", "--config", ca.Config, "--metrics-listen", "127.0.0.1:0")
	if res.code != 2 || !strings.Contains(res.stderr, "metrics.enabled is false") {
		t.Errorf("--metrics-listen with metrics disabled: %s", res)
	}
	srv := ca.serve(t)
	if status, b := get(t, ca.adminHTTPClient(t), srv.URL+"/metrics"); status != http.StatusNotFound {
		t.Errorf("GET /metrics with metrics disabled: %d %s, want 404", status, b)
	}
	ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, filepath.Join(t.TempDir(), "d"), "E2E-MET-OFF")
}
