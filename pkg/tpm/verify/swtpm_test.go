//go:build swtpm

package verify

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	steptpm "go.step.sm/crypto/tpm"
	"go.step.sm/crypto/tpm/storage"
)

// swtpmLocalCA is where swtpm_setup's local CA keeps its per-machine root and
// issuing certificate.
const swtpmLocalCA = "/var/lib/swtpm-localca"

// startSWTPM manufactures a fresh swtpm (with EK certificates) in a temp dir
// and serves it on a unix socket until the test ends.
func startSWTPM(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not on PATH", bin)
		}
	}
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", dir, "--create-ek-cert", "--overwrite").CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "s")
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+filepath.Join(dir, "c"),
		"--flags", "startup-clear", "--log", "file="+filepath.Join(dir, "log")+",level=1")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			// Dial, not stat: the socket file exists before swtpm listens.
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "log"))
			t.Fatalf("swtpm socket did not appear\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func loadPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("swtpm local CA not readable: %v", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// TestSWTPMAttestation verifies swtpm's real EK certificate chain against its
// local CA, then runs the whole attestation round on that EK.
func TestSWTPMAttestation(t *testing.T) {
	ctx := context.Background()
	sock := startSWTPM(t)
	roots := pool(loadPEMCert(t, filepath.Join(swtpmLocalCA, "swtpm-localca-rootca-cert.pem")))
	inters := pool(loadPEMCert(t, filepath.Join(swtpmLocalCA, "issuercert.pem")))

	dev, err := steptpm.New(steptpm.WithDeviceName(sock), steptpm.WithStore(storage.NewDirstore(t.TempDir())), steptpm.WithDisableDownload())
	if err != nil {
		t.Fatal(err)
	}
	eks, err := dev.GetEKs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ekDER []byte
	for _, ek := range eks {
		if _, ok := ek.Public().(*rsa.PublicKey); ok && ek.Certificate() != nil {
			ekDER = ek.Certificate().Raw
		}
	}
	if ekDER == nil {
		t.Fatal("swtpm has no RSA EK certificate")
	}
	ekCert, err := ParseEKCertificate(ekDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEKCertificate(ekCert, roots, inters, time.Now()); err != nil {
		t.Fatalf("VerifyEKCertificate(swtpm EK): %v", err)
	}
	other := newEKPKI(t)
	if err := VerifyEKCertificate(ekCert, pool(other.root), inters, time.Now()); !errors.Is(err, ErrEKUntrusted) {
		t.Fatalf("VerifyEKCertificate with an unconfigured root = %v, want ErrEKUntrusted", err)
	}

	ak, err := dev.CreateAK(ctx, "ak1")
	if err != nil {
		t.Fatal(err)
	}
	params, err := ak.AttestationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := NewChallenger(Config{})
	ch, err := c.NewChallenge(ctx, &ChallengeRequest{EKPub: ekCert.PublicKey, AK: params})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := ak.ActivateCredential(ctx, steptpm.EncryptedCredential(ch.Credential))
	if err != nil {
		t.Fatal(err)
	}
	key, err := dev.AttestKey(ctx, "ak1", "key1", steptpm.AttestKeyConfig{Algorithm: "ECDSA", Size: 256, QualifyingData: ch.Nonce})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := key.CertificationParameters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := key.Signer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "swtpm-device"}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Complete(ctx, ch.ID, secret, cp, csr)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if want, _ := EKHash(ekCert.PublicKey); res.EKHash != want {
		t.Fatalf("EKHash = %s, want %s", res.EKHash, want)
	}
	if _, err := c.Complete(ctx, ch.ID, secret, cp, csr); !errors.Is(err, ErrChallengeUsed) {
		t.Fatalf("replay = %v, want ErrChallengeUsed", err)
	}
}
