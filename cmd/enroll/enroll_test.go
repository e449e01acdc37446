package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/api/client"
	"devpki/api/wire"
)

// stateFiles are the files a completed enrollment leaves, and their modes.
var stateFiles = map[string]os.FileMode{
	keyFile: 0o600, passwordFile: 0o600, certFile: 0o644, chainFile: 0o644, rootFile: 0o644, caFile: 0o644,
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := client.ParseCertificatesPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// checkState asserts dir holds exactly the enrollment files, with their modes,
// a key that decrypts with pw and matches device.crt, and no temp files.
func checkState(t *testing.T, dir string, pw []byte, want map[string]os.FileMode) *x509.Certificate {
	t.Helper()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", st.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("state dir holds %v, want %d files", names, len(want))
	}
	for name, mode := range want {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	if pw == nil {
		b, err := os.ReadFile(filepath.Join(dir, passwordFile))
		if err != nil {
			t.Fatal(err)
		}
		pw = bytes.TrimSpace(b)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(keyPEM, []byte("ENCRYPTED PRIVATE KEY")) {
		t.Errorf("device.key is not an encrypted PEM:\n%.60s", keyPEM)
	}
	if _, err := pemutil.ParseKey(keyPEM); err == nil {
		t.Error("device.key parses without a password")
	}
	key, err := pemutil.ParseKey(keyPEM, pemutil.WithPassword(pw))
	if err != nil {
		t.Fatalf("decrypt device.key: %v", err)
	}
	cert := readCert(t, filepath.Join(dir, certFile))
	if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		t.Error("device.key does not match device.crt")
	}
	return cert
}

func TestEnrollHappyPathAndIdempotence(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	dir := filepath.Join(t.TempDir(), "state")
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600)
	args := []string{"--ca", f.Srv.URL, "--fingerprint", strings.ToUpper(f.Fingerprint()), "--token-file", tokenFile,
		"--dir", dir, "--serial", "SN-0001", "--mac", "aa:bb:cc:00:11:22", "--mac", "AA-BB-CC-00-11-23", "--tpm", "none"}
	noEnv := func(string) string { return "" }

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), args, &stdout, &stderr, noEnv); code != exitOK {
		t.Fatalf("exit %d, stderr:\n%s", code, &stderr)
	}
	cert := checkState(t, dir, nil, stateFiles)
	if cert.Subject.CommonName != "dev-sn-0001" || cert.Subject.SerialNumber != "SN-0001" {
		t.Errorf("certificate subject %v", cert.Subject)
	}
	if f.lastSerial != "SN-0001" || strings.Join(f.lastMACs, ",") != "aabbcc001122,aabbcc001123" {
		t.Errorf("CA saw serial %q macs %v", f.lastSerial, f.lastMACs)
	}
	if root := readCert(t, filepath.Join(dir, rootFile)); !root.Equal(f.CA.CA.Root) {
		t.Error("root.crt is not the pinned root")
	}
	if chain := readCert(t, filepath.Join(dir, chainFile)); !chain.Equal(f.CA.CA.Intermediate) {
		t.Error("chain.pem is not the intermediate")
	}
	wantOut := "enrolled device dev-sn-0001; certificate " + dir + "/device.crt valid until " + cert.NotAfter.UTC().Format(time.RFC3339) + "; key: software (encrypted PEM)\n"
	if stdout.String() != wantOut {
		t.Errorf("stdout = %q, want %q", &stdout, wantOut)
	}
	for _, want := range []string{"pinned root " + f.Fingerprint(), "enrolling serial SN-0001 mac aabbcc001122,aabbcc001123"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, &stderr)
		}
	}

	// Second run: nothing to do, no request at all — not even a token needed.
	roots, enrolls := f.RootsHits.Load(), f.EnrollHits.Load()
	f.Srv.Close()
	stdout.Reset()
	stderr.Reset()
	args2 := []string{"--ca", f.Srv.URL, "--fingerprint", f.Fingerprint(), "--dir", dir}
	if code := run(context.Background(), args2, &stdout, &stderr, noEnv); code != exitOK {
		t.Fatalf("second run: exit %d, stderr:\n%s", code, &stderr)
	}
	want := "already enrolled as dev-sn-0001, certificate valid until " + cert.NotAfter.UTC().Format(time.RFC3339) + "; nothing to do\n"
	if stdout.String() != want {
		t.Errorf("second run stdout = %q, want %q", &stdout, want)
	}
	if f.RootsHits.Load() != roots || f.EnrollHits.Load() != enrolls {
		t.Error("second run contacted the CA")
	}
	if after := checkState(t, dir, nil, stateFiles); !after.Equal(cert) {
		t.Error("second run changed device.crt")
	}
}

