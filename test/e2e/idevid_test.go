package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"devpki/pkg/pki/pkitest/zlinttest"
	"devpki/pkg/tpm/swtpmtest"
)

// maker is a device manufacturer's CA made with the openssl CLI, as a
// factory would: a root, an IDevID-issuing intermediate, and `openssl ca`
// (OpenSSL 3.0 has no `x509 -not_after`; `ca -enddate` sets any date).
type maker struct {
	dir string
}

const makerConf = `[ca]
default_ca = idevid_ca
[idevid_ca]
dir = .
database = ./index.txt
serial = ./serial
new_certs_dir = ./newcerts
certificate = ./int.crt
private_key = ./int.key
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
organizationName = optional
serialNumber = optional
commonName = optional
[v3_root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_int]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# An 802.1AR IDevID whose serial is only in a critical subjectAltName
# holding a hardwareModuleName otherName (RFC 4108).
[idevid_hmn]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = critical, otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn
[hmn]
hwType = OID:1.3.6.1.4.1.99999.1
hwSerial = OCTETSTRING:${ENV::HWSERIAL}
# An IDevID whose serial is the subject's serialNumber.
[idevid_plain]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# Signed with devpki's own intermediate key: for TLS servers only, so it
# does not verify as a devpki client certificate.
[own_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
`

