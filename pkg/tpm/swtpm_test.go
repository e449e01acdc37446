package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"github.com/smallstep/go-attestation/attest"
)

// swtpm is a fresh swtpm (TPM 2.0 emulator) with EK and platform
// certificates, on a unix socket, for one test.
type swtpm struct {
	dir, sock string // sock is a unix socket path or, over TCP, HOST:PORT
	tcp       bool
	cmd       *exec.Cmd
}

// Spec is the Open spec of the emulator.
func (s *swtpm) Spec() string {
	if s.tcp {
		return "swtpm:tcp:" + s.sock
	}
	return "swtpm:unix:" + s.sock
}

// raw opens a connection for legacy go-tpm commands.
func (s *swtpm) raw() io.ReadWriteCloser {
	if s.tcp {
		return &tcpConn{addr: s.sock}
	}
	return tpmutil.NewEmulatorReadWriteCloser(s.sock)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// startSWTPM starts a fresh swtpm and registers its orderly stop. Without
// swtpm and swtpm_setup on PATH it skips, or fails when
// DEVPKI_REQUIRE_SWTPM=1 (as test/run.sh sets).
func startSWTPM(tb testing.TB) *swtpm { return startSWTPMOn(tb, false) }

// startSWTPMOn is startSWTPM with the choice of swtpm's TCP server.
func startSWTPMOn(tb testing.TB, tcp bool) *swtpm {
	tb.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("DEVPKI_REQUIRE_SWTPM") == "1" {
				tb.Fatalf("%s not on PATH and DEVPKI_REQUIRE_SWTPM=1 (apt-get install swtpm swtpm-tools)", bin)
			}
			tb.Skipf("%s not on PATH (apt-get install swtpm swtpm-tools; DEVPKI_REQUIRE_SWTPM=1 makes this a failure)", bin)
		}
	}
	// Not t.TempDir(): a unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		// swtpm drops root to user tss, which must be able to write its state.
		_ = exec.Command("chown", "tss:tss", dir).Run()
	}
	setup := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", dir,
		"--create-ek-cert", "--create-platform-cert", "--overwrite")
	if out, err := setup.CombinedOutput(); err != nil {
		tb.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	s := &swtpm{dir: dir, sock: filepath.Join(dir, "s"), tcp: tcp}
	server, ctrl := "type=unixio,path="+s.sock, "type=unixio,path="+filepath.Join(dir, "c")
	if tcp {
		port := freePort(tb)
		s.sock = "127.0.0.1:" + port
		server = "type=tcp,bindaddr=127.0.0.1,port=" + port
		ctrl = "type=tcp,bindaddr=127.0.0.1,port=" + freePort(tb)
	}
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", server,
		"--ctrl", ctrl,
		"--flags", "startup-clear",
		"--log", "file="+filepath.Join(dir, "log")+",level=1")
	var stderr bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &stderr, &stderr
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start swtpm: %v", err)
	}
	tb.Cleanup(func() { s.stop(tb) })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if tcp {
			if c, err := net.Dial("tcp", s.sock); err == nil {
				c.Close()
				break
			}
		} else if c, err := net.Dial("unix", s.sock); err == nil {
			// Dial, not stat: the socket file exists before swtpm listens.
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("swtpm socket %s did not appear: %s", s.sock, stderr.String())
		}
	}
	return s
}

// stop sends TPM2_Shutdown before ending swtpm: an unordered stop raises the
// DA counter on the next start.
func (s *swtpm) stop(tb testing.TB) {
	rw := s.raw()
	if err := tpm2.Shutdown(rw, tpm2.StartupClear); err != nil {
		tb.Errorf("swtpm: TPM2_Shutdown: %v", err)
	}
	rw.Close()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// lockoutCounter reads TPM_PT_LOCKOUT_COUNTER.
func (s *swtpm) lockoutCounter(t *testing.T) uint32 {
	t.Helper()
	rw := s.raw()
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
		t.Run(name, func(t *testing.T) { testSWTPMEnroll(t, startSWTPMOn(t, tcp)) })
	}
}

func testSWTPMEnroll(t *testing.T, sw *swtpm) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	tp, err := Open(ctx, sw.Spec(), Options{StateDir: dir, DisableDownload: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if n := sw.lockoutCounter(t); n != 0 {
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
	rw := sw.raw()
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

	if n := sw.lockoutCounter(t); n != 0 {
		t.Errorf("DA lockout counter %d after the test, want 0", n)
	}
}

// TestSWTPMLockout shows the DA trap and its recovery: wrong-password uses
// of the (DA-protected) application key lock it out; ResetLockout clears it.
func TestSWTPMLockout(t *testing.T) {
	sw := startSWTPM(t)
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
	rw := sw.raw()
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
	if n := sw.lockoutCounter(t); n != 0 {
		t.Errorf("DA lockout counter %d after ResetLockout", n)
	}
}

func BenchmarkSWTPMAttestedKey(b *testing.B) {
	sw := startSWTPM(b)
	tp, err := Open(context.Background(), sw.Spec(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchAttestedKey(b, tp)
}

func BenchmarkSWTPMSign(b *testing.B) {
	sw := startSWTPM(b)
	tp, err := Open(context.Background(), sw.Spec(), Options{StateDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchSign(b, tp)
}