func TestEnrollKeyPasswordFile(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("correct horse\n"), 0o600)
	h.cfg.KeyPasswordFile = pwFile
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{keyFile: 0o600, certFile: 0o644, chainFile: 0o644, rootFile: 0o644, caFile: 0o644}
	checkState(t, h.cfg.Dir, []byte("correct horse"), want)
}

func TestEnrollReusesPasswordFile(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	os.MkdirAll(h.cfg.Dir, 0o700)
	os.WriteFile(filepath.Join(h.cfg.Dir, passwordFile), []byte("kept-password\n"), 0o600)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	checkState(t, h.cfg.Dir, []byte("kept-password"), stateFiles)
}

func TestEnrollRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	f.Then(
		problem(http.StatusServiceUnavailable, "unavailable", "warming up", "Retry-After", "7"),
		func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadGateway) },
	)
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatalf("%v\n%s", err, &h.stderr)
	}
	// First: Retry-After 7s beats jitter (250ms); second: jitter of ceiling 1s.
	want := []time.Duration{7 * time.Second, 500 * time.Millisecond}
	if len(h.sleeps) != len(want) || h.sleeps[0] != want[0] || h.sleeps[1] != want[1] {
		t.Errorf("sleeps = %v, want %v", h.sleeps, want)
	}
	if got := f.EnrollHits.Load(); got != 3 {
		t.Errorf("%d enroll requests, want 3", got)
	}
	if !strings.Contains(h.stderr.String(), "enroll failed: 503 Service Unavailable: warming up [unavailable]; next try in 7s") {
		t.Errorf("stderr:\n%s", &h.stderr)
	}
	checkState(t, h.cfg.Dir, nil, stateFiles)
}

func TestEnrollPermanentProblem(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	h.cfg.Token = "wrong-token"
	err := h.run()
	if code := exitCode(err); code != exitFailure {
		t.Fatalf("exit %d (%v), want 1", code, err)
	}
	var p *wire.Problem
	if !errors.As(err, &p) || p.Slug() != "token-invalid" {
		t.Errorf("err = %v, want the token-invalid problem", err)
	}
	if !strings.Contains(err.Error(), "401 Unauthorized: unknown token") {
		t.Errorf("message %q lacks title and detail", err)
	}
	if n := f.EnrollHits.Load(); n != 1 || len(h.sleeps) != 0 {
		t.Errorf("%d requests, %d sleeps; want 1 and 0", n, len(h.sleeps))
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, certFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device.crt written after a refusal (%v)", err)
	}
}

func TestEnrollOtherPermanentStatuses(t *testing.T) {
	t.Parallel()
	for _, status := range []int{400, 403, 404, 409, 413, 422, 418, 501} {
		f := newFakeCA(t)
		f.Then(problem(status, "x", "refused"))
		h := newHarness(t, f)
		if code := exitCode(h.run()); code != exitFailure || f.EnrollHits.Load() != 1 {
			t.Errorf("status %d: exit %d after %d requests, want 1 after 1", status, code, f.EnrollHits.Load())
		}
	}
}

func TestEnrollTimesOutOnPersistent503(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	for range 100 {
		f.Then(func(w http.ResponseWriter) { http.Error(w, "busy", http.StatusServiceUnavailable) })
	}
	h := newHarness(t, f)
	h.cfg.Timeout = 2 * time.Minute
	err := h.run()
	if code := exitCode(err); code != exitTimedOut {
		t.Fatalf("exit %d (%v), want 3", code, err)
	}
	var total time.Duration
	for i, d := range h.sleeps {
		if ceiling := backoff(i); d >= ceiling {
			t.Errorf("sleep %d = %v, not below its ceiling %v", i, d, ceiling)
		}
		total += d
	}
	if total > h.cfg.Timeout {
		t.Errorf("slept %v in all, more than the timeout", total)
	}
	if len(h.sleeps) < 5 {
		t.Errorf("only %d retries", len(h.sleeps))
	}
	// Only the pending key (and its password) is kept, for the next run to
	// send again; no certificate.
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, certFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("device.crt written on failure (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, keyFile)); err != nil {
		t.Errorf("pending key not kept: %v", err)
	}
}

