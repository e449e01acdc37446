package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/api/client"
	"devpki/api/wire"
)

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	config string
	caURL  string
	output string
	// adminCert and adminKey act as another admin than the config's.
	adminCert, adminKey string
	// adminPasswordFile decrypts adminKey (default: the config's passphrase).
	adminPasswordFile string
}

func (a *adminFlags) register(fs interface {
	StringVar(*string, string, string, string)
}) {
	fs.StringVar(&a.config, "config", "", "path of ca.yaml (its admin certificate, key and root are used)")
	fs.StringVar(&a.caURL, "ca", "", "CA URL (default: the config's url)")
	fs.StringVar(&a.output, "output", "text", "output format: text or json")
	fs.StringVar(&a.adminCert, "admin-cert", "", "act as this admin: its certificate chain (PEM; default: the config's admin.cert)")
	fs.StringVar(&a.adminKey, "admin-key", "", "the key of --admin-cert (PEM, encrypted or not)")
	fs.StringVar(&a.adminPasswordFile, "admin-password-file", "", "passphrase of an encrypted --admin-key (default: the config's passphrase)")
}

// client builds an admin API client over mTLS from the config's admin pair.
func (a *adminFlags) client() (*client.Client, error) {
	if a.config == "" {
		return nil, fmt.Errorf("%w: --config DIR/ca.yaml is required", errUsage)
	}
	if a.output != "text" && a.output != "json" {
		return nil, fmt.Errorf("%w: --output must be text or json", errUsage)
	}
	cfg, err := LoadConfig(a.config)
	if err != nil {
		return nil, err
	}
	pair, err := a.keyPair(cfg)
	if err != nil {
		return nil, err
	}
	root, err := pemutil.ReadCertificate(cfg.Path(cfg.CA.Root))
	if err != nil {
		return nil, fmt.Errorf("load root: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	url := a.caURL
	if url == "" {
		url = cfg.URL
	}
	return client.New(url, client.WithRoots(pool), client.WithClientCertificate(pair))
}

// keyPair loads the admin certificate and key the command acts with:
// --admin-cert/--admin-key when given, else the config's admin pair.
func (a *adminFlags) keyPair(cfg *Config) (tls.Certificate, error) {
	certPath, keyPath := cfg.Path(cfg.Admin.Cert), cfg.Path(cfg.Admin.Key)
	if (a.adminCert == "") != (a.adminKey == "") {
		return tls.Certificate{}, fmt.Errorf("%w: --admin-cert and --admin-key go together", errUsage)
	}
	if a.adminCert != "" {
		certPath, keyPath = a.adminCert, a.adminKey
	} else if cfg.Admin.Cert == "" || cfg.Admin.Key == "" {
		return tls.Certificate{}, fmt.Errorf("config %s names no admin certificate (admin.cert, admin.key); give --admin-cert and --admin-key", a.config)
	}
	var password []byte
	var err error
	if a.adminPasswordFile != "" {
		password, err = readPassword(a.adminPasswordFile)
	} else if a.adminCert == "" || keyEncrypted(keyPath) {
		password, err = cfg.Password()
	}
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := loadKeyPair(certPath, keyPath, password)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load admin certificate: %w", err)
	}
	return pair, nil
}

// keyEncrypted reports whether the PEM key file at path is encrypted (an
// unreadable file reports true, so that loading it names the error).
func keyEncrypted(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return true
	}
	blk, _ := pem.Decode(b)
	return blk == nil || blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] != ""
}

func cmdTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	var req wire.TokenCreateRequest
	var ttl time.Duration
	fs := newFlags("token create", stderr)
	af.register(fs)
	fs.StringVar(&req.Serial, "serial", "", "bind the token to this device serial (needed to re-enroll an enrolled serial)")
	fs.BoolVar(&req.Reinstate, "reinstate", false, "with --serial: let the token re-enroll that device although an admin revoked it (audited as a reinstatement)")
	fs.StringVar(&req.Tenant, "tenant", "", "tenant (default: the default tenant)")
	fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	fs.IntVar(&req.Uses, "uses", 1, "how many enrollments the token allows")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if ttl <= 0 || req.Uses <= 0 {
		return fmt.Errorf("%w: --ttl and --uses must be positive", errUsage)
	}
	if req.Reinstate && req.Serial == "" {
		return fmt.Errorf("%w: --reinstate needs --serial: a reinstate token names the revoked device it brings back", errUsage)
	}
	req.TTL = ttl.String()
	c, err := af.client()
	if err != nil {
		return err
	}
	resp, err := c.CreateToken(ctx, &req)
	if err != nil {
		return fmt.Errorf("create token: %w", err)
	}
	if af.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp)
	}
	fmt.Fprintf(stderr, "token %s: %d use(s), expires %s", resp.ID, resp.Uses, resp.ExpiresAt.Format(time.RFC3339))
	if resp.Serial != "" {
		fmt.Fprintf(stderr, ", bound to serial %s", resp.Serial)
	}
	if resp.Reinstate {
		fmt.Fprint(stderr, ", reinstates it if revoked")
	}
	fmt.Fprintln(stderr, " (shown once; it is stored hashed)")
	fmt.Fprintln(stdout, resp.Token)
	return nil
}
