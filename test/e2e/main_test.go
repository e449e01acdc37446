// Package e2e builds the real `ca` and `enroll` binaries once and drives them
// as an operator and a device would: init a CA, serve it on a free port, mint
// tokens, enroll, then check the files, the certificates and the registry.
//
// Run with: go test ./test/e2e/ -count=1
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Paths of the binaries built by TestMain.
var (
	caBin     string
	enrollBin string
	ingestBin string // the sample mTLS component, examples/ingest
)

// serverSlots caps how many `ca serve` processes run at once, whatever
// -parallel says: the machines these run on have two cores.
var serverSlots = make(chan struct{}, 4)

const (
	cmdTimeout     = 60 * time.Second // any single CLI run
	startTimeout   = 20 * time.Second // ca serve until /healthz answers
	stopTimeout    = 10 * time.Second // SIGTERM until SIGKILL
	testPassphrase = "e2e-passphrase-not-secret"
)

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "devpki-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go tool not found in PATH:", err)
		return 1
	}
	caBin = filepath.Join(dir, "ca")
	enrollBin = filepath.Join(dir, "enroll")
	ingestBin = filepath.Join(dir, "ingest")
	for _, b := range []struct{ out, pkg string }{
		{caBin, "devpki/cmd/ca"}, {enrollBin, "devpki/cmd/enroll"}, {ingestBin, "devpki/examples/ingest"},
	} {
		cmd := exec.Command(goTool, "build", "-o", b.out, b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build %s: %v\n%s", b.pkg, err, out)
			return 1
		}
	}
	return m.Run()
}

// cleanEnv is the test process environment without DEVPKI_* variables, so
// that a developer's shell cannot change what the binaries see.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DEVPKI_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// result is what a finished command left behind.
type result struct {
	stdout, stderr string
	code           int
	elapsed        time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %s\n--- stdout:\n%s--- stderr:\n%s", r.code, r.elapsed.Round(time.Millisecond), r.stdout, r.stderr)
}

// run runs a binary to completion with a clean environment plus env and
// returns its output and exit code. It fails the test only when the command
// cannot be run at all or outlives cmdTimeout.
func run(t *testing.T, env []string, bin string, args ...string) result {
	t.Helper()
	res, err := runE(t, env, bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// runE is run for goroutines other than the test's: it reports instead of
// failing the test.
func runE(t *testing.T, env []string, bin string, args ...string) (result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	line := filepath.Base(bin) + " " + strings.Join(args, " ")
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("%s: still running after %s\n%s", line, cmdTimeout, res)
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		return res, fmt.Errorf("%s: %v", line, err)
	}
	t.Logf("$ %s → exit %d (%s)", line, res.code, res.elapsed.Round(time.Millisecond))
	if res.code != 0 {
		t.Logf("  stderr:\n%s", res.stderr)
	}
	return res, nil
}

// mustRun is run that fails the test unless the command exits 0.
func mustRun(t *testing.T, env []string, bin string, args ...string) result {
	t.Helper()
	res := run(t, env, bin, args...)
	if res.code != 0 {
		t.Fatalf("%s %s: want exit 0, got %s", filepath.Base(bin), strings.Join(args, " "), res)
	}
	return res
}

// syncBuffer is a bytes.Buffer safe for one writer (os/exec's copier) and
// concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// server is a running `ca serve`.
type server struct {
	t       *testing.T
	URL     string // https://127.0.0.1:PORT
	cmd     *exec.Cmd
	stdout  *syncBuffer
	stderr  *syncBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done

	expectExit bool // set when the server is known to have exited on its own (failed start)

	stopOnce sync.Once
	stopErr  error
}

// freePort asks the kernel for a free TCP port on 127.0.0.1. Another process
// may take it before the server binds it; startServer retries in that case.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServer runs `ca serve ARGS... --listen 127.0.0.1:PORT` on a free port
// and waits until it logs that it serves that address and /healthz answers.
// The process is stopped at the end of the test; its stderr is logged if the
// test failed.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	return startServerEnv(t, nil, args...)
}

// startServerEnv is startServer with env added to the server's clean
// environment.
func startServerEnv(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s, err := tryStartServerEnv(t, freePort(t), env, args)
		if err == nil {
			return s
		}
		if attempt < 3 && strings.Contains(s.stderr.String(), "address already in use") {
			t.Logf("port raced with another process, retrying: %v", err)
			continue
		}
		t.Fatalf("ca serve %s: %v\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), err, s.stdout, s.stderr)
	}
}

func tryStartServer(t *testing.T, addr string, args []string) (*server, error) {
	t.Helper()
	return tryStartServerEnv(t, addr, nil, args)
}

func tryStartServerEnv(t *testing.T, addr string, env, args []string) (*server, error) {
	t.Helper()
	serverSlots <- struct{}{}
	s := &server{
		t:      t,
		URL:    "https://" + addr,
		stdout: &syncBuffer{},
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	argv := append([]string{"serve"}, args...)
	argv = append(argv, "--listen", addr)
	s.cmd = exec.Command(caBin, argv...)
	s.cmd.Env = cleanEnv(env...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		<-serverSlots
		close(s.done)
		return s, err
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
		<-serverSlots
	}()
	t.Cleanup(func() {
		if err := s.Stop(); err != nil && !s.expectExit {
			t.Errorf("%s: %v", s.URL, err)
		}
		if t.Failed() {
			t.Logf("ca serve %s stderr:\n%s", s.URL, s.stderr)
		}
	})

	// Wait for our own process to announce the address (so a server of
	// someone else that happens to own the port cannot answer for it), then
	// for /healthz.
	// (text or --log-format json).
	serving := regexp.MustCompile(`msg=serving addr=` + regexp.QuoteMeta(s.URL) + `\b|"msg":"serving","addr":"` + regexp.QuoteMeta(s.URL) + `"`)
	probe := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			// Only a readiness probe: the tests pin the root themselves.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		},
	}
	deadline := time.Now().Add(startTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.expectExit = true
			return s, fmt.Errorf("exited before serving: %v", s.waitErr)
		default:
		}
		if !serving.MatchString(s.stderr.String()) {
			lastErr = errors.New("no 'msg=serving' log line yet")
		} else if resp, err := probe.Get(s.URL + "/healthz"); err != nil {
			lastErr = err
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
			lastErr = fmt.Errorf("/healthz: %s", resp.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.expectExit = true
	s.Stop()
	return s, fmt.Errorf("not ready after %s: %v", startTimeout, lastErr)
}

// Stop sends SIGTERM, waits up to stopTimeout, then SIGKILLs. It returns an
// error when the server had to be killed or exited non-zero after SIGTERM.
// Safe to call more than once.
func (s *server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
			s.stopErr = fmt.Errorf("ca serve had already exited: %v", s.waitErr)
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			if s.waitErr != nil {
				s.stopErr = fmt.Errorf("ca serve exited after SIGTERM: %v", s.waitErr)
			}
		case <-time.After(stopTimeout):
			_ = s.cmd.Process.Kill()
			<-s.done
			s.stopErr = fmt.Errorf("ca serve ignored SIGTERM for %s and was killed", stopTimeout)
		}
	})
	return s.stopErr
}