func TestEnrollWrongFingerprint(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	h.cfg.Fingerprint = strings.Repeat("ab", 32)
	err := h.run()
	if code := exitCode(err); code != exitFailure || !errors.Is(err, client.ErrPinMismatch) {
		t.Fatalf("exit %d (%v), want 1 with a pin mismatch", code, err)
	}
	if f.RootsHits.Load() != 1 || f.EnrollHits.Load() != 0 {
		t.Errorf("roots %d, enroll %d requests; want 1 and 0", f.RootsHits.Load(), f.EnrollHits.Load())
	}
}

func TestEnrollReplacesIdentityOfAnotherCA(t *testing.T) {
	t.Parallel()
	old, f := newFakeCA(t), newFakeCA(t)
	h := newHarness(t, old)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	h.cfg.CA, h.cfg.Fingerprint = f.Srv.URL, f.Fingerprint()
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	if f.EnrollHits.Load() != 1 {
		t.Fatal("did not enroll with the new CA")
	}
	if root := readCert(t, filepath.Join(h.cfg.Dir, rootFile)); !root.Equal(f.CA.CA.Root) {
		t.Error("root.crt not replaced")
	}
	checkState(t, h.cfg.Dir, nil, stateFiles)
}

func TestEnrollRejectsForeignCertificate(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	other := newFakeCA(t)
	// The CA answers with a certificate for another key: must be refused.
	ok := newHarness(t, other)
	if err := ok.run(); err != nil {
		t.Fatal(err)
	}
	foreign, _ := os.ReadFile(filepath.Join(ok.cfg.Dir, certFile))
	f.Then(func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		w.Write([]byte(`{"device_id":"x","certificate":` + quoteJSON(string(foreign)) + `,"chain":[]}`))
	})
	h := newHarness(t, f)
	err := h.run()
	if code := exitCode(err); code != exitFailure || !strings.Contains(err.Error(), "CA reply refused") {
		t.Fatalf("exit %d (%v)", code, err)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, certFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("device.crt written")
	}
}

func quoteJSON(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func TestBackoffCeilings(t *testing.T) {
	t.Parallel()
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second,
		8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := backoff(i); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i, got, w)
		}
	}
	if backoff(100) != backoffCap {
		t.Error("backoff(100) not capped")
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	fp := strings.Repeat("ab", 32)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "tok")
	os.WriteFile(tokenFile, []byte("t"), 0o600)
	base := []string{"--ca", "https://127.0.0.1:1", "--fingerprint", fp, "--dir", filepath.Join(dir, "s")}
	tests := []struct {
		name string
		args []string
		env  string
		want string
	}{
		{"no ca", []string{"--fingerprint", fp, "--dir", dir, "--token", "t"}, "", "--ca is required"},
		{"http ca", []string{"--ca", "http://x", "--fingerprint", fp, "--dir", dir, "--token", "t"}, "", "https://"},
		{"bad fingerprint", []string{"--ca", "https://x", "--fingerprint", "abc", "--dir", dir, "--token", "t"}, "", "64 hex digits"},
		{"no dir", []string{"--ca", "https://x", "--fingerprint", fp, "--token", "t"}, "", "--dir is required"},
		{"bad tpm spec", append(base, "--tpm", "tpm2", "--token", "t"), "", `--tpm "tpm2": want auto`},
		{"tpm device missing", append(base, "--tpm", "/nonexistent/tpm", "--token", "t"), "", "/nonexistent/tpm"},
		{"token and token file", append(base, "--token", "t", "--token-file", tokenFile), "", "only one of"},
		{"no token", base, "", "bootstrap token is required"},
		{"bad serial", append(base, "--token", "t", "--serial", "a b", "--mac", "aabbcc001122"), "", "serial"},
		{"bad mac", append(base, "--token", "t", "--serial", "S1", "--mac", "zz"), "", "mac"},
		{"unknown flag", append(base, "--nope"), "", "flag provided but not defined"},
		{"extra args", append(base, "extra"), "", "unexpected arguments"},
		{"renew without dir", []string{"renew"}, "", "--dir is required"},
		{"unknown subcommand", []string{"frobnicate"}, "", `unknown subcommand "frobnicate"`},
		{"unknown subcommand", []string{"frobnicate"}, "", "unknown subcommand"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, &stdout, &stderr, func(string) string { return tt.env })
			if code != exitUsage || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, &stderr, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q", &stdout)
			}
		})
	}
}

