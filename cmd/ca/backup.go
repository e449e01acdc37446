package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	_ "github.com/mattn/go-sqlite3"    // database/sql driver "sqlite3"
	"go.step.sm/crypto/pemutil"

	"devpki/pkg/atomicfile"
	"devpki/pkg/provision"
	"devpki/pkg/registry/sqlstore"
)

// A backup is one gzip-compressed tar file:
//
//	manifest.json          always the first entry (backupManifest)
//	registry/registry.db   SQLite: a consistent copy (VACUUM INTO), verified
//	registry/registry.pgdump   PostgreSQL: pg_dump -Fc, verified with pg_restore --list
//	files/<role>           ca.yaml and the files it names: CA, TLS and admin
//	                       certificates, the CA's encrypted keys as they are on
//	                       disk (root.key too when it sits beside ca.yaml),
//	                       TPM EK roots
//
// It does NOT hold the passphrase file (the keys are useless without it: keep
// it apart from the backups) nor keys in an HSM or TPM (pkcs11:, tpmkms:
// URIs); the manifest lists what was left out.

const (
	backupFormat   = "devpki-backup/1"
	manifestEntry  = "manifest.json"
	maxManifestLen = 1 << 20
)

// backupManifest is manifest.json.
type backupManifest struct {
	Format        string         `json:"format"`
	Created       time.Time      `json:"created"`
	DevpkiVersion string         `json:"devpki_version"`
	Driver        string         `json:"driver"`
	Registry      registryCounts `json:"registry"`
	Files         []backupFile   `json:"files"`
	NotIncluded   []string       `json:"not_included,omitempty"`
}

// registryCounts are read from the backed-up registry itself and checked
// again after a restore.
type registryCounts struct {
	Devices      int64 `json:"devices"`
	Certificates int64 `json:"certificates"`
	AuditEvents  int64 `json:"audit_events"`
	AuditSeq     int64 `json:"audit_seq"`
}

// backupFile is one archived file.
type backupFile struct {
	Entry  string `json:"entry"`  // name in the archive
	Role   string `json:"role"`   // what it is: config, registry, ca.root, tls.key ...
	Path   string `json:"path"`   // as ca.yaml names it (relative to ca.yaml, or absolute)
	Mode   uint32 `json:"mode"`   // permission bits
	Size   int64  `json:"size"`   // bytes
	SHA256 string `json:"sha256"` // hex
}

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configPath, out string
	var force bool
	fs := newFlags("backup", stderr)
	fs.StringVar(&configPath, "config", "", "path of ca.yaml (the CA to back up; it may be serving)")
	fs.StringVar(&out, "out", "", "backup file to write (gzip tar, mode 0600)")
	fs.BoolVar(&force, "force", false, "replace --out if it exists")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if configPath == "" || out == "" {
		return fmt.Errorf("%w: --config DIR/ca.yaml and --out FILE are required", errUsage)
	}
	if _, err := os.Lstat(out); err == nil && !force {
		return fmt.Errorf("%w: %s exists; choose another --out or pass --force to replace it", errUsage, out)
	}
	cfg, err := LoadConfig(configPath)
	if err != nil {
		return err
	}
	start := time.Now()
	// Work files live beside --out: the registry copy can be as large as
	// the registry, and the final rename must stay on one filesystem.
	work, err := os.MkdirTemp(filepath.Dir(out), ".devpki-backup-*")
	if err != nil {
		return fmt.Errorf("create work directory beside %s: %w", out, err)
	}
	defer os.RemoveAll(work)

	m := &backupManifest{Format: backupFormat, Created: time.Now().UTC(), DevpkiVersion: devpkiVersion(), Driver: cfg.DB.Driver}
	var regFile, regEntry string
	switch cfg.DB.Driver {
	case sqlstore.DriverSQLite:
		regFile, regEntry = filepath.Join(work, "registry.db"), "registry/registry.db"
		if m.Registry, err = backupSQLite(ctx, cfg, regFile, stderr); err != nil {
			return err
		}
	case sqlstore.DriverPostgres:
		regFile, regEntry = filepath.Join(work, "registry.pgdump"), "registry/registry.pgdump"
		if m.Registry, err = backupPostgres(ctx, cfg.DSN(), regFile, stderr); err != nil {
			return err
		}
	}
	files, notIncluded, err := caFiles(cfg, configPath)
	if err != nil {
		return err
	}
	m.NotIncluded = notIncluded
	var sources []string
	for _, f := range files {
		bf, err := describeFile(f.src, "files/"+f.role, f.role, f.path)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, bf)
		sources = append(sources, f.src)
	}
	regPath := ""
	if cfg.DB.Driver == sqlstore.DriverSQLite {
		regPath = cfg.DB.DSN
	}
	bf, err := describeFile(regFile, regEntry, "registry", regPath)
	if err != nil {
		return err
	}
	bf.Mode = 0o600
	m.Files = append(m.Files, bf)
	sources = append(sources, regFile)

	fmt.Fprintf(stderr, "writing %s ...\n", out)
	if err := writeBackup(out, m, sources); err != nil {
		return err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	checked := "chain verified"
	if m.Driver == sqlstore.DriverPostgres {
		checked = "dump verified by pg_restore --list; the chain is verified at restore"
	}
	fmt.Fprintf(stdout, "backup %s: %d devices, %d certificates, %d audit events (%s), %d files, %d bytes in %s\n",
		out, m.Registry.Devices, m.Registry.Certificates, m.Registry.AuditEvents, checked, len(m.Files), fi.Size(),
		time.Since(start).Round(time.Millisecond))
	for _, n := range m.NotIncluded {
		fmt.Fprintf(stdout, "not in the backup: %s\n", n)
	}
	return nil
}

