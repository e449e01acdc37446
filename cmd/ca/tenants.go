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
	"strings"
	"text/tabwriter"
	"time"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/registry/sqlstore"
)

// tenantFlags are the flags of the tenants commands. By default they go
// through the admin API as the admin of the config (or --admin-cert), a
// super-admin; with --local they work on the registry database named by
// the config, like 'ca audit verify' — for bootstrap on the CA host (or
// against the PostgreSQL server), audited as the local OS user.
type tenantFlags struct {
	adminFlags
	local bool
	// Policy flags; which were given is read with fs.Visit.
	methods, keyTypes, lifetime string
}

func (f *tenantFlags) register(fs *flag.FlagSet) {
	f.adminFlags.register(fs)
	fs.BoolVar(&f.local, "local", false, "work on the registry database named by --config directly, not through the admin API")
	fs.StringVar(&f.methods, "methods", "", "enrollment methods the tenant admits, comma-separated: token, tpm, idevid (\"\": all)")
	fs.StringVar(&f.keyTypes, "key-types", "", "device key types the tenant admits, comma-separated: ecdsa-p256, ecdsa-p384, rsa, ed25519 (\"\": the CA's)")
	fs.StringVar(&f.lifetime, "cert-lifetime", "", "lifetime of the tenant's device certificates, e.g. 2h (0: the CA's enrollment.cert_lifetime)")
}

// open checks the flags and opens the registry database (--local).
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
	store, err := sqlstore.Open(ctx, cfg.storeOptions())
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return store, nil
}

// splitList reads a comma-separated flag value; "" is the empty list.
func splitList(v string) []string {
	out := []string{}
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// policy reads the policy flags given on fs.
func (f *tenantFlags) policy(fs *flag.FlagSet, requireTPM optBool) (provision.TenantPolicy, error) {
	var p provision.TenantPolicy
	if requireTPM.set {
		p.RequireTPM = &requireTPM.v
	}
	var err error
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "methods":
			l := splitList(f.methods)
			p.Methods = &l
		case "key-types":
			l := splitList(f.keyTypes)
			p.KeyTypes = &l
		case "cert-lifetime":
			d := time.Duration(0)
			if f.lifetime != "0" && f.lifetime != "" {
				d, err = time.ParseDuration(f.lifetime)
				if err != nil || d < 0 {
					err = fmt.Errorf("%w: --cert-lifetime %q is not a duration such as 2h", errUsage, f.lifetime)
				}
			}
			p.CertLifetime = &d
		}
	})
	return p, err
}

