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
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"devpki/pkg/atomicfile"
	"devpki/pkg/registry/sqlstore"
)

func cmdRestore(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	var from, configPath, dir, dbDSN string
	var force bool
	fs := newFlags("restore", stderr)
	fs.StringVar(&from, "from", "", "backup file ('ca backup --out')")
	fs.StringVar(&configPath, "config", "", "restore the CA in place: ca.yaml goes here, the files it names where it names them")
	fs.StringVar(&dir, "dir", "", "restore into this fresh directory instead (files ca.yaml names by absolute path are put under DIR/restored)")
	fs.StringVar(&dbDSN, "db-dsn", "", "PostgreSQL: restore into this database (an empty one) instead of the backup's db.dsn")
	var owner string
	fs.StringVar(&owner, "owner", "", "give the restored files to this user and its group (as root; e.g. devpki-ca for the packaged service)")
	fs.BoolVar(&force, "force", false, "replace existing files and an existing registry (never one a running CA has open)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if from == "" || (configPath == "") == (dir == "") {
		return fmt.Errorf("%w: --from FILE and one of --config DIR/ca.yaml or --dir DIR are required", errUsage)
	}
	var chown func(string) error
	if owner != "" {
		if chown, err = chowner(owner); err != nil {
			return err
		}
	}
	inPlace := configPath != ""
	if !inPlace {
		configPath = filepath.Join(dir, fileConfig)
	}
	configPath, err = filepath.Abs(configPath)
	if err != nil {
		return err
	}
	base := filepath.Dir(configPath)
	if !inPlace && !force {
		if ents, err := os.ReadDir(base); err == nil && len(ents) > 0 {
			return fmt.Errorf("%w: --dir %s is not empty; restore into a fresh directory (or --force to overwrite what is there)", errUsage, base)
		}
	}
	// Nothing is changed until the backup has read back completely: staged
	// in a directory we remove again, beside the target.
	var createdDirs []string // for --owner
	createdBase := false
	if _, err := os.Stat(base); errors.Is(err, os.ErrNotExist) {
		if err := mkdirTracked(base, &createdDirs); err != nil {
			return err
		}
		createdBase = true
	}
	done := false
	defer func() {
		if !done && createdBase {
			os.RemoveAll(base)
		}
	}()
	stage, err := os.MkdirTemp(base, ".devpki-restore-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)

	fmt.Fprintf(stderr, "reading %s ...\n", from)
	m, err := readBackup(from, stage)
	if err != nil {
		return err
	}
	p, err := planRestore(m, stage, configPath, inPlace, dbDSN)
	if err != nil {
		return err
	}

	var unlock func()
	switch m.Driver {
	case sqlstore.DriverSQLite:
		if err := mkdirTracked(filepath.Dir(p.registryDst), &createdDirs); err != nil {
			return err
		}
		unlock, err = lockRegistry(p.registryDst, true)
		if errors.Is(err, errRegistryBusy) {
			return fmt.Errorf("refusing to restore: registry %s is in use by a running 'ca serve' (stop it first, e.g. systemctl stop devpki-ca); nothing was changed", p.registryDst)
		}
		if err != nil {
			return err
		}
		defer unlock()
	case sqlstore.DriverPostgres:
		if err := checkPostgresTarget(ctx, p.dsn, force); err != nil {
			return err
		}
	}
	var existing []string
	for _, f := range p.files {
		if _, err := os.Lstat(f.dst); err == nil {
			existing = append(existing, f.dst)
		}
	}
	if p.registryDst != "" {
		if _, err := os.Lstat(p.registryDst); err == nil {
			existing = append(existing, p.registryDst)
		}
	}
	if len(existing) > 0 && !force {
		return fmt.Errorf("refusing to restore over existing files (pass --force to replace them; nothing was changed):\n  %s", strings.Join(existing, "\n  "))
	}

	if m.Driver == sqlstore.DriverSQLite {
		if err := raiseCRLNumber(ctx, sqlstore.DriverSQLite, p.registrySrc); err != nil {
			return err
		}
		fmt.Fprintln(stderr, "verifying the registry copy (integrity check, audit chain) ...")
		got, err := verifySQLiteCopy(ctx, p.rootSrc, p.registrySrc)
		if err != nil {
			return fmt.Errorf("%w: %w", errBadBackup, err)
		}
		if got != m.Registry {
			return fmt.Errorf("%w: registry counts %+v differ from the manifest's %+v", errBadBackup, got, m.Registry)
		}
	}

	// Install: the CA's files first, the registry last.
	for _, f := range p.files {
		if err := mkdirTracked(filepath.Dir(f.dst), &createdDirs); err != nil {
			return err
		}
		if err := installFile(f.src, f.dst, os.FileMode(f.mode)); err != nil {
			return err
		}
	}
	switch m.Driver {
	case sqlstore.DriverSQLite:
		// The old registry's log must not be replayed into the new one.
		for _, side := range []string{"-wal", "-shm"} {
			if err := os.Remove(p.registryDst + side); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := installFile(p.registrySrc, p.registryDst, 0o600); err != nil {
			return err
		}
	case sqlstore.DriverPostgres:
		fmt.Fprintln(stderr, "restoring the registry (pg_restore) ...")
		if err := restorePostgres(ctx, p.registrySrc, p.dsn, force); err != nil {
			return err
		}
		if err := raiseCRLNumber(ctx, sqlstore.DriverPostgres, p.dsn); err != nil {
			return err
		}
	}
	done = true

	fmt.Fprintln(stderr, "verifying the restored registry ...")
	regDSN := p.registryDst
	if m.Driver == sqlstore.DriverPostgres {
		regDSN = p.dsn
	}
	if err := verifyAuditAt(ctx, p.rootDst, m.Driver, regDSN); err != nil {
		return fmt.Errorf("restored, but: %w", err)
	}
	got, err := countLive(ctx, m.Driver, regDSN)
	if err != nil {
		return fmt.Errorf("restored, but: %w", err)
	}
	if got != m.Registry {
		return fmt.Errorf("restored, but the registry counts %+v differ from the backup's %+v", got, m.Registry)
	}
	if chown != nil {
		for _, d := range createdDirs {
			if err := chown(d); err != nil {
				return err
			}
		}
		for _, f := range p.files {
			if err := chown(f.dst); err != nil {
				return err
			}
		}
		if m.Driver == sqlstore.DriverSQLite {
			for _, side := range []string{"", "-wal", "-shm"} {
				if err := chown(p.registryDst + side); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
		}
	}
	fmt.Fprintf(stdout, "restored %s into %s: %d devices, %d certificates, %d audit events (chain verified)\n",
		from, configPath, m.Registry.Devices, m.Registry.Certificates, m.Registry.AuditEvents)
	for _, n := range m.NotIncluded {
		fmt.Fprintf(stdout, "not in the backup, put it back yourself: %s\n", n)
	}
	fmt.Fprintf(stdout, "start the CA: ca serve --config %s\n", configPath)
	return nil
}

// restorePlan says where each staged file goes.
type restorePlan struct {
	files                    []plannedFile
	registrySrc, registryDst string // SQLite file, or the dump (dst unused)
	dsn                      string // PostgreSQL target
	rootSrc, rootDst         string
}

type plannedFile struct {
	src, dst string
	mode     uint32
}

// planRestore maps the manifest's files onto the target. Relative paths stay
// relative to ca.yaml; absolute ones stay where they were in place, and move
// under DIR/restored with --dir (ca.yaml is then rewritten to name them).
func planRestore(m *backupManifest, stage, configPath string, inPlace bool, dbDSN string) (*restorePlan, error) {
	base := filepath.Dir(configPath)
	p := &restorePlan{}
	moved := map[string]string{}
	where := func(f backupFile) string {
		path := f.Path
		if f.Role == "registry" {
			path, _, _ = strings.Cut(strings.TrimPrefix(path, "file:"), "?")
		}
		switch {
		case !filepath.IsAbs(path):
			return filepath.Join(base, path)
		case inPlace:
			return path
		}
		rel := filepath.Join("restored", f.Role+"-"+filepath.Base(path))
		moved[f.Role] = rel
		return filepath.Join(base, rel)
	}
	var config string
	for _, f := range m.Files {
		src := filepath.Join(stage, filepath.FromSlash(f.Entry))
		switch f.Role {
		case "registry":
			p.registrySrc = src
			if m.Driver == sqlstore.DriverSQLite {
				p.registryDst = where(f)
			}
			continue
		case "ca.yaml":
			config = src
			p.files = append(p.files, plannedFile{src: src, dst: configPath, mode: 0o600})
			continue
		case "ca.root":
			p.rootSrc = src
		}
		dst := where(f)
		if f.Role == "ca.root" {
			p.rootDst = dst
		}
		p.files = append(p.files, plannedFile{src: src, dst: dst, mode: f.Mode & 0o777})
	}
	if config == "" || p.registrySrc == "" || p.rootSrc == "" {
		return nil, fmt.Errorf("%w: the manifest lacks ca.yaml, the CA root or the registry", errBadBackup)
	}
	cfg, err := LoadConfig(config)
	if err != nil {
		return nil, fmt.Errorf("%w: its ca.yaml: %w", errBadBackup, err)
	}
	if cfg.DB.Driver != m.Driver {
		return nil, fmt.Errorf("%w: its ca.yaml says db.driver %s, its manifest %s", errBadBackup, cfg.DB.Driver, m.Driver)
	}
	if m.Driver == sqlstore.DriverPostgres {
		p.dsn = cfg.DB.DSN
		if dbDSN != "" {
			p.dsn = dbDSN
			cfg.DB.DSN = dbDSN
			moved["db.dsn"] = dbDSN
		}
	} else if dbDSN != "" {
		return nil, fmt.Errorf("%w: --db-dsn is for a PostgreSQL registry; this backup holds a SQLite one", errUsage)
	}
	if len(moved) == 0 {
		return p, nil
	}
	// Name the relocated files in the restored ca.yaml.
	for role, rel := range moved {
		switch {
		case role == "registry":
			cfg.DB.DSN = rel
		case role == "ca.root":
			cfg.CA.Root = rel
		case role == "ca.intermediate":
			cfg.CA.Intermediate = rel
		case role == "ca.key":
			cfg.CA.Key = "softkms:path=" + rel
		case role == "tls.cert":
			cfg.TLS.Cert = rel
		case role == "tls.key":
			cfg.TLS.Key = rel
		case role == "admin.cert":
			cfg.Admin.Cert = rel
		case role == "admin.key":
			cfg.Admin.Key = rel
		case strings.HasPrefix(role, "tpm.ek_roots."), strings.HasPrefix(role, "tpm.ek_intermediates."):
			list := &cfg.TPM.EKRoots
			if strings.HasPrefix(role, "tpm.ek_intermediates.") {
				list = &cfg.TPM.EKIntermediates
			}
			var i int
			if _, err := fmt.Sscanf(role[strings.LastIndex(role, ".")+1:], "%d", &i); err != nil || i >= len(*list) {
				return nil, fmt.Errorf("%w: manifest role %q", errBadBackup, role)
			}
			(*list)[i] = rel
		}
	}
	if err := writeConfig(config, cfg); err != nil {
		return nil, err
	}
	return p, nil
}

var entryName = regexp.MustCompile(`^(files/[a-z0-9_.]+|registry/registry\.(db|pgdump))$`)

// readBackup reads a backup through, checking every file against the
// manifest (size and SHA-256), and stages the files under stage (entry
// names as paths) unless stage is empty.
func readBackup(path, stage string) (*backupManifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open backup: %w", err)
	}
	defer f.Close()
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", errBadBackup, path, fmt.Sprintf(format, a...))
	}
	readErr := func(err error) error {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return bad("truncated (the file ends early: copy it again from where it was stored)")
		}
		return bad("corrupt: %v", err)
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, bad("not a gzip tar written by 'ca backup' (%v)", err)
	}
	tr := tar.NewReader(gz)
	h, err := tr.Next()
	if err != nil {
		return nil, readErr(err)
	}
	if h.Name != manifestEntry || h.Size > maxManifestLen {
		return nil, bad("its first entry is %q, not a devpki manifest", h.Name)
	}
	var m backupManifest
	mj, err := io.ReadAll(tr)
	if err != nil {
		return nil, readErr(err)
	}
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, bad("manifest: %v", err)
	}
	if m.Format != backupFormat {
		return nil, bad("format %q, this ca reads %q", m.Format, backupFormat)
	}
	if m.Driver != sqlstore.DriverSQLite && m.Driver != sqlstore.DriverPostgres {
		return nil, bad("manifest: driver %q", m.Driver)
	}
	want := map[string]backupFile{}
	for _, bf := range m.Files {
		if !entryName.MatchString(bf.Entry) || bf.Size < 0 || len(bf.SHA256) != 64 {
			return nil, bad("manifest: bad entry %q", bf.Entry)
		}
		if _, dup := want[bf.Entry]; dup {
			return nil, bad("manifest: entry %q twice", bf.Entry)
		}
		want[bf.Entry] = bf
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, readErr(err)
		}
		bf, ok := want[h.Name]
		if !ok {
			return nil, bad("entry %q is not in the manifest (or appears twice)", h.Name)
		}
		delete(want, h.Name)
		if h.Typeflag != tar.TypeReg || h.Size != bf.Size {
			return nil, bad("entry %q: %d bytes, the manifest says %d", h.Name, h.Size, bf.Size)
		}
		var w io.Writer = io.Discard
		var out *os.File
		if stage != "" {
			dst := filepath.Join(stage, filepath.FromSlash(h.Name))
			if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
				return nil, err
			}
			if out, err = os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				return nil, err
			}
			w = out
		}
		sum := sha256.New()
		_, err = io.Copy(io.MultiWriter(w, sum), tr)
		if out != nil {
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return nil, readErr(err)
		}
		if hex.EncodeToString(sum.Sum(nil)) != bf.SHA256 {
			return nil, bad("entry %q: SHA-256 differs from the manifest's (the file was altered or damaged)", h.Name)
		}
	}
	// The gzip trailer (CRC-32, length) is only checked once read.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, readErr(err)
	}
	for name := range want {
		return nil, bad("entry %q of the manifest is missing", name)
	}
	return &m, nil
}

