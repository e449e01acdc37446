package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"
)

// component is a running examples/ingest: the sample service every fleet
// component is, accepting only mTLS clients of this CA that are not revoked.
type component struct {
	URL    string
	stderr *syncBuffer
}

// startComponent issues the component a server certificate with 'ca issue'
// and runs it, checking revocation against the CA's CRL every second.
func startComponent(t *testing.T, ca *testCA, srv *server) *component {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name string, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("ingest.key", "PRIVATE KEY", keyDER)
	csrFile := write("ingest.csr", "CERTIFICATE REQUEST", csr)
	certFile := filepath.Join(dir, "ingest.crt")
	mustRun(t, nil, caBin, "issue", "--config", ca.Config, "--ca", srv.URL, "--csr", csrFile,
		"--server", "--dns", "localhost", "--ip", "127.0.0.1", "--out", certFile)

	addr := freePort(t)
	c := &component{URL: "https://" + addr, stderr: &syncBuffer{}}
	cmd := exec.Command(ingestBin, "--listen", addr, "--root", filepath.Join(ca.Dir, "root.crt"),
		"--cert", certFile, "--key", keyFile, "--crl-url", srv.URL+"/crl", "--crl-refresh", "1s")
	cmd.Env = cleanEnv()
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("ingest stderr:\n%s", c.stderr.String())
		}
	})
	deadline := time.Now().Add(startTimeout)
	for !strings.Contains(c.stderr.String(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("ingest did not start:\n%s", c.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// deviceClient is an HTTP client presenting the device identity in dir, with
// a TLS session cache (so later connections resume) and a new connection
// per request.
func deviceClient(t *testing.T, dir string) *http.Client {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(dir, "device.key.password"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pemutil.Read(filepath.Join(dir, "device.key"), pemutil.WithPassword(bytes.TrimSpace(pw)))
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: key}
	for _, f := range []string{"device.crt", "chain.pem"} {
		for _, c := range readCerts(t, filepath.Join(dir, f)) {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "root.crt")))
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{
			RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(8),
		},
	}}
}

// ingest posts to the component and returns the identity it saw, whether the
// connection resumed a TLS session, or the error.
func (c *component) ingest(hc *http.Client) (map[string]any, bool, error) {
	resp, err := hc.Post(c.URL+"/v1/ingest", "application/json", strings.NewReader(`{"reading":1}`))
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, false, &httpError{resp.StatusCode, string(b)}
	}
	var id map[string]any
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, false, err
	}
	return id, resp.TLS != nil && resp.TLS.DidResume, nil
}

type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return http.StatusText(e.code) + ": " + e.body }

