package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"go.step.sm/crypto/pemutil"

	"devpki/api/wire"
	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
)

// newAdminKey makes a P-256 key, writes it to keyPath encrypted with
// password (mode 0600) and returns a CSR for it.
func newAdminKey(keyPath string, password []byte) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	blk, err := pemutil.Serialize(key, pemutil.WithPassword(password))
	if err != nil {
		return nil, fmt.Errorf("encrypt key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Create(keyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// keyPassword is the passphrase that encrypts a key the command makes:
// --password-file when given, else the config's.
func keyPassword(cfgPath, file string) ([]byte, error) {
	if file != "" {
		return readPassword(file)
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		return nil, err
	}
	return cfg.Password()
}

// writeAdminCert writes the issued certificate and its chain to path.
func writeAdminCert(path string, out *wire.AdminCertificate) error {
	b := []byte(out.Certificate)
	for _, c := range out.Chain {
		b = append(b, c...)
	}
	return atomicfile.Create(path, b, 0o644)
}

// cmdAdminsAdd is 'ca admins add NAME --role R [--tenant T] --out DIR [--csr F]'.
func cmdAdminsAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("admins add NAME", stderr)
	af.register(fs)
	role := fs.String("role", "", "admin, operator or auditor (required)")
	tenant := fs.String("tenant", "", "the admin's tenant; without it the admin is a super-admin over all tenants")
	out := fs.String("out", "", "directory for NAME.crt (and NAME.key when no --csr is given) (required)")
	csrFile := fs.String("csr", "", "PEM CSR of a key the new admin made (no key is written)")
	pwFile := fs.String("password-file", "", "passphrase that encrypts the new key (default: the config's passphrase)")
	name, err := parseWithTarget(fs, args, "admin name")
	if err != nil {
		return err
	}
	if *role == "" || *out == "" {
		return fmt.Errorf("%w: --role and --out are required", errUsage)
	}
	if err := pki.ValidateAdminName(name); err != nil {
		return fmt.Errorf("%w: admin name %q: %v", errUsage, name, err)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	keyPath, certPath := filepath.Join(*out, name+".key"), filepath.Join(*out, name+".crt")
	var csr []byte
	if *csrFile != "" {
		if csr, err = os.ReadFile(*csrFile); err != nil {
			return err
		}
	} else {
		if _, err := os.Stat(keyPath); err == nil {
			return fmt.Errorf("%s exists; choose another --out or remove it", keyPath)
		}
		pw, err := keyPassword(af.config, *pwFile)
		if err != nil {
			return err
		}
		if csr, err = newAdminKey(keyPath, pw); err != nil {
			return err
		}
	}
	res, err := c.CreateAdmin(ctx, &wire.AdminCreateRequest{Name: name, Role: *role, Tenant: *tenant, CSR: string(csr)})
	if err != nil {
		if *csrFile == "" {
			os.Remove(keyPath) // no admin, no key
		}
		return fmt.Errorf("add admin %s: %w", name, err)
	}
	if err := writeAdminCert(certPath, res); err != nil {
		return err
	}
	if af.output == "json" {
		return printJSON(stdout, res.Admin)
	}
	scope := "tenant " + res.Admin.Tenant
	if res.Admin.Super {
		scope = "all tenants (super-admin)"
	}
	fmt.Fprintf(stdout, "admin %s (%s, %s): %s", name, res.Admin.Role, scope, certPath)
	if *csrFile != "" {
		keyPath = "KEY-OF-THE-CSR"
	} else {
		fmt.Fprintf(stdout, ", key %s", keyPath)
	}
	fmt.Fprintf(stdout, "\nuse it with: ca ... --admin-cert %s --admin-key %s\n", certPath, keyPath)
	return nil
}

// cmdAdminsList is 'ca admins list'.
func cmdAdminsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("admins list", stderr)
	af.register(fs)
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	l, err := c.ListAdmins(ctx)
	if err != nil {
		return fmt.Errorf("list admins: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tTENANT\tSTATUS\tCREATED")
	for _, a := range l.Admins {
		tenant := a.Tenant
		if a.Super {
			tenant = "* (super-admin)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, a.Role, tenant, a.Status, fmtTime(a.CreatedAt))
	}
	return tw.Flush()
}

// cmdAdminsRevoke is 'ca admins revoke NAME'.
func cmdAdminsRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("admins revoke NAME", stderr)
	af.register(fs)
	name, err := parseWithTarget(fs, args, "admin name")
	if err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	res, err := c.RevokeAdmin(ctx, name)
	if err != nil {
		return fmt.Errorf("revoke admin %s: %w", name, err)
	}
	if af.output == "json" {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "admin %s revoked; %d certificate(s) revoked\n", name, len(res.Revoked))
	for _, r := range res.Revoked {
		fmt.Fprintf(stdout, "  %s %s\n", r.Serial, r.Reason)
	}
	return nil
}

// cmdAdminsRenew is 'ca admins renew --out DIR': a new key and certificate
// for the admin the command acts as, over mTLS with its current one.
func cmdAdminsRenew(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("admins renew", stderr)
	af.register(fs)
	out := fs.String("out", "", "directory for NAME.crt and the new NAME.key (required)")
	pwFile := fs.String("password-file", "", "passphrase that encrypts the new key (default: the config's passphrase)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	pw, err := keyPassword(af.config, *pwFile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return err
	}
	tmpKey := filepath.Join(*out, ".renew.key")
	csr, err := newAdminKey(tmpKey, pw)
	if err != nil {
		return err
	}
	defer os.Remove(tmpKey)
	res, err := c.RenewAdmin(ctx, &wire.AdminRenewRequest{CSR: string(csr)})
	if err != nil {
		return fmt.Errorf("renew admin certificate: %w", err)
	}
	name := res.Admin.Name
	keyPath, certPath := filepath.Join(*out, name+".key"), filepath.Join(*out, name+".crt")
	if err := os.Rename(tmpKey, keyPath); err != nil {
		return err
	}
	if err := writeAdminCert(certPath, res); err != nil {
		return err
	}
	if af.output == "json" {
		return printJSON(stdout, res.Admin)
	}
	fmt.Fprintf(stdout, "admin %s renewed: %s, key %s\n", name, certPath, keyPath)
	return nil
}