func TestTokenFromEnv(t *testing.T) {
	t.Parallel()
	cfg, err := parseEnrollFlags([]string{"--ca", "https://x"}, &bytes.Buffer{}, func(k string) string {
		if k == "DEVPKI_TOKEN" {
			return " env-token\n"
		}
		return ""
	})
	if err != nil || cfg.Token != "env-token" {
		t.Errorf("token %q, err %v", cfg.Token, err)
	}
}

func TestEnrollRetriesRootFetch(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	f.RootsFail.Store(2)
	h := newHarness(t, f)
	if err := h.run(); err != nil {
		t.Fatalf("%v\n%s", err, &h.stderr)
	}
	if f.RootsHits.Load() != 3 || len(h.sleeps) != 2 {
		t.Errorf("%d roots requests, %d sleeps; want 3 and 2", f.RootsHits.Load(), len(h.sleeps))
	}
}

// A device without a real-time clock boots in the past: the certificate is
// not yet valid by its clock, but enrollment succeeds (with a warning) and the
// next run still finds the identity.
func TestEnrollClockBehind(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	h := newHarness(t, f)
	h.now = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := h.run(); err != nil {
		t.Fatalf("%v\n%s", err, &h.stderr)
	}
	if !strings.Contains(h.stderr.String(), "system clock") {
		t.Errorf("no clock warning:\n%s", &h.stderr)
	}
	h.stdout.Reset()
	if err := h.run(); err != nil || !strings.Contains(h.stdout.String(), "already enrolled") {
		t.Errorf("second run: %v, %q", err, &h.stdout)
	}
	if f.EnrollHits.Load() != 1 {
		t.Errorf("%d enroll requests, want 1", f.EnrollHits.Load())
	}
}

func TestEnrollInterrupted(t *testing.T) {
	t.Parallel()
	f := newFakeCA(t)
	f.Then(func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) })
	h := newHarness(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	h.cfg.Sleep = func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }
	err := runEnroll(ctx, h.cfg)
	if code := exitCode(err); code != exitFailure || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("exit %d (%v), want 1 interrupted", code, err)
	}
}

// TestEnrollAutoWithoutTPM: --tpm auto (the default) on a device without a
// TPM enrolls with a software key and says so.
func TestEnrollAutoWithoutTPM(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/dev/tpmrm0", "/dev/tpm0"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: this machine has a TPM", p)
		}
	}
	f := newFakeCA(t)
	h := newHarness(t, f)
	h.cfg.TPM = "auto"
	if err := runEnroll(context.Background(), h.cfg); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.stderr.String(), "no TPM found") || !strings.Contains(h.stdout.String(), "key: software") {
		t.Errorf("stdout %q stderr %q: want the software fallback announced", &h.stdout, &h.stderr)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, tpmStateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir has %s after a software enrollment: %v", tpmStateDir, err)
	}

	// Without a token there is nothing to enroll with.
	h2 := newHarness(t, f)
	h2.cfg.TPM, h2.cfg.Token = "auto", ""
	if err := runEnroll(context.Background(), h2.cfg); exitCode(err) != exitUsage || !strings.Contains(err.Error(), "bootstrap token is required") {
		t.Errorf("no token, no TPM: %v", err)
	}
}

// TestEnrollAutoTPMGone: a device whose state says it enrolled with a TPM
// does not fall back to a software key when --tpm auto finds no TPM.
func TestEnrollAutoTPMGone(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/dev/tpmrm0", "/dev/tpm0"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: this machine has a TPM", p)
		}
	}
	f := newFakeCA(t)
	h := newHarness(t, f)
	h.cfg.TPM = "auto"
	if err := os.MkdirAll(h.cfg.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.cfg.Dir, tpmInfoFile), []byte(`{"spec": "auto", "ak": "devpki-ak"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := runEnroll(context.Background(), h.cfg)
	if err == nil || !strings.Contains(err.Error(), "refusing to fall back") {
		t.Fatalf("err = %v, want a refusal to fall back to a software key", err)
	}
	if n := f.EnrollHits.Load(); n != 0 {
		t.Errorf("%d enrollments reached the CA", n)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.Dir, keyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a software key was written: %v", err)
	}
}
