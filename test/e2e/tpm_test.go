package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"go.step.sm/crypto/x509util"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest/zlinttest"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/swtpmtest"
	"devpki/pkg/tpm/verify"
)

// enableTPM turns TPM attestation on in ca's config with swtpm's local CA
// issuing certificate as the EK intermediate, and returns the local CA's
// root as a PEM file for 'ca tpm roots add'.
func enableTPM(t *testing.T, ca *testCA, extra ...string) string {
	t.Helper()
	rootPEM, err := swtpmtest.RootsPEM()
	if err != nil {
		t.Fatal(err)
	}
	interPEM, err := swtpmtest.IntermediatesPEM()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(ca.Dir, "swtpm-root.pem")
	inter := filepath.Join(ca.Dir, "swtpm-issuer.pem")
	for p, b := range map[string][]byte{root: rootPEM, inter: interPEM} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cfg), "\ntpm:") {
		t.Fatalf("ca.yaml from ca init already has a tpm section:\n%s", cfg)
	}
	cfg = append(cfg, "\ntpm:\n    enabled: true\n    ek_intermediates: ["+inter+"]\n"...)
	for _, line := range extra {
		cfg = append(cfg, "    "+line+"\n"...)
	}
	if err := os.WriteFile(ca.Config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	return root
}

