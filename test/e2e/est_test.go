package e2e

import (
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// estclientBin is GlobalSign's EST client (github.com/globalsign/est,
// pinned in test/interop/est), built once by estClient.
var (
	estclientOnce sync.Once
	estclientBin  string
	estclientErr  error
)

// estClient builds GlobalSign's estclient from the module pinned in
// test/interop/est (a module of its own: its dependencies are old).
func estClient(t *testing.T) string {
	t.Helper()
	estclientOnce.Do(func() {
		dir, err := os.MkdirTemp("", "devpki-e2e-estclient-")
		if err != nil {
			estclientErr = err
			return
		}
		estclientBin = filepath.Join(dir, "estclient")
		out, err := exec.Command("go", "-C", "../interop/est", "build", "-o", estclientBin,
			"github.com/globalsign/est/cmd/estclient").CombinedOutput()
		if err != nil {
			estclientErr = err
			estclientBin = string(out)
		}
	})
	if estclientErr != nil {
		t.Fatalf("build estclient: %v\n%s", estclientErr, estclientBin)
	}
	return estclientBin
}

// sh runs a shell pipeline in dir (curl and openssl), requires exit 0 and
// returns its stdout.
func sh(t *testing.T, dir, script string) string {
	t.Helper()
	res := run(t, nil, "/bin/sh", "-c", "cd "+dir+" && set -e\n"+script)
	if res.code != 0 {
		t.Fatalf("sh: %s\n%s", script, res)
	}
	return res.stdout
}

// estMAC is the MAC URN of the test device with serial.
func estMAC(serial string) string {
	return "urn:dev:mac:" + strings.ReplaceAll(macFor(serial), ":", "")
}

// TestESTCurlOpenSSL: EST with nothing but curl and openssl, as a router's
// firmware would: cacerts (a base64 PKCS#7 openssl reads), simpleenroll
// with the bootstrap token as the HTTP Basic password and an openssl-made
// key and CSR (serialNumber, MAC URI SAN), simplereenroll with the new
// certificate alone over mTLS and a new key, 'ca devices revoke', then a
// re-enrollment refused with a readable reason; the token is spent once and
// the audit chain verifies.
func TestESTCurlOpenSSL(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (test/run.sh installs it): %v", tool, err)
		}
	}
	ca := initCA(t)
	srv := ca.serve(t)
	dir := t.TempDir()
	root := filepath.Join(ca.Dir, "root.crt")
	est := srv.URL + "/.well-known/est"
	const serial = "E2E-EST-CURL"
	tok := ca.mintToken(t, srv)

	// cacerts: the intermediate and the root, read by openssl.
	out := sh(t, dir, `curl -sS --fail-with-body --cacert `+root+` -o cacerts.b64 `+est+`/cacerts
openssl base64 -d -in cacerts.b64 | openssl pkcs7 -inform DER -print_certs -out cacerts.pem
grep -c 'BEGIN CERTIFICATE' cacerts.pem`)
	if strings.TrimSpace(out) != "2" {
		t.Fatalf("cacerts: %s certificates, want the intermediate and the root", out)
	}
	got := readCerts(t, filepath.Join(dir, "cacerts.pem"))
	if fingerprint(got[1]) != ca.Fingerprint {
		t.Errorf("cacerts: the last certificate is %s, not the root %s", got[1].Subject, ca.Fingerprint)
	}

	// simpleenroll: openssl key and CSR, the token as the Basic password.
	code := sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key 2>/dev/null
openssl req -new -key dev.key -subj /serialNumber=`+serial+` -addext subjectAltName=URI:`+estMAC(serial)+` -outform DER -out dev.csr
openssl base64 -in dev.csr -out dev.csr.b64
curl -sS --cacert `+root+` -u device:`+tok.Token+` -H 'Content-Type: application/pkcs10' --data-binary @dev.csr.b64 \
  -o dev.p7.b64 -w '%{http_code}' `+est+`/simpleenroll`)
	if code != "200" {
		b, _ := os.ReadFile(filepath.Join(dir, "dev.p7.b64"))
		t.Fatalf("simpleenroll: HTTP %s: %s", code, b)
	}
	sh(t, dir, `openssl base64 -d -in dev.p7.b64 | openssl pkcs7 -inform DER -print_certs -out dev.crt`)
	cert := readCert(t, filepath.Join(dir, "dev.crt"))
	if cert.Subject.SerialNumber != serial || len(cert.URIs) != 2 || cert.URIs[1].String() != estMAC(serial) {
		t.Fatalf("issued certificate: %s %v", cert.Subject, cert.URIs)
	}
	verifyChain(t, cert, got)
	sh(t, dir, `openssl verify -CAfile `+root+` -untrusted cacerts.pem dev.crt`)
	db := ca.openSQL(t)
	if n := usesLeft(t, db, tok.ID); n != 0 {
		t.Errorf("token uses left %d, want 0", n)
	}

	// The spent token again, for another device: 401, a readable reason.
	out = sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key 2>/dev/null
openssl req -new -key other.key -subj /serialNumber=E2E-EST-OTHER -addext subjectAltName=URI:`+estMAC("E2E-EST-OTHER")+` -outform DER -out other.csr
openssl base64 -in other.csr -out other.csr.b64
curl -sS --cacert `+root+` -u device:`+tok.Token+` -H 'Content-Type: application/pkcs10' --data-binary @other.csr.b64 \
  -D - `+est+`/simpleenroll`)
	if !strings.Contains(out, " 401") || !strings.Contains(strings.ToLower(out), `www-authenticate: basic realm="devpki est"`) ||
		!strings.Contains(out, "\ntoken-spent: ") {
		t.Errorf("spent token: %s", out)
	}

	// simplereenroll: the new certificate alone (no chain) over mTLS, a new key.
	code = sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev2.key 2>/dev/null
