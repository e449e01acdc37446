package pki_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

var testPassword = []byte("correct horse battery staple")

func TestCreateCALoadCA(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ca") // CreateCA makes the directory
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	files, created, err := pki.CreateCA(ctx, pki.CAOptions{
		Dir: dir, Name: "acme", Password: testPassword, Now: func() time.Time { return now },
		RootLifetime: 1000 * time.Hour, IntermediateLifetime: 500 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := pki.CAFiles{
		RootCert: filepath.Join(dir, "root.crt"), RootKey: filepath.Join(dir, "root.key"),
		IntermediateCert: filepath.Join(dir, "intermediate.crt"), IntermediateKey: filepath.Join(dir, "intermediate.key"),
	}
	if *files != want {
		t.Errorf("files = %+v, want %+v", *files, want)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("dir has %d entries, want 4 (no temp files left)", len(entries))
	}

	root, inter := created.Root, created.Intermediate
	for _, c := range []struct {
		name    string
		cert    *x509.Certificate
		pathLen int
		cn      string
		life    time.Duration
	}{{"root", root, 1, "acme Root CA", 1000 * time.Hour}, {"intermediate", inter, 0, "acme Intermediate CA", 500 * time.Hour}} {
		k, ok := c.cert.PublicKey.(*ecdsa.PublicKey)
		if !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: key %T, want ECDSA P-256", c.name, c.cert.PublicKey)
		}
		if !c.cert.IsCA || !c.cert.BasicConstraintsValid || c.cert.MaxPathLen != c.pathLen || (c.pathLen == 0) != c.cert.MaxPathLenZero {
			t.Errorf("%s: CA=%v pathlen=%d zero=%v, want pathlen %d", c.name, c.cert.IsCA, c.cert.MaxPathLen, c.cert.MaxPathLenZero, c.pathLen)
		}
		if c.cert.Subject.CommonName != c.cn || len(c.cert.Subject.Organization) != 1 || c.cert.Subject.Organization[0] != "acme" {
			t.Errorf("%s: subject %v", c.name, c.cert.Subject)
		}
		if c.cert.KeyUsage&x509.KeyUsageCertSign == 0 || c.cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
			t.Errorf("%s: key usage %b", c.name, c.cert.KeyUsage)
		}
		if !c.cert.NotAfter.Equal(now.Add(c.life)) || !c.cert.NotBefore.Equal(now.Add(-time.Minute)) {
			t.Errorf("%s: validity %v..%v", c.name, c.cert.NotBefore, c.cert.NotAfter)
		}
		if len(c.cert.SubjectKeyId) == 0 || c.cert.SerialNumber.Sign() <= 0 {
			t.Errorf("%s: no SKI or bad serial", c.name)
		}
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("root not self-signed: %v", err)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	if !bytes.Equal(inter.AuthorityKeyId, root.SubjectKeyId) {
		t.Error("intermediate AKI != root SKI")
	}

	// Keys on disk: encrypted PKCS#8 PEM, mode 0600, useless without the password.
	for _, f := range []string{files.RootKey, files.IntermediateKey} {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v %v, want 0600", f, fi.Mode(), err)
		}
		b, _ := os.ReadFile(f)
		block, rest := pem.Decode(b)
		if block == nil || block.Type != "ENCRYPTED PRIVATE KEY" || len(bytes.TrimSpace(rest)) != 0 {
			t.Fatalf("%s: not a single ENCRYPTED PRIVATE KEY block", f)
		}
		if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			t.Errorf("%s: parses as a plain PKCS#8 key", f)
		}
	}
	for _, f := range []string{files.RootCert, files.IntermediateCert} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v %v, want 0644", f, fi.Mode(), err)
		}
	}

	for _, keyURI := range []string{"softkms:path=" + files.IntermediateKey, files.IntermediateKey} {
		loaded, err := pki.LoadCA(ctx, pki.LoadOptions{RootCert: files.RootCert, IntermediateCert: files.IntermediateCert, KeyURI: keyURI, Password: testPassword})
		if err != nil {
			t.Fatalf("LoadCA(%s): %v", keyURI, err)
		}
		if !loaded.Root.Equal(root) || !loaded.Intermediate.Equal(inter) {
			t.Errorf("LoadCA(%s): certificates differ from CreateCA's", keyURI)
		}
		if !loaded.Signer.Public().(*ecdsa.PublicKey).Equal(inter.PublicKey) {
			t.Errorf("LoadCA(%s): signer is not the intermediate key", keyURI)
		}
		// The loaded CA signs certificates that chain to the created root.
		iss, err := pki.NewIssuer(pki.IssuerOptions{CA: loaded, TrustDomain: "acme.local", Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		got, err := iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: keys()["p256"].Public(), CommonName: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		if err := got.Certificate.CheckSignatureFrom(inter); err != nil {
			t.Errorf("LoadCA(%s): issued cert not signed by intermediate: %v", keyURI, err)
		}
	}
}

func TestCreateCAExists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tca := pkitest.NewCA(t)
	dir := filepath.Dir(tca.Files.RootCert)
	before := snapshot(t, dir)
	_, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: dir, Password: testPassword})
	if !errors.Is(err, pki.ErrExists) || ca != nil {
		t.Fatalf("second CreateCA = %v, want ErrExists", err)
	}
	if after := snapshot(t, dir); !equalSnapshots(before, after) {
		t.Error("second CreateCA changed the directory")
	}

	// Any one existing target refuses the whole CA, and nothing else appears.
	for _, name := range []string{"root.crt", "root.key", "intermediate.crt", "intermediate.key"} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := pki.CreateCA(ctx, pki.CAOptions{Dir: dir, Password: testPassword}); !errors.Is(err, pki.ErrExists) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s exists: CreateCA = %v, want ErrExists naming it", name, err)
		}
		if s := snapshot(t, dir); len(s) != 1 || s[name] != "keep me" {
			t.Errorf("%s exists: directory now %v", name, s)
		}
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func equalSnapshots(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestCreateCAOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		opts pki.CAOptions
		want string
	}{
		{"no dir", pki.CAOptions{Password: testPassword}, "Dir is required"},
		{"no password", pki.CAOptions{Dir: t.TempDir()}, "Password is required"},
		{"intermediate outlives root", pki.CAOptions{Dir: t.TempDir(), Password: testPassword, RootLifetime: time.Hour, IntermediateLifetime: 2 * time.Hour}, "at most the root's"},
	} {
		if _, _, err := pki.CreateCA(ctx, tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: CreateCA = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestLoadCAErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := pkitest.NewCA(t), pkitest.NewCA(t)
	tests := []struct {
		name    string
		opts    pki.LoadOptions
		wantIs  error
		wantMsg string
	}{
		{"wrong password", pki.LoadOptions{RootCert: a.Files.RootCert, IntermediateCert: a.Files.IntermediateCert,
			KeyURI: "softkms:path=" + a.Files.IntermediateKey, Password: []byte("wrong")}, pki.ErrWrongPassword, "wrong CA key password"},
		{"no password", pki.LoadOptions{RootCert: a.Files.RootCert, IntermediateCert: a.Files.IntermediateCert,
			KeyURI: a.Files.IntermediateKey}, pki.ErrWrongPassword, "no password was given"},
		{"key does not match", pki.LoadOptions{RootCert: a.Files.RootCert, IntermediateCert: a.Files.IntermediateCert,
			KeyURI: a.Files.RootKey, Password: a.Password}, nil, "CA key does not match the intermediate"},
		{"intermediate from another CA", pki.LoadOptions{RootCert: a.Files.RootCert, IntermediateCert: b.Files.IntermediateCert,
			KeyURI: b.Files.IntermediateKey, Password: b.Password}, nil, "intermediate does not chain to root"},
		{"root is not self-signed CA", pki.LoadOptions{RootCert: a.Files.IntermediateCert, IntermediateCert: a.Files.IntermediateCert,
			KeyURI: a.Files.IntermediateKey, Password: a.Password}, nil, "root certificate is not a self-signed CA"},
		{"missing key file", pki.LoadOptions{RootCert: a.Files.RootCert, IntermediateCert: a.Files.IntermediateCert,
			KeyURI: "softkms:path=/nonexistent/key", Password: a.Password}, nil, "/nonexistent/key"},
		{"missing cert", pki.LoadOptions{RootCert: "/nonexistent/root.crt", IntermediateCert: a.Files.IntermediateCert,
			KeyURI: a.Files.IntermediateKey, Password: a.Password}, os.ErrNotExist, "root"},
		{"unsupported KMS", pki.LoadOptions{RootCert: a.Files.RootCert, IntermediateCert: a.Files.IntermediateCert,
			KeyURI: "pkcs11:id=1", Password: a.Password}, nil, "pkcs11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ca, err := pki.LoadCA(ctx, tt.opts)
			if err == nil || ca != nil {
				t.Fatal("LoadCA succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("LoadCA = %v, want errors.Is %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("LoadCA = %v, want message containing %q", err, tt.wantMsg)
			}
		})
	}
}
