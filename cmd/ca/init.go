package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// initOptions are the inputs of 'ca init'.
type initOptions struct {
	Dir          string
	PasswordFile string
	Dev          bool
	DNS          []string
	IPs          []string
	Listen       string
	URL          string
	HTTPListen   string
	HTTPURL      string
	TrustDomain  string
	AdminName    string

	// KMS is a pkcs11: URI naming a token that holds the issuing key;
	// KMSKey an existing key in it; KMSRoot puts the root key there too.
	KMS     string
	KMSKey  string
	KMSRoot bool
	// DB is a PostgreSQL connection string (URL or key=value) for the
	// registry; empty means SQLite in DIR/registry.db.
	DB string
}

// Files 'ca init' writes, relative to the directory.
const (
	fileConfig    = "ca.yaml"
	filePassword  = "password"
	fileServerCrt = "server.crt"
	fileServerKey = "server.key"
	fileAdminCrt  = "admin.crt"
	fileAdminKey  = "admin.key"
	fileDB        = "registry.db"
)

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o initOptions
	var dns, ips listFlag
	fs := newFlags("init", stderr)
	fs.StringVar(&o.Dir, "dir", "", "directory to create the CA in (required)")
	fs.StringVar(&o.PasswordFile, "password-file", "", "file holding the passphrase that encrypts the keys (or set DEVPKI_PASSWORD)")
	fs.BoolVar(&o.Dev, "dev", false, "development setup: generate a passphrase into DIR/password when none is given")
	fs.Var(&dns, "dns", "DNS name for the CA's TLS certificate (repeatable; default localhost)")
	fs.Var(&ips, "ip", "IP address for the CA's TLS certificate (repeatable; default 127.0.0.1)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8443", "address 'ca serve' listens on")
	fs.StringVar(&o.URL, "url", "", "URL devices and admins use to reach the CA (default https://<listen>)")
	fs.StringVar(&o.HTTPListen, "http-listen", "", "plain-HTTP address publishing the CRL, OCSP and CA certificates (config http_listen; default none)")
	fs.StringVar(&o.HTTPURL, "http-url", "", "base URL certificates name for the CRL, OCSP and caIssuers (config http_url; default http://<http-listen>)")
	fs.StringVar(&o.TrustDomain, "trust-domain", "devpki.local", "trust domain of device identities")
	fs.StringVar(&o.AdminName, "admin", "admin", "name of the first admin")
	fs.StringVar(&o.KMS, "kms", "", "make the issuing CA key inside a PKCS#11 token: 'pkcs11:module-path=LIB;token=LABEL?pin-source=FILE' (RFC 7512; pin-value=PIN also works but lands in ca.yaml); no intermediate.key is written")
	fs.StringVar(&o.KMSKey, "kms-key", "", "with --kms: certify this existing key in the token instead of making one: 'pkcs11:id=HEX;object=LABEL'")
	fs.BoolVar(&o.KMSRoot, "kms-root", false, "with --kms: make the root key in the token too (default: an encrypted root.key to move offline)")
	fs.StringVar(&o.DB, "db", "", "PostgreSQL registry: 'postgres://user@host/db' or 'host=... dbname=...' (an empty database; "+
		"default SQLite DIR/registry.db); written to ca.yaml (mode 0600) as db.dsn")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.Dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	o.DNS, o.IPs = dns, ips
	if len(o.DNS) == 0 && len(o.IPs) == 0 {
		o.DNS, o.IPs = []string{"localhost"}, []string{"127.0.0.1"}
	}
	fp, err := initCA(ctx, o, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "CA created in %s\n", o.Dir)
	fmt.Fprintf(stderr, "root fingerprint (SHA-256, pin this on devices):\n")
	fmt.Fprintln(stdout, fp)
	return nil
}