openssl req -new -key dev2.key -subj /serialNumber=`+serial+` -addext subjectAltName=URI:`+estMAC(serial)+` -outform DER -out dev2.csr
openssl base64 -in dev2.csr -out dev2.csr.b64
curl -sS --cacert `+root+` --cert dev.crt --key dev.key -H 'Content-Type: application/pkcs10' --data-binary @dev2.csr.b64 \
  -o dev2.p7.b64 -w '%{http_code}' `+est+`/simplereenroll`)
	if code != "200" {
		b, _ := os.ReadFile(filepath.Join(dir, "dev2.p7.b64"))
		t.Fatalf("simplereenroll: HTTP %s: %s", code, b)
	}
	sh(t, dir, `openssl base64 -d -in dev2.p7.b64 | openssl pkcs7 -inform DER -print_certs -out dev2.crt`)
	cert2 := readCert(t, filepath.Join(dir, "dev2.crt"))
	if cert2.Subject.CommonName != cert.Subject.CommonName || cert2.Subject.SerialNumber != serial ||
		cert2.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Fatalf("re-enrolled certificate: %s (serial %x), was %s", cert2.Subject, cert2.SerialNumber, cert.Subject)
	}
	verifyChain(t, cert2, got)

	// The superseded certificate: asking again for the same new key is a
	// lost answer, sent again; any other key is refused.
	sh(t, dir, `curl -sS --fail-with-body --cacert `+root+` --cert dev.crt --key dev.key -H 'Content-Type: application/pkcs10' \
  --data-binary @dev2.csr.b64 -o again.p7.b64 `+est+`/simplereenroll
openssl base64 -d -in again.p7.b64 | openssl pkcs7 -inform DER -print_certs -out again.crt`)
	if !readCert(t, filepath.Join(dir, "again.crt")).Equal(cert2) {
		t.Error("superseded certificate, same new key: not the renewal's certificate")
	}
	out = sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev3.key 2>/dev/null
openssl req -new -key dev3.key -subj /serialNumber=`+serial+` -addext subjectAltName=URI:`+estMAC(serial)+` -outform DER -out dev3.csr
openssl base64 -in dev3.csr -out dev3.csr.b64
curl -sS --cacert `+root+` --cert dev.crt --key dev.key -H 'Content-Type: application/pkcs10' \
  --data-binary @dev3.csr.b64 -w ' HTTP %{http_code}' `+est+`/simplereenroll`)
	if !strings.HasSuffix(out, " HTTP 403") || !strings.HasPrefix(out, "not-renewable: ") {
		t.Errorf("superseded certificate: %s", out)
	}

	// Revoke the device: its current certificate is refused.
	mustRun(t, nil, caBin, "devices", "revoke", cert.Subject.CommonName, "--reason", "keyCompromise", "--config", ca.Config, "--ca", srv.URL)
	out = sh(t, dir, `curl -sS --cacert `+root+` --cert dev2.crt --key dev2.key -H 'Content-Type: application/pkcs10' \
  --data-binary @dev3.csr.b64 -w ' HTTP %{http_code}' `+est+`/simplereenroll`)
	if !strings.HasSuffix(out, " HTTP 403") || !strings.Contains(out, "revoked") {
		t.Errorf("revoked certificate: %s", out)
	}
	ca.auditVerify(t)
}

