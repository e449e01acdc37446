package provision

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"devpki/pkg/pki"
	"devpki/pkg/registry"
)

// DefaultAdminCertLifetime is the lifetime of admin certificates when
// AdminConfig.CertLifetime is zero (config admin.cert_lifetime).
const DefaultAdminCertLifetime = 90 * 24 * time.Hour

// CertificateRevoker revokes one certificate through the revocation path
// (audit, OCSP, CRL). *Revocation implements it.
type CertificateRevoker interface {
	RevokeCertificate(ctx context.Context, who Actor, serial string, reason int) (*RevokeResult, error)
}

// AdminSpec asks for a new admin and its first certificate.
type AdminSpec struct {
	Name string        // pki.ValidateAdminName
	Role registry.Role // admin, operator or auditor
	// Tenant names the admin's tenant; empty makes a super-admin, who acts
	// on every tenant (only a super-admin may make one).
	Tenant string
	// CSRPEM carries the admin's public key; nothing else of it is used.
	CSRPEM []byte
}

// IssuedAdmin is an admin and a certificate just issued to it.
type IssuedAdmin struct {
	Admin  *registry.Admin
	Tenant string // the admin's tenant name
	Result *Result
}

// adminVisible reports whether who may see and act on admin a: a
// super-admin on every admin, a tenant admin on the other admins of its
// tenant only (never on a super-admin).
func adminVisible(who Actor, a *registry.Admin) bool {
	if who.Super {
		return true
	}
	return !a.Super && InScope(who, a.TenantID)
}

// CreateAdmin records a new admin with role in spec.Tenant (or a
// super-admin) and issues its first certificate from spec.CSRPEM. A tenant
// outside who's scope, or unknown, is registry.ErrNotFound; a super-admin
// asked by anyone but a super-admin is ErrForbidden; a name taken is
// registry.ErrAlreadyExists. Every refusal is audited and changes nothing.
func (a *Admin) CreateAdmin(ctx context.Context, who Actor, spec AdminSpec) (*IssuedAdmin, error) {
	out, err := a.createAdmin(ctx, who, spec)
	if err != nil {
		return nil, a.refused(ctx, who, ActionAdminCreate, spec.Name, err)
	}
	return out, nil
}

