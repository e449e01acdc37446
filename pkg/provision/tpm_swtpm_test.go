//go:build swtpm

package provision_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm"
	"devpki/pkg/tpm/verify"
)

// swtpmLocalCA is where swtpm_setup's local CA keeps its root and issuing
// certificate: the "manufacturer" of every swtpm on this machine.
const swtpmLocalCA = "/var/lib/swtpm-localca"

// startSWTPM manufactures a fresh swtpm with an EK certificate and serves it
// on a unix socket until the test ends; it returns the pkg/tpm spec. It
// skips without swtpm unless DEVPKI_REQUIRE_SWTPM=1.
func startSWTPM(t *testing.T) string {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("DEVPKI_REQUIRE_SWTPM") == "1" {
				t.Fatalf("%s not on PATH and DEVPKI_REQUIRE_SWTPM=1", bin)
			}
			t.Skipf("%s not on PATH", bin)
		}
	}
	dir, err := os.MkdirTemp("", "swtpm-") // a socket path must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		_ = exec.Command("chown", "tss:tss", dir).Run()
	}
	if out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", dir, "--create-ek-cert", "--overwrite").CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "s")
	var stderr bytes.Buffer
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+filepath.Join(dir, "c"),
		"--flags", "startup-clear")
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			// Dial, not stat: the socket file exists before swtpm listens.
			c.Close()
			return "swtpm:unix:" + sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm socket did not appear: %s", stderr.String())
		}
	}
}

func swtpmPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(swtpmLocalCA, file))
	if err != nil {
		t.Fatalf("swtpm local CA: %v (run swtpm_setup --create-ek-cert once as root)", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// TestTPMEnrollSWTPM enrolls a swtpm whose EK certificate chains to swtpm's
// local CA, configured as the manufacturer root; the same EK certificate is
// refused by a CA that does not have that root.
func TestTPMEnrollSWTPM(t *testing.T) {
	ctx := context.Background()
	spec := startSWTPM(t)
	roots, inters := swtpmPool(t, "swtpm-localca-rootca-cert.pem"), swtpmPool(t, "issuercert.pem")
	d := openDevice(t, spec, func(ek *tpm.EK) []byte {
		if ek.Certificate == nil {
			t.Fatal("swtpm has no EK certificate")
		}
		return ek.Certificate.Raw
	})
	defer d.tp.Close()

	// Without the manufacturer's root the EK is not trusted.
	untrusted := newTPMFixture(t, x509.NewCertPool(), inters)
	if _, err := untrusted.svc.TPMChallenge(ctx, d.challengeRequest(t, "SWTPM-1", "02:00:00:00:00:09")); !errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("unconfigured root: %v, want ErrEKUntrusted", err)
	}

	f := newTPMFixture(t, roots, inters)
	ch, err := f.svc.TPMChallenge(ctx, d.challengeRequest(t, "SWTPM-1", "02:00:00:00:00:09"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.TPMEnroll(ctx, d.answer(t, ch, "SWTPM-1", "02:00:00:00:00:09"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.DeviceIdentity(res.Certificate, "test.devpki")
	if err != nil || id.EKHash != d.ekHash {
		t.Fatalf("identity = %+v, %v; want EK %s", id, err, d.ekHash)
	}
	dev, err := f.store.GetDevice(ctx, res.DeviceID)
	if err != nil || dev.Method != provision.MethodTPM || dev.EKHash != d.ekHash || dev.Status != registry.DeviceActive {
		t.Fatalf("device = %+v, %v", dev, err)
	}
}