// TestESTGlobalSignClient: GlobalSign's estclient (a third-party RFC 7030
// client) against the real CA: cacerts with the root pinned as its
// explicit anchor, csrattrs, enroll with its own CSR (-sn and -uris give
// our serialNumber and MAC URI) and the token as the Basic password, at
// the tenant's label, then reenroll with the issued certificate (its CSR
// repeats the certificate's subject and SAN, RFC 7030 §4.2.2).
func TestESTGlobalSignClient(t *testing.T) {
	t.Parallel()
	estclient := estClient(t)
	ca := initCA(t)
	srv := ca.serve(t)
	dir := t.TempDir()
	root := filepath.Join(ca.Dir, "root.crt")
	host := strings.TrimPrefix(srv.URL, "https://")
	common := []string{"-server", host, "-explicit", root}
	const serial = "E2E-EST-GLOBALSIGN"

	mustRun(t, nil, estclient, append([]string{"cacerts", "-out", filepath.Join(dir, "cacerts.pem")}, common...)...)
	chain := readCerts(t, filepath.Join(dir, "cacerts.pem"))
	if len(chain) != 2 || fingerprint(chain[1]) != ca.Fingerprint {
		t.Fatalf("estclient cacerts: %d certificates", len(chain))
	}
	res := mustRun(t, nil, estclient, append([]string{"csrattrs"}, common...)...)
	for _, want := range []string{"OID     : 2.5.4.5", "OID     : 1.2.840.10045.4.3.2",
		"Type    : 1.2.840.113549.1.9.14\n Value  : 2.5.29.17", "Type    : 1.2.840.10045.2.1\n Value  : 1.2.840.10045.3.1.7"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("estclient csrattrs: no %q in\n%s", want, res.stdout)
		}
	}

	// enroll: estclient makes the CSR with the openssl-made key.
	key := filepath.Join(dir, "dev.key")
	sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key 2>/dev/null`)
	tok := ca.mintToken(t, srv, "--serial", serial)
	crt := filepath.Join(dir, "dev.crt")
	mustRun(t, nil, estclient, append([]string{"enroll", "-aps", "default", "-key", key, "-sn", serial, "-uris", estMAC(serial),
		"-user", "estclient", "-pass", tok.Token, "-out", crt}, common...)...)
	cert := readCert(t, crt)
	if cert.Subject.SerialNumber != serial || len(cert.URIs) != 2 || cert.URIs[1].String() != estMAC(serial) {
		t.Fatalf("estclient enroll: %s %v", cert.Subject, cert.URIs)
	}
	verifyChain(t, cert, chain)

	// The spent token with the same key: the answer was lost, the same
	// certificate is sent again. With another key: refused, and estclient
	// shows the server's reason.
	again := filepath.Join(dir, "again.crt")
	mustRun(t, nil, estclient, append([]string{"enroll", "-key", key, "-sn", serial, "-uris", estMAC(serial),
		"-user", "estclient", "-pass", tok.Token, "-out", again}, common...)...)
	if !readCert(t, again).Equal(cert) {
		t.Errorf("estclient enroll again with the same key and token: another certificate")
	}
	sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out other.key 2>/dev/null`)
	res = run(t, nil, estclient, append([]string{"enroll", "-key", filepath.Join(dir, "other.key"), "-sn", serial, "-uris", estMAC(serial),
		"-user", "estclient", "-pass", tok.Token, "-out", filepath.Join(dir, "other.crt")}, common...)...)
	if res.code == 0 || !strings.Contains(res.stderr, "token-spent: ") {
		t.Errorf("estclient enroll with a spent token and another key: %s", res)
	}

	// reenroll: the issued certificate over mTLS, estclient's own CSR.
	crt2 := filepath.Join(dir, "dev2.crt")
	mustRun(t, nil, estclient, append([]string{"reenroll", "-key", key, "-certs", crt, "-out", crt2}, common...)...)
	cert2 := readCert(t, crt2)
	if cert2.Subject.String() != cert.Subject.String() || cert2.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Fatalf("estclient reenroll: %s (serial %x), was %s", cert2.Subject, cert2.SerialNumber, cert.Subject)
	}
	verifyChain(t, cert2, chain)

	// reenroll with a new key: an openssl-made key and CSR (-csr), the
	// current certificate and its key for mTLS.
	sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev3.key 2>/dev/null
openssl req -new -key dev3.key -subj /serialNumber=`+serial+` -addext subjectAltName=URI:`+estMAC(serial)+` -out dev3.csr`)
	crt3 := filepath.Join(dir, "dev3.crt")
	mustRun(t, nil, estclient, append([]string{"reenroll", "-key", key, "-certs", crt2, "-csr", filepath.Join(dir, "dev3.csr"),
		"-out", crt3}, common...)...)
	cert3 := readCert(t, crt3)
	csr3 := sh(t, dir, `openssl req -in dev3.csr -noout -pubkey`)
	pub3 := sh(t, dir, `openssl x509 -in dev3.crt -noout -pubkey`)
	if cert3.Subject.String() != cert.Subject.String() || csr3 != pub3 {
		t.Fatalf("estclient reenroll with a new key: %s, key %q, want %q", cert3.Subject, pub3, csr3)
	}

	// serverkeygen is not offered: a clear 501.
	res = run(t, nil, estclient, append([]string{"serverkeygen", "-key", key, "-sn", serial, "-uris", estMAC(serial),
		"-user", "estclient", "-pass", "x", "-out", filepath.Join(dir, "skg.crt")}, common...)...)
	if res.code == 0 || !strings.Contains(res.stderr, "not-implemented: ") {
		t.Errorf("estclient serverkeygen: %s", res)
	}
	ca.auditVerify(t)
}

// verifyChain verifies a device certificate for client authentication with
// chain (intermediate, root) from cacerts.
func verifyChain(t *testing.T, cert *x509.Certificate, chain []*x509.Certificate) {
	t.Helper()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	for _, c := range chain[:len(chain)-1] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate %s does not verify to the cacerts root: %v", cert.Subject, err)
	}
}