// tenantJSON is a tenant as --output json prints it.
type tenantJSON struct {
	ID           string    `json:"id,omitempty"`
	Name         string    `json:"name"`
	RequireTPM   bool      `json:"require_tpm"`
	Methods      []string  `json:"methods,omitempty"`
	KeyTypes     []string  `json:"key_types,omitempty"`
	CertLifetime string    `json:"cert_lifetime,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

func toTenantJSON(t *registry.Tenant) tenantJSON {
	v := tenantJSON{ID: t.ID, Name: t.Name, RequireTPM: t.RequireTPM, Methods: t.Methods, KeyTypes: t.KeyTypes, CreatedAt: t.CreatedAt.UTC()}
	if t.CertLifetime > 0 {
		v.CertLifetime = t.CertLifetime.String()
	}
	return v
}

func wireTenantJSON(t wire.Tenant) tenantJSON {
	return tenantJSON{Name: t.Name, RequireTPM: t.RequireTPM, Methods: t.Methods, KeyTypes: t.KeyTypes,
		CertLifetime: t.CertLifetime, CreatedAt: t.CreatedAt.UTC()}
}

// printTenant prints one tenant (text or JSON).
func printTenant(stdout io.Writer, output, verb string, t tenantJSON) error {
	if output == "json" {
		return printJSON(stdout, t)
	}
	fmt.Fprintf(stdout, "tenant %s %s (%s)\n", t.Name, verb, policyText(t))
	return nil
}

func policyText(t tenantJSON) string {
	or := func(l []string, d string) string {
		if len(l) == 0 {
			return d
		}
		return strings.Join(l, ",")
	}
	life := t.CertLifetime
	if life == "" {
		life = "default"
	}
	return fmt.Sprintf("require_tpm=%t methods=%s key_types=%s cert_lifetime=%s", t.RequireTPM, or(t.Methods, "any"), or(t.KeyTypes, "any"), life)
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

// cmdTenantsCreate is 'ca tenants create NAME [policy flags] [--local]'.
func cmdTenantsCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf tenantFlags
	var requireTPM optBool
	fs := newFlags("tenants create NAME", stderr)
	tf.register(fs)
	fs.Var(&requireTPM, "require-tpm", "admit only TPM-attested devices (token enrollments of software keys are refused)")
	name, err := parseWithTarget(fs, args, "tenant name")
	if err != nil {
		return err
	}
	if err := tenantName(name); err != nil {
		return err
	}
	p, err := tf.policy(fs, requireTPM)
	if err != nil {
		return err
	}
	spec := provision.TenantSpec{Name: name, RequireTPM: requireTPM.v}
	if p.Methods != nil {
		spec.Methods = *p.Methods
	}
	if p.KeyTypes != nil {
		spec.KeyTypes = *p.KeyTypes
	}
	if p.CertLifetime != nil {
		spec.CertLifetime = *p.CertLifetime
	}
	if !tf.local {
		c, err := tf.client()
		if err != nil {
			return err
		}
		req := &wire.TenantCreateRequest{Name: name, RequireTPM: spec.RequireTPM, Methods: spec.Methods, KeyTypes: spec.KeyTypes}
		if spec.CertLifetime > 0 {
			req.CertLifetime = spec.CertLifetime.String()
		}
		t, err := c.CreateTenant(ctx, req)
		if err != nil {
			return fmt.Errorf("create tenant %s: %w", name, err)
		}
		return printTenant(stdout, tf.output, "created", wireTenantJSON(*t))
	}
	store, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	spec.Who = localActor()
	t, err := provision.CreateTenant(ctx, store, spec)
	if errors.Is(err, registry.ErrAlreadyExists) {
		return fmt.Errorf("tenant %q already exists ('ca tenants list'; change its policy with 'ca tenants set')", name)
	}
	if err != nil {
		return err
	}
	return printTenant(stdout, tf.output, "created", toTenantJSON(t))
}

// cmdTenantsList is 'ca tenants list [--local]'.
func cmdTenantsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var tf tenantFlags
	fs := newFlags("tenants list", stderr)
	tf.register(fs)
	if _, err := parseWithTarget(fs, args, ""); err != nil {
		return err
	}
	var out []tenantJSON
	if !tf.local {
		c, err := tf.client()
		if err != nil {
			return err
		}
		l, err := c.ListTenants(ctx)
		if err != nil {
			return fmt.Errorf("list tenants: %w", err)
		}
		for _, t := range l.Tenants {
			out = append(out, wireTenantJSON(t))
		}
	} else {
		store, err := tf.open(ctx)
		if err != nil {
			return err
		}
		defer store.Close()
		ts, err := store.ListTenants(ctx)
		if err != nil {
			return fmt.Errorf("list tenants: %w", err)
		}
		for _, t := range ts {
			out = append(out, toTenantJSON(t))
		}
	}
	if tf.output == "json" {
		if out == nil {
			out = []tenantJSON{}
		}
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREQUIRE_TPM\tMETHODS\tKEY_TYPES\tCERT_LIFETIME\tCREATED")
	for _, t := range out {
		m, k, l := strings.Join(t.Methods, ","), strings.Join(t.KeyTypes, ","), t.CertLifetime
		if m == "" {
			m = "any"
		}
		if k == "" {
			k = "any"
		}
		if l == "" {
			l = "default"
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%s\n", t.Name, t.RequireTPM, m, k, l, fmtTime(t.CreatedAt))
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

// cmdTenantsSet is 'ca tenants set NAME [--require-tpm=BOOL] [--methods L]
// [--key-types L] [--cert-lifetime D] [--local]'.
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
	p, err := tf.policy(fs, requireTPM)
	if err != nil {
		return err
	}
	if p == (provision.TenantPolicy{}) {
		return fmt.Errorf("%w: nothing to set: give --require-tpm=BOOL, --methods, --key-types or --cert-lifetime", errUsage)
	}
	if err := tenantName(name); err != nil {
		return err
	}
	if !tf.local {
		c, err := tf.client()
		if err != nil {
			return err
		}
		req := &wire.TenantPolicyRequest{RequireTPM: p.RequireTPM, Methods: p.Methods, KeyTypes: p.KeyTypes}
		if p.CertLifetime != nil {
			v := p.CertLifetime.String()
			if *p.CertLifetime == 0 {
				v = "0"
			}
			req.CertLifetime = &v
		}
		t, err := c.UpdateTenant(ctx, name, req)
		if err != nil {
			return fmt.Errorf("set tenant %s: %w", name, err)
		}
		return printTenant(stdout, tf.output, fmt.Sprintf("set (running CA replicas apply it within %s)", provision.DefaultTenantTTL), wireTenantJSON(*t))
	}
	store, err := tf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	t, err := provision.UpdateTenantPolicy(ctx, store, localActor(), name, p)
	if errors.Is(err, registry.ErrNotFound) {
		return fmt.Errorf("tenant %q does not exist ('ca tenants list' shows the tenants)", name)
	}
	if err != nil {
		return err
	}
	return printTenant(stdout, tf.output, fmt.Sprintf("set (running CA replicas apply it within %s)", provision.DefaultTenantTTL), toTenantJSON(t))
}
