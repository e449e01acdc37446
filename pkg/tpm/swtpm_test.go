package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/tpm/swtpmtest"
)

// lockoutCounter reads TPM_PT_LOCKOUT_COUNTER.
func lockoutCounter(t *testing.T, s *swtpmtest.Instance) uint32 {
	t.Helper()
	rw := s.Conn()
	defer rw.Close()
	vals, _, err := tpm2.GetCapability(rw, tpm2.CapabilityTPMProperties, 1, uint32(tpm2.LockoutCounter))
	if err != nil {
		t.Fatal(err)
	}
	return vals[0].(tpm2.TaggedProperty).Value
}

func TestSWTPMEnrollTLSAndReload(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		name := "unix"
		if tcp {
			name = "tcp"
		}
		t.Run(name, func(t *testing.T) { testSWTPMEnroll(t, swtpmtest.StartOptions(t, swtpmtest.Options{TCP: tcp})) })
	}
}

func testSWTPMEnroll(t *testing.T, sw *swtpmtest.Instance) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	tp, err := Open(ctx, sw.Spec(), Options{StateDir: dir, DisableDownload: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if n := lockoutCounter(t, sw); n != 0 {
		t.Fatalf("fresh swtpm has DA lockout counter %d", n)
	}

	ek, err := tp.EK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ek.Certificate == nil {
		t.Fatal("swtpm EK has no certificate (swtpm_setup --create-ek-cert)")
	}
	if !ek.Certificate.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(ek.Public) {
		t.Fatal("EK public key differs from its certificate's")
	}
	// The raw NV bytes parse with go-attestation's parser (crypto/x509 alone
	// trips on NV padding and TCG headers) into the same certificate.
	rw := sw.Conn()
	nv, err := tpm2.NVReadEx(rw, 0x01c00002, tpm2.HandleOwner, "", 0)
	rw.Close()
	if err != nil {
		t.Fatalf("read EK certificate NV index: %v", err)
	}
	parsed, err := attest.ParseEKCertificate(nv)
	if err != nil {
		t.Fatalf("attest.ParseEKCertificate: %v", err)
	}
	if !bytes.Equal(parsed.Raw, ek.Certificate.Raw) {
		t.Fatal("NV certificate differs from EK().Certificate")
	}
	if !strings.HasPrefix(ek.Fingerprint(), "sha256:") {
		t.Fatalf("fingerprint %q", ek.Fingerprint())
	}

	key := checkEnrollment(t, tp)
	checkStateFiles(t, dir)
	t.Run("TLS13", func(t *testing.T) { checkTLS(t, key, tls.VersionTLS13) })
	t.Run("TLS12", func(t *testing.T) { checkTLS(t, key, tls.VersionTLS12) })
	checkReload(t, sw.Spec(), dir, key.Public())

	if n := lockoutCounter(t, sw); n != 0 {
		t.Errorf("DA lockout counter %d after the test, want 0", n)
	}
}

// TestSWTPMLockout shows the DA trap and its recovery: wrong-password uses
// of the (DA-protected) application key lock it out; ResetLockout clears it.
func TestSWTPMLockout(t *testing.T) {
	sw := swtpmtest.Start(t)
	ctx := context.Background()
	tp, err := Open(ctx, sw.Spec(), Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.EnsureAK(ctx, "ak1"); err != nil {
		t.Fatal(err)
	}
	key, err := tp.AttestedKey(ctx, "ak1", "tls", []byte("nonce"))
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := key.key.Blobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := blobs.Public()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := blobs.Private()
	if err != nil {
		t.Fatal(err)
	}
	// Load the key under the SRK and sign with a wrong password until the
	// TPM locks out (swtpm: maxAuthFail 3).
	rw := sw.Conn()
	h, _, err := tpm2.Load(rw, 0x81000001, "", pub[2:], priv[2:]) // drop tpm2-tools size headers
	if err != nil {
		rw.Close()
		t.Fatal(err)
	}
	digest := make([]byte, 32)
	for i := 0; i < 5; i++ {
		_, _ = tpm2.Sign(rw, h, "wrong", digest, nil, &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256})
	}
	_ = tpm2.FlushContext(rw, h)
	rw.Close()

	s, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(rand.Reader, digest, crypto.SHA256); err == nil || !strings.Contains(err.Error(), "lockout") {
		t.Fatalf("Sign in lockout = %v, want a lockout error", err)
	} else if !errors.Is(err, ErrLockout) {
		t.Errorf("Sign in lockout = %v, want it to wrap ErrLockout", err)
	}
	if err := tp.ResetLockout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sign(rand.Reader, digest, crypto.SHA256); err != nil {
		t.Fatalf("Sign after ResetLockout: %v", err)
	}
	if n := lockoutCounter(t, sw); n != 0 {
		t.Errorf("DA lockout counter %d after ResetLockout", n)
	}
}

func BenchmarkSWTPMAttestedKey(b *testing.B) {
	sw := swtpmtest.Start(b)
	tp, err := Open(context.Background(), sw.Spec(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchAttestedKey(b, tp)
}

func BenchmarkSWTPMSign(b *testing.B) {
	sw := swtpmtest.Start(b)
	tp, err := Open(context.Background(), sw.Spec(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchSign(b, tp)
}
