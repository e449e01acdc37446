package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	devFingerprint = regexp.MustCompile(`root fingerprint:\s+([0-9a-f]{64})\b`)
	devToken       = regexp.MustCompile(`bootstrap token:\s+(\S+)`)
	devEnrollCmd   = regexp.MustCompile(`(?m)^\s*(go run \./cmd/enroll .*)$`)
)

// devBanner is what `ca serve --dev` prints on stdout.
type devBanner struct {
	fingerprint, token string
	enrollCmd          []string // the printed command, split on spaces
}

// waitBanner polls the server's stdout until the enroll command is printed.
func waitBanner(t *testing.T, s *server) devBanner {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := s.stdout.String()
		fp, tok, cmd := devFingerprint.FindStringSubmatch(out), devToken.FindStringSubmatch(out), devEnrollCmd.FindStringSubmatch(out)
		if fp != nil && tok != nil && cmd != nil {
			return devBanner{fingerprint: fp[1], token: tok[1], enrollCmd: strings.Fields(cmd[1])}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ca serve --dev: no fingerprint, token and enroll command on stdout:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDevMode(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "devdata")
	srv := startServer(t, "--dev", "--dir", dir)
	b := waitBanner(t, srv)
	root := readCert(t, filepath.Join(dir, "root.crt"))
	if got := fingerprint(root); got != b.fingerprint {
		t.Errorf("printed fingerprint %s, DIR/root.crt has %s", b.fingerprint, got)
	}
	requireMode(t, filepath.Join(dir, "password"), 0o600)

	// Run the printed command with the built binary and a temp state dir.
	if len(b.enrollCmd) < 3 || strings.Join(b.enrollCmd[:3], " ") != "go run ./cmd/enroll" {
		t.Fatalf("printed enroll command %q does not start with 'go run ./cmd/enroll'", b.enrollCmd)
	}
	state := filepath.Join(t.TempDir(), "device-state")
	args := append([]string(nil), b.enrollCmd[3:]...)
	replaced := false
	for i, a := range args {
		if a == "./device-state" {
			args[i], replaced = state, true
		}
	}
	if !replaced {
		t.Fatalf("printed enroll command %q has no ./device-state", b.enrollCmd)
	}
	for _, want := range []string{srv.URL, b.fingerprint, b.token} {
		if !strings.Contains(strings.Join(args, " "), want) {
			t.Errorf("printed enroll command %q does not carry %q", b.enrollCmd, want)
		}
	}
	res := mustRun(t, nil, enrollBin, args...)
	m := enrolledLine.FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("printed enroll command: no 'enrolled device' line:\n%s", res)
	}
	cert := readCert(t, filepath.Join(state, "device.crt"))
	if cert.Subject.CommonName != m[1] {
		t.Errorf("device.crt CN %q, enroll printed %q", cert.Subject.CommonName, m[1])
	}

	// Restart on the same dir: same CA, a new token.
	if err := srv.Stop(); err != nil {
		t.Errorf("stop dev server: %v", err)
	}
	srv2 := startServer(t, "--dev", "--dir", dir)
	b2 := waitBanner(t, srv2)
	if b2.fingerprint != b.fingerprint {
		t.Errorf("restarted dev server has root %s, first start had %s", b2.fingerprint, b.fingerprint)
	}
	if b2.token == b.token {
		t.Errorf("restarted dev server printed the same token %s again", b.token)
	}
	requireMode(t, filepath.Join(dir, "password"), 0o600)

	// The first device is still known (the data was reused, not recreated),
	// and the new token enrolls another device.
	res = mustRun(t, nil, enrollBin, enrollArgs(srv2, b2.fingerprint, b2.token, state, "unused")...)
	if !strings.Contains(res.stdout, "already enrolled") {
		t.Errorf("first device against the restarted server: want 'already enrolled':\n%s", res)
	}
	state2 := filepath.Join(t.TempDir(), "device-state-2")
	res = mustRun(t, nil, enrollBin, enrollArgs(srv2, b2.fingerprint, b2.token, state2, "DEMO-0002")...)
	if !enrolledLine.MatchString(res.stdout) {
		t.Errorf("second device with the new token: no 'enrolled device' line:\n%s", res)
	}
	if c2 := readCert(t, filepath.Join(state2, "device.crt")); c2.Subject.CommonName == cert.Subject.CommonName {
		t.Errorf("second device got the first device's id %q", c2.Subject.CommonName)
	}
}
