package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// TestBackupRestoreEndToEnd backs a serving CA up while devices enroll,
// restores the backup into a fresh directory, and runs the restored CA: a
// restored device renews with its key, is revoked, and OCSP and the CRL say
// so; the audit chain verifies. Restoring over the registry the running CA
// has open, or from a truncated, altered or foreign file, is refused and
// changes nothing.
func TestBackupRestoreEndToEnd(t *testing.T) {
	t.Parallel()
	ca := initCA(t)
	srv := ca.serve(t)
	work := t.TempDir()
	tok := ca.mintToken(t, srv, "--uses", "40")

	// One device enrolled before the backup: it must be in it.
	dev0 := filepath.Join(work, "dev-0")
	id0 := ca.enrollOK(t, srv, tok.Token, dev0, "BK-0000")

	// Enrollments keep running while the backup is taken.
	const workers, each = 4, 4
	var wg sync.WaitGroup
	firstDone := make(chan struct{})
	var once sync.Once
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				serial := fmt.Sprintf("BK-%d%03d", w+1, i)
				res, err := runE(t, nil, enrollBin, enrollArgs(srv, ca.Fingerprint, tok.Token, filepath.Join(work, serial), serial)...)
				if err == nil && res.code != 0 {
					err = fmt.Errorf("enroll %s: %s", serial, res)
				}
				if err != nil {
					errs <- err
				}
				once.Do(func() { close(firstDone) })
			}
		}()
	}
	<-firstDone
	backup := filepath.Join(work, "ca-backup.tgz")
	res := mustRun(t, nil, caBin, "backup", "--config", ca.Config, "--out", backup)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	counts := regexp.MustCompile(`backup \S+: (\d+) devices, (\d+) certificates, (\d+) audit events \(chain verified\)`).FindStringSubmatch(res.stdout)
	if counts == nil {
		t.Fatalf("ca backup: no summary line:\n%s", res)
	}
	devices, _ := strconv.Atoi(counts[1])
	if devices < 2 || devices > 1+workers*each {
		t.Errorf("backup holds %d devices; want at least the 2 enrolled before it, at most %d", devices, 1+workers*each)
	}
	if !strings.Contains(res.stdout, "not in the backup: the key passphrase file") {
		t.Errorf("ca backup does not say the passphrase file is left out:\n%s", res)
	}
	requireMode(t, backup, 0o600)
	checkBackupContents(t, backup)

	// Same --out again: refused, the backup untouched.
	before, _ := os.ReadFile(backup)
	if r := run(t, nil, caBin, "backup", "--config", ca.Config, "--out", backup); r.code != 2 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("backup over an existing file: want exit 2 naming --force, got %s", r)
	}
	if after, _ := os.ReadFile(backup); !bytes.Equal(before, after) {
		t.Error("a refused backup changed the existing file")
	}

	// The registry the running CA has open: refused even with --force.
	ino := inode(t, ca.DB)
	r := run(t, nil, caBin, "restore", "--from", backup, "--config", ca.Config, "--force")
	if r.code != 1 || !strings.Contains(r.stderr, "in use by a running 'ca serve'") {
		t.Errorf("restore over the serving CA: want exit 1 'in use', got %s", r)
	}
	if inode(t, ca.DB) != ino {
		t.Error("a refused restore replaced the live registry")
	}
	requireNoStaging(t, ca.Dir)

	// Bad files: refused, the target directory not even created.
	for name, file := range map[string]string{
		"truncated": writeFile(t, work, "truncated.tgz", before[:len(before)*2/3]),
		"altered":   rewriteBackup(t, backup, work, "altered.tgz", "files/ca.root", func(b []byte) []byte { return bytes.Replace(b, []byte("A"), []byte("B"), 1) }),
		"dropped":   rewriteBackup(t, backup, work, "dropped.tgz", "files/ca.key", nil),
		"foreign":   foreignArchive(t, work),
		"not-gzip":  ca.Config,
	} {
		dst := filepath.Join(work, "restore-"+name)
		r := run(t, nil, caBin, "restore", "--from", file, "--dir", dst)
		if r.code != 1 || !strings.Contains(r.stderr, "not a usable devpki backup") {
			t.Errorf("restore from a %s backup: want exit 1 'not a usable devpki backup', got %s", name, r)
		}
		if _, err := os.Stat(dst); !os.IsNotExist(err) {
			t.Errorf("restore from a %s backup left %s behind", name, dst)
		}
	}
	if r := run(t, nil, caBin, "restore", "--from", filepath.Join(work, "truncated.tgz"), "--dir", filepath.Join(work, "x")); !strings.Contains(r.stderr, "truncated") {
		t.Errorf("a truncated backup is not called truncated:\n%s", r)
	}

	// Disk lost: the CA stops, the backup comes back in a fresh directory.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(work, "restored")
	res = mustRun(t, nil, caBin, "restore", "--from", backup, "--dir", fresh)
	if !strings.Contains(res.stdout, fmt.Sprintf("%d devices", devices)) || !strings.Contains(res.stdout, "chain verified") {
		t.Errorf("ca restore output:\n%s", res)
	}
	// A second restore into it: refused without --force.
	if r := run(t, nil, caBin, "restore", "--from", backup, "--dir", fresh); r.code != 2 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("restore into a non-empty directory: want exit 2, got %s", r)
	}
	restored := &testCA{Dir: fresh, Config: filepath.Join(fresh, "ca.yaml"), Fingerprint: ca.Fingerprint, DB: filepath.Join(fresh, "registry.db")}
	for _, f := range []string{"ca.yaml", "intermediate.key", "root.key", "server.key", "admin.key", "registry.db"} {
		requireMode(t, filepath.Join(fresh, f), 0o600)
	}
	restored.auditVerify(t)
	srv2 := restored.serve(t)
	// The restored CA refuses a restore over itself too (the lock is its).
	if r := run(t, nil, caBin, "restore", "--from", backup, "--dir", fresh, "--force"); r.code != 1 || !strings.Contains(r.stderr, "in use") {
		t.Errorf("restore over the restored, serving CA: want exit 1 'in use', got %s", r)
	}

	// The device enrolled before the backup renews with its own key.
	old := readCert(t, filepath.Join(dev0, "device.crt"))
	mustRun(t, nil, enrollBin, "renew", "--dir", dev0, "--ca", srv2.URL)
	renewed := readCert(t, filepath.Join(dev0, "device.crt"))
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || !samePub(old, renewed) {
		t.Fatalf("renewal on the restored CA: serial %x (was %x), same key %v", renewed.SerialNumber, old.SerialNumber, samePub(old, renewed))
	}

	// Revoked on the restored CA: OCSP and the CRL say so.
	mustRun(t, nil, caBin, "devices", "revoke", id0, "--reason", "keyCompromise", "--config", restored.Config, "--ca", srv2.URL)
	inter := readCerts(t, filepath.Join(dev0, "chain.pem"))[0]
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(fresh, "root.crt")))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, err := ocsp.CreateRequest(renewed, inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr, err := hc.Post(srv2.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	or, err := ocsp.ParseResponseForCert(b, renewed, inter)
	if err != nil {
		t.Fatalf("OCSP: %v", err)
	}
	if or.Status != ocsp.Revoked {
		t.Errorf("OCSP status of the revoked, restored device: %d, want revoked", or.Status)
	}
	hr, err = hc.Get(srv2.URL + "/crl")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(hr.Body)
	hr.Body.Close()
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(inter); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	listed := map[string]bool{}
	for _, e := range crl.RevokedCertificateEntries {
		listed[e.SerialNumber.Text(16)] = true
	}
	if !listed[old.SerialNumber.Text(16)] || !listed[renewed.SerialNumber.Text(16)] {
		t.Errorf("CRL %v lists %v; want both certificates of %s", crl.Number, listed, id0)
	}
	// CRL numbers keep growing past any the old CA may have published
	// after the backup.
	if crl.Number.Int64() < time.Now().Add(-time.Hour).Unix() {
		t.Errorf("CRL number %v after a restore: want it raised past the restore time", crl.Number)
	}
	// A device whose renewal ran after the backup... is the restored
	// registry's to judge: the others renew too.
	mustRun(t, nil, enrollBin, "renew", "--dir", filepath.Join(work, "BK-1000"), "--ca", srv2.URL)
	restored.auditVerify(t)
}

// checkBackupContents opens the archive: a manifest first, the encrypted
// keys, no passphrase.
func checkBackupContents(t *testing.T, path string) {
	t.Helper()
	entries := readArchive(t, path)
	var m struct {
		Format string `json:"format"`
		Files  []struct {
			Entry, Role string
		} `json:"files"`
	}
	if err := json.Unmarshal(entries["manifest.json"], &m); err != nil || m.Format != "devpki-backup/1" {
		t.Fatalf("manifest: %v %q", err, m.Format)
	}
	for _, want := range []string{"files/ca.yaml", "files/ca.root", "files/ca.key", "files/ca.root_key", "files/tls.key", "registry/registry.db"} {
		if entries[want] == nil {
			t.Errorf("backup lacks %s", want)
		}
	}
	for name, b := range entries {
		if bytes.Contains(b, []byte(testPassphrase)) {
			t.Errorf("backup entry %s holds the passphrase", name)
		}
		if strings.HasSuffix(name, "key") && !bytes.Contains(b, []byte("ENCRYPTED")) {
			t.Errorf("backup entry %s is not an encrypted PEM key", name)
		}
	}
}

func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	var order []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = b
		order = append(order, h.Name)
	}
	if len(order) == 0 || order[0] != "manifest.json" {
		t.Fatalf("backup entries %v: the manifest is not first", order)
	}
	return out
}

