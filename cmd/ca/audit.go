package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"go.step.sm/crypto/pemutil"

	"devpki/pkg/atomicfile"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// openLocal opens the registry database named by the config at path.
func openLocal(ctx context.Context, path string) (*Config, *sqlstore.Store, error) {
	if path == "" {
		return nil, nil, fmt.Errorf("%w: --config DIR/ca.yaml is required", errUsage)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	store, err := sqlstore.Open(ctx, cfg.storeOptions())
	if err != nil {
		return nil, nil, fmt.Errorf("open registry: %w", err)
	}
	return cfg, store, nil
}

// parseWhen reads a --since or --before value: an RFC 3339 time, or a Go
// duration meaning that long ago ("720h").
func parseWhen(name, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%w: --%s %q is neither an RFC 3339 time nor a positive duration such as 720h", errUsage, name, v)
}

// cmdAuditVerify is 'ca audit verify --config F' (the live chain in the
// registry database, from its newest signed checkpoint) or 'ca audit
// verify --file F [--root F | --config F]' (an export, offline: no
// database, no CA).
func cmdAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configPath, file, rootPath string
	fs := newFlags("audit verify", stderr)
	fs.StringVar(&configPath, "config", "", "path of ca.yaml (its registry database; with --file only its root is used)")
	fs.StringVar(&file, "file", "", "verify this export (ca audit export) offline instead of the live chain")
	fs.StringVar(&rootPath, "root", "", "with --file: the CA root a prune checkpoint's signer must chain to")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if file != "" {
		return verifyFile(file, rootPath, configPath, stdout)
	}
	if configPath == "" {
		return fmt.Errorf("%w: --config DIR/ca.yaml or --file EXPORT is required", errUsage)
	}
	cfg, store, err := openLocal(ctx, configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	// The root checks a prune checkpoint's signer; a registry never pruned
	// verifies without it.
	root, rootErr := pemutil.ReadCertificate(cfg.Path(cfg.CA.Root))
	cp, err := provision.VerifyAudit(ctx, store, root)
	if err != nil {
		return fmt.Errorf("audit chain does NOT verify: %w", err)
	}
	if cp != nil && rootErr != nil {
		return fmt.Errorf("audit chain verified from checkpoint %d, but its signer cannot be checked: load root: %w", cp.ID, rootErr)
	}
	if cp != nil {
		fmt.Fprintf(stdout, "audit chain verified from checkpoint %d (events up to %d pruned before %s, signed by %s)\n",
			cp.ID, cp.Seq, cp.Before.Format(time.RFC3339), signerName(cp.Signer))
		return nil
	}
	fmt.Fprintln(stdout, "audit chain verified")
	return nil
}

func signerName(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "an unreadable certificate"
	}
	return c.Subject.String()
}

// verifyFile checks an export offline.
func verifyFile(file, rootPath, configPath string, stdout io.Writer) error {
	var root *x509.Certificate
	switch {
	case rootPath != "":
		r, err := pemutil.ReadCertificate(rootPath)
		if err != nil {
			return fmt.Errorf("load root: %w", err)
		}
		root = r
	case configPath != "":
		cfg, err := LoadConfig(configPath)
		if err != nil {
			return err
		}
		if root, err = pemutil.ReadCertificate(cfg.Path(cfg.CA.Root)); err != nil {
			return fmt.Errorf("load root: %w", err)
		}
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	rep, err := registry.VerifyExport(f, root)
	if err != nil {
		return fmt.Errorf("%s does NOT verify: %w", file, err)
	}
	scope := "all tenants"
	if rep.Scope == registry.ScopeTenant {
		scope = "tenant " + rep.Tenant
	}
	fmt.Fprintf(stdout, "%s verified: %d events (%s), seq %d to %d, last hash %x\n", file, rep.Events, scope,
		rep.FirstSeq, rep.LastSeq, rep.LastHash)
	switch rep.Anchor {
	case "genesis":
		fmt.Fprintln(stdout, "complete from the first event of the chain")
	case "checkpoint":
		fmt.Fprintf(stdout, "complete from a prune checkpoint signed by %s", rep.Signer.Subject)
		if rep.RootChecked {
			fmt.Fprintln(stdout, ", which chains to the CA root")
		} else {
			sum := sha256.Sum256(rep.Signer.Raw)
			fmt.Fprintf(stdout, " (sha256 %x); pass --root to check it chains to the CA root\n", sum)
		}
	default:
		fmt.Fprintln(stdout, "partial (--since): unbroken from its first event's recorded previous hash; events before it are not proved")
	}
	return nil
}

// cmdAuditExport is 'ca audit export --out FILE [--since T] [--tenant T]'
// through the admin API (a tenant admin gets its tenant's chain), or with
// --local straight from the registry database named by --config.
func cmdAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("audit export", stderr)
	af.register(fs)
	out := fs.String("out", "", "write the export (JSON lines) to this file, mode 0600; - for stdout")
	since := fs.String("since", "", "only events at or after this RFC 3339 time, or this long ago (720h)")
	tenant := fs.String("tenant", "", "only this tenant's chain (an admin of one tenant always gets its own)")
	local := fs.Bool("local", false, "read the registry database named by --config instead of the API")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("%w: --out FILE is required", errUsage)
	}
	from, err := parseWhen("since", *since, time.Now())
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if *local {
		_, store, err := openLocal(ctx, af.config)
		if err != nil {
			return err
		}
		defer store.Close()
		opts := provision.ExportOptions{Since: from}
		if *tenant != "" {
			t, err := store.GetTenant(ctx, *tenant)
			if err != nil {
				return fmt.Errorf("tenant %q: %w", *tenant, err)
			}
			opts.TenantID = t.ID
		}
		if _, err := provision.ExportAudit(ctx, store, opts, &buf); err != nil {
			return fmt.Errorf("export audit: %w", err)
		}
	} else {
		c, err := af.client()
		if err != nil {
			return err
		}
		if _, err := c.ExportAudit(ctx, from, *tenant, &buf); err != nil {
			return fmt.Errorf("export audit: %w", err)
		}
	}
	if *out == "-" {
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	if err := atomicfile.Write(*out, buf.Bytes(), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%d bytes)\n", *out, buf.Len())
	return nil
}