// installFile copies src next to dst, fsyncs it and renames it over dst.
func installFile(src, dst string, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if _, err := io.Copy(tmp, in); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	ok = true
	return atomicfile.SyncDir(filepath.Dir(dst))
}

// checkPostgresTarget refuses a database other sessions use (a running CA)
// and, without force, one that already holds tables.
func checkPostgresTarget(ctx context.Context, dsn string, force bool) error {
	if _, err := pgTool("pg_restore"); err != nil {
		return err
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	var others, tables int
	err = db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&others)
	if err != nil {
		return fmt.Errorf("connect to the target database: %w (create it first: createdb NAME)", err)
	}
	if others > 0 {
		return fmt.Errorf("refusing to restore: the target database has %d other sessions (a running 'ca serve'? stop it first); nothing was changed", others)
	}
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil {
		return err
	}
	if tables > 0 && !force {
		return fmt.Errorf("refusing to restore: the target database already holds %d tables (restore into an empty database, e.g. --db-dsn with a new dbname, or --force to replace them); nothing was changed", tables)
	}
	return nil
}

// restorePostgres loads a pg_dump -Fc file in one transaction.
func restorePostgres(ctx context.Context, dump, dsn string, clean bool) error {
	pgRestore, err := pgTool("pg_restore")
	if err != nil {
		return err
	}
	args := []string{"--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges", "--dbname=" + dsn}
	if clean {
		args = append(args, "--clean", "--if-exists")
	}
	out, err := exec.CommandContext(ctx, pgRestore, append(args, dump)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_restore (nothing was restored: it runs in one transaction): %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// countLive counts a restored registry.
func countLive(ctx context.Context, driver, dsn string) (registryCounts, error) {
	name, src := "sqlite3", "file:"+dsn+"?mode=ro"
	if driver == sqlstore.DriverPostgres {
		name, src = "pgx", dsn
	}
	db, err := sql.Open(name, src)
	if err != nil {
		return registryCounts{}, err
	}
	defer db.Close()
	return countRegistry(ctx, db)
}

// raiseCRLNumber moves the CRL counter of a restored registry past any
// number the CA may have published after the backup was taken (CRL numbers
// must only grow, RFC 5280 §5.2.3): to the current Unix time in seconds,
// when that is larger — a CA issues far fewer than one CRL a second. The
// partition CRLs' counters are raised alike (and a partition first
// published later starts above the full CRL's counter).
func raiseCRLNumber(ctx context.Context, driver, dsn string) error {
	st, err := sqlstore.Open(ctx, sqlstore.Options{Driver: driver, DSN: dsn})
	if err != nil {
		return fmt.Errorf("open the restored registry to raise its CRL numbers: %w", err)
	}
	defer st.Close()
	if err := st.RaiseCRLNumbers(ctx, time.Now().Unix()); err != nil {
		return fmt.Errorf("raise the CRL numbers of the restored registry: %w", err)
	}
	return st.Close()
}

// chowner returns a function that gives a file to user name and its
// primary group.
func chowner(name string) (func(string) error, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w: --owner: %w", errUsage, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("--owner %s: uid %q gid %q are not numbers", name, u.Uid, u.Gid)
	}
	return func(path string) error { return os.Chown(path, uid, gid) }, nil
}

// mkdirTracked is os.MkdirAll(dir, 0700) that appends the directories it
// made to created, parents first.
func mkdirTracked(dir string, created *[]string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		*created = append(*created, missing[i])
	}
	return nil
}