// tpmDeviceClient is deviceClient for an identity whose key is in the TPM:
// the TLS handshake signs in swtpm.
func tpmDeviceClient(t *testing.T, dir, spec string) *http.Client {
	t.Helper()
	ctx := context.Background()
	b, err := os.ReadFile(filepath.Join(dir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "DEVPKI TPM KEY" || blk.Headers["Key-Name"] == "" {
		t.Fatalf("device.key is not a TPM key reference:\n%s", b)
	}
	tp, err := tpm.Open(ctx, spec, tpm.Options{StateDir: filepath.Join(dir, "tpm")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	key, err := tp.LoadKey(ctx, blk.Headers["Key-Name"])
	if err != nil {
		t.Fatal(err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{PrivateKey: signer}
	for _, f := range []string{"device.crt", "chain.pem"} {
		for _, c := range readCerts(t, filepath.Join(dir, f)) {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "root.crt")))
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13},
	}}
}

// TestTPMEndToEnd: with swtpm (manufactured with an EK certificate by
// swtpm_setup), 'enroll --tpm swtpm:unix:...' and no token enrolls by
// attestation once the operator has added swtpm's local CA as a manufacturer
// root; the key stays in the TPM (device.key is only a reference, no key
// password exists); the certificate carries the EK as a PermanentIdentifier;
// renewal and re-key over mTLS sign in the TPM; the sample component accepts
// the device; a re-key is certified by the TPM; a factory reset keeps the
// device id. A second TPM claiming the same serial, and the same TPM claiming
// another serial, are refused and held as clone suspects with nothing
// issued; releasing the first (a TPM swap) admits the new TPM under the same
// id and revokes the old identity. In a require_tpm tenant a software key is
// refused with the token unspent, and the token with a TPM enrolls.
func TestTPMEndToEnd(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	addr := freePort(t)
	ca := initCAAt(t, addr)
	rootFile := enableTPM(t, ca)
	// The default tenant admits TPM-attested devices only.
	mustRun(t, nil, caBin, "tenants", "set", "default", "--require-tpm=true", "--local", "--config", ca.Config)
	srv, err := tryStartServer(t, addr, []string{"--config", ca.Config})
	if err != nil {
		t.Fatalf("ca serve: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "dev")
	const serial = "TPM-E2E-1"
	enrollTPM := func(dir, spec, serial string, extra ...string) result {
		return run(t, nil, enrollBin, append([]string{"--ca", srv.URL, "--fingerprint", ca.Fingerprint,
			"--dir", dir, "--serial", serial, "--mac", macFor(serial), "--tpm", spec, "--timeout", "30s"}, extra...)...)
	}

	// The manufacturer is not trusted yet: refused, nothing written.
	res := enrollTPM(dir, sw.Spec(), serial)
	if res.code != 1 || !strings.Contains(res.stderr, "tpm-untrusted-ek") {
		t.Fatalf("EK from an unconfigured manufacturer: want exit 1 tpm-untrusted-ek, got %s", res)
	}
	requireNoFile(t, filepath.Join(dir, "device.crt"))

	mustRun(t, nil, caBin, "tpm", "roots", "add", rootFile, "--config", ca.Config, "--ca", srv.URL)
	res = enrollTPM(dir, sw.Spec(), serial)
	if res.code != 0 || !strings.Contains(res.stdout, "key: TPM ("+sw.Spec()) {
		t.Fatalf("attestation enrollment: want exit 0 and a TPM key, got %s", res)
	}
	m := enrolledLine.FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("no device id in %q", res.stdout)
	}
	deviceID := m[1]
	requireNoFile(t, filepath.Join(dir, "device.key.password"))
	requireMode(t, filepath.Join(dir, "tpm"), 0o700)
	cert := readCert(t, filepath.Join(dir, "device.crt"))
	sans, err := x509util.ParseSubjectAlternativeNames(cert)
	if err != nil || len(sans.PermanentIdentifiers) != 1 {
		t.Fatalf("PermanentIdentifier SANs = %+v, %v; want the EK", sans.PermanentIdentifiers, err)
	}
	id, err := pki.DeviceIdentity(cert, "devpki.local")
	if err != nil {
		t.Fatal(err)
	}
	zlinttest.Certificate(t, "TPM device.crt", cert.Raw, zlintAllow(cert))
	st := ca.openStore(t)
	dev, err := st.GetDevice(context.Background(), deviceID)
	if err != nil || dev.Method != "tpm" || dev.EKHash == "" || dev.EKHash != id.EKHash || dev.Serial != serial {
		t.Fatalf("registry device = %+v, %v; want method tpm with the certificate's EK %q", dev, err, id.EKHash)
	}

	// Idempotent: the TPM key loads from the reference.
	res = enrollTPM(dir, "auto", serial)
	if res.code != 0 || !strings.Contains(res.stdout, "already enrolled") {
		t.Fatalf("second run: %s", res)
	}
	res = mustRun(t, nil, enrollBin, "status", "--dir", dir)
	if !strings.Contains(res.stdout, "key:         TPM (") {
		t.Errorf("status does not say the key is in the TPM:\n%s", res.stdout)
	}

	// The component accepts the device; the handshake signs in the TPM.
	comp := startComponent(t, ca, srv)
	if got, _, err := comp.ingest(tpmDeviceClient(t, dir, sw.Spec())); err != nil || got["device_id"] != deviceID {
		t.Fatalf("component: %v %v", got, err)
	}

	// Renewal over mTLS with the TPM key keeps it; re-key makes a new TPM key.
	mustRun(t, nil, enrollBin, "renew", "--dir", dir)
	renewed := readCert(t, filepath.Join(dir, "device.crt"))
	if renewed.SerialNumber.Cmp(cert.SerialNumber) == 0 || !samePub(renewed, cert) {
		t.Fatal("renewal did not issue a new certificate for the same TPM key")
	}
	res = mustRun(t, nil, enrollBin, "rekey", "--dir", dir)
	rekeyed := readCert(t, filepath.Join(dir, "device.crt"))
	if samePub(rekeyed, renewed) {
		t.Fatal("re-key kept the key")
	}
	// The CA admitted the new key only with its TPM2_Certify by the AK it
	// recorded at attestation; the identity still names the EK.
	if rid, err := pki.DeviceIdentity(rekeyed, "devpki.local"); err != nil || rid.EKHash != id.EKHash {
		t.Fatalf("re-keyed certificate identity %+v, %v; want EK %s", rid, err, id.EKHash)
	}
	if !strings.Contains(res.stderr, "TPM") {
		t.Errorf("re-key did not say the new key is in the TPM:\n%s", res.stderr)
	}
	requireNoFile(t, filepath.Join(dir, "device.key.password"))
	blobs, _ := filepath.Glob(filepath.Join(dir, "tpm", "key-*"))
	if len(blobs) != 2 {
		t.Errorf("TPM key blobs after re-key: %v; want the current and the previous key only", blobs)
	}
	if got, _, err := comp.ingest(tpmDeviceClient(t, dir, sw.Spec())); err != nil || got["device_id"] != deviceID {
		t.Fatalf("component after re-key: %v %v", got, err)
	}

	// Factory reset: the state directory is wiped, the TPM is the same. The
	// device attests again and keeps its id.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	res = enrollTPM(dir, sw.Spec(), serial)
	if m := enrolledLine.FindStringSubmatch(res.stdout); res.code != 0 || m == nil || m[1] != deviceID {
		t.Fatalf("re-enrollment after a reset: want exit 0 as %s, got %s", deviceID, res)
	}

	// TPM2_Clear (an owner reset): every blob of the old storage hierarchy
	// is dead, the EK is not. Renewal fails and says what to do; enroll
	// makes a new AK, re-attests and keeps the device id.
	clearTPM(t, sw)
	res = run(t, nil, enrollBin, "renew", "--dir", dir)
	if res.code != 1 || !strings.Contains(res.stderr, "TPM was cleared, run enroll again") {
		t.Fatalf("renew after TPM2_Clear: want exit 1 with a hint, got %s", res)
	}
	res = enrollTPM(dir, sw.Spec(), serial)
	if m := enrolledLine.FindStringSubmatch(res.stdout); res.code != 0 || m == nil || m[1] != deviceID ||
		!strings.Contains(res.stderr, "the TPM was cleared; making a new one") {
		t.Fatalf("re-enrollment after TPM2_Clear: want exit 0 as %s with a new AK, got %s", deviceID, res)
	}
	mustRun(t, nil, enrollBin, "renew", "--dir", dir)

	// Clone defence through the real binaries.
	other := swtpmtest.Start(t)
	cloneDir := filepath.Join(t.TempDir(), "clone")
	res = enrollTPM(cloneDir, other.Spec(), serial)
	if res.code != 1 || !strings.Contains(res.stderr, "clone-suspect") {
		t.Fatalf("another TPM claiming %s: want exit 1 clone-suspect, got %s", serial, res)
	}
	requireNoFile(t, filepath.Join(cloneDir, "device.crt"))
	res = enrollTPM(filepath.Join(t.TempDir(), "dup"), sw.Spec(), "TPM-E2E-2")
	if res.code != 1 || !strings.Contains(res.stderr, "clone-suspect") {
		t.Fatalf("the same TPM claiming another serial: want exit 1 clone-suspect, got %s", res)
	}
	if _, err := st.GetDeviceBySerial(context.Background(), dev.TenantID, "TPM-E2E-2"); err == nil {
		t.Error("a device was recorded for the cloned claim")
	}
	if devs, err := st.ListDevices(context.Background(), registry.DeviceFilter{EKHash: id.EKHash, Limit: 10}); err != nil || len(devs) != 1 {
		t.Errorf("devices of the EK: %d, %v; want 1", len(devs), err)
	}
	// The operator finds the first claim is a legitimate TPM swap (RMA):
	// release admits that TPM under the same device id and revokes the old
	// identity.
	res = mustRun(t, nil, caBin, "devices", "list", "--status", "quarantined", "--serial", serial, "--output", "json",
		"--config", ca.Config, "--ca", srv.URL)
	var held struct {
		Quarantined []struct {
			ID, Serial, Status string
		} `json:"quarantined"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &held); err != nil || len(held.Quarantined) != 1 {
		t.Fatalf("held claims of %s: %v\n%s", serial, err, res.stdout)
	}
	mustRun(t, nil, caBin, "devices", "release", held.Quarantined[0].ID, "--config", ca.Config, "--ca", srv.URL)
	res = enrollTPM(cloneDir, other.Spec(), serial)
	if m := enrolledLine.FindStringSubmatch(res.stdout); res.code != 0 || m == nil || m[1] != deviceID {
		t.Fatalf("the released TPM enrolls as %s: %s", deviceID, res)
	}
	if _, _, err := comp.ingest(tpmDeviceClient(t, cloneDir, other.Spec())); err != nil {
		t.Fatalf("component refuses the device with its new TPM: %v", err)
	}
	res = run(t, nil, enrollBin, "renew", "--dir", dir)
	if res.code != 1 || !strings.Contains(res.stderr, "403") {
		t.Fatalf("the replaced TPM's identity still renews: %s", res)
	}

	// require_tpm: a software key with a token is refused and the token is
	// kept; the same token with a TPM enrolls by attestation and is spent.
	tok := ca.mintToken(t, srv)
	swDir := filepath.Join(t.TempDir(), "soft")
	res = run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, tok.Token, swDir, "TPM-E2E-3", "--tpm", "none")...)
	if res.code != 1 || !strings.Contains(res.stderr, "tpm-required") || !strings.Contains(res.stderr, "--tpm auto") {
		t.Fatalf("software key into a require_tpm tenant: want exit 1 tpm-required with a hint, got %s", res)
	}
	requireNoFile(t, filepath.Join(swDir, "device.crt"))
	db := ca.openSQL(t)
	if n := usesLeft(t, db, tok.ID); n != 1 {
		t.Fatalf("refused enrollment spent the token: %d uses left", n)
	}
	third := swtpmtest.Start(t)
	res = enrollTPM(swDir, third.Spec(), "TPM-E2E-3", "--token", tok.Token)
	if res.code != 0 || !strings.Contains(res.stdout, "key: TPM (") || !strings.Contains(res.stderr, "with a bootstrap token") {
		t.Fatalf("token + TPM attestation: %s", res)
	}
	if n := usesLeft(t, db, tok.ID); n != 0 {
		t.Fatalf("token + TPM enrollment left the token with %d uses", n)
	}
	// The answer was lost (nothing saved): the same TPM and token finish
	// the enrollment as the same device; the token is not spent again.
	m = enrolledLine.FindStringSubmatch(res.stdout)
	if err := os.RemoveAll(swDir); err != nil {
		t.Fatal(err)
	}
	res = enrollTPM(swDir, third.Spec(), "TPM-E2E-3", "--token", tok.Token)
	if again := enrolledLine.FindStringSubmatch(res.stdout); res.code != 0 || again == nil || m == nil || again[1] != m[1] {
		t.Fatalf("token + TPM after a lost answer: want exit 0 as the same device, got %s", res)
	}

	res = mustRun(t, nil, caBin, "devices", "list", "--status", "quarantined", "--all", "--config", ca.Config, "--ca", srv.URL)
	for _, want := range []string{serial, "released", "TPM-E2E-2", "held", deviceID} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("ca devices list --status quarantined lacks %q:\n%s", want, res.stdout)
		}
	}

	ca.auditVerify(t)
}

// TestTPMChallengeExpiredEndToEnd: a CA whose challenges expire before any
// TPM can answer (challenge_ttl 1ms): the device starts new rounds, then
// gives up with the CA's challenge-expired problem; nothing is enrolled.
func TestTPMChallengeExpiredEndToEnd(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.Start(t)
	addr := freePort(t)
	ca := initCAAt(t, addr)
	rootFile := enableTPM(t, ca, "challenge_ttl: 1ms")
	srv, err := tryStartServer(t, addr, []string{"--config", ca.Config})
	if err != nil {
		t.Fatalf("ca serve: %v", err)
	}
	mustRun(t, nil, caBin, "tpm", "roots", "add", rootFile, "--config", ca.Config, "--ca", srv.URL)
	dir := filepath.Join(t.TempDir(), "dev")
	res := run(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", ca.Fingerprint, "--dir", dir,
		"--serial", "TPM-E2E-TTL", "--mac", "02:00:00:00:0a:09", "--tpm", sw.Spec(), "--timeout", "30s")
	if res.code != 1 || !strings.Contains(res.stderr, "challenge-expired") || strings.Count(res.stderr, "starting a new one") != 2 {
		t.Fatalf("want exit 1 after 3 rounds ending in challenge-expired, got %s", res)
	}
	requireNoFile(t, filepath.Join(dir, "device.crt"))
	st := ca.openStore(t)
	def, err := st.GetTenant(context.Background(), registry.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetDeviceBySerial(context.Background(), def.ID, "TPM-E2E-TTL"); err == nil {
		t.Error("a device was recorded although every challenge expired")
	}
}

// clearTPM sends TPM2_Clear with the (empty) lockout authorization, as an
// owner reset does.
func clearTPM(t *testing.T, sw *swtpmtest.Instance) {
	t.Helper()
	c := sw.Conn()
	defer c.Close()
	if err := tpm2.Clear(c, tpm2.HandleLockout, tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}); err != nil {
		t.Fatalf("TPM2_Clear: %v", err)
	}
}

// TestTPMPreregisteredEKEndToEnd: a TPM without an EK certificate enrolls by
// attestation once an operator has pre-registered its EK public key for the
// serial ('ca devices preregister --ek-pub'); before that, and for another
// serial, it is refused and nothing is enrolled.
func TestTPMPreregisteredEKEndToEnd(t *testing.T) {
	t.Parallel()
	sw := swtpmtest.StartOptions(t, swtpmtest.Options{NoEKCert: true})
	// The factory reads the EK public key off the TPM.
	ctx := context.Background()
	tp, err := tpm.Open(ctx, sw.Spec(), tpm.Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(ctx)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	if ek.Certificate != nil {
		t.Fatal("swtpm made an EK certificate although asked not to")
	}
	der, err := x509.MarshalPKIXPublicKey(ek.Public)
	if err != nil {
		t.Fatal(err)
	}
	ekFile := filepath.Join(t.TempDir(), "ek.pem")
	if err := os.WriteFile(ekFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}

	addr := freePort(t)
	ca := initCAAt(t, addr)
	enableTPM(t, ca) // enabled: true, no manufacturer root
	srv, err := tryStartServer(t, addr, []string{"--config", ca.Config})
	if err != nil {
		t.Fatalf("ca serve: %v", err)
	}
	const serial, mac = "TPM-E2E-PRE", "02:00:00:00:0b:01"
	enrollTPM := func(dir, serial string) result {
		return run(t, nil, enrollBin, "--ca", srv.URL, "--fingerprint", ca.Fingerprint, "--dir", dir,
			"--serial", serial, "--mac", mac, "--tpm", sw.Spec(), "--timeout", "30s")
	}

	dir := filepath.Join(t.TempDir(), "dev")
	res := enrollTPM(dir, serial)
	if res.code != 1 || !strings.Contains(res.stderr, "tpm-untrusted-ek") || !strings.Contains(res.stderr, "holds no EK certificate") {
		t.Fatalf("bare EK not pre-registered: want exit 1 tpm-untrusted-ek, got %s", res)
	}
	requireNoFile(t, filepath.Join(dir, "device.crt"))

	mustRun(t, nil, caBin, "devices", "preregister", "--serial", serial, "--mac", mac, "--ek-pub", ekFile,
		"--config", ca.Config, "--ca", srv.URL)
	res = enrollTPM(dir, serial)
	if res.code != 0 || !strings.Contains(res.stdout, "key: TPM (") {
		t.Fatalf("pre-registered EK: want exit 0 with a TPM key, got %s", res)
	}
	id, err := pki.DeviceIdentity(readCert(t, filepath.Join(dir, "device.crt")), "devpki.local")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := verify.EKHash(ek.Public); id.EKHash != h {
		t.Errorf("certificate EK %q, want the pre-registered %q", id.EKHash, h)
	}

	other := filepath.Join(t.TempDir(), "other")
	res = enrollTPM(other, "TPM-E2E-PRE-2")
	if res.code != 1 || !strings.Contains(res.stderr, "tpm-untrusted-ek") {
		t.Fatalf("pre-registered EK claiming another serial: want exit 1 tpm-untrusted-ek, got %s", res)
	}
	requireNoFile(t, filepath.Join(other, "device.crt"))
	ca.auditVerify(t)
}
