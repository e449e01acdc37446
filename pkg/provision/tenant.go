package provision

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// ErrTPMRequired: the tenant admits only TPM-attested devices
// (registry.Tenant.RequireTPM) and the enrollment's key is not attested.
// Nothing is signed and the token is not spent.
var ErrTPMRequired = errors.New("provision: TPM attestation required")

// DefaultTenantTTL is how long a Service reuses a tenant read from the store
// when Config.TenantTTL is zero: a policy change ('ca tenants set') reaches
// every replica within this time.
const DefaultTenantTTL = 5 * time.Second

// cachedTenant is an entry of Service.tenants.
type cachedTenant struct {
	t       *registry.Tenant
	readAt  time.Time
	expires time.Time
}

// tenant returns the tenant with id, from the cache while the entry is
// younger than the TTL (by the service clock; a clock that went back also
// refreshes it), else from the store.
func (s *Service) tenant(ctx context.Context, id string) (*registry.Tenant, error) {
	now := s.cfg.Now()
	if v, ok := s.tenants.Load(id); ok {
		c := v.(*cachedTenant)
		if now.Before(c.expires) && !now.Before(c.readAt) {
			return c.t, nil
		}
	}
	t, err := s.cfg.Store.GetTenantByID(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("look up tenant %q: %w", id, err)
	}
	s.cacheTenant(t, now)
	return t, nil
}

func (s *Service) cacheTenant(t *registry.Tenant, now time.Time) {
	if s.cfg.TenantTTL < 0 {
		return
	}
	s.tenants.Store(t.ID, &cachedTenant{t: t, readAt: now, expires: now.Add(s.cfg.TenantTTL)})
}

// ErrTenantPolicy: the tenant's policy does not admit the enrollment
// method or the key type. Nothing is signed and the token is not spent.
var ErrTenantPolicy = errors.New("provision: refused by the tenant's policy")

// Tenant policy vocabulary.
var (
	// TenantMethods are the enrollment methods a tenant policy may name.
	TenantMethods = []string{MethodToken, MethodTPM, MethodIDevID}
	// TenantKeyTypes are the key types a tenant policy may name (KeyType).
	TenantKeyTypes = []string{"ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"}
)

// Bounds of a tenant's certificate lifetime.
const (
	MinTenantCertLifetime = 5 * time.Minute
	MaxTenantCertLifetime = 8760 * time.Hour
	// A tenant's renewal grace period (registry.Tenant.RenewGrace), when
	// set and not negative (disabled), is within these.
	MinTenantRenewGrace = time.Minute
	MaxTenantRenewGrace = 8760 * time.Hour
)

// KeyType names pub as a tenant policy does ("ecdsa-p256", "rsa", ...);
// "" for a key of no known type.
func KeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ecdsa-p256"
		case elliptic.P384():
			return "ecdsa-p384"
		}
	case *rsa.PublicKey:
		return "rsa"
	case ed25519.PublicKey:
		return "ed25519"
	}
	return ""
}