// rewriteBackup copies a backup, changing one entry's content (nil: drop
// the entry) and keeping the manifest as it was.
func rewriteBackup(t *testing.T, src, dir, name, entry string, change func([]byte) []byte) string {
	t.Helper()
	in := readArchive(t, src)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	write := func(n string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: n, Size: int64(len(b)), Mode: 0o600, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	write("manifest.json", in["manifest.json"])
	for n, b := range in {
		switch {
		case n == "manifest.json":
		case n == entry && change == nil:
		case n == entry:
			write(n, change(b))
		default:
			write(n, b)
		}
	}
	tw.Close()
	gz.Close()
	return writeFile(t, dir, name, buf.Bytes())
}

// foreignArchive is a gzip tar that 'ca backup' did not write.
func foreignArchive(t *testing.T, dir string) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "etc/hosts", Size: 5, Mode: 0o644, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	gz.Close()
	return writeFile(t, dir, "foreign.tgz", buf.Bytes())
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// requireNoStaging fails if a restore left its staging directory behind.
func requireNoStaging(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".devpki-restore-") {
			t.Errorf("a refused restore left %s in %s", e.Name(), dir)
		}
	}
}

// TestBackupRestorePostgres backs up a PostgreSQL registry with pg_dump
// while the CA serves, refuses to restore into the database the CA uses,
// and restores into a fresh database that a restored CA then serves.
func TestBackupRestorePostgres(t *testing.T) {
	dsn := os.Getenv("DEVPKI_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("DEVPKI_TEST_POSTGRES_DSN not set")
	}
	if _, err := exec.LookPath("pg_dump"); err != nil {
		t.Skip("pg_dump not installed (postgresql-client)")
	}
	t.Parallel()
	ca := initCA(t)
	live := freshPostgresDB(t, dsn)
	usePostgres(t, ca, live)
	srv := ca.serve(t)
	work := t.TempDir()
	dev := filepath.Join(work, "dev")
	id := ca.enrollOK(t, srv, ca.mintToken(t, srv).Token, dev, "PGBK-0001")

	backup := filepath.Join(work, "pg.tgz")
	res := mustRun(t, nil, caBin, "backup", "--config", ca.Config, "--out", backup)
	if !strings.Contains(res.stdout, "1 devices") {
		t.Errorf("ca backup:\n%s", res)
	}
	if readArchive(t, backup)["registry/registry.pgdump"] == nil {
		t.Fatal("PostgreSQL backup lacks registry/registry.pgdump")
	}
	// Into the database the serving CA uses: refused.
	if r := run(t, nil, caBin, "restore", "--from", backup, "--dir", filepath.Join(work, "busy"), "--force"); r.code != 1 || !strings.Contains(r.stderr, "other sessions") {
		t.Errorf("restore into the live database: want exit 1 'other sessions', got %s", r)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// Into a database that has tables: refused without --force.
	if r := run(t, nil, caBin, "restore", "--from", backup, "--dir", filepath.Join(work, "full")); r.code != 1 || !strings.Contains(r.stderr, "already holds") {
		t.Errorf("restore into a non-empty database: want exit 1 'already holds', got %s", r)
	}

	target := freshPostgresDB(t, dsn)
	fresh := filepath.Join(work, "restored")
	mustRun(t, nil, caBin, "restore", "--from", backup, "--dir", fresh, "--db-dsn", target)
	restored := &testCA{Dir: fresh, Config: filepath.Join(fresh, "ca.yaml"), Fingerprint: ca.Fingerprint}
	cfg, _ := os.ReadFile(restored.Config)
	if !strings.Contains(string(cfg), strings.Fields(target)[len(strings.Fields(target))-1]) {
		t.Errorf("restored ca.yaml does not name the target database:\n%s", cfg)
	}
	restored.auditVerify(t)
	srv2 := restored.serve(t)
	mustRun(t, nil, enrollBin, "renew", "--dir", dev, "--ca", srv2.URL)
	mustRun(t, nil, caBin, "devices", "revoke", id, "--reason", "superseded", "--config", restored.Config, "--ca", srv2.URL)
	if r := run(t, nil, enrollBin, "renew", "--dir", dev, "--ca", srv2.URL); r.code == 0 {
		t.Errorf("a device revoked on the restored CA renewed:\n%s", r)
	}
	restored.auditVerify(t)

	db, err := sql.Open("pgx", target)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM devices WHERE status = 'revoked'").Scan(&n); err != nil || n != 1 {
		t.Errorf("restored database: %d revoked devices (%v), want 1", n, err)
	}
}
