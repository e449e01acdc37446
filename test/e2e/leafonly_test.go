package e2e

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"devpki/api/wire"
)

// curlMTLS runs curl against url presenting certFile and keyFile, trusting
// only the CA root, and returns the HTTP status and body. A failed TLS
// handshake fails the test.
func curlMTLS(t *testing.T, root, certFile, keyFile, method, url, body string) (int, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "body")
	args := []string{"-sS", "--max-time", "20", "--cacert", root, "--cert", certFile, "--key", keyFile,
		"-X", method, "-o", out, "-w", "%{http_code}", url}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data", body)
	}
	res, err := exec.Command("curl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, res)
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(res)))
	if err != nil {
		t.Fatalf("curl: status %q", res)
	}
	b, _ := os.ReadFile(out)
	t.Logf("$ curl --cert %s %s %s → %d", filepath.Base(certFile), method, url, code)
	return code, string(b)
}

// leafOnly writes the first certificate of the PEM file src (the leaf) to a
// new file and returns its path.
func leafOnly(t *testing.T, src string) string {
	t.Helper()
	certs := readCerts(t, src)
	dst := filepath.Join(t.TempDir(), filepath.Base(src)+".leaf.pem")
	if err := os.WriteFile(dst, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readCerts(t, dst); len(got) != 1 {
		t.Fatalf("%s: %d certificates", dst, len(got))
	}
	return dst
}

// plainKey decrypts an encrypted PEM key with openssl into a temporary
// file (curl cannot prompt for the passphrase).
func plainKey(t *testing.T, src, passin string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "plain.key")
	openssl(t, "pkey", "-in", src, "-passin", passin, "-out", dst)
	return dst
}

// TestLeafOnlyClientsEndToEnd: curl presenting only its leaf certificate
// (no chain) renews a device over POST /v1/renew and reads an admin route
// with the admin certificate; a client certificate of another CA gets 401
// on both, and nothing is issued to it.
func TestLeafOnlyClientsEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	root := filepath.Join(ca.Dir, "root.crt")
	state := filepath.Join(t.TempDir(), "state")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, state, "E2E-LEAF-1")

	devCert := leafOnly(t, filepath.Join(state, "device.crt"))
	devKey := plainKey(t, filepath.Join(state, "device.key"), "file:"+filepath.Join(state, "device.key.password"))
	before := readCert(t, devCert)

	// Renewal with the leaf alone.
	code, body := curlMTLS(t, root, devCert, devKey, "POST", srv.URL+"/v1/renew", "{}")
	if code != 201 {
		t.Fatalf("leaf-only renew: %d %s", code, body)
	}
	var er wire.EnrollResponse
	if err := json.Unmarshal([]byte(body), &er); err != nil {
		t.Fatalf("renew reply: %v\n%s", err, body)
	}
	blk, _ := pem.Decode([]byte(er.Certificate))
	if er.DeviceID != id || blk == nil {
		t.Fatalf("renew reply for %q, want %q: %s", er.DeviceID, id, body)
	}

	// An admin route with the admin's leaf alone (its key is encrypted
	// with the CA passphrase).
	admCert := leafOnly(t, filepath.Join(ca.Dir, "admin.crt"))
	admKey := plainKey(t, filepath.Join(ca.Dir, "admin.key"), "pass:"+testPassphrase)
	code, body = curlMTLS(t, root, admCert, admKey, "GET", srv.URL+"/v1/admin/devices/"+id, "")
	if code != 200 || !strings.Contains(body, id) {
		t.Fatalf("leaf-only admin: %d %s", code, body)
	}

	// A certificate of another CA (made with openssl: root → client leaf
	// with clientAuth, the same subject as the device) is refused with
	// 401 on both, whether or not it sends its chain.
	other := t.TempDir()
	p := func(n string) string { return filepath.Join(other, n) }
	openssl(t, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("ca.key"),
		"-out", p("ca.crt"), "-subj", "/CN=Other CA", "-days", "2",
		"-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	openssl(t, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", p("leaf.key"),
		"-out", p("leaf.csr"), "-subj", "/CN="+id+"/serialNumber=E2E-LEAF-1/O=default")
	if err := os.WriteFile(p("ext.cnf"), []byte("keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openssl(t, "x509", "-req", "-in", p("leaf.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
		"-out", p("leaf.crt"), "-days", "1", "-extfile", p("ext.cnf"))
	full, err := os.ReadFile(p("leaf.crt"))
	if err != nil {
		t.Fatal(err)
	}
	otherCA, _ := os.ReadFile(p("ca.crt"))
	if err := os.WriteFile(p("full.crt"), append(full, otherCA...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cert := range []string{p("leaf.crt"), p("full.crt")} {
		if code, body := curlMTLS(t, root, cert, p("leaf.key"), "POST", srv.URL+"/v1/renew", "{}"); code != 401 {
			t.Errorf("renew with another CA's certificate (%s): %d %s, want 401", filepath.Base(cert), code, body)
		}
		if code, body := curlMTLS(t, root, cert, p("leaf.key"), "GET", srv.URL+"/v1/admin/devices", ""); code != 401 {
			t.Errorf("admin with another CA's certificate (%s): %d %s, want 401", filepath.Base(cert), code, body)
		}
	}
	// The device has exactly its two certificates: the enrolled one and
	// the renewal.
	code, body = curlMTLS(t, root, admCert, admKey, "GET", srv.URL+"/v1/admin/certificates?device="+id, "")
	if code != 200 {
		t.Fatalf("list certificates: %d %s", code, body)
	}
	if n := strings.Count(body, `"serial"`); n != 2 || !strings.Contains(body, before.SerialNumber.Text(16)) {
		t.Errorf("device certificates after the refused attempts: %d serial fields\n%s", n, body)
	}
	ca.auditVerify(t)
}