// ValidateTenantPolicy checks t's policy fields and returns
// ErrInvalidArgument naming every problem.
func ValidateTenantPolicy(t *registry.Tenant) error {
	var errs []error
	for _, m := range t.Methods {
		if !slices.Contains(TenantMethods, m) {
			errs = append(errs, fmt.Errorf("method %q is not one of %v", m, TenantMethods))
		}
	}
	for _, k := range t.KeyTypes {
		if !slices.Contains(TenantKeyTypes, k) {
			errs = append(errs, fmt.Errorf("key type %q is not one of %v", k, TenantKeyTypes))
		}
	}
	if t.CertLifetime != 0 && (t.CertLifetime < MinTenantCertLifetime || t.CertLifetime > MaxTenantCertLifetime) {
		errs = append(errs, fmt.Errorf("certificate lifetime %s out of range [%s, %s]", t.CertLifetime, MinTenantCertLifetime, MaxTenantCertLifetime))
	}
	if t.RenewGrace > 0 && (t.RenewGrace < MinTenantRenewGrace || t.RenewGrace > MaxTenantRenewGrace) {
		errs = append(errs, fmt.Errorf("renewal grace period %s out of range [%s, %s] (negative: disabled)", t.RenewGrace, MinTenantRenewGrace, MaxTenantRenewGrace))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return nil
}

// policyString is a tenant's policy as audit details show it.
func policyString(t *registry.Tenant) string {
	return fmt.Sprintf("require_tpm=%t methods=%s key_types=%s cert_lifetime=%s", t.RequireTPM,
		listOrAll(t.Methods), listOrAll(t.KeyTypes), lifetimeOrDefault(t.CertLifetime)) + renewGraceString(t.RenewGrace)
}

// renewGraceString is the renewal grace period in policyString: nothing
// when it is the CA's, so that the audit details of tenants that never set
// one read as before.
func renewGraceString(d time.Duration) string {
	switch {
	case d < 0:
		return " renew_grace=off"
	case d > 0:
		return " renew_grace=" + d.String()
	}
	return ""
}

func listOrAll(l []string) string {
	if len(l) == 0 {
		return "any"
	}
	return strings.Join(l, ",")
}

func lifetimeOrDefault(d time.Duration) string {
	if d == 0 {
		return "default"
	}
	return d.String()
}

// tenantAdmits is the one tenant-policy rule of the pipeline: the method
// (require_tpm, methods) and, when pub is not nil, the key type. Enrollment
// (identity) and renewal apply it — renewal with no method, so only the key
// type —; the TPM challenge applies it without a key.
func tenantAdmits(tenant *registry.Tenant, method string, pub crypto.PublicKey) error {
	if method != "" && tenant.RequireTPM && method != MethodTPM {
		return fmt.Errorf("%w: tenant %q admits only TPM-attested devices: enroll on a device with a TPM (enroll --tpm auto|PATH|swtpm:...)",
			ErrTPMRequired, tenant.Name)
	}
	if method != "" && len(tenant.Methods) > 0 && !slices.Contains(tenant.Methods, method) {
		return fmt.Errorf("%w: tenant %q admits enrollment by %s only, not %s", ErrTenantPolicy, tenant.Name,
			strings.Join(tenant.Methods, ", "), method)
	}
	if pub != nil && len(tenant.KeyTypes) > 0 {
		if kt := KeyType(pub); !slices.Contains(tenant.KeyTypes, kt) {
			return fmt.Errorf("%w: tenant %q admits %s keys only, not %q", ErrTenantPolicy, tenant.Name,
				strings.Join(tenant.KeyTypes, ", "), kt)
		}
	}
	return nil
}

// certLifetime is the lifetime of tenant's device certificates: its own,
// else the CA's.
func (s *Service) certLifetime(tenant *registry.Tenant) time.Duration {
	if tenant != nil && tenant.CertLifetime > 0 {
		return tenant.CertLifetime
	}
	return s.cfg.Lifetime
}

// TenantSpec describes a tenant to create.
type TenantSpec struct {
	Name       string // 1..64 characters of [A-Za-z0-9._-] (pki.ValidateTenant)
	RequireTPM bool   // admit only TPM-attested devices
	// Methods, KeyTypes and CertLifetime are the tenant's policy (see
	// registry.Tenant); zero values admit what the CA admits.
	Methods      []string
	KeyTypes     []string
	CertLifetime time.Duration
	// RenewGrace is the tenant's renewal grace period for expired
	// certificates (registry.Tenant.RenewGrace): zero means the CA's,
	// negative disables it.
	RenewGrace time.Duration
	Who        Actor // who creates it; the zero value means the CA itself (SystemActor)
}

// TenantStore is what the tenant actions read and write.
type TenantStore interface {
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
	CreateTenant(ctx context.Context, t *registry.Tenant, audit *registry.AuditEvent) error
	SetTenantRequireTPM(ctx context.Context, tenantID string, require bool, audit *registry.AuditEvent) error
	UpdateTenantPolicy(ctx context.Context, t *registry.Tenant, audit *registry.AuditEvent) error
}

// CreateTenant validates spec.Name and creates the tenant with its audit
// event. A name already taken is registry.ErrAlreadyExists, an invalid one
// ErrInvalidArgument; either way nothing is written.
func CreateTenant(ctx context.Context, store TenantStore, spec TenantSpec) (*registry.Tenant, error) {
	if err := pki.ValidateTenant(spec.Name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if spec.Who.Kind == "" {
		spec.Who = SystemActor("", "")
	}
	t := &registry.Tenant{ID: spec.Name, Name: spec.Name, RequireTPM: spec.RequireTPM,
		Methods: spec.Methods, KeyTypes: spec.KeyTypes, CertLifetime: spec.CertLifetime, RenewGrace: normGrace(spec.RenewGrace)}
	if err := ValidateTenantPolicy(t); err != nil {
		return nil, err
	}
	err := store.CreateTenant(ctx, t, event(spec.Who, t.ID, ActionTenantCreate, t.ID, registry.ResultOK,
		"name="+t.Name+" "+policyString(t)))
	if err != nil {
		return nil, fmt.Errorf("create tenant %q: %w", spec.Name, err)
	}
	return t, nil
}

// SetTenantRequireTPM sets the RequireTPM policy of the tenant named name,
// with an audit event that records the old and new value, and returns the
// updated tenant. An unknown name is registry.ErrNotFound. Running services
// apply the change within their TenantTTL.
func SetTenantRequireTPM(ctx context.Context, store TenantStore, who Actor, name string, require bool) (*registry.Tenant, error) {
	t, err := store.GetTenant(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("tenant %q: %w", name, err)
	}
	if who.Kind == "" {
		who = SystemActor("", "")
	}
	err = store.SetTenantRequireTPM(ctx, t.ID, require, event(who, t.ID, ActionTenantUpdate, t.ID, registry.ResultOK,
		fmt.Sprintf("require_tpm %t -> %t", t.RequireTPM, require)))
	if err != nil {
		return nil, fmt.Errorf("set require_tpm of tenant %q: %w", name, err)
	}
	t.RequireTPM = require
	return t, nil
}

// TenantPolicy changes a tenant's policy: nil fields stay as they are; an
// empty (non-nil) list admits everything again; a zero lifetime means the
// CA's.
type TenantPolicy struct {
	RequireTPM   *bool
	Methods      *[]string
	KeyTypes     *[]string
	CertLifetime *time.Duration
	// RenewGrace: zero means the CA's, negative disables (see
	// registry.Tenant.RenewGrace).
	RenewGrace *time.Duration
}

// normGrace stores every negative (disabled) grace period as -1.
func normGrace(d time.Duration) time.Duration {
	if d < 0 {
		return -1
	}
	return d
}

// UpdateTenantPolicy applies p to the tenant named name, with an audit
// event recording the old and new policy, and returns the updated tenant.
// An unknown name is registry.ErrNotFound, a bad policy ErrInvalidArgument;
// either way nothing is written. Running services apply the change within
// their TenantTTL.
func UpdateTenantPolicy(ctx context.Context, store TenantStore, who Actor, name string, p TenantPolicy) (*registry.Tenant, error) {
	t, err := store.GetTenant(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("tenant %q: %w", name, err)
	}
	if who.Kind == "" {
		who = SystemActor("", "")
	}
	nt := *t
	if p.RequireTPM != nil {
		nt.RequireTPM = *p.RequireTPM
	}
	if p.Methods != nil {
		nt.Methods = *p.Methods
	}
	if p.KeyTypes != nil {
		nt.KeyTypes = *p.KeyTypes
	}
	if p.CertLifetime != nil {
		nt.CertLifetime = *p.CertLifetime
	}
	if p.RenewGrace != nil {
		nt.RenewGrace = normGrace(*p.RenewGrace)
	}
	if err := ValidateTenantPolicy(&nt); err != nil {
		return nil, err
	}
	err = store.UpdateTenantPolicy(ctx, &nt, event(who, t.ID, ActionTenantUpdate, t.ID, registry.ResultOK,
		policyString(t)+" -> "+policyString(&nt)))
	if err != nil {
		return nil, fmt.Errorf("update policy of tenant %q: %w", name, err)
	}
	return &nt, nil
}

// AddTenant creates a tenant for who, a super-admin (anyone else is
// ErrForbidden); see CreateTenant. Refusals are audited.
func (a *Admin) AddTenant(ctx context.Context, who Actor, spec TenantSpec) (*registry.Tenant, error) {
	if !who.Super {
		return nil, a.refused(ctx, who, ActionTenantCreate, spec.Name,
			fmt.Errorf("only a super-admin may create tenants: %w", ErrForbidden))
	}
	spec.Who = who
	t, err := CreateTenant(ctx, a.cfg.Store, spec)
	if err != nil {
		return nil, a.refused(ctx, who, ActionTenantCreate, spec.Name, err)
	}
	return t, nil
}

// UpdateTenant changes the policy of tenant name for who, a super-admin
// (anyone else is ErrForbidden); see UpdateTenantPolicy. Refusals are
// audited.
func (a *Admin) UpdateTenant(ctx context.Context, who Actor, name string, p TenantPolicy) (*registry.Tenant, error) {
	if !who.Super {
		return nil, a.refused(ctx, who, ActionTenantUpdate, name,
			fmt.Errorf("only a super-admin may change tenants: %w", ErrForbidden))
	}
	t, err := UpdateTenantPolicy(ctx, a.cfg.Store, who, name, p)
	if err != nil {
		return nil, a.refused(ctx, who, ActionTenantUpdate, name, err)
	}
	return t, nil
}

// ListTenants returns the tenants who may see: all of them for a
// super-admin, its own for anyone else.
func (a *Admin) ListTenants(ctx context.Context, who Actor) ([]*registry.Tenant, error) {
	all, err := a.cfg.Store.ListTenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	out := all[:0]
	for _, t := range all {
		if InScope(who, t.ID) {
			out = append(out, t)
		}
	}
	return out, nil
}