// TestLifecycleEndToEnd: a device enrolls and talks to a component over mTLS;
// an admin revokes it and the component refuses it — on a resumed TLS
// session too — within its CRL refresh bound; its renewal is refused; the
// CRL and OCSP say revoked. A second device is rotated: its renewal with the
// old key is refused, it re-keys by itself, and the component accepts the
// new certificate without a restart.
func TestLifecycleEndToEnd(t *testing.T) {
	t.Parallel()
	addr := freePort(t)
	ca := initCAAt(t, addr)
	srv, err := tryStartServer(t, addr, []string{"--config", ca.Config})
	if err != nil {
		t.Fatalf("ca serve: %v", err)
	}
	comp := startComponent(t, ca, srv)

	dirA := filepath.Join(t.TempDir(), "a")
	idA := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dirA, "E2E-LIFE-A")
	certA := readCert(t, filepath.Join(dirA, "device.crt"))
	hcA := deviceClient(t, dirA)
	id, _, err := comp.ingest(hcA)
	if err != nil || id["device_id"] != idA || id["serial"] != "E2E-LIFE-A" {
		t.Fatalf("component refused or misread an enrolled device: %v %v", id, err)
	}
	if _, resumed, err := comp.ingest(hcA); err != nil || !resumed {
		t.Fatalf("second connection: err %v, resumed %v; want a resumed session", err, resumed)
	}

	mustRun(t, nil, caBin, "devices", "revoke", idA, "--reason", "keyCompromise", "--config", ca.Config, "--ca", srv.URL)
	acked := time.Now()
	var refusedAfter time.Duration
	for {
		if _, _, err := comp.ingest(hcA); err != nil {
			refusedAfter = time.Since(acked)
			break
		}
		if time.Since(acked) > 20*time.Second {
			t.Fatal("the component still accepts the revoked device (resumed session) 20s after the revocation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("revocation acknowledged -> refused by the component in %s (CRL refresh every 1s)", refusedAfter.Round(time.Millisecond))
	// A fresh full handshake is refused too.
	if _, _, err := comp.ingest(deviceClient(t, dirA)); err == nil {
		t.Fatal("a full handshake of the revoked device was accepted")
	}

	res := run(t, nil, enrollBin, "renew", "--dir", dirA)
	if res.code != 1 || !strings.Contains(res.stderr, "403") {
		t.Fatalf("renewal of a revoked device: want exit 1 with a 403, got %s", res)
	}

	crlDER := httpGet(t, srv, "/crl")
	rl, err := x509.ParseRevocationList(crlDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(readCert(t, filepath.Join(ca.Dir, "intermediate.crt"))); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	onCRL := false
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(certA.SerialNumber) == 0 {
			onCRL = e.ReasonCode == 1
		}
	}
	if !onCRL {
		t.Fatal("the CRL does not list the revoked certificate with reason keyCompromise")
	}
	status := mustRun(t, nil, enrollBin, "status", "--dir", dirA)
	if !strings.Contains(status.stdout, "ocsp:        REVOKED") {
		t.Fatalf("OCSP status of the revoked device:\n%s", status.stdout)
	}

	// Rotation.
	dirB := filepath.Join(t.TempDir(), "b")
	idB := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dirB, "E2E-LIFE-B")
	certB := readCert(t, filepath.Join(dirB, "device.crt"))
	if _, _, err := comp.ingest(deviceClient(t, dirB)); err != nil {
		t.Fatal(err)
	}
	mustRun(t, nil, caBin, "devices", "rotate", idB, "--deadline", "72h", "--config", ca.Config, "--ca", srv.URL)
	out := mustRun(t, nil, enrollBin, "renew", "--dir", dirB)
	if !strings.Contains(out.stderr, "the CA requires a new key") {
		t.Fatalf("renew after rotate did not meet the refusal of the old key:\n%s", out)
	}
	newB := readCert(t, filepath.Join(dirB, "device.crt"))
	if samePub(certB, newB) {
		t.Fatal("the rotated device kept its key")
	}
	id, _, err = comp.ingest(deviceClient(t, dirB))
	if err != nil || id["cert_serial"] != newB.SerialNumber.Text(16) {
		t.Fatalf("component with the re-keyed certificate: %v %v", id, err)
	}
	dev := mustRun(t, nil, caBin, "devices", "get", idB, "--config", ca.Config, "--ca", srv.URL)
	if strings.Contains(dev.stdout, "re-key:   required") {
		t.Fatalf("rotate flag still set after the re-key:\n%s", dev.stdout)
	}
	// The listing commands, as an operator's scripts would use them.
	admin := func(args ...string) result {
		return mustRun(t, nil, caBin, append(args, "--config", ca.Config, "--ca", srv.URL)...)
	}
	var devs struct {
		Devices []struct{ ID, Status string } `json:"devices"`
	}
	if err := json.Unmarshal([]byte(admin("devices", "list", "--status", "revoked", "--output", "json").stdout), &devs); err != nil ||
		len(devs.Devices) != 1 || devs.Devices[0].ID != idA {
		t.Fatalf("devices list --status revoked: %+v, %v", devs, err)
	}
	var certs struct {
		Certificates []struct{ Serial, Status string } `json:"certificates"`
	}
	if err := json.Unmarshal([]byte(admin("certs", "list", "--device", idB, "--output", "json").stdout), &certs); err != nil || len(certs.Certificates) != 2 {
		t.Fatalf("certs list --device: %+v, %v", certs, err)
	}
	admin("certs", "revoke", certB.SerialNumber.Text(16), "--reason", "superseded")
	if out := admin("certs", "list", "--device", idB, "--status", "revoked").stdout; !strings.Contains(out, certB.SerialNumber.Text(16)) {
		t.Fatalf("certs list --status revoked lacks the revoked serial:\n%s", out)
	}
	audit := mustRun(t, nil, caBin, "audit", "list", "--limit", "1000", "--config", ca.Config, "--ca", srv.URL)
	for _, want := range []string{"device.revoke", "device.rotate", "rekey", "renew"} {
		if !strings.Contains(audit.stdout, want) {
			t.Errorf("audit list lacks %q", want)
		}
	}
	ca.auditVerify(t)
}

// initCAAt is initCA with the CA's URL (and so its CRL and OCSP URLs) on addr.
func initCAAt(t *testing.T, addr string) *testCA {
	t.Helper()
	base := t.TempDir()
	pw := filepath.Join(base, "pw")
	if err := os.WriteFile(pw, []byte(testPassphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "ca")
	res := mustRun(t, nil, caBin, "init", "--dir", dir, "--password-file", pw, "--ip", "127.0.0.1", "--listen", addr)
	return &testCA{Dir: dir, Config: filepath.Join(dir, "ca.yaml"), Fingerprint: strings.TrimSpace(res.stdout), DB: filepath.Join(dir, "registry.db")}
}

func httpGet(t *testing.T, srv *server, path string) []byte {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the CRL is checked by its signature
	}}).Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return b
}