// initCA creates a CA in o.Dir and returns the root fingerprint. It refuses
// to touch a directory that already holds any of its files, and removes what
// it wrote when it fails half way.
func initCA(ctx context.Context, o initOptions, stderr io.Writer) (fp string, err error) {
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return "", err
	}
	var errs []error
	if pki.ValidateAdminName(o.AdminName) != nil {
		errs = append(errs, fmt.Errorf("--admin %q: use 1 to 64 letters, digits and . _ - only (not \".\" or \"..\")", o.AdminName))
	}
	for _, d := range o.DNS {
		if err := pki.ValidateDNSName(d); err != nil {
			errs = append(errs, fmt.Errorf("--dns: %w", err))
		}
	}
	var ipList []net.IP
	for _, s := range o.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			errs = append(errs, fmt.Errorf("--ip %q is not an IP address", s))
		}
		ipList = append(ipList, ip)
	}
	if o.URL == "" {
		o.URL = "https://" + o.Listen
	}
	cfg := &Config{
		Listen:      o.Listen,
		URL:         o.URL,
		HTTPListen:  o.HTTPListen,
		HTTPURL:     o.HTTPURL,
		TrustDomain: o.TrustDomain,
		CA: CAConfig{
			Root:         "root.crt",
			Intermediate: "intermediate.crt",
			Key:          "softkms:path=intermediate.key",
		},
		TLS:   TLSConfig{KeyPair: KeyPair{Cert: fileServerCrt, Key: fileServerKey}},
		Admin: AdminKeyConfig{KeyPair: KeyPair{Cert: fileAdminCrt, Key: fileAdminKey}},
		DB:    DBConfig{Driver: "sqlite", DSN: fileDB},
		dir:   dir,
	}
	if o.DB != "" {
		if !isPostgresDSN(o.DB) {
			errs = append(errs, fmt.Errorf("--db %q is not a PostgreSQL connection string: use postgres://user@host:5432/dbname or "+
				"'host=... user=... dbname=...' (without --db the registry is SQLite, DIR/%s)", redactDSN(o.DB), fileDB))
		}
		cfg.DB = DBConfig{Driver: "postgres", DSN: o.DB}
	}
	cfg.defaults()
	cfg.CA.Key = "softkms:path=intermediate.key"
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, o.checkKMS())
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}

	targets := []string{fileConfig, "root.crt", "root.key", "intermediate.crt", "intermediate.key",
		fileServerCrt, fileServerKey, fileAdminCrt, fileAdminKey, fileDB}
	for _, f := range targets {
		if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
			return "", fmt.Errorf("%s already holds a CA (%s exists); refusing to overwrite anything — choose another --dir", dir, f)
		}
	}

	if cfg.DB.Driver == "postgres" {
		// Before anything is written: the database must answer and hold no
		// registry yet.
		if err := checkEmptyPostgres(ctx, cfg); err != nil {
			return "", err
		}
	}

	password, err := readPassword(o.PasswordFile)
	if o.PasswordFile != "" {
		if abs, aerr := filepath.Abs(o.PasswordFile); aerr == nil {
			cfg.PasswordFile = abs
		}
	}
	if err != nil {
		if !o.Dev {
			return "", err
		}
		if _, serr := os.Lstat(filepath.Join(dir, filePassword)); serr == nil {
			return "", fmt.Errorf("%s already holds a password file; refusing to overwrite — choose another --dir", dir)
		}
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		password = []byte(base64.RawURLEncoding.EncodeToString(b[:]))
		targets = append(targets, filePassword)
		cfg.PasswordFile = filePassword
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			for _, f := range targets {
				os.Remove(filepath.Join(dir, f))
			}
			for _, f := range []string{"-wal", "-shm"} {
				os.Remove(filepath.Join(dir, fileDB+f))
			}
		}
	}()
	if cfg.PasswordFile == filePassword {
		if err := atomicfile.Create(filepath.Join(dir, filePassword), append(password, '\n'), 0o600); err != nil {
			return "", err
		}
	}

	files, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: dir, Password: password,
		KMS: o.KMS, IntermediateKey: o.KMSKey, RootInKMS: o.KMSRoot})
	if err != nil {
		return "", fmt.Errorf("create CA: %w", err)
	}
	defer ca.Close()
	defer func() {
		// A failed init leaves no key it made in the token either.
		if err != nil {
			ca.DeleteCreatedKeys()
		} else if files.IntermediateKeyURI != "" {
			reportTokenKeys(stderr, files)
		}
	}()
	if files.IntermediateKeyURI != "" {
		cfg.CA.Key, cfg.CA.RootKey = files.IntermediateKeyURI, files.RootKeyURI
	}
	issuer, err := pki.NewIssuer(pki.IssuerOptions{CA: ca, TrustDomain: cfg.TrustDomain})
	if err != nil {
		return "", err
	}
	store, err := sqlstore.Open(ctx, sqlstore.Options{Driver: cfg.DB.Driver, DSN: cfg.DSN()})
	if err != nil {
		return "", fmt.Errorf("open registry: %w", err)
	}
	defer store.Close()
	if cfg.DB.Driver == "postgres" {
		defer func() {
			if err != nil {
				err = fmt.Errorf("%w; the PostgreSQL database now holds a partial registry: drop and recreate it "+
					"before running 'ca init' again", err)
			}
		}()
	}
	tenant, err := store.GetTenant(ctx, registry.DefaultTenant)
	if err != nil {
		return "", fmt.Errorf("default tenant: %w", err)
	}
	now := time.Now()

	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	srv, err := issuer.IssueServer(ctx, &pki.ServerRequest{
		PublicKey: serverKey.Public(), CommonName: "devpki CA", DNSNames: o.DNS, IPs: ipList,
		Lifetime: 365 * 24 * time.Hour,
	})
	if err != nil {
		return "", fmt.Errorf("issue TLS certificate: %w", err)
	}
	if err := writeKeyPair(cfg.Path(fileServerCrt), cfg.Path(fileServerKey), srv, serverKey, password); err != nil {
		return "", err
	}
	who := provision.SystemActor("init", tenant.ID)
	if err := provision.RecordIssued(ctx, store, who, srv.Certificate, registry.KindServer, tenant.ID, now); err != nil {
		return "", err
	}

	adminKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	adm, err := issuer.IssueClient(ctx, &pki.ClientRequest{
		PublicKey: adminKey.Public(), CommonName: o.AdminName, Organization: registry.DefaultTenant,
		URIs: []*url.URL{pki.AdminURI(cfg.TrustDomain, registry.DefaultTenant, o.AdminName)},
		// The bootstrap admin's certificate lives admin.cert_lifetime, like
		// every admin's; it renews with 'ca admins renew'.
		Lifetime: time.Duration(cfg.Admin.CertLifetime),
	})
	if err != nil {
		return "", fmt.Errorf("issue admin certificate: %w", err)
	}
	if err := writeKeyPair(cfg.Path(fileAdminCrt), cfg.Path(fileAdminKey), adm, adminKey, password); err != nil {
		return "", err
	}
	// The first admin is a super-admin: it acts on every tenant.
	if err := provision.PutAdmin(ctx, store, who, &registry.Admin{Name: o.AdminName, TenantID: tenant.ID, Role: registry.RoleAdmin, Super: true, CreatedAt: now}); err != nil {
		return "", err
	}
	if err := provision.RecordIssued(ctx, store, who, adm.Certificate, registry.KindAdmin, tenant.ID, now); err != nil {
		return "", err
	}
	if err := writeConfig(cfg.Path(fileConfig), cfg); err != nil {
		return "", err
	}
	return pki.Fingerprint(ca.Root), nil
}