func (a *Admin) createAdmin(ctx context.Context, who Actor, spec AdminSpec) (*IssuedAdmin, error) {
	if err := pki.ValidateAdminName(spec.Name); err != nil {
		return nil, fmt.Errorf("%w: admin name %q: %v", ErrInvalidArgument, spec.Name, err)
	}
	switch spec.Role {
	case registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor:
	default:
		return nil, fmt.Errorf("%w: role %q is not admin, operator or auditor", ErrInvalidArgument, spec.Role)
	}
	pub, err := a.adminKey(spec.CSRPEM)
	if err != nil {
		return nil, err
	}
	rec := &registry.Admin{Name: spec.Name, Role: spec.Role, Status: registry.AdminActive, CreatedAt: a.cfg.Now()}
	var tenant *registry.Tenant
	if spec.Tenant == "" {
		if !who.Super {
			return nil, fmt.Errorf("only a super-admin may create a super-admin (an admin without a tenant): %w", ErrForbidden)
		}
		rec.Super = true
		tenant, err = a.cfg.Store.GetTenant(ctx, registry.DefaultTenant)
	} else {
		tenant, err = a.cfg.Store.GetTenant(ctx, spec.Tenant)
		if err == nil && !InScope(who, tenant.ID) {
			err = registry.ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("no tenant %q in your scope: %w", spec.Tenant, err)
	}
	rec.TenantID = tenant.ID
	if _, err := a.cfg.Store.GetAdmin(ctx, spec.Name); err == nil {
		return nil, fmt.Errorf("admin %q: %w", spec.Name, registry.ErrAlreadyExists)
	} else if !errors.Is(err, registry.ErrNotFound) {
		return nil, fmt.Errorf("look up admin %q: %w", spec.Name, err)
	}
	if a.cfg.Issuer == nil {
		return nil, errors.New("this CA has no issuer for admin certificates")
	}
	scope := "tenant=" + tenant.Name
	if rec.Super {
		scope = "super-admin (all tenants)"
	}
	if err := a.cfg.Store.CreateAdmin(ctx, rec, event(who, tenant.ID, ActionAdminCreate, rec.Name, registry.ResultOK,
		fmt.Sprintf("role=%s %s", rec.Role, scope))); err != nil {
		return nil, fmt.Errorf("create admin %q: %w", spec.Name, err)
	}
	res, err := a.issueAdminCert(ctx, who, rec, tenant, pub, ActionCertIssue)
	if err != nil {
		return nil, err
	}
	return &IssuedAdmin{Admin: rec, Tenant: tenant.Name, Result: res}, nil
}

// adminKey checks an admin CSR and returns its public key.
func (a *Admin) adminKey(csrPEM []byte) (any, error) {
	csr, err := pki.ParseCSRPEM(csrPEM)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify: %v", pki.ErrBadCSR, err)
	}
	if err := (pki.KeyPolicy{AllowP384: true, AllowRSA: true}).Check(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr.PublicKey, nil
}

// issueAdminCert signs a certificate for admin rec of tenant and records it
// (kind admin) with its audit event before returning it.
func (a *Admin) issueAdminCert(ctx context.Context, who Actor, rec *registry.Admin, tenant *registry.Tenant, pub any, action Action) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	iss, err := a.cfg.Issuer.IssueClient(ctx, &pki.ClientRequest{
		PublicKey: pub, CommonName: rec.Name, Organization: tenant.Name,
		URIs:     []*url.URL{pki.AdminURI(a.cfg.TrustDomain, tenant.Name, rec.Name)},
		Lifetime: a.cfg.CertLifetime,
	})
	if err != nil {
		return nil, fmt.Errorf("sign admin certificate for %q: %w", rec.Name, err)
	}
	c := CertificateRecord(iss.Certificate, registry.KindAdmin, tenant.ID, "", a.cfg.Now())
	detail := fmt.Sprintf("kind=admin admin=%s role=%s not_after=%s", rec.Name, rec.Role, iss.Certificate.NotAfter.UTC().Format(time.RFC3339))
	if err := a.cfg.Store.RecordCertificate(ctx, c, event(who, tenant.ID, action, c.Serial, registry.ResultOK, detail)); err != nil {
		return nil, fmt.Errorf("record admin certificate %s: %w", c.Serial, err)
	}
	return &Result{Certificate: iss.Certificate, Chain: iss.Chain}, nil
}

// ListAdmins returns the admins who may see: every admin for a
// super-admin, the (non-super) admins of its tenant for a tenant admin.
func (a *Admin) ListAdmins(ctx context.Context, who Actor) ([]*registry.Admin, error) {
	all, err := a.cfg.Store.ListAdmins(ctx)
	if err != nil {
		return nil, fmt.Errorf("list admins: %w", err)
	}
	out := all[:0]
	for _, adm := range all {
		if adminVisible(who, adm) {
			out = append(out, adm)
		}
	}
	return out, nil
}

