package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/pki"
	"devpki/pkg/pki/mtls"
	"devpki/pkg/pki/pkitest"
)

func writeFile(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func tlsCert(is *pki.Issued, key crypto.Signer) tls.Certificate {
	tc := tls.Certificate{PrivateKey: key}
	for _, c := range append([]*x509.Certificate{is.Certificate}, is.Chain...) {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// TestIngest runs the component against a test CA: a device is answered
// with its identity; no certificate, another CA's device and a revoked
// device are refused.
func TestIngest(t *testing.T) {
	ca := pkitest.NewCA(t)
	dir := t.TempDir()
	pw := []byte("server-key-pw")

	skey := newKey(t)
	sis, err := ca.Issuer.IssueServer(context.Background(), &pki.ServerRequest{
		PublicKey: skey.Public(), DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1).To4()},
	})
	if err != nil {
		t.Fatal(err)
	}
	blk, err := pemutil.Serialize(skey, pemutil.WithPassword(pw), pemutil.WithPKCS8(true))
	if err != nil {
		t.Fatal(err)
	}
	root := writeFile(t, filepath.Join(dir, "root.crt"), pemCerts(ca.CA.Root))
	certFile := writeFile(t, filepath.Join(dir, "server.crt"), pemCerts(append([]*x509.Certificate{sis.Certificate}, sis.Chain...)...))
	keyFile := writeFile(t, filepath.Join(dir, "server.key"), pem.EncodeToMemory(blk))
	pwFile := writeFile(t, filepath.Join(dir, "pw"), append(pw, '\n'))

	device := func(ca *pkitest.TestCA, serial string) (tls.Certificate, *x509.Certificate) {
		k := newKey(t)
		is := ca.IssueDevice(t, pki.Identity{DeviceID: "dev-" + serial, Tenant: "acme", Serial: serial}, k)
		return tlsCert(is, k), is.Certificate
	}
	good, goodCert := device(ca, "SN-GOOD")
	revoked, revokedCert := device(ca, "SN-REVOKED")
	foreign, _ := device(pkitest.NewCA(t), "SN-GOOD")

	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revokedCert.SerialNumber, RevocationTime: time.Now()}},
	}, ca.CA.Intermediate, ca.CA.Signer)
	if err != nil {
		t.Fatal(err)
	}
	crlSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(crl) }))
	defer crlSrv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var logs bytes.Buffer
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"--listen", "127.0.0.1:0", "--root", root, "--cert", certFile, "--key", keyFile,
			"--key-password-file", pwFile, "--crl-url", crlSrv.URL + "/crl", "--crl-refresh", "2s",
			"--trust-domain", pkitest.TrustDomain}, &logs, func(a string) { addrc <- a })
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("run: %v", err)
	}
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	post := func(certs ...tls.Certificate) (*http.Response, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Roots(), Certificates: certs}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		return c.Post("https://"+addr+"/v1/ingest", "application/json", strings.NewReader(`{"temp":21.5}`))
	}

	resp, err := post(good)
	if err != nil {
		t.Fatalf("device refused: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var id mtls.Identity
	if err := json.Unmarshal(body, &id); err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	if id.Role != mtls.RoleDevice || id.Tenant != "acme" || id.Serial != "SN-GOOD" || id.DeviceID != "dev-SN-GOOD" ||
		id.CertSerial != goodCert.SerialNumber.Text(16) {
		t.Errorf("identity %+v", id)
	}

	for name, certs := range map[string][]tls.Certificate{
		"no certificate": nil, "another CA": {foreign}, "revoked": {revoked},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := post(certs...)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("accepted with status %d", resp.StatusCode)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--root", "x"}, &out, nil); err == nil || !strings.Contains(err.Error(), "--cert") || !strings.Contains(out.String(), "-key-password-file") {
		t.Fatalf("err %v, output %q", err, out.String())
	}
}