// writeKeyPair writes the leaf and its chain, and the key encrypted with password.
func writeKeyPair(certPath, keyPath string, is *pki.Issued, key *ecdsa.PrivateKey, password []byte) error {
	blk, err := pemutil.Serialize(key, pemutil.WithPassword(password))
	if err != nil {
		return fmt.Errorf("encrypt key: %w", err)
	}
	if err := atomicfile.Create(keyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	return atomicfile.Create(certPath, pemChain(is.Certificate, is.Chain), 0o644)
}

func pemChain(leaf *x509.Certificate, chain []*x509.Certificate) []byte {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	for _, c := range chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// isPostgresDSN reports whether dsn looks like a PostgreSQL connection
// string: a postgres:// or postgresql:// URL, or libpq key=value pairs.
func isPostgresDSN(dsn string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return true
	}
	return libpqKeyValue.MatchString(dsn)
}

// libpqKeyValue is the start of a libpq key=value connection string.
var libpqKeyValue = regexp.MustCompile(`^\s*[a-z_]+\s*=`)

// checkEmptyPostgres refuses a PostgreSQL database 'ca init' cannot use:
// unreachable, or already holding a devpki registry. It changes nothing.
func checkEmptyPostgres(ctx context.Context, cfg *Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	where := redactDSN(cfg.DB.DSN)
	st, err := sqlstore.ReadSchema(ctx, sqlstore.Options{Driver: cfg.DB.Driver, DSN: cfg.DB.DSN})
	if err != nil {
		return fmt.Errorf("cannot use the PostgreSQL database %s: %w — check the connection string, that the server is up "+
			"and that the database exists (CREATE DATABASE); nothing was written", where, err)
	}
	if !st.Empty {
		v := fmt.Sprintf("schema version %d", st.Current)
		if st.Legacy {
			v = "from before versioned migrations"
		}
		return fmt.Errorf("the PostgreSQL database %s already holds a devpki registry (%s): refusing to initialize a new CA "+
			"over it; nothing was changed — use an empty database for a new CA, or serve this registry with the ca.yaml "+
			"that created it", where, v)
	}
	return nil
}
