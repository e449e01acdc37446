package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"text/tabwriter"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// tenantFlags are the flags of the tenants commands. Like 'ca audit verify'
// they work on the registry database named by the config, not through the
// API, so they run on the CA host (or against the PostgreSQL server).
type tenantFlags struct {
	config string
	output string
}

func (f *tenantFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "path of ca.yaml (its registry database is used)")
	fs.StringVar(&f.output, "output", "text", "output format: text or json")
}

// open checks the flags and opens the registry database.
func (f *tenantFlags) open(ctx context.Context) (*sqlstore.Store, error) {
	if f.config == "" {
		return nil, fmt.Errorf("%w: --config DIR/ca.yaml is required", errUsage)
	}
	if f.output != "text" && f.output != "json" {
		return nil, fmt.Errorf("%w: --output must be text or json", errUsage)
	}
	cfg, err := LoadConfig(f.config)
	if err != nil {
		return nil, err
	}
	store, err := sqlstore.Open(ctx, sqlstore.Options{Driver: cfg.DB.Driver, DSN: cfg.DSN()})
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return store, nil
}

// tenantJSON is a tenant as --output json prints it.
type tenantJSON struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	RequireTPM bool      `json:"require_tpm"`
	CreatedAt  time.Time `json:"created_at"`
}

func toTenantJSON(t *registry.Tenant) tenantJSON {
	return tenantJSON{ID: t.ID, Name: t.Name, RequireTPM: t.RequireTPM, CreatedAt: t.CreatedAt.UTC()}
}

// localActor names the operator running a local command in the audit log.
func localActor() provision.Actor {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	return provision.Actor{Kind: provision.ActorLocal, ID: name}
}

// tenantName checks the NAME argument before anything is opened.
func tenantName(name string) error {
	if err := pki.ValidateTenant(name); err != nil {
		return fmt.Errorf("%w: invalid tenant name: %v", errUsage, err)
	}
	return nil
}

// cmdTenantsCreate is 'ca tenants create NAME [--require-tpm]'.
func cmdTenantsCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf tenantFlags
	fs := newFlags("tenants create NAME", stderr)
	tf.register(fs)
	requireTPM := fs.Bool("require-tpm", false, "admit only TPM-attested devices (token enrollments of software keys are refused)")
	name, err := parseWithTarget(fs, args, "tenant name")
	if err != nil {
		return err
	}
	if err := tenantName(name); err != nil {
		return err
	}
	store, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	t, err := provision.CreateTenant(ctx, store, provision.TenantSpec{Name: name, RequireTPM: *requireTPM, Who: localActor()})
	if errors.Is(err, registry.ErrAlreadyExists) {
		return fmt.Errorf("tenant %q already exists ('ca tenants list'; change its policy with 'ca tenants set')", name)
	}
	if err != nil {
		return err
	}
	if tf.output == "json" {
		return printJSON(stdout, toTenantJSON(t))
	}
	fmt.Fprintf(stdout, "tenant %s created (require_tpm=%t)\n", t.Name, t.RequireTPM)
	return nil
}

// cmdTenantsList is 'ca tenants list'.
func cmdTenantsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf tenantFlags
	fs := newFlags("tenants list", stderr)
	tf.register(fs)
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	store, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	ts, err := store.ListTenants(ctx)
	if err != nil {
		return fmt.Errorf("list tenants: %w", err)
	}
	if tf.output == "json" {
		out := make([]tenantJSON, len(ts))
		for i, t := range ts {
			out[i] = toTenantJSON(t)
		}
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREQUIRE_TPM\tCREATED")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%t\t%s\n", t.Name, t.RequireTPM, fmtTime(t.CreatedAt))
	}
	return tw.Flush()
}

// optBool is a boolean flag that records whether it was given.
type optBool struct {
	set, v bool
}

func (b *optBool) String() string   { return strconv.FormatBool(b.v) }
func (b *optBool) IsBoolFlag() bool { return true }
func (b *optBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false")
	}
	b.set, b.v = true, v
	return nil
}

// cmdTenantsSet is 'ca tenants set NAME --require-tpm=true|false'.
func cmdTenantsSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf tenantFlags
	var requireTPM optBool
	fs := newFlags("tenants set NAME", stderr)
	tf.register(fs)
	fs.Var(&requireTPM, "require-tpm", "true: admit only TPM-attested devices; false: also admit token enrollments of software keys")
	name, err := parseWithTarget(fs, args, "tenant name")
	if err != nil {
		return err
	}
	if !requireTPM.set {
		return fmt.Errorf("%w: nothing to set: give --require-tpm=true or --require-tpm=false", errUsage)
	}
	if err := tenantName(name); err != nil {
		return err
	}
	store, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	t, err := provision.SetTenantRequireTPM(ctx, store, localActor(), name, requireTPM.v)
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("tenant %q does not exist ('ca tenants list' shows the tenants)", name)
	}
	if err != nil {
		return err
	}
	if tf.output == "json" {
		return printJSON(stdout, toTenantJSON(t))
	}
	fmt.Fprintf(stdout, "tenant %s: require_tpm=%t (running CA replicas apply it within %s)\n", t.Name, t.RequireTPM, provision.DefaultTenantTTL)
	return nil
}