// makerSSL runs the openssl CLI in dir with HWSERIAL set, failing the test
// on error.
func makerSSL(t *testing.T, dir, hwSerial string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HWSERIAL="+hwSerial)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func newMaker(t *testing.T, name string) *maker {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl CLI not found (test/run.sh installs it): %v", err)
	}
	m := &maker{dir: filepath.Join(t.TempDir(), name)}
	if err := os.MkdirAll(filepath.Join(m.dir, "newcerts"), 0o700); err != nil {
		t.Fatal(err)
	}
	for f, body := range map[string]string{"ca.cnf": makerConf, "index.txt": "", "serial": "1000\n"} {
		if err := os.WriteFile(filepath.Join(m.dir, f), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"}
	makerSSL(t, m.dir, "-", append([]string{"req", "-x509", "-new", "-keyout", "root.key", "-out", "root.crt",
		"-subj", "/O=" + name + "/CN=" + name + " Root CA", "-days", "3650", "-config", "ca.cnf", "-extensions", "v3_root"}, ec...)...)
	makerSSL(t, m.dir, "-", append([]string{"req", "-new", "-keyout", "int.key", "-out", "int.csr",
		"-subj", "/O=" + name + "/CN=" + name + " IDevID CA"}, ec...)...)
	makerSSL(t, m.dir, "-", "x509", "-req", "-in", "int.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
		"-days", "3650", "-extfile", "ca.cnf", "-extensions", "v3_int", "-out", "int.crt")
	return m
}

// bundle is the root and the intermediate in one PEM file.
func (m *maker) bundle(t *testing.T) string {
	t.Helper()
	var b []byte
	for _, f := range []string{"root.crt", "int.crt"} {
		p, err := os.ReadFile(filepath.Join(m.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, p...)
	}
	path := filepath.Join(m.dir, "bundle.pem")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// idevid issues an IDevID named name: with hwSerial in a critical
// hardwareModuleName SAN, or else with subject serialNumber subjSerial;
// valid from start to end (openssl ca dates, e.g. 99991231235959Z). With
// chain the certificate file holds the intermediate too. It returns the
// certificate and key files.
func (m *maker) idevid(t *testing.T, name, hwSerial, subjSerial, start, end string, chain bool) (certFile, keyFile string) {
	t.Helper()
	subj, ext := "/O=Acme/CN=Acme device "+name, "idevid_hmn"
	if hwSerial == "" {
		subj, ext, hwSerial = "/O=Acme/serialNumber="+subjSerial+"/CN=Acme device "+name, "idevid_plain", "-"
	}
	makerSSL(t, m.dir, hwSerial, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", name+".key", "-out", name+".csr", "-subj", subj)
	makerSSL(t, m.dir, hwSerial, "ca", "-batch", "-config", "ca.cnf", "-in", name+".csr", "-out", name+".crt",
		"-extensions", ext, "-startdate", start, "-enddate", end, "-notext", "-preserveDN")
	certFile, keyFile = filepath.Join(m.dir, name+".crt"), filepath.Join(m.dir, name+".key")
	if chain {
		leaf, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		inter, err := os.ReadFile(filepath.Join(m.dir, "int.crt"))
		if err != nil {
			t.Fatal(err)
		}
		certFile = filepath.Join(m.dir, name+"-chain.pem")
		if err := os.WriteFile(certFile, append(leaf, inter...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// idevidEnrollArgs are the flags of an `enroll` presenting an IDevID (the
// serial comes from it unless extra names one).
func idevidEnrollArgs(srv *server, fingerprint, cert, key, dir, mac string, extra ...string) []string {
	return append([]string{"--ca", srv.URL, "--fingerprint", fingerprint, "--idevid-cert", cert, "--idevid-key", key,
		"--dir", dir, "--mac", mac, "--tpm", "none", "--timeout", "20s"}, extra...)
}

// TestIDevIDEnrollment: factory IDevID enrollment with the real binaries
// and an openssl-made manufacturer CA. Before its CA is registered an
// IDevID is a 403; 'ca idevid roots add' at runtime (no restart) lets in
// one with a critical hardwareModuleName SAN and notAfter 99991231235959Z
// (leaf only: the intermediate is registered) and one with a subject
// serialNumber (sent with its chain), as method idevid. A serial mismatch,
// a second IDevID on an enrolled serial (held), a certificate of devpki's
// own CA and an expired IDevID are refused with clear 4xx, writing no
// device or certificate and spending no token.
func TestIDevIDEnrollment(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	db := ca.openSQL(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}
	acme := newMaker(t, "Acme")
	const start, forever = "20240101000000Z", "99991231235959Z"
	hmnCert, hmnKey := acme.idevid(t, "hmn1", "ACME-HMN-1", "", start, forever, false)

	count := func(q string) int {
		t.Helper()
		var n int
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	type state struct{ devices, certs, uses int }
	snapshot := func() state {
		return state{count(`SELECT count(*) FROM devices`), count(`SELECT count(*) FROM certificates`),
			count(`SELECT coalesce(sum(uses_left), 0) FROM tokens`)}
	}
	// refused runs an enroll that must fail with status and slug, and
	// change no device, certificate or token.
	refused := func(what, status, slug string, args ...string) {
		t.Helper()
		before := snapshot()
		res := run(t, nil, enrollBin, args...)
		if res.code != 1 || !strings.Contains(res.stderr, status) || !strings.Contains(res.stderr, "["+slug+"]") {
			t.Errorf("%s: want exit 1 with %s [%s]:\n%s", what, status, slug, res)
		}
		if after := snapshot(); after != before {
			t.Errorf("%s: registry changed %+v -> %+v", what, before, after)
		}
		for i, a := range args {
			if a == "--dir" {
				requireNoFile(t, filepath.Join(args[i+1], "device.crt"))
			}
		}
	}
	// A token exists throughout: no refusal may spend it.
	spare := ca.mintToken(t, srv)

	// Unknown manufacturer: 403.
	refused("unknown manufacturer", "403", "idevid-unknown-manufacturer",
		idevidEnrollArgs(srv, ca.Fingerprint, hmnCert, hmnKey, filepath.Join(t.TempDir(), "early"), macFor("ACME-HMN-1"))...)

	// Registered at runtime, on the running server.
	res := mustRun(t, nil, caBin, append([]string{"idevid", "roots", "add", acme.bundle(t)}, admin...)...)
	if !strings.Contains(res.stdout, "trusting IDevID root") || !strings.Contains(res.stdout, "trusting IDevID intermediate") {
		t.Fatalf("ca idevid roots add:\n%s", res)
	}
	res = mustRun(t, nil, caBin, append([]string{"idevid", "roots", "add", acme.bundle(t)}, admin...)...)
	if strings.Count(res.stdout, "already trusted") != 2 {
		t.Errorf("ca idevid roots add, again: want both already trusted:\n%s", res)
	}
	res = mustRun(t, nil, caBin, append([]string{"idevid", "roots", "list"}, admin...)...)
	if !strings.Contains(res.stdout, "CN=Acme Root CA,O=Acme") || !strings.Contains(res.stdout, "intermediate") {
		t.Errorf("ca idevid roots list:\n%s", res)
	}
	// devpki's own root is no manufacturer.
	res = run(t, nil, caBin, append([]string{"idevid", "roots", "add", filepath.Join(ca.Dir, "root.crt")}, admin...)...)
	if res.code == 0 || !strings.Contains(res.stderr, "400") {
		t.Errorf("ca idevid roots add of devpki's own root: want a 400:\n%s", res)
	}

	// The hardwareModuleName IDevID, leaf only, 9999 notAfter.
	dir1 := filepath.Join(t.TempDir(), "hmn1")
	res = mustRun(t, nil, enrollBin, idevidEnrollArgs(srv, ca.Fingerprint, hmnCert, hmnKey, dir1, macFor("ACME-HMN-1"))...)
	m := enrolledLine.FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("enroll --idevid-cert: no 'enrolled device':\n%s", res)
	}
	dev1 := m[1]
	ldevid := readCert(t, filepath.Join(dir1, "device.crt"))
	if ldevid.Subject.SerialNumber != "ACME-HMN-1" || ldevid.Subject.CommonName != dev1 {
		t.Errorf("LDevID subject %s, want serial ACME-HMN-1 and CN %s", ldevid.Subject, dev1)
	}
	zlinttest.Certificate(t, "IDevID-enrolled device.crt (LDevID)", ldevid.Raw, zlintAllow(ldevid))
	var list struct {
		Devices []struct {
			ID, Serial, Method, Status string
			IDevIDIssuer               string `json:"idevid_issuer"`
			IDevIDSerial               string `json:"idevid_serial"`
		} `json:"devices"`
	}
	res = mustRun(t, nil, caBin, append([]string{"devices", "list", "--serial", "ACME-HMN-1", "--output", "json"}, admin...)...)
	if err := json.Unmarshal([]byte(res.stdout), &list); err != nil || len(list.Devices) != 1 {
		t.Fatalf("ca devices list --serial ACME-HMN-1: %v\n%s", err, res)
	}
	if d := list.Devices[0]; d.ID != dev1 || d.Method != "idevid" || d.Status != "active" ||
		d.IDevIDIssuer != "CN=Acme IDevID CA,O=Acme" || d.IDevIDSerial == "" {
		t.Errorf("device = %+v, want method idevid with the IDevID's issuer and serial", d)
	}
	res = mustRun(t, nil, caBin, append([]string{"devices", "get", dev1}, admin...)...)
	if !strings.Contains(res.stdout, "method:   idevid") || !strings.Contains(res.stdout, "issued by CN=Acme IDevID CA,O=Acme") {
		t.Errorf("ca devices get:\n%s", res)
	}

	// The subject-serialNumber IDevID, with its chain.
	subjCert, subjKey := acme.idevid(t, "subj2", "", "ACME-SUBJ-2", start, "20350101000000Z", true)
	dir2 := filepath.Join(t.TempDir(), "subj2")
	res = mustRun(t, nil, enrollBin, idevidEnrollArgs(srv, ca.Fingerprint, subjCert, subjKey, dir2, macFor("ACME-SUBJ-2"))...)
	if !strings.Contains(res.stdout, "enrolled device") {
		t.Fatalf("enroll with a subject-serialNumber IDevID:\n%s", res)
	}

	// Serial mismatch: the CSR names another serial than the IDevID.
	mmCert, mmKey := acme.idevid(t, "hmn3", "ACME-HMN-3", "", start, forever, false)
	refused("serial mismatch", "403", "idevid-serial-mismatch",
		idevidEnrollArgs(srv, ca.Fingerprint, mmCert, mmKey, filepath.Join(t.TempDir(), "mm"), macFor("ACME-OTHER"),
			"--serial", "ACME-OTHER")...)

	// A second IDevID for an enrolled serial: held for an admin.
	twinCert, twinKey := acme.idevid(t, "twin", "ACME-HMN-1", "", start, forever, false)
	refused("second IDevID on an enrolled serial", "403", "clone-suspect",
		idevidEnrollArgs(srv, ca.Fingerprint, twinCert, twinKey, filepath.Join(t.TempDir(), "twin"), macFor("ACME-TWIN"))...)
	var held struct {
		Quarantined []struct {
			Serial, Reason, Status string
			IDevID                 string `json:"idevid"`
			ConflictDeviceID       string `json:"conflict_device_id"`
		} `json:"quarantined"`
	}
	res = mustRun(t, nil, caBin, append([]string{"devices", "list", "--status", "quarantined", "--serial", "ACME-HMN-1",
		"--output", "json"}, admin...)...)
	if err := json.Unmarshal([]byte(res.stdout), &held); err != nil || len(held.Quarantined) != 1 {
		t.Fatalf("quarantined claims: %v\n%s", err, res)
	}
	if q := held.Quarantined[0]; q.Reason != "serial-has-other-idevid" || q.Status != "held" || q.ConflictDeviceID != dev1 ||
		!strings.HasSuffix(q.IDevID, "@CN=Acme IDevID CA,O=Acme") {
		t.Errorf("held claim = %+v", q)
	}

	// A certificate of devpki's own CA (signed by its intermediate key with
	// openssl, server-only so it is no devpki client certificate): 403.
	ownDir := filepath.Join(t.TempDir(), "own")
	if err := os.MkdirAll(ownDir, 0o700); err != nil {
		t.Fatal(err)
	}
	makerSSL(t, ownDir, "-", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", "own.key", "-out", "own.csr", "-subj", "/serialNumber=OWN-1/CN=own")
	makerSSL(t, ownDir, "-", "x509", "-req", "-in", "own.csr", "-CA", filepath.Join(ca.Dir, "intermediate.crt"),
		"-CAkey", filepath.Join(ca.Dir, "intermediate.key"), "-passin", "pass:"+testPassphrase, "-CAcreateserial", "-days", "1",
		"-extfile", filepath.Join(acme.dir, "ca.cnf"), "-extensions", "own_server", "-out", "own.crt")
	refused("a certificate of devpki's own CA", "403", "idevid-invalid",
		idevidEnrollArgs(srv, ca.Fingerprint, filepath.Join(ownDir, "own.crt"), filepath.Join(ownDir, "own.key"),
			filepath.Join(t.TempDir(), "ownd"), macFor("OWN-1"))...)

	// An expired IDevID: 403 saying so.
	oldCert, oldKey := acme.idevid(t, "old", "ACME-OLD-1", "", "20200101000000Z", "20200102000000Z", false)
	before := snapshot()
	res = run(t, nil, enrollBin, idevidEnrollArgs(srv, ca.Fingerprint, oldCert, oldKey, filepath.Join(t.TempDir(), "old"),
		macFor("ACME-OLD-1"))...)
	if res.code != 1 || !strings.Contains(res.stderr, "[idevid-invalid]") || !strings.Contains(res.stderr, "expired at 2020-01-02") {
		t.Errorf("expired IDevID: want exit 1, idevid-invalid, 'expired at 2020-01-02':\n%s", res)
	}
	if after := snapshot(); after != before {
		t.Errorf("expired IDevID: registry changed %+v -> %+v", before, after)
	}

	if n := usesLeft(t, db, spare.ID); n != 1 {
		t.Errorf("the spare token has %d uses left, want 1", n)
	}
	if n := count(`SELECT count(*) FROM devices WHERE method = 'idevid'`); n != 2 {
		t.Errorf("%d idevid devices, want 2", n)
	}
	ca.auditVerify(t)
}

// TestIDevIDEnrollmentTPM: with a TPM, an IDevID enrollment makes the new
// key inside it (no attestation: the IDevID is the proof), and the device
// renews over mTLS signing in the TPM.
func TestIDevIDEnrollmentTPM(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	ca := initCA(t)
	srv := ca.serve(t)
	acme := newMaker(t, "Acme")
	mustRun(t, nil, caBin, "idevid", "roots", "add", acme.bundle(t), "--config", ca.Config, "--ca", srv.URL)
	cert, key := acme.idevid(t, "tpm1", "ACME-TPM-1", "", "20240101000000Z", "99991231235959Z", true)
	dir := filepath.Join(t.TempDir(), "dev")
	args := idevidEnrollArgs(srv, ca.Fingerprint, cert, key, dir, macFor("ACME-TPM-1"))
	for i, a := range args {
		if a == "--tpm" {
			args[i+1] = sw.Spec()
		}
	}
	res := mustRun(t, nil, enrollBin, args...)
	if !strings.Contains(res.stdout, "key: TPM ("+sw.Spec()) {
		t.Fatalf("enroll --idevid-cert --tpm: want a TPM key:\n%s", res)
	}
	requireNoFile(t, filepath.Join(dir, "device.key.password"))
	res = mustRun(t, nil, enrollBin, "renew", "--dir", dir)
	if !strings.Contains(res.stdout+res.stderr, "renewed") {
		t.Errorf("enroll renew of the IDevID-enrolled TPM identity:\n%s", res)
	}
	ca.auditVerify(t)
}

// TestIDevIDOverEST: the same factory IDevIDs on EST simpleenroll, with
// curl and openssl as a router's firmware would: curl presents the
// openssl-made IDevID (with its chain), no token; the CA answers a PKCS#7
// with the new certificate, method idevid. An IDevID of an unknown maker,
// and a CSR naming another serial, are 403s that write nothing.
func TestIDevIDOverEST(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	db := ca.openSQL(t)
	acme := newMaker(t, "Acme")
	mustRun(t, nil, caBin, "idevid", "roots", "add", acme.bundle(t), "--config", ca.Config, "--ca", srv.URL)
	other := newMaker(t, "Other")
	root := filepath.Join(ca.Dir, "root.crt")
	est := srv.URL + "/.well-known/est"
	dir := t.TempDir()
	simpleenroll := func(cert, key, serial, out string) string {
		t.Helper()
		return sh(t, dir, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out `+out+`.key 2>/dev/null
openssl req -new -key `+out+`.key -subj /serialNumber=`+serial+` -addext subjectAltName=URI:`+estMAC(serial)+` -outform DER -out `+out+`.csr
openssl base64 -in `+out+`.csr -out `+out+`.csr.b64
curl -sS --cacert `+root+` --cert `+cert+` --key `+key+` -H 'Content-Type: application/pkcs10' --data-binary @`+out+`.csr.b64 \
  -o `+out+`.body -w '%{http_code}' `+est+`/simpleenroll`)
	}
	devices := func() int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM devices`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	cert, key := acme.idevid(t, "est1", "ACME-EST-1", "", "20240101000000Z", "99991231235959Z", true)
	if code := simpleenroll(cert, key, "ACME-EST-1", "est1"); code != "200" {
		body, _ := os.ReadFile(filepath.Join(dir, "est1.body"))
		t.Fatalf("simpleenroll with an IDevID: %s %s", code, body)
	}
	sh(t, dir, `openssl base64 -d -in est1.body | openssl pkcs7 -inform DER -print_certs -out est1.crt`)
	if c := readCert(t, filepath.Join(dir, "est1.crt")); c.Subject.SerialNumber != "ACME-EST-1" {
		t.Errorf("EST certificate subject %s", c.Subject)
	}
	var method string
	if err := db.QueryRow(`SELECT method FROM devices WHERE serial = 'ACME-EST-1'`).Scan(&method); err != nil || method != "idevid" {
		t.Errorf("device ACME-EST-1: method %q, %v; want idevid", method, err)
	}

	n := devices()
	strangerCert, strangerKey := other.idevid(t, "x1", "OTHER-1", "", "20240101000000Z", "99991231235959Z", true)
	if code := simpleenroll(strangerCert, strangerKey, "OTHER-1", "x1"); code != "403" {
		t.Errorf("EST with an unknown maker's IDevID: %s, want 403", code)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "x1.body")); !strings.Contains(string(b), "idevid-unknown-manufacturer") {
		t.Errorf("EST unknown maker body: %s", b)
	}
	mmCert, mmKey := acme.idevid(t, "est2", "ACME-EST-2", "", "20240101000000Z", "99991231235959Z", false)
	if code := simpleenroll(mmCert, mmKey, "ACME-EST-OTHER", "mm"); code != "403" {
		t.Errorf("EST with a serial mismatch: %s, want 403", code)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "mm.body")); !strings.Contains(string(b), "idevid-serial-mismatch") {
		t.Errorf("EST serial mismatch body: %s", b)
	}
	if devices() != n {
		t.Errorf("refused EST enrollments wrote devices")
	}
	ca.auditVerify(t)
}
