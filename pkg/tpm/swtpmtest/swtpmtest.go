// Package swtpmtest starts fresh swtpm (TPM 2.0 emulator) instances with an
// EK certificate, for tests and load tools. Each instance is manufactured by
// swtpm_setup in its own temporary directory and served on a unix socket (or
// swtpm's raw TCP server); Stop sends TPM2_Shutdown before ending swtpm, so
// the dictionary-attack counter stays at 0 across restarts.
//
// Every EK certificate chains to swtpm_setup's per-machine local CA in
// LocalCA, the "manufacturer" a CA under test must trust: RootsPEM and
// IntermediatesPEM read it (after the first Launch on a fresh machine, which
// creates it).
//
// It needs swtpm and swtpm_setup on PATH (apt-get install swtpm swtpm-tools);
// Start skips a test without them unless DEVPKI_REQUIRE_SWTPM=1. It does not
// import devpki/pkg/tpm, so that package's own tests can use it.
package swtpmtest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"devpki/pkg/tpm/internal/swtpmconn"
)

// LocalCA is where swtpm_setup's local CA keeps its certificates (the
// "manufacturer" of every swtpm here).
const LocalCA = "/var/lib/swtpm-localca"

// Files of LocalCA: the root and the certificate that issues EK certificates.
const (
	rootFile   = "swtpm-localca-rootca-cert.pem"
	issuerFile = "issuercert.pem"
)

// RequireEnv is the environment variable that turns Start's skip (swtpm not
// installed, local CA unreadable) into a failure when set to "1".
const RequireEnv = "DEVPKI_REQUIRE_SWTPM"

// ErrNotInstalled is returned by Launch when swtpm or swtpm_setup is not on
// PATH.
var ErrNotInstalled = errors.New("swtpm not installed (apt-get install swtpm swtpm-tools)")

// Options configures LaunchOptions. The zero value is Launch's: a unix socket
// server.
type Options struct {
	// TCP serves the TPM on swtpm's raw TCP server on 127.0.0.1 (Socket is
	// then HOST:PORT and Spec "swtpm:tcp:HOST:PORT") instead of a unix
	// socket.
	TCP bool
	// NoEKCert manufactures the TPM without an EK certificate (as some
	// firmware TPMs ship): the CA admits it only by a pre-registered EK.
	NoEKCert bool
}

// Instance is one running swtpm. Its zero value is not usable: get one from
// Launch or Start.
type Instance struct {
	Dir    string // state directory (short path under os.TempDir: unix socket paths are limited)
	Socket string // the TPM command socket (unixio), or HOST:PORT with Options.TCP

	tcp    bool
	cmd    *exec.Cmd
	output *bytes.Buffer // swtpm's stdout and stderr
	exited chan struct{} // closed when swtpm has exited and been reaped

	stopOnce sync.Once
	stopErr  error
}

// Launch manufactures a fresh swtpm in a new temp dir (swtpm_setup --tpm2
// --create-ek-cert --create-platform-cert) and serves it on a unix socket;
// it returns when the socket accepts a connection. Stop it with Stop.
func Launch() (*Instance, error) { return LaunchOptions(Options{}) }

// LaunchOptions is Launch with a choice of server.
func LaunchOptions(opts Options) (*Instance, error) {
	for _, bin := range []string{"swtpm", "swtpm_setup"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s: %w", bin, ErrNotInstalled)
		}
	}
	// Not a test's TempDir: a unix socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "swtpm-")
	if err != nil {
		return nil, fmt.Errorf("swtpm state dir: %w", err)
	}
	if os.Geteuid() == 0 {
		// swtpm_setup run as root drops to user tss, which must be able to
		// write the state.
		_ = exec.Command("chown", "tss:tss", dir).Run()
	}
	args := []string{"--tpm2", "--tpmstate", dir, "--overwrite"}
	if !opts.NoEKCert {
		args = append(args, "--create-ek-cert", "--create-platform-cert")
	}
	setup := exec.Command("swtpm_setup", args...)
	if out, err := setup.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("swtpm_setup: %w\n%s", err, out)
	}

	i := &Instance{Dir: dir, Socket: filepath.Join(dir, "s"), tcp: opts.TCP, output: new(bytes.Buffer)}
	server, ctrl := "type=unixio,path="+i.Socket, "type=unixio,path="+filepath.Join(dir, "c")
	if opts.TCP {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		cport, err := freePort()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		i.Socket = net.JoinHostPort("127.0.0.1", port)
		server = "type=tcp,bindaddr=127.0.0.1,port=" + port
		ctrl = "type=tcp,bindaddr=127.0.0.1,port=" + cport
	}
	i.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", server,
		"--ctrl", ctrl,
		"--flags", "startup-clear",
		"--log", "file="+filepath.Join(dir, "log")+",level=1")
	i.cmd.Stdout, i.cmd.Stderr = i.output, i.output
	if err := i.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	i.exited = make(chan struct{})
	go func() {
		_ = i.cmd.Wait()
		close(i.exited)
	}()
	network := "unix"
	if opts.TCP {
		network = "tcp"
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// Dial, not stat: the socket file exists before swtpm listens.
		if c, err := net.DialTimeout(network, i.Socket, time.Second); err == nil {
			c.Close()
			return i, nil
		}
		select {
		case <-i.exited:
			i.kill()
			return nil, fmt.Errorf("swtpm exited before serving %s: %s%s", i.Socket, i.output, i.log())
		default:
		}
		if time.Now().After(deadline) {
			i.kill()
			return nil, fmt.Errorf("swtpm socket %s did not appear: %s%s", i.Socket, i.output, i.log())
		}
	}
}

