package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
)

// The registry made unwritable under a running `ca serve`, two ways, both
// real on Linux as root:
//
//   - immutable: chattr +i on registry.db and registry.db-wal (never the
//     -shm file, which SQLite memory-maps: the process would die of SIGBUS).
//     A write through a descriptor opened before chattr fails too (EPERM).
//   - full filesystem: the registry on an 8 MiB tmpfs, then a filler file
//     takes every free byte; deleting it gives the space back.
//
// Each must give 503 store-unavailable with Retry-After to enrollment,
// token minting and revocation, turn /readyz 503 while /healthz stays 200,
// and let an `enroll` started during the outage finish by itself once the
// store is writable again, leaving no orphan rows, an intact database and
// a verifiable audit chain.

func TestFaultRegistryImmutable(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr not installed (e2fsprogs)")
	}
	ca := initCA(t)
	probe := filepath.Join(filepath.Dir(ca.DB), "chattr-probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chattr", "+i", probe).CombinedOutput(); err != nil {
		t.Skipf("the filesystem of %s does not support chattr +i: %v %s", probe, err, out)
	}
	exec.Command("chattr", "-i", probe).Run()

	files := []string{ca.DB, ca.DB + "-wal"}
	chattr := func(flag string) {
		for _, f := range files {
			if out, err := exec.Command("chattr", flag, f).CombinedOutput(); err != nil {
				t.Fatalf("chattr %s %s: %v %s", flag, f, err, out)
			}
		}
	}
	t.Cleanup(func() {
		for _, f := range files {
			exec.Command("chattr", "-i", f).Run() // TempDir's removal needs it
		}
	})
	storeFaultScenario(t, ca, func() (restore func()) {
		chattr("+i")
		return func() { chattr("-i") }
	})
}

func TestFaultRegistryDiskFull(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ca := initCA(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	// Move the registry (closed after ca init) onto the tmpfs.
	db := filepath.Join(mnt, "registry.db")
	b, err := os.ReadFile(ca.DB)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(ca.DB)
	cfg, err := os.ReadFile(ca.Config)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte("dsn: registry.db")) {
		t.Fatalf("ca.yaml has no 'dsn: registry.db':\n%s", cfg)
	}
	cfg = bytes.Replace(cfg, []byte("dsn: registry.db"), []byte("dsn: "+db), 1)
	if err := os.WriteFile(ca.Config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	ca.DB = db

	filler := filepath.Join(mnt, "filler")
	storeFaultScenario(t, ca, func() (restore func()) {
		fillFilesystem(t, filler)
		return func() {
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make the registry unwritable (chattr, mount)")
	}
}

// fillFilesystem writes path until the filesystem has no byte left.
func fillFilesystem(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}

// storeFaultScenario runs the outage: inject makes the registry unwritable
// and returns what makes it writable again.
func storeFaultScenario(t *testing.T, ca *testCA, inject func() (restore func())) {
	srv := ca.serve(t)
	admin := []string{"--config", ca.Config, "--ca", srv.URL}

	// Before the outage: one device enrolled (to revoke during it), and the
	// token of the device that will boot during it.
	idA := ca.enrollOK(t, srv, ca.mintToken(t, srv, "--uses", "1").Token, filepath.Join(t.TempDir(), "a"), "E2E-OUTAGE-A")
	tokB := ca.mintToken(t, srv, "--uses", "1")
	hc := insecureClient()
	requireStatus(t, hc, srv.URL+"/readyz", http.StatusOK)

	restore := inject()
	restored := false
	defer func() {
		if !restored {
			restore()
		}
	}()

	// Enrollment: 503 store-unavailable with Retry-After, token unspent.
	csr := deviceCSR(t, "E2E-OUTAGE-B")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/enroll", bytes.NewReader(csr))
	req.Header.Set("Authorization", "Bearer "+tokB.Token)
	req.Header.Set("Content-Type", "application/json")
	requireStoreUnavailable(t, hc, req)

	// /readyz turns 503; /healthz (liveness) stays 200.
	rz, _ := http.NewRequest(http.MethodGet, srv.URL+"/readyz", nil)
	requireStoreUnavailable(t, hc, rz)
	requireStatus(t, hc, srv.URL+"/healthz", http.StatusOK)

	// Token minting and revocation are refused with the same problem.
	for _, argv := range [][]string{
		append([]string{"token", "create", "--uses", "1"}, admin...),
		append([]string{"devices", "revoke", idA, "--reason", "keyCompromise"}, admin...),
	} {
		res := run(t, nil, caBin, argv...)
		if res.code == 0 || !strings.Contains(res.stderr, "503") || !strings.Contains(res.stderr, wire.SlugStoreUnavailable) {
			t.Errorf("ca %s during the outage: want a 503 %s failure, got %s", argv[0]+" "+argv[1], wire.SlugStoreUnavailable, res)
		}
	}

	// A device boots during the outage: enroll keeps retrying...
	stateB := filepath.Join(t.TempDir(), "b")
	bg := startEnroll(t, enrollArgs(srv, ca.Fingerprint, tokB.Token, stateB, "E2E-OUTAGE-B", "--timeout", "2m")...)
	bg.waitStderr(t, "[store-unavailable]; next try in", 30*time.Second)

	// ...and succeeds by itself once the store can write again.
	restore()
	restored = true
	res := bg.wait(t, 90*time.Second)
	if res.code != 0 {
		t.Fatalf("enroll started during the outage: want exit 0 after recovery, got %s", res)
	}
	if !enrolledLine.MatchString(res.stdout) {
		t.Errorf("enroll: no 'enrolled device' line:\n%s", res)
	}
	readCert(t, filepath.Join(stateB, "device.crt"))
	deadline := time.Now().Add(10 * time.Second)
	for status(t, hc, srv.URL+"/readyz") != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still not 200 10s after recovery")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Minting and revoking work again.
	ca.mintToken(t, srv, "--uses", "1")
	mustRun(t, nil, caBin, append([]string{"devices", "revoke", idA, "--reason", "keyCompromise"}, admin...)...)

	// The registry: no orphan rows, token uses consistent, intact file,
	// audit chain verified.
	db := ca.openSQL(t)
	var orphans int
	if err := db.QueryRow(`SELECT count(*) FROM devices d WHERE NOT EXISTS
		(SELECT 1 FROM certificates c WHERE c.device_id = d.id)`).Scan(&orphans); err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Errorf("%d devices without a certificate", orphans)
	}
	rows, err := db.Query(`SELECT t.id, t.uses_left, (SELECT count(*) FROM certificates c WHERE c.token_hash = t.hash) FROM tokens t`)
	if err != nil {
		t.Fatal(err)
	}
	ntok := 0
	for rows.Next() {
		var id string
		var left, used int
		if err := rows.Scan(&id, &left, &used); err != nil {
			t.Fatal(err)
		}
		ntok++
		if left+used != 1 { // every token of this test was minted with --uses 1
			t.Errorf("token %s: %d uses left and %d certificates, want 1 in all", id, left, used)
		}
	}
	rows.Close()
	if ntok != 3 {
		t.Errorf("%d tokens in the registry, want 3 (none minted during the outage)", ntok)
	}
	var integrity string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&integrity); err != nil || integrity != "ok" {
		t.Errorf("PRAGMA integrity_check = %q, %v", integrity, err)
	}
	ca.auditVerify(t)
}

func insecureClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // status codes only
	}}
}

