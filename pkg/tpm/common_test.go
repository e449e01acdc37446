package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"

	"github.com/google/go-tpm/tpm2"
	"github.com/smallstep/go-attestation/attest"
)

// checkEnrollment runs the device side of a TPM enrollment on an open TPM,
// with the server's checks done inline: AK and credential activation, an
// attested key over a nonce, a CSR signed in the TPM. It returns the key.
func checkEnrollment(t *testing.T, tp *TPM) *Key {
	t.Helper()
	ctx := context.Background()
	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ek.Public.(interface{ Equal(crypto.PublicKey) bool }); !ok || len(ek.Fingerprint()) < len("sha256:")+40 {
		t.Fatalf("EK public %T, fingerprint %q", ek.Public, ek.Fingerprint())
	}

	ak, err := tp.EnsureAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := tp.EnsureAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(ak.Public()) {
		t.Fatal("EnsureAK made a second AK instead of reusing the first")
	}
	akParams, err := ak.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The server's activation challenge, bound to the EK and the AK name.
	ap := attest.ActivationParameters{TPMVersion: attest.TPMVersion20, EK: ek.Public, AK: akParams}
	secret, ec, err := ap.Generate()
	if err != nil {
		t.Fatalf("server: activation parameters: %v", err)
	}
	got, err := ak.ActivateCredential(ctx, *ec)
	if err != nil {
		t.Fatal(err)
	}
	if subtle.ConstantTimeCompare(got, secret) != 1 {
		t.Fatal("activated secret differs")
	}

	nonce := make([]byte, 32)
	rand.Read(nonce)
	key, err := tp.AttestedKey(ctx, "ak1", "tls", nonce)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.AttestedKey(ctx, "ak1", "tls", nonce); !errors.Is(err, ErrExists) {
		t.Fatalf("second AttestedKey with the same name: %v, want ErrExists", err)
	}
	cp, err := key.CertificationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	akPub, err := attest.ParseAKPublic(attest.TPMVersion20, akParams.Public)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Verify(attest.VerifyOpts{Public: akPub.Public, Hash: akPub.Hash}); err != nil {
		t.Fatalf("server: certification does not verify: %v", err)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](cp.CreateAttestation)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(att.ExtraData.Buffer, nonce) {
		t.Fatalf("extraData %x, want the nonce %x", att.ExtraData.Buffer, nonce)
	}
	tpub, err := tpm2.Unmarshal[tpm2.TPMTPublic](cp.Public)
	if err != nil {
		t.Fatal(err)
	}
	certified, err := tpm2.Pub(*tpub)
	if err != nil {
		t.Fatal(err)
	}

	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewDeviceCSR(signer, "SN-1", []string{"0a0b0c0d0e0f"})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatalf("CSR signed in the TPM does not verify: %v", err)
	}
	if !certified.(*ecdsa.PublicKey).Equal(csr.PublicKey) || !key.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Fatal("CSR key differs from the certified key")
	}
	// A fresh certification over a new nonce.
	nonce2 := []byte("second nonce")
	cp2, err := key.Recertify(ctx, nonce2)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp2.Verify(attest.VerifyOpts{Public: akPub.Public, Hash: akPub.Hash}); err != nil {
		t.Fatal(err)
	}
	return key
}

// checkStateFiles checks the state directory's modes and that no file holds
// anything but TPM-wrapped blobs and public data.
func checkStateFiles(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	for _, name := range []string{"ak-ak1.tpmobj", "key-tls.tpmobj"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("state dir holds %d entries, want 2 (no temp files)", len(entries))
	}
}

// checkReload opens the TPM again on the same state directory and signs
// with the stored key.
func checkReload(t *testing.T, spec, dir string, want crypto.PublicKey) {
	t.Helper()
	ctx := context.Background()
	tp, err := Open(ctx, spec, Options{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	key, err := tp.LoadKey(ctx, "tls")
	if err != nil {
		t.Fatal(err)
	}
	if key.AttestedBy() != "ak1" || !key.Public().(*ecdsa.PublicKey).Equal(want) {
		t.Fatalf("reloaded key: attested by %q, public differs: %v", key.AttestedBy(), !key.Public().(*ecdsa.PublicKey).Equal(want))
	}
	s, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("after reload"))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(want.(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("signature after reload does not verify")
	}
	if _, err := tp.LoadKey(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadKey of a missing key: %v, want ErrNotFound", err)
	}
	if _, err := tp.EnsureAK(ctx, "ak1"); err != nil {
		t.Fatal(err)
	}
}

// checkTLS runs a TLS handshake whose client key is the TPM key.
func checkTLS(t *testing.T, key *Key, version uint16) {
	t.Helper()
	ctx := context.Background()
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ca := pkitest.NewCA(t)
	iss := ca.IssueDevice(t, pki.Identity{DeviceID: "dev-1", Tenant: "acme", Serial: "SN-1", TrustDomain: pkitest.TrustDomain}, signer)
	chain := [][]byte{iss.Certificate.Raw}
	for _, c := range iss.Chain {
		if !bytes.Equal(c.Raw, iss.Certificate.Raw) {
			chain = append(chain, c.Raw)
		}
	}
	serverCert, serverRoots := selfSigned(t, "server.test")
	client := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: signer, Leaf: iss.Certificate}},
		RootCAs:      serverRoots,
		ServerName:   "server.test",
		MinVersion:   version, MaxVersion: version,
	}
	server := &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Roots(),
		MinVersion:   version, MaxVersion: version,
	}
	server.ClientCAs.AddCert(ca.CA.Intermediate)

	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	errc := make(chan error, 1)
	var peer *x509.Certificate
	go func() {
		ss := tls.Server(s, server)
		err := ss.HandshakeContext(ctx)
		if err == nil {
			peer = ss.ConnectionState().PeerCertificates[0]
		}
		errc <- err
	}()
	cc := tls.Client(c, client)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if err := cc.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v (server: %v)", err, <-errc)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if !peer.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Fatal("server saw a client key other than the TPM key")
	}
}

// selfSigned makes a server certificate for name and a pool trusting it.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := x509.NewCertPool()
	p.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: cert}, p
}

// benchAttestedKey and benchSign are the benchmark bodies for any backend.
func benchAttestedKey(b *testing.B, tp *TPM) {
	ctx := context.Background()
	if _, err := tp.EnsureAK(ctx, "ak1"); err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, 32)
	for i := 0; b.Loop(); i++ {
		if _, err := tp.AttestedKey(ctx, "ak1", "k"+big.NewInt(int64(i)).String(), nonce); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSign(b *testing.B, tp *TPM) {
	ctx := context.Background()
	if _, err := tp.EnsureAK(ctx, "ak1"); err != nil {
		b.Fatal(err)
	}
	key, err := tp.AttestedKey(ctx, "ak1", "bench", []byte("n"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := key.Signer(ctx)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for b.Loop() {
		if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
