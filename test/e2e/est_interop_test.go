package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/tpm/swtpmtest"
)

// estTarget is an EST server for `enroll --protocol est`: its base URL
// (https://host:port), the optional label (/.well-known/est/<label>/), the
// SHA-256 fingerprint of its root, and a bootstrap token it accepts (sent as
// the HTTP Basic password, the serial as user name). Any RFC 7030 server
// fits: GlobalSign's estserver here, devpki's own `ca serve` later.
type estTarget struct {
	URL, Label, Fingerprint, Token string
}

// estEnroll runs `enroll --protocol est` against tgt for a new device with
// serial and its own MAC in dir, requires exit 0, and returns the
// certificate it saved. extra are further enroll flags (--tpm ...).
func estEnroll(t *testing.T, tgt estTarget, dir, serial string, extra ...string) *x509.Certificate {
	t.Helper()
	args := []string{"--protocol", "est", "--ca", tgt.URL, "--fingerprint", tgt.Fingerprint, "--token", tgt.Token,
		"--dir", dir, "--serial", serial, "--mac", macFor(serial), "--tpm", "none", "--timeout", "30s"}
	if tgt.Label != "" {
		args = append(args, "--est-label", tgt.Label)
	}
	res := mustRun(t, nil, enrollBin, append(args, extra...)...)
	if !strings.Contains(res.stdout, "enrolled device ") {
		t.Fatalf("enroll --protocol est: exit 0 but no 'enrolled device':\n%s", res)
	}
	cert := readCert(t, filepath.Join(dir, "device.crt"))
	if cert.Subject.SerialNumber != serial {
		t.Fatalf("certificate subject %s, want serialNumber %s", cert.Subject, serial)
	}
	if got := fingerprint(readCert(t, filepath.Join(dir, "root.crt"))); got != tgt.Fingerprint {
		t.Fatalf("root.crt fingerprint %s, want the pinned %s", got, tgt.Fingerprint)
	}
	var ci struct {
		Protocol string `json:"protocol"`
		Label    string `json:"est_label"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "ca.json"))
	if err != nil || json.Unmarshal(b, &ci) != nil || ci.Protocol != "est" || ci.Label != tgt.Label {
		t.Fatalf("ca.json = %s (%v), want protocol est, label %q", b, err, tgt.Label)
	}
	st := mustRun(t, nil, enrollBin, "status", "--dir", dir)
	if !strings.Contains(st.stdout, "protocol:    est (RFC 7030) at "+tgt.URL) {
		t.Fatalf("enroll status does not show the EST protocol:\n%s", st)
	}
	return cert
}

// estRenew runs `enroll renew` (or `enroll rekey`) on an EST-enrolled dir
// and returns the new certificate, checked to replace prev with the same
// subject and SANs, and the same key unless rekey.
func estRenew(t *testing.T, dir string, prev *x509.Certificate, rekey bool) *x509.Certificate {
	t.Helper()
	cmd := "renew"
	if rekey {
		cmd = "rekey"
	}
	mustRun(t, nil, enrollBin, cmd, "--dir", dir, "--timeout", "30s")
	cert := readCert(t, filepath.Join(dir, "device.crt"))
	if cert.SerialNumber.Cmp(prev.SerialNumber) == 0 {
		t.Fatalf("enroll %s: device.crt not replaced", cmd)
	}
	if cert.Subject.String() != prev.Subject.String() || len(cert.URIs) != len(prev.URIs) {
		t.Fatalf("enroll %s: identity changed: %s %v -> %s %v", cmd, prev.Subject, prev.URIs, cert.Subject, cert.URIs)
	}
	if samePub(cert, prev) == rekey {
		t.Fatalf("enroll %s: same key = %v", cmd, !rekey)
	}
	prevCert := readCert(t, filepath.Join(dir, "device.crt.prev"))
	if !prevCert.Equal(prev) {
		t.Fatalf("enroll %s: device.crt.prev is not the previous certificate", cmd)
	}
	return cert
}

// TestESTInteropGlobalSign runs the real enroll against a third-party EST
// server, GlobalSign's estserver v1.0.6 (test/interop/est) with its mock CA
// on a root → intermediate hierarchy made here: enroll --protocol est (root
// pinned by fingerprint), renew and re-key over simplereenroll, a second
// device under a label, a device with its key in swtpm, a wrong fingerprint
// refused with nothing written, and the issued chain checked by openssl.
func TestESTInteropGlobalSign(t *testing.T) {
	if testing.Short() {
		t.Skip("builds GlobalSign's estserver")
	}
	srv := startGlobalSignEST(t)
	tgt := estTarget{URL: srv.URL, Fingerprint: fingerprint(srv.Root), Token: "interop-token-not-checked"}

	dir := filepath.Join(t.TempDir(), "dev1")
	first := estEnroll(t, tgt, dir, "SN-EST-1")
	if !bytes.Equal(first.RawIssuer, srv.Inter.RawSubject) {
		t.Fatalf("device certificate issued by %s, want the mock CA's %s", first.Issuer, srv.Inter.Subject)
	}
	if len(first.URIs) != 1 || first.URIs[0].String() != "urn:dev:mac:"+strings.ReplaceAll(macFor("SN-EST-1"), ":", "") {
		t.Fatalf("certificate SANs %v, want the MAC URI of the CSR", first.URIs)
	}
	if out, err := exec.Command("openssl", "verify", "-purpose", "sslclient", "-CAfile", filepath.Join(dir, "root.crt"),
		"-untrusted", filepath.Join(dir, "chain.pem"), filepath.Join(dir, "device.crt")).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	renewed := estRenew(t, dir, first, false)
	estRenew(t, dir, renewed, true)

	// A second device under a label (the mock CA serves every label).
	tgt.Label = "devices"
	estEnroll(t, tgt, filepath.Join(t.TempDir(), "dev2"), "SN-EST-2")

	// A device whose key is in a TPM (swtpm): the CSR and the TLS
	// handshake of simplereenroll are signed there.
	sw := swtpmtest.Start(t)
	tpmDir := filepath.Join(t.TempDir(), "dev-tpm")
	tpmCert := estEnroll(t, tgt, tpmDir, "SN-EST-TPM", "--tpm", sw.Spec())
	if st := mustRun(t, nil, enrollBin, "status", "--dir", tpmDir); !strings.Contains(st.stdout, "key:         TPM (") {
		t.Fatalf("the EST-enrolled key is not in the TPM:\n%s", st)
	}
	requireNoFile(t, filepath.Join(tpmDir, "device.key.password"))
	tpmCert = estRenew(t, tpmDir, tpmCert, false)
	estRenew(t, tpmDir, tpmCert, true)

	// A wrong pin: refused, nothing written.
	bad := filepath.Join(t.TempDir(), "dev3")
	other := newTestHierarchy(t, "Other")
	res := run(t, nil, enrollBin, "--protocol", "est", "--ca", srv.URL, "--fingerprint", fingerprint(other.root),
		"--token", "x", "--dir", bad, "--serial", "SN-EST-3", "--mac", macFor("SN-EST-3"), "--tpm", "none")
	if res.code != 1 || !strings.Contains(res.stderr, "none of its 2 certificate(s)") {
		t.Fatalf("wrong fingerprint: want exit 1 naming the bundle, got %s", res)
	}
	requireNoFile(t, bad)
}

// globalSignEST is a running GlobalSign estserver.
type globalSignEST struct {
	URL         string
	Root, Inter *x509.Certificate
}

// startGlobalSignEST builds estserver from test/interop/est, gives its mock
// CA an intermediate of a fresh root, its TLS a certificate for 127.0.0.1
// from that intermediate and the root as client CA (simplereenroll's TLS
// client certificates), starts it on a free loopback port and waits for
// cacerts to answer. It is killed at the end of the test.
func startGlobalSignEST(t *testing.T) *globalSignEST {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "estserver")
	build := exec.Command("go", "-C", filepath.Join("..", "interop", "est"), "build", "-o", bin, "github.com/globalsign/est/cmd/estserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build GlobalSign estserver: %v\n%s", err, out)
	}

	h := newTestHierarchy(t, "Interop")
	tlsKey := newECKey(t)
	tlsCert := h.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "estserver"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, tlsKey.Public())
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	addr := freePort(t)
	cfg := map[string]any{
		"mock_ca": map[string]any{
			"certificates": write("ca.pem", pemOf(h.inter, h.root)), // issuing CA first, root last
			"private_key":  write("ca.key", keyPEM(t, h.interKey)),
		},
		"tls": map[string]any{
			"listen_address": addr,
			"certificates":   write("tls.pem", pemOf(tlsCert, h.inter)),
			"private_key":    write("tls.key", keyPEM(t, tlsKey)),
			"client_cas":     []string{write("client-ca.pem", pemOf(h.root))},
		},
		"healthcheck_password": "unused",
		"timeout":              30,
	}
	b, _ := json.Marshal(cfg)
	cfgPath := write("estserver.json", b)

	var stderr syncBuffer
	cmd := exec.Command(bin, "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("estserver log:\n%s", stderr.String())
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(h.root)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + addr
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("estserver exited:\n%s", stderr.String())
		default:
		}
		resp, err := hc.Get(url + "/.well-known/est/cacerts")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
			err = &net.AddrError{Err: resp.Status, Addr: addr}
		}
		if time.Now().After(deadline) {
			t.Fatalf("estserver not ready after %s: %v\n%s", startTimeout, err, stderr.String())
		}
	}
	return &globalSignEST{URL: url, Root: h.root, Inter: h.inter}
}

// testHierarchy is a root and an issuing intermediate, ECDSA P-256.
type testHierarchy struct {
	root, inter *x509.Certificate
	interKey    *ecdsa.PrivateKey
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newTestHierarchy(t *testing.T, name string) *testHierarchy {
	t.Helper()
	rootKey, interKey := newECKey(t), newECKey(t)
	ca := func(cn string, maxPathZero bool) *x509.Certificate {
		return &x509.Certificate{
			Subject: pkix.Name{CommonName: cn, Organization: []string{"devpki interop"}}, IsCA: true,
			BasicConstraintsValid: true, MaxPathLenZero: maxPathZero, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		}
	}
	root := signTemplate(t, ca(name+" Root", false), nil, rootKey.Public(), rootKey)
	inter := signTemplate(t, ca(name+" Intermediate", true), root, interKey.Public(), rootKey)
	return &testHierarchy{root: root, inter: inter, interKey: interKey}
}

func (h *testHierarchy) issue(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	return signTemplate(t, tmpl, h.inter, pub, h.interKey)
}

func signTemplate(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = sn
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func keyPEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