// caFile is a file of the CA's configuration to archive.
type caFile struct {
	role string // archive name under files/, unique
	path string // as ca.yaml names it
	src  string // where it is now
}

// caFiles lists ca.yaml and the files it names (the registry aside), and
// what a restore will need that the backup leaves out.
func caFiles(cfg *Config, configPath string) ([]caFile, []string, error) {
	var files []caFile
	var not []string
	add := func(role, p string) {
		if p != "" {
			files = append(files, caFile{role: role, path: p, src: cfg.Path(p)})
		}
	}
	add("ca.yaml", filepath.Base(configPath))
	files[0].src = configPath
	add("ca.root", cfg.CA.Root)
	add("ca.intermediate", cfg.CA.Intermediate)
	key := cfg.CA.Key
	switch {
	case strings.HasPrefix(key, "softkms:path="):
		add("ca.key", strings.TrimPrefix(key, "softkms:path="))
	case !strings.Contains(key, ":"):
		add("ca.key", key)
	default:
		not = append(not, fmt.Sprintf("the issuing CA key %s (a key in an HSM or TPM is never copied: back it up as its vendor says)", key))
	}
	// 'ca init' keeps the root's encrypted key beside ca.yaml; the CA never
	// reads it, but a rollover or a new intermediate needs it.
	if _, err := os.Stat(cfg.Path("root.key")); err == nil {
		add("ca.root_key", "root.key")
	}
	add("tls.cert", cfg.TLS.Cert)
	add("tls.key", cfg.TLS.Key)
	add("admin.cert", cfg.Admin.Cert)
	add("admin.key", cfg.Admin.Key)
	for i, p := range cfg.TPM.EKRoots {
		add(fmt.Sprintf("tpm.ek_roots.%d", i), p)
	}
	for i, p := range cfg.TPM.EKIntermediates {
		add(fmt.Sprintf("tpm.ek_intermediates.%d", i), p)
	}
	if cfg.PasswordFile != "" {
		not = append(not, fmt.Sprintf("the key passphrase file %s (keep it apart from the backups; a restore needs it)", cfg.PasswordFile))
	} else {
		not = append(not, "the key passphrase ($DEVPKI_PASSWORD; a restore needs it)")
	}
	return files, not, nil
}

