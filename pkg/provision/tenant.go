package provision

import (
	"context"
	"errors"
	"fmt"
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

// requireAttested refuses an enrollment whose key is not TPM-attested into
// a tenant that requires TPM attestation.
func requireAttested(tenant *registry.Tenant, method string) error {
	if !tenant.RequireTPM || method == MethodTPM {
		return nil
	}
	return fmt.Errorf("%w: tenant %q admits only TPM-attested devices: enroll on a device with a TPM (enroll --tpm auto|PATH|swtpm:...)",
		ErrTPMRequired, tenant.Name)
}

// TenantSpec describes a tenant to create.
type TenantSpec struct {
	Name       string // 1..64 characters of [A-Za-z0-9._-] (pki.ValidateTenant)
	RequireTPM bool   // admit only TPM-attested devices
	Who        Actor  // who creates it; the zero value means the CA itself (SystemActor)
}

// TenantStore is what the tenant actions read and write.
type TenantStore interface {
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
	CreateTenant(ctx context.Context, t *registry.Tenant, audit *registry.AuditEvent) error
	SetTenantRequireTPM(ctx context.Context, tenantID string, require bool, audit *registry.AuditEvent) error
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
	t := &registry.Tenant{ID: spec.Name, Name: spec.Name, RequireTPM: spec.RequireTPM}
	err := store.CreateTenant(ctx, t, event(spec.Who, t.ID, ActionTenantCreate, t.ID, registry.ResultOK,
		fmt.Sprintf("name=%s require_tpm=%t", t.Name, t.RequireTPM)))
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