// cmdAuditPrune is 'ca audit prune --config F --before T': on the CA host,
// it deletes the events older than T behind a checkpoint signed with the
// CA's issuing key.
func cmdAuditPrune(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var configPath, beforeArg string
	fs := newFlags("audit prune", stderr)
	fs.StringVar(&configPath, "config", "", "path of ca.yaml (its registry database and CA key are used)")
	fs.StringVar(&beforeArg, "before", "", "prune events older than this RFC 3339 time, or this long ago (2160h)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if beforeArg == "" {
		return fmt.Errorf("%w: --before T is required", errUsage)
	}
	before, err := parseWhen("before", beforeArg, time.Now())
	if err != nil {
		return err
	}
	cfg, store, err := openLocal(ctx, configPath)
	if err != nil {
		return err
	}
	defer store.Close()
	password, err := cfg.Password()
	if err != nil {
		return err
	}
	ca, err := pki.LoadCA(ctx, pki.LoadOptions{
		RootCert: cfg.Path(cfg.CA.Root), IntermediateCert: cfg.Path(cfg.CA.Intermediate),
		KeyURI: cfg.KeyURI(), Password: password,
	})
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	defer ca.Close()
	// The chain must verify before it is cut: a checkpoint vouches only for
	// a chain that was whole.
	if _, err := provision.VerifyAudit(ctx, store, ca.Root); err != nil {
		return fmt.Errorf("audit chain does NOT verify; nothing pruned: %w", err)
	}
	cp, n, err := provision.PruneAudit(ctx, store, ca.Signer, ca.Intermediate, before, localActor())
	if errors.Is(err, registry.ErrNotFound) {
		fmt.Fprintf(stdout, "no audit events before %s: nothing pruned\n", before.UTC().Format(time.RFC3339))
		return nil
	}
	if err != nil {
		return fmt.Errorf("prune audit: %w", err)
	}
	fmt.Fprintf(stdout, "pruned %d audit events (up to seq %d, before %s); checkpoint %d signed by %s\n",
		n, cp.Seq, before.UTC().Format(time.RFC3339), cp.ID, ca.Intermediate.Subject)
	return nil
}

// cmdAuditRefusals is 'ca audit refusals [--after ID] [--limit N]': the
// anonymous refusals, aggregated per source, door, reason and minute.
func cmdAuditRefusals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var af adminFlags
	fs := newFlags("audit refusals", stderr)
	af.register(fs)
	after := fs.Int64("after", 0, "list aggregates after this id")
	limit := fs.Int("limit", 100, "page size (1-1000)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := af.client()
	if err != nil {
		return err
	}
	l, err := c.ListRefusals(ctx, *after, *limit)
	if err != nil {
		return fmt.Errorf("list refusals: %w", err)
	}
	if af.output == "json" {
		return printJSON(stdout, l)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWINDOW\tSOURCE\tDOOR\tREASON\tCOUNT\tLAST\tSAMPLE")
	for _, r := range l.Refusals {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, fmtTime(r.Window), r.SourceAddr, r.Action, r.Reason, r.Count,
			fmtTime(r.Last), r.Sample)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if l.Next != 0 {
		fmt.Fprintf(stderr, "more: --after %d\n", l.Next)
	}
	return nil
}