// describeFile hashes one file for the manifest.
func describeFile(src, entry, role, path string) (backupFile, error) {
	f, err := os.Open(src)
	if err != nil {
		return backupFile{}, fmt.Errorf("back up %s (%s): %w", role, src, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return backupFile{}, err
	}
	if !fi.Mode().IsRegular() {
		return backupFile{}, fmt.Errorf("back up %s: %s is not a regular file", role, src)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return backupFile{}, fmt.Errorf("read %s: %w", src, err)
	}
	return backupFile{Entry: entry, Role: role, Path: path, Mode: uint32(fi.Mode().Perm()), Size: n,
		SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// writeBackup writes the archive to a temporary file beside out (mode 0600),
// fsyncs it, reads it back against the manifest, and only then renames it
// into place.
func writeBackup(out string, m *backupManifest, sources []string) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	gz := gzip.NewWriter(tmp)
	tw := tar.NewWriter(gz)
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: 0o600, ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(manifestEntry, int64(len(mj)))); err != nil {
		return err
	}
	if _, err := tw.Write(mj); err != nil {
		return err
	}
	for i, f := range m.Files {
		if err := tw.WriteHeader(hdr(f.Entry, f.Size)); err != nil {
			return err
		}
		if err := copyExact(tw, sources[i], f); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// Read what reached the disk: a backup is only done once it reads back.
	if _, err := readBackup(tmp.Name(), ""); err != nil {
		return fmt.Errorf("the backup written does not read back: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	ok = true
	return atomicfile.SyncDir(filepath.Dir(out))
}

// copyExact copies src into w and fails if it changed since it was hashed.
func copyExact(w io.Writer, src string, f backupFile) error {
	r, err := os.Open(src)
	if err != nil {
		return err
	}
	defer r.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, f.Size))
	if err != nil {
		return fmt.Errorf("archive %s: %w", src, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("archive %s: it changed while the backup ran; run the backup again", src)
	}
	return nil
}

// backupSQLite copies the registry with VACUUM INTO — one read transaction,
// so a consistent snapshot while the CA keeps writing — then verifies the
// copy: integrity_check, the audit hash chain, counts.
func backupSQLite(ctx context.Context, cfg *Config, copyPath string, stderr io.Writer) (registryCounts, error) {
	src := cfg.DSN()
	if _, err := os.Stat(src); err != nil {
		return registryCounts{}, fmt.Errorf("registry %s: %w (nothing to back up: is --config the CA's ca.yaml?)", src, err)
	}
	fmt.Fprintf(stderr, "copying registry %s (online, VACUUM INTO) ...\n", src)
	db, err := sql.Open("sqlite3", "file:"+src+"?mode=ro&_busy_timeout=30000")
	if err != nil {
		return registryCounts{}, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", copyPath); err != nil {
		return registryCounts{}, fmt.Errorf("copy registry %s: %w", src, err)
	}
	fmt.Fprintln(stderr, "verifying the copy (integrity check, audit chain) ...")
	return verifySQLiteCopy(ctx, cfg.Path(cfg.CA.Root), copyPath)
}

// verifySQLiteCopy checks a registry file that no one else has open and
// leaves it as a single file (no -wal or -shm beside it).
func verifySQLiteCopy(ctx context.Context, rootPath, path string) (registryCounts, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return registryCounts{}, err
	}
	var check string
	err = db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check)
	if err == nil && check != "ok" {
		err = fmt.Errorf("integrity_check: %s", check)
	}
	var counts registryCounts
	if err == nil {
		counts, err = countRegistry(ctx, db)
	}
	db.Close()
	if err != nil {
		return registryCounts{}, fmt.Errorf("registry copy %s does not verify: %w", path, err)
	}
	if err := verifyAuditAt(ctx, rootPath, sqlstore.DriverSQLite, path); err != nil {
		return registryCounts{}, err
	}
	for _, side := range []string{"-wal", "-shm"} {
		if fi, err := os.Stat(path + side); err == nil && fi.Size() > 0 && side == "-wal" {
			return registryCounts{}, fmt.Errorf("registry copy %s: its write-ahead log was not checkpointed", path)
		}
		os.Remove(path + side)
	}
	return counts, nil
}

// verifyAuditAt opens a registry through the store and verifies its audit
// chain (from its checkpoint, whose signer must chain to the root in
// rootPath, if it was pruned).
func verifyAuditAt(ctx context.Context, rootPath, driver, dsn string) error {
	st, err := sqlstore.Open(ctx, sqlstore.Options{Driver: driver, DSN: dsn})
	if err != nil {
		return fmt.Errorf("open registry: %w", err)
	}
	defer st.Close()
	root, _ := pemutil.ReadCertificate(rootPath)
	if _, err := provision.VerifyAudit(ctx, st, root); err != nil {
		return fmt.Errorf("audit chain of the registry does NOT verify: %w", err)
	}
	return st.Close()
}

// querier is a *sql.DB or *sql.Tx.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func countRegistry(ctx context.Context, q querier) (registryCounts, error) {
	var c registryCounts
	for _, x := range []struct {
		dst *int64
		sql string
	}{
		{&c.Devices, "SELECT COUNT(*) FROM devices"},
		{&c.Certificates, "SELECT COUNT(*) FROM certificates"},
		{&c.AuditEvents, "SELECT COUNT(*) FROM audit_events"},
		{&c.AuditSeq, "SELECT seq FROM audit_head WHERE id = 1"},
	} {
		if err := q.QueryRowContext(ctx, x.sql).Scan(x.dst); err != nil {
			return c, fmt.Errorf("%s: %w", x.sql, err)
		}
	}
	return c, nil
}

