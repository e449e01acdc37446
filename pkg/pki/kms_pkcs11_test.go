//go:build cgo

package pki_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	kmsapi "go.step.sm/crypto/kms/apiv1"
	_ "go.step.sm/crypto/kms/pkcs11" // the PKCS#11 key manager, as cmd/ca links it
	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest/softhsmtest"
)

// dirNames lists dir, or nothing when it does not exist.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// signsThrough issues a device certificate, a CRL and an OCSP response with
// ca and checks each against the intermediate.
func signsThrough(t *testing.T, ca *pki.CA) {
	t.Helper()
	ctx := context.Background()
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: ca, TrustDomain: "hsm.local"})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := iss.IssueDevice(ctx, &pki.DeviceRequest{
		Identity:  pki.Identity{DeviceID: "d1", Tenant: "default", Serial: "HSM-1"},
		PublicKey: keys()["p256"].Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Certificate.CheckSignatureFrom(ca.Intermediate); err != nil {
		t.Fatalf("device certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	inters := x509.NewCertPool()
	inters.AddCert(ca.Intermediate)
	if _, err := dev.Certificate.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device certificate chain: %v", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	crlDER, err := ca.SignCRL(ctx, &pki.CRLTemplate{Number: 7, ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		Revoked: []pki.RevokedCert{{Serial: dev.Certificate.SerialNumber, RevokedAt: now, Reason: ocsp.KeyCompromise}}})
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(crlDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Intermediate); err != nil || len(crl.RevokedCertificateEntries) != 1 {
		t.Fatalf("CRL: %v, %d entries", err, len(crl.RevokedCertificateEntries))
	}
	// The OCSP responder is delegated: its certificate comes from the
	// token's key, its responses from a key in memory.
	r, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Certificate().CheckSignatureFrom(ca.Intermediate); err != nil {
		t.Fatalf("OCSP responder certificate: %v", err)
	}
	der, err := r.Sign(ctx, &pki.OCSPStatus{Serial: dev.Certificate.SerialNumber, Status: ocsp.Revoked, RevokedAt: now,
		Reason: ocsp.KeyCompromise, ThisUpdate: now, NextUpdate: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponseForCert(der, dev.Certificate, ca.Intermediate)
	if err != nil || resp.Status != ocsp.Revoked {
		t.Fatalf("OCSP response: %v, %+v", err, resp)
	}
	// Audit checkpoints are signed with the issuing key too.
	alg, sig, err := pki.SignDetached(nil, ca.Signer, []byte("checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Intermediate.CheckSignature(alg, []byte("checkpoint"), sig); err != nil {
		t.Fatalf("detached signature: %v", err)
	}
}

// TestPKCS11CA: CreateCA makes the intermediate key in a SoftHSM2 token (or
// certifies one already there), writes no key file for it, and the CA
// signs certificates, CRLs, OCSP responder certificates and checkpoints
// through the token; LoadCA finds the key again from ca.key's URI. Every bad
// input — wrong PIN, missing or bogus module, unknown token, unknown key,
// unusable key type, a missing PIN file — fails with its sentinel, writes
// nothing and leaves no key in the token. Not parallel: SoftHSM2 reads
// $SOFTHSM2_CONF of the process.
func TestPKCS11CA(t *testing.T) {
	tok := softhsmtest.Start(t, "devpki")
	tok.Setenv(t)
	ctx := context.Background()
	base := t.TempDir()
	notLib := filepath.Join(base, "not-a-module.so")
	if err := os.WriteFile(notLib, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	const mod = "module-path=" + softhsmtest.Module
	// Keys an HSM admin made: one devpki may certify, two it must refuse.
	tok.MakeKey(t, "pkcs11:id=0a01;object=given-p256", kmsapi.ECDSAWithSHA256)
	tok.MakeKey(t, "pkcs11:id=0a02;object=given-p521", kmsapi.ECDSAWithSHA512)
	givenKeys := []string{"given-p256", "given-p521"}

	for i, tc := range []struct {
		name    string
		opts    pki.CAOptions
		want    error
		wantMsg string
	}{
		{"wrong PIN", pki.CAOptions{KMS: tok.URIWithPIN("0000")}, pki.ErrWrongPIN, "refused the PIN"},
		{"missing module", pki.CAOptions{KMS: "pkcs11:module-path=/nonexistent/libpkcs11.so;token=devpki;pin-value=" + softhsmtest.PIN}, pki.ErrKMS, "apt install softhsm2"},
		{"not a module", pki.CAOptions{KMS: "pkcs11:module-path=" + notLib + ";token=devpki;pin-value=" + softhsmtest.PIN}, pki.ErrKMS, "does not load"},
		{"no module path", pki.CAOptions{KMS: "pkcs11:token=devpki;pin-value=" + softhsmtest.PIN}, pki.ErrKMS, "module-path= is required"},
		{"unknown token", pki.CAOptions{KMS: "pkcs11:" + mod + ";token=nosuch;pin-value=" + softhsmtest.PIN}, pki.ErrKMS, "no such token"},
		{"no token", pki.CAOptions{KMS: "pkcs11:" + mod + ";pin-value=" + softhsmtest.PIN}, pki.ErrKMS, "exactly one of token"},
		{"missing PIN file", pki.CAOptions{KMS: "pkcs11:" + mod + ";token=devpki?pin-source=" + filepath.Join(base, "nopin")}, pki.ErrKMS, "pin-source"},
		{"unknown key", pki.CAOptions{KMS: tok.URI(), IntermediateKey: "pkcs11:id=99;object=nosuch"}, pki.ErrKeyNotFound, "not found"},
		{"P-521 key", pki.CAOptions{KMS: tok.URI(), IntermediateKey: "pkcs11:object=given-p521"}, pki.ErrUnsupportedCAKey, "P-521"},
		{"key in the token URI", pki.CAOptions{KMS: "pkcs11:" + mod + ";token=devpki;object=given-p256?pin-source=" + tok.PINFile}, nil, "names a key"},
		{"no PIN", pki.CAOptions{KMS: "pkcs11:" + mod + ";token=devpki"}, pki.ErrWrongPIN, "pin-source=FILE"},
		{"key of another token", pki.CAOptions{KMS: tok.URI(), IntermediateKey: "pkcs11:token=other;object=given-p256"}, nil, "not the token URI"},
		{"key without a token", pki.CAOptions{IntermediateKey: "pkcs11:object=given-p256"}, nil, "need KMS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, "bad", string(rune('a'+i)))
			opts := tc.opts
			opts.Dir, opts.Password = dir, testPassword
			_, ca, err := pki.CreateCA(ctx, opts)
			if err == nil {
				ca.Close()
				t.Fatal("CreateCA succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("CreateCA: %v; want %v mentioning %q", err, tc.want, tc.wantMsg)
			}
			t.Logf("error: %v", err)
			if strings.Contains(err.Error(), softhsmtest.PIN) {
				t.Errorf("the error shows the PIN: %v", err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("CreateCA failed but wrote %v", names)
			}
			if got := tok.KeyLabels(t); strings.Join(got, ",") != strings.Join(givenKeys, ",") {
				t.Errorf("token keys after a failure: %v, want %v", got, givenKeys)
			}
		})
	}

	t.Run("directory not writable after the keys are made", func(t *testing.T) {
		// The token keys exist by the time the files are written: a
		// failure there must delete them.
		// A dangling symlink: the files to write do not exist (so CreateCA
		// goes ahead), but their directory cannot be made.
		dangling := filepath.Join(base, "dangling")
		if err := os.Symlink(filepath.Join(base, "gone", "away"), dangling); err != nil {
			t.Fatal(err)
		}
		_, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: filepath.Join(dangling, "ca"), Password: testPassword, KMS: tok.URI(), RootInKMS: true})
		if err == nil {
			ca.Close()
			t.Fatal("CreateCA succeeded under a dangling symlink")
		}
		t.Logf("error: %v", err)
		if got := tok.KeyLabels(t); strings.Join(got, ",") != strings.Join(givenKeys, ",") {
			t.Errorf("token keys after a failed write: %v, want %v", got, givenKeys)
		}
	})

	t.Run("new key", func(t *testing.T) {
		dir := filepath.Join(base, "new")
		files, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: dir, Password: testPassword, KMS: tok.URI()})
		if err != nil {
			t.Fatal(err)
		}
		if files.IntermediateKey != "" || files.RootKeyURI != "" || files.RootKey != filepath.Join(dir, pki.RootKeyFile) ||
			!strings.HasPrefix(files.IntermediateKeyURI, "pkcs11:"+mod+";token=devpki;id=") ||
			!strings.HasSuffix(files.IntermediateKeyURI, "?pin-source="+tok.PINFile) {
			t.Fatalf("files %+v", files)
		}
		if got := strings.Join(dirNames(t, dir), ","); got != "intermediate.crt,root.crt,root.key" {
			t.Fatalf("CA directory holds %s; want the certificates and the root key only", got)
		}
		if _, ok := ca.Signer.(*ecdsa.PrivateKey); ok {
			t.Fatal("the intermediate signer is an in-memory key")
		}
		if k, ok := ca.Intermediate.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Fatalf("intermediate key %T", ca.Intermediate.PublicKey)
		}
		signsThrough(t, ca)
		if err := ca.Close(); err != nil {
			t.Fatal(err)
		}
		load := func(keyURI string) (*pki.CA, error) {
			return pki.LoadCA(ctx, pki.LoadOptions{RootCert: files.RootCert, IntermediateCert: files.IntermediateCert, KeyURI: keyURI})
		}
		// Bad PINs first, while this process holds no login of its own.
		wrong := strings.Replace(files.IntermediateKeyURI, "?pin-source="+tok.PINFile, "?pin-value=0000", 1)
		if _, err := load(wrong); !errors.Is(err, pki.ErrWrongPIN) || strings.Contains(err.Error(), "0000") {
			t.Fatalf("LoadCA with a wrong PIN: %v", err)
		}
		loaded, err := load(files.IntermediateKeyURI)
		if err != nil {
			t.Fatal(err)
		}
		if !loaded.Signer.Public().(*ecdsa.PublicKey).Equal(ca.Intermediate.PublicKey) {
			t.Fatal("LoadCA found another key")
		}
		// A second CA on the same token, as a second replica has.
		second, err := load(files.IntermediateKeyURI)
		if err != nil {
			t.Fatal(err)
		}
		signsThrough(t, loaded)
		signsThrough(t, second)
		// Concurrent signatures share the token's session pool.
		iss, err := pki.NewIssuer(pki.IssuerOptions{CA: loaded, TrustDomain: "hsm.local"})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for g := range 8 {
			wg.Go(func() {
				for i := range 8 {
					c, err := iss.IssueDevice(ctx, &pki.DeviceRequest{
						Identity:  pki.Identity{DeviceID: fmt.Sprintf("d%d-%d", g, i), Tenant: "default", Serial: fmt.Sprintf("HSM-%d-%d", g, i)},
						PublicKey: keys()["p256"].Public(),
					})
					if err == nil {
						err = c.Certificate.CheckSignatureFrom(loaded.Intermediate)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("concurrent issuance: %v", err)
		}
		second.Close()
		signsThrough(t, loaded)
		if _, err := load(strings.Replace(files.IntermediateKeyURI, ";id=", ";id=ff", 1)); !errors.Is(err, pki.ErrKeyNotFound) {
			t.Errorf("LoadCA of an unknown key: %v", err)
		}
		loaded.Close()
	})

	t.Run("given key, root in the token", func(t *testing.T) {
		dir := filepath.Join(base, "given")
		files, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: dir, KMS: tok.URI(), IntermediateKey: "pkcs11:id=0a01;object=given-p256", RootInKMS: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(dirNames(t, dir), ","); got != "intermediate.crt,root.crt" {
			t.Fatalf("CA directory holds %s; want the certificates only", got)
		}
		if files.RootKey != "" || !strings.Contains(files.RootKeyURI, ";object=devpki-root-") ||
			!strings.Contains(files.IntermediateKeyURI, ";id=0a01;object=given-p256?") {
			t.Fatalf("files %+v", files)
		}
		signsThrough(t, ca)
		// What the caller deletes when its own setup fails: the root key
		// CreateCA made, never the key it was given.
		if err := ca.DeleteCreatedKeys(); err != nil {
			t.Fatal(err)
		}
		ca.Close()
		labels := tok.KeyLabels(t)
		var root bool
		for _, l := range labels {
			root = root || strings.HasPrefix(l, "devpki-root-")
		}
		if root || !strings.Contains(strings.Join(labels, ","), "given-p256") {
			t.Errorf("token keys after DeleteCreatedKeys: %v", labels)
		}
		loaded, err := pki.LoadCA(ctx, pki.LoadOptions{RootCert: files.RootCert, IntermediateCert: files.IntermediateCert, KeyURI: files.IntermediateKeyURI})
		if err != nil {
			t.Fatal(err)
		}
		signsThrough(t, loaded)
		loaded.Close()
	})

	t.Run("key of another CA", func(t *testing.T) {
		// ca.key naming a token key that is not the intermediate's.
		files, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: filepath.Join(base, "other"), Password: testPassword, KMS: tok.URI()})
		if err != nil {
			t.Fatal(err)
		}
		ca.Close()
		_, err = pki.LoadCA(ctx, pki.LoadOptions{RootCert: files.RootCert, IntermediateCert: files.IntermediateCert,
			KeyURI: "pkcs11:" + mod + ";token=devpki;object=given-p256?pin-source=" + tok.PINFile})
		if err == nil || !strings.Contains(err.Error(), "does not match") {
			t.Fatalf("LoadCA with another key: %v", err)
		}
	})
}

// BenchmarkIssueDeviceKeyStore compares issuing a device certificate with
// the intermediate key in memory (an encrypted file, loaded) and in a
// SoftHSM2 token (every signature a PKCS#11 C_Sign through cgo).
func BenchmarkIssueDeviceKeyStore(b *testing.B) {
	tok := softhsmtest.Start(b, "devpki-bench")
	tok.Setenv(b)
	ctx := context.Background()
	_, fileCA, err := pki.CreateCA(ctx, pki.CAOptions{Dir: filepath.Join(b.TempDir(), "file"), Password: testPassword})
	if err != nil {
		b.Fatal(err)
	}
	_, hsmCA, err := pki.CreateCA(ctx, pki.CAOptions{Dir: filepath.Join(b.TempDir(), "hsm"), Password: testPassword, KMS: tok.URI()})
	if err != nil {
		b.Fatal(err)
	}
	defer hsmCA.Close()
	req := &pki.DeviceRequest{
		Identity:  pki.Identity{DeviceID: "dev-0001", Tenant: "acme", Serial: "SN0001", MACs: []string{"aabbccddeeff"}},
		PublicKey: keys()["p256"].Public(),
	}
	for _, c := range []struct {
		name string
		ca   *pki.CA
	}{{"file", fileCA}, {"softhsm", hsmCA}} {
		iss, err := pki.NewIssuer(pki.IssuerOptions{CA: c.ca, TrustDomain: "bench.local"})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/serial", func(b *testing.B) {
			cpu0 := processCPU(b)
			for b.Loop() {
				if _, err := iss.IssueDevice(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu0)
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			cpu0 := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := iss.IssueDevice(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportCPU(b, cpu0)
		})
	}
}

// processCPU is the CPU time (user + system) this process has used: on a
// shared, busy machine it measures a signature's cost where wall time
// cannot.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU per operation since cpu0.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N)/1e3, "cpu-µs/op")
}
