package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

func rootKey(t *testing.T, tca *pkitest.TestCA) *ecdsa.PrivateKey {
	t.Helper()
	s, err := pki.LoadSigner(context.Background(), tca.Files.RootKey, tca.Password)
	if err != nil {
		t.Fatal(err)
	}
	return s.(*ecdsa.PrivateKey)
}

// TestCreateRollover: an intermediate rollover chains to the same root; a
// root rollover makes a self-signed root, an intermediate under it and a
// cross certificate of the new root by the old; keys are encrypted 0600
// files that LoadSigner opens with the passphrase only.
func TestCreateRollover(t *testing.T) {
	tca := pkitest.NewCA(t)
	ctx := context.Background()
	for _, newRoot := range []bool{false, true} {
		ro, err := pki.CreateRollover(ctx, pki.RolloverOptions{
			Dir: t.TempDir(), Password: tca.Password, Root: tca.CA.Root, RootSigner: rootKey(t, tca), NewRoot: newRoot,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := ro.Intermediate.CheckSignatureFrom(ro.Root); err != nil || !ro.Intermediate.IsCA || ro.Intermediate.MaxPathLen != 0 {
			t.Fatalf("new root %v: intermediate does not chain to its root: %v", newRoot, err)
		}
		if newRoot == ro.Root.Equal(tca.CA.Root) {
			t.Fatalf("new root %v: root is the old one: %v", newRoot, ro.Root.Equal(tca.CA.Root))
		}
		if newRoot {
			if err := ro.Cross.CheckSignatureFrom(tca.CA.Root); err != nil || string(ro.Cross.RawSubject) != string(ro.Root.RawSubject) ||
				string(ro.Cross.RawSubjectPublicKeyInfo) != string(ro.Root.RawSubjectPublicKeyInfo) {
				t.Fatalf("cross certificate is not the new root signed by the old: %v", err)
			}
		}
		if fi, err := os.Stat(ro.IntermediateKey); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", ro.IntermediateKey, fi.Mode(), err)
		}
		if _, err := pki.LoadSigner(ctx, ro.IntermediateKey, []byte("wrong")); !errors.Is(err, pki.ErrWrongPassword) {
			t.Fatalf("new key opened with a wrong passphrase: %v", err)
		}
		s, err := pki.LoadSigner(ctx, ro.IntermediateKey, tca.Password)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pki.NewCAFromParts(ctx, ro.Root, ro.Intermediate, s); err != nil {
			t.Fatal(err)
		}
	}
	// A root key that is not the root's is refused before anything is written.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	dir := t.TempDir()
	if _, err := pki.CreateRollover(ctx, pki.RolloverOptions{Dir: dir, Password: tca.Password, Root: tca.CA.Root, RootSigner: other}); err == nil {
		t.Fatal("a foreign root key was accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused rollover wrote %d files", len(ents))
	}
}

// TestAdoptRoots: a new root is adopted only with a cross certificate
// signed by a trusted root, valid now; unsigned, forged and expired
// vouchers are refused with ErrRootNotVouched.
func TestAdoptRoots(t *testing.T) {
	tca := pkitest.NewCA(t)
	ro, err := pki.CreateRollover(context.Background(), pki.RolloverOptions{
		Dir: t.TempDir(), Password: tca.Password, Root: tca.CA.Root, RootSigner: rootKey(t, tca), NewRoot: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forgerRoot := selfSigned(t, forger)
	forged := crossWith(t, ro.Root, forgerRoot, forger, time.Now().Add(time.Hour))
	expired := crossWith(t, ro.Root, tca.CA.Root, rootKey(t, tca), time.Now().Add(-time.Hour))
	trusted := []*x509.Certificate{tca.CA.Root}
	now := time.Now()
	for _, tc := range []struct {
		name   string
		bundle []*x509.Certificate
		adopt  bool
	}{
		{"cross-signed", []*x509.Certificate{tca.CA.Root, ro.Root, ro.Cross}, true},
		{"unsigned", []*x509.Certificate{tca.CA.Root, ro.Root}, false},
		{"forged cross", []*x509.Certificate{tca.CA.Root, ro.Root, forged}, false},
		{"expired cross", []*x509.Certificate{tca.CA.Root, ro.Root, expired}, false},
		{"cross for another key", []*x509.Certificate{tca.CA.Root, forgerRoot, ro.Cross}, false},
	} {
		adopted, refused := pki.AdoptRoots(trusted, tc.bundle, now)
		if tc.adopt != (len(adopted) == 1) || tc.adopt == (len(refused) == 1) {
			t.Errorf("%s: adopted %d, refused %v", tc.name, len(adopted), refused)
			continue
		}
		if !tc.adopt && (!errors.Is(refused[0], pki.ErrRootNotVouched) || !strings.Contains(refused[0].Error(), "fingerprint")) {
			t.Errorf("%s: refusal %v", tc.name, refused[0])
		}
	}
	// Already trusted roots are neither adopted again nor refused.
	if a, r := pki.AdoptRoots([]*x509.Certificate{tca.CA.Root, ro.Root}, []*x509.Certificate{tca.CA.Root, ro.Root}, now); len(a)+len(r) != 0 {
		t.Fatalf("known roots: adopted %d, refused %v", len(a), r)
	}
}

func selfSigned(t *testing.T, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	tmpl.Subject.CommonName = "Forger Root"
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// crossWith is root's subject and key signed by parent's key, valid until
// notAfter.
func crossWith(t *testing.T, root, parent *x509.Certificate, key *ecdsa.PrivateKey, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), RawSubject: root.RawSubject, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: notAfter.Add(-2 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, root.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