// Spec is the pkg/tpm spec: "swtpm:unix:" + Socket (or "swtpm:tcp:" +
// Socket with Options.TCP).
func (i *Instance) Spec() string {
	if i.tcp {
		return "swtpm:tcp:" + i.Socket
	}
	return "swtpm:unix:" + i.Socket
}

// Pid is the process id of swtpm, for reading its CPU time.
func (i *Instance) Pid() int { return i.cmd.Process.Pid }

// Conn returns a connection for legacy go-tpm commands
// (github.com/google/go-tpm/legacy/tpm2), one TPM command per underlying
// connection as swtpm's servers expect. swtpm has no resource manager: flush
// what you load.
func (i *Instance) Conn() io.ReadWriteCloser {
	if i.tcp {
		return &swtpmconn.Conn{Addr: i.Socket}
	}
	return tpmutil.NewEmulatorReadWriteCloser(i.Socket)
}

// Stop sends TPM2_Shutdown (so the DA counter stays 0), stops swtpm, removes
// Dir. It is idempotent: later calls return the first call's result. swtpm
// is stopped and Dir removed even when the shutdown command fails; that
// error is returned.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() {
		rw := i.Conn()
		if err := tpm2.Shutdown(rw, tpm2.StartupClear); err != nil {
			i.stopErr = fmt.Errorf("swtpm %s: TPM2_Shutdown: %w", i.Socket, err)
		}
		rw.Close()
		i.kill()
	})
	return i.stopErr
}

// kill ends swtpm (SIGTERM, then SIGKILL after 5 s) and removes Dir.
func (i *Instance) kill() {
	_ = i.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-i.exited:
	case <-time.After(5 * time.Second):
		_ = i.cmd.Process.Kill()
		<-i.exited
	}
	os.RemoveAll(i.Dir)
}

// log returns swtpm's log file, for error messages.
func (i *Instance) log() string {
	b, _ := os.ReadFile(filepath.Join(i.Dir, "log"))
	if len(b) == 0 {
		return ""
	}
	return "\nlog:\n" + string(b)
}

// Start is Launch for tests: it skips when swtpm/swtpm_setup are missing
// unless DEVPKI_REQUIRE_SWTPM=1 (then fails), and Stops the instance on
// cleanup (a failed TPM2_Shutdown is a test error).
func Start(tb testing.TB) *Instance { return StartOptions(tb, Options{}) }

// StartOptions is Start with a choice of server.
func StartOptions(tb testing.TB, opts Options) *Instance {
	tb.Helper()
	i, err := LaunchOptions(opts)
	if errors.Is(err, ErrNotInstalled) {
		skipOrFail(tb, err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := i.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return i
}

func skipOrFail(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%v, and %s=1", err, RequireEnv)
	}
	tb.Skipf("%v (%s=1 makes this a failure)", err, RequireEnv)
}

// RootsPEM returns the local CA's root certificate PEM
// (swtpm-localca-rootca-cert.pem). The local CA exists after the first
// swtpm_setup --create-ek-cert on this machine; reading it needs root (or
// user tss).
func RootsPEM() ([]byte, error) { return readLocalCA(rootFile) }

// IntermediatesPEM returns the local CA's issuer certificate PEM
// (issuercert.pem), which signs the EK certificates.
func IntermediatesPEM() ([]byte, error) { return readLocalCA(issuerFile) }

func readLocalCA(file string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(LocalCA, file))
	if err != nil {
		return nil, fmt.Errorf("swtpm local CA: %w", err)
	}
	return b, nil
}

// Roots is RootsPEM as a pool, for tests; call it after Start. An unreadable
// local CA skips the test unless DEVPKI_REQUIRE_SWTPM=1 (then fails).
func Roots(tb testing.TB) *x509.CertPool {
	tb.Helper()
	return pool(tb, RootsPEM)
}

// Intermediates is IntermediatesPEM as a pool, for tests, like Roots.
func Intermediates(tb testing.TB) *x509.CertPool {
	tb.Helper()
	return pool(tb, IntermediatesPEM)
}

func pool(tb testing.TB, read func() ([]byte, error)) *x509.CertPool {
	tb.Helper()
	b, err := read()
	if err != nil {
		skipOrFail(tb, err)
	}
	p := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			tb.Fatalf("swtpm local CA: %v", err)
		}
		p.AddCert(c)
		n++
	}
	if n == 0 {
		tb.Fatal("swtpm local CA: no PEM certificate")
	}
	return p
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}