// backupPostgres runs pg_dump -Fc in a snapshot it shares with the counts,
// then checks the dump with pg_restore --list. The audit chain is verified
// when the dump is restored ('ca restore').
func backupPostgres(ctx context.Context, dsn, out string, stderr io.Writer) (registryCounts, error) {
	pgDump, err := pgTool("pg_dump")
	if err != nil {
		return registryCounts{}, err
	}
	pgRestore, err := pgTool("pg_restore")
	if err != nil {
		return registryCounts{}, err
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return registryCounts{}, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return registryCounts{}, fmt.Errorf("connect to the registry: %w", err)
	}
	defer tx.Rollback()
	var snapshot string
	if err := tx.QueryRowContext(ctx, "SELECT pg_export_snapshot()").Scan(&snapshot); err != nil {
		return registryCounts{}, fmt.Errorf("export a snapshot: %w", err)
	}
	counts, err := countRegistry(ctx, tx)
	if err != nil {
		return registryCounts{}, err
	}
	fmt.Fprintln(stderr, "dumping registry (pg_dump -Fc) ...")
	cmd := exec.CommandContext(ctx, pgDump, "--format=custom", "--no-owner", "--no-privileges", "--snapshot="+snapshot, "--file="+out, "--dbname="+dsn)
	if b, err := cmd.CombinedOutput(); err != nil {
		return registryCounts{}, fmt.Errorf("pg_dump: %w: %s", err, strings.TrimSpace(string(b)))
	}
	fmt.Fprintln(stderr, "verifying the dump (pg_restore --list) ...")
	list, err := exec.CommandContext(ctx, pgRestore, "--list", out).CombinedOutput()
	if err != nil {
		return registryCounts{}, fmt.Errorf("pg_restore --list: the dump does not read back: %w: %s", err, strings.TrimSpace(string(list)))
	}
	for _, t := range []string{"devices", "certificates", "audit_events", "audit_head"} {
		if !strings.Contains(string(list), "TABLE DATA public "+t+" ") {
			return registryCounts{}, fmt.Errorf("pg_restore --list: the dump has no data for table %s", t)
		}
	}
	return counts, nil
}

// pgTool finds a PostgreSQL client program.
func pgTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found in PATH: a PostgreSQL registry is backed up and restored with %s "+
			"(Debian: apt-get install postgresql-client, the same major version as the server)", name, name)
	}
	return p, nil
}

// version is set at build time (-ldflags "-X main.version=..."), by 'make deb'.
var version string

// devpkiVersion is version, else what the Go build recorded.
func devpkiVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v += " " + s.Value
		}
	}
	return v
}

var errBadBackup = errors.New("not a usable devpki backup")