func status(t *testing.T, hc *http.Client, url string) int {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func requireStatus(t *testing.T, hc *http.Client, url string, want int) {
	t.Helper()
	if got := status(t, hc, url); got != want {
		t.Fatalf("GET %s: %d, want %d", url, got, want)
	}
}

// requireStoreUnavailable sends req and requires 503 store-unavailable with
// a Retry-After in seconds and no certificate.
func requireStoreUnavailable(t *testing.T, hc *http.Client, req *http.Request) {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	what := req.Method + " " + req.URL.Path
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%s during the outage: %d %s, want 503", what, resp.StatusCode, b)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "5" {
		t.Errorf("%s: Retry-After %q, want 5", what, ra)
	}
	var p wire.Problem
	if err := json.Unmarshal(b, &p); err != nil || p.Slug() != wire.SlugStoreUnavailable {
		t.Errorf("%s: problem %s (%v), want slug %s", what, b, err, wire.SlugStoreUnavailable)
	}
	if bytes.Contains(b, []byte("CERTIFICATE")) {
		t.Errorf("%s: a certificate in a failed answer: %s", what, b)
	}
}

// deviceCSR is the JSON body of POST /v1/enroll for serial.
func deviceCSR(t *testing.T, serial string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewDeviceCSR(key, serial, []string{"020000000002"})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.EnrollRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))})
	return body
}

// bgCmd is a binary running in the background.
type bgCmd struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	start          time.Time
	err            error
}

func startEnroll(t *testing.T, args ...string) *bgCmd {
	t.Helper()
	b := &bgCmd{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{}), start: time.Now()}
	b.cmd = exec.Command(enrollBin, args...)
	b.cmd.Env = cleanEnv()
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.err = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

func (b *bgCmd) waitStderr(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(b.stderr.String(), want) {
		select {
		case <-b.done:
			t.Fatalf("enroll exited (%v) before printing %q:\n%s", b.err, want, b.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("enroll did not print %q within %s:\n%s", want, timeout, b.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bgCmd) wait(t *testing.T, timeout time.Duration) result {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(timeout):
		b.cmd.Process.Kill()
		<-b.done
		t.Fatalf("enroll still running after %s:\n%s", timeout, b.stderr)
	}
	res := result{stdout: b.stdout.String(), stderr: b.stderr.String(), elapsed: time.Since(b.start)}
	var ee *exec.ExitError
	if errors.As(b.err, &ee) {
		res.code = ee.ExitCode()
	} else if b.err != nil {
		t.Fatal(b.err)
	}
	t.Logf("background enroll → exit %d (%s)\n%s", res.code, res.elapsed.Round(time.Millisecond), res.stderr)
	return res
}