// RevokeAdmin marks admin name revoked — its next request is refused,
// whatever certificate it presents — then revokes every certificate of it
// that is not revoked yet through Revoker (reason privilegeWithdrawn), so
// CRL and OCSP show them. An admin outside who's scope, or unknown, is
// registry.ErrNotFound; revoking oneself is ErrInvalidArgument. An admin
// already revoked is revoked again harmlessly (its remaining certificates
// are revoked). It returns the admin and the certificates revoked.
func (a *Admin) RevokeAdmin(ctx context.Context, who Actor, name string) (*registry.Admin, []*registry.Certificate, error) {
	adm, err := a.cfg.Store.GetAdmin(ctx, name)
	if err == nil && !adminVisible(who, adm) {
		err = registry.ErrNotFound
	}
	if err != nil {
		return nil, nil, a.refused(ctx, who, ActionAdminRevoke, name, fmt.Errorf("no admin %q in your tenant: %w", name, err))
	}
	if who.Kind == ActorAdmin && who.ID == name {
		return nil, nil, a.refused(ctx, who, ActionAdminRevoke, name,
			fmt.Errorf("%w: an admin cannot revoke itself; ask another admin", ErrInvalidArgument))
	}
	tenant, err := a.cfg.Store.GetTenantByID(ctx, adm.TenantID)
	if err != nil {
		return nil, nil, fmt.Errorf("tenant of admin %q: %w", name, err)
	}
	now := a.cfg.Now()
	err = a.cfg.Store.RevokeAdmin(ctx, name, now, event(who, adm.TenantID, ActionAdminRevoke, name, registry.ResultOK, "role="+string(adm.Role)))
	if err != nil && !errors.Is(err, registry.ErrAlreadyRevoked) {
		return nil, nil, a.refused(ctx, who, ActionAdminRevoke, name, fmt.Errorf("revoke admin %q: %w", name, err))
	}
	if adm.Status != registry.AdminRevoked {
		adm.Status, adm.RevokedAt = registry.AdminRevoked, &now
	}
	certs, err := a.adminCerts(ctx, adm, tenant)
	if err != nil {
		return adm, nil, err
	}
	var revoked []*registry.Certificate
	for _, c := range certs {
		if c.Status == registry.CertRevoked || a.cfg.Revoker == nil {
			continue
		}
		res, err := a.cfg.Revoker.RevokeCertificate(ctx, who, c.Serial, registry.ReasonPrivilegeWithdrawn)
		if err != nil {
			return adm, revoked, fmt.Errorf("revoke certificate %s of admin %q: %w", c.Serial, name, err)
		}
		if !res.AlreadyRevoked {
			revoked = append(revoked, res.Certificates...)
		}
	}
	return adm, revoked, nil
}

// adminCerts lists the admin certificates that name adm (by its admin URI).
func (a *Admin) adminCerts(ctx context.Context, adm *registry.Admin, tenant *registry.Tenant) ([]*registry.Certificate, error) {
	uri := pki.AdminURI(a.cfg.TrustDomain, tenant.Name, adm.Name).String()
	var out []*registry.Certificate
	f := registry.CertFilter{TenantID: adm.TenantID, Kind: registry.KindAdmin, Limit: 1000}
	for {
		page, err := a.cfg.Store.ListCertificates(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("list certificates of admin %q: %w", adm.Name, err)
		}
		for _, c := range page {
			for _, san := range c.SANs {
				if strings.EqualFold(san, uri) {
					out = append(out, c)
					break
				}
			}
		}
		if len(page) < f.Limit {
			return out, nil
		}
		f.After = page[len(page)-1].Serial
	}
}

// RenewAdmin issues the authenticated admin who a new certificate for the
// key in csrPEM (the same key or a new one), with the admin lifetime. The
// certificate presented stays valid until it expires or is revoked.
func (a *Admin) RenewAdmin(ctx context.Context, who Actor, csrPEM []byte) (*IssuedAdmin, error) {
	out, err := a.renewAdmin(ctx, who, csrPEM)
	if err != nil {
		return nil, a.refused(ctx, who, ActionAdminRenew, who.ID, err)
	}
	return out, nil
}

func (a *Admin) renewAdmin(ctx context.Context, who Actor, csrPEM []byte) (*IssuedAdmin, error) {
	pub, err := a.adminKey(csrPEM)
	if err != nil {
		return nil, err
	}
	adm, err := a.cfg.Store.GetAdmin(ctx, who.ID)
	if err != nil || who.Kind != ActorAdmin {
		return nil, fmt.Errorf("renewal is for admins: %w", ErrForbidden)
	}
	if adm.Status == registry.AdminRevoked {
		return nil, fmt.Errorf("admin %q is revoked: %w", adm.Name, ErrForbidden)
	}
	tenant, err := a.cfg.Store.GetTenantByID(ctx, adm.TenantID)
	if err != nil {
		return nil, fmt.Errorf("tenant of admin %q: %w", adm.Name, err)
	}
	if a.cfg.Issuer == nil {
		return nil, errors.New("this CA has no issuer for admin certificates")
	}
	res, err := a.issueAdminCert(ctx, who, adm, tenant, pub, ActionAdminRenew)
	if err != nil {
		return nil, err
	}
	return &IssuedAdmin{Admin: adm, Tenant: tenant.Name, Result: res}, nil
}
