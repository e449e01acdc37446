package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/registry"
)

var oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}

func TestEnrollEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	tok := ca.mintToken(t, srv)

	const serial = "E2E-SN-0001"
	state := filepath.Join(t.TempDir(), "state")
	before := time.Now()
	deviceID := ca.enrollOK(t, srv, tok.Token, state, serial)
	after := time.Now()

	// Files and modes.
	for _, f := range []string{"device.key", "device.key.password"} {
		requireMode(t, filepath.Join(state, f), 0o600)
	}
	requireMode(t, state, 0o700)

	// Chain: device.crt → chain.pem → root.crt, root pinned by the printed fingerprint.
	root := readCert(t, filepath.Join(state, "root.crt"))
	if got := fingerprint(root); got != ca.Fingerprint {
		t.Errorf("root.crt SHA-256 %s, ca init printed %s", got, ca.Fingerprint)
	}
	caRoot := readCert(t, filepath.Join(ca.Dir, "root.crt"))
	if !bytes.Equal(root.Raw, caRoot.Raw) {
		t.Errorf("device root.crt differs from the CA's root.crt")
	}
	cert := readCert(t, filepath.Join(state, "device.crt"))
	chain := readCerts(t, filepath.Join(state, "chain.pem"))
	if len(chain) == 0 {
		t.Fatalf("chain.pem holds no certificate")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	for _, c := range chain {
		if c.Equal(root) {
			continue // a chain that repeats the root is still fine for verification
		}
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Errorf("device.crt does not verify via chain.pem to root.crt for clientAuth: %v", err)
	}

	// Subject.
	if cert.Subject.CommonName != deviceID {
		t.Errorf("subject CN %q, enroll printed device id %q", cert.Subject.CommonName, deviceID)
	}
	if !slices.Equal(cert.Subject.Organization, []string{registry.DefaultTenant}) {
		t.Errorf("subject O %q, want [%q]", cert.Subject.Organization, registry.DefaultTenant)
	}
	var serials []string
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(oidSerialNumber) {
			s, _ := n.Value.(string)
			serials = append(serials, s)
		}
	}
	if !slices.Equal(serials, []string{serial}) {
		t.Errorf("subject serialNumber %q, want [%q]", serials, serial)
	}

	// SANs: exactly the SPIFFE device id and the MAC URN, nothing else.
	var uris []string
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	wantURIs := []string{"spiffe://devpki.local/default/device/" + serial, "urn:dev:mac:" + strings.ReplaceAll(macFor(serial), ":", "")}
	if !slices.Equal(uris, wantURIs) {
		t.Errorf("URI SANs %q, want %q", uris, wantURIs)
	}
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) != 0 {
		t.Errorf("unexpected DNS/IP/email SANs: %v %v %v", cert.DNSNames, cert.IPAddresses, cert.EmailAddresses)
	}

	// Usage and constraints.
	if cert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage %#x, want DigitalSignature only (%#x)", cert.KeyUsage, x509.KeyUsageDigitalSignature)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(cert.UnknownExtKeyUsage) != 0 {
		t.Errorf("ExtKeyUsage %v (+%v unknown), want [ClientAuth]", cert.ExtKeyUsage, cert.UnknownExtKeyUsage)
	}
	if cert.IsCA {
		t.Errorf("device certificate is a CA")
	}

	// Validity: backdated one minute, 720h lifetime counted from the request.
	// Certificate times have one-second resolution.
	const slack = 3 * time.Second
	if lo, hi := before.Add(-time.Minute-slack), after.Add(-time.Minute+slack); cert.NotBefore.Before(lo) || cert.NotBefore.After(hi) {
		t.Errorf("NotBefore %s, want within [%s, %s] (now − 1m)", cert.NotBefore, lo, hi)
	}
	if d, want := cert.NotAfter.Sub(cert.NotBefore), 720*time.Hour+time.Minute; d < want-slack || d > want+slack {
		t.Errorf("NotAfter − NotBefore = %s, want %s ± %s", d, want, slack)
	}

	// Serial number: positive, at most 20 bytes.
	if cert.SerialNumber.Sign() <= 0 {
		t.Errorf("certificate serial %s is not positive", cert.SerialNumber)
	}
	if n := len(cert.SerialNumber.Bytes()); n > 20 {
		t.Errorf("certificate serial is %d bytes, want ≤ 20", n)
	}
	if cert.SerialNumber.Cmp(big.NewInt(1<<32)) < 0 {
		t.Errorf("certificate serial %s is suspiciously small for 20 random bytes", cert.SerialNumber)
	}

	// device.key: encrypted PEM, decryptable with device.key.password, matching the certificate.
	keyPath := filepath.Join(state, "device.key")
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		t.Fatalf("device.key is not PEM")
	}
	if block.Type != "ENCRYPTED PRIVATE KEY" && !strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
		t.Errorf("device.key is a plaintext %q PEM block, want an encrypted key", block.Type)
	}
	pw, err := os.ReadFile(filepath.Join(state, "device.key.password"))
	if err != nil {
		t.Fatal(err)
	}
	pw = bytes.TrimRight(pw, "\r\n")
	if len(pw) == 0 {
		t.Fatalf("device.key.password is empty")
	}
	key, err := pemutil.Read(keyPath, pemutil.WithPassword(pw))
	if err != nil {
		t.Fatalf("decrypt device.key with device.key.password: %v", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("device.key holds %T, not a crypto.Signer", key)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		t.Errorf("device.key does not match the public key of device.crt")
	}
	if _, err := pemutil.Read(keyPath, pemutil.WithPassword([]byte("wrong password"))); err == nil {
		t.Errorf("device.key decrypts with a wrong password")
	}

	// Registry: device and certificate recorded, same DER as delivered.
	st := ca.openStore(t)
	ctx := context.Background()
	dev, err := st.GetDeviceBySerial(ctx, registry.DefaultTenant, serial)
	if err != nil {
		t.Fatalf("registry: device %s: %v", serial, err)
	}
	if dev.ID != deviceID {
		t.Errorf("registry device id %q, enroll printed %q", dev.ID, deviceID)
	}
	if want := strings.ReplaceAll(macFor(serial), ":", ""); !slices.Equal(dev.MACs, []string{want}) {
		t.Errorf("registry device MACs %q, want [%s]", dev.MACs, want)
	}
	rec, err := st.GetCertificate(ctx, cert.SerialNumber.Text(16))
	if err != nil {
		t.Fatalf("registry: certificate %s: %v", cert.SerialNumber.Text(16), err)
	}
	if !bytes.Equal(rec.DER, cert.Raw) {
		t.Errorf("registry certificate DER differs from device.crt")
	}
	if rec.DeviceID != deviceID || rec.Status != registry.CertActive {
		t.Errorf("registry certificate: device %q status %q, want %q active", rec.DeviceID, rec.Status, deviceID)
	}
	ca.auditVerify(t)

	// The token is single use: a second device with it gets the server's
	// refusal and no certificate.
	other := filepath.Join(t.TempDir(), "other")
	res := run(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, tok.Token, other, "E2E-SN-0002")...)
	if res.code == 0 {
		t.Errorf("enroll with a spent token: want non-zero exit, got %s", res)
	}
	if !strings.Contains(res.stderr, "token-spent") {
		t.Errorf("enroll with a spent token: stderr does not carry the server's token-spent problem:\n%s", res)
	}
	requireNoFile(t, filepath.Join(other, "device.crt"))

	// The first device runs enroll again: nothing to do.
	certBefore, err := os.ReadFile(filepath.Join(state, "device.crt"))
	if err != nil {
		t.Fatal(err)
	}
	res = mustRun(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, tok.Token, state, serial)...)
	if !strings.Contains(res.stdout+res.stderr, "already enrolled") {
		t.Errorf("second enroll into the same state dir: no 'already enrolled':\n%s", res)
	}
	if certAfter, err := os.ReadFile(filepath.Join(state, "device.crt")); err != nil || !bytes.Equal(certBefore, certAfter) {
		t.Errorf("second enroll into the same state dir changed device.crt (err %v)", err)
	}
}
