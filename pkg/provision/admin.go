package provision

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"devpki/pkg/pki/mtls"
	"devpki/pkg/registry"
)

// Errors of admin actions, besides registry's (ErrNotFound, ErrAlreadyExists,
// ErrNotRevoked, ErrClaimNotHeld ...) and ErrInvalidArgument.
var (
	// ErrUnauthenticated: the caller presented no verified client
	// certificate.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the caller is known but may not do this — its
	// certificate is not an admin's, is revoked, the admin is revoked, or
	// its role (or not being a super-admin) does not allow the action at
	// all. Another tenant's object is registry.ErrNotFound instead.
	ErrForbidden = errors.New("forbidden")
)

// InScope reports whether who may see and act on a record of tenantID. It
// is the one tenant-scope rule: a super-admin acts on every tenant, any
// other actor in its own tenant only, and a record with no tenant (CA
// infrastructure certificates, anonymous refusals) is the default tenant's.
// Out of scope is answered as not found (the record's existence is not
// revealed).
func InScope(who Actor, tenantID string) bool {
	if who.Super {
		return true
	}
	if tenantID == "" {
		tenantID = registry.DefaultTenant
	}
	return who.TenantID != "" && tenantID == who.TenantID
}

// AdminStore is what Admin reads and writes. *sqlstore.Store implements it.
type AdminStore interface {
	// Authentication.
	GetCertificate(ctx context.Context, serial string) (*registry.Certificate, error)
	GetAdmin(ctx context.Context, name string) (*registry.Admin, error)
	GetTenantByID(ctx context.Context, id string) (*registry.Tenant, error)
	// Admins and their certificates.
	CreateAdmin(ctx context.Context, a *registry.Admin, audit *registry.AuditEvent) error
	ListAdmins(ctx context.Context) ([]*registry.Admin, error)
	RevokeAdmin(ctx context.Context, name string, at time.Time, audit *registry.AuditEvent) error
	RecordCertificate(ctx context.Context, c *registry.Certificate, audit *registry.AuditEvent) error
	ListCertificates(ctx context.Context, f registry.CertFilter) ([]*registry.Certificate, error)
	// Tenants.
	TenantStore
	ListTenants(ctx context.Context) ([]*registry.Tenant, error)
	// Tokens.
	GetTenant(ctx context.Context, name string) (*registry.Tenant, error)
	CreateToken(ctx context.Context, t *registry.Token, audit *registry.AuditEvent) error
	// Devices.
	GetDevice(ctx context.Context, id string) (*registry.Device, error)
	RequireRekey(ctx context.Context, deviceID string, required bool, deadline *time.Time, audit *registry.AuditEvent) error
	ReinstateDevice(ctx context.Context, deviceID string, audit *registry.AuditEvent) (*registry.Device, error)
	// TPM roots, pre-registrations, quarantine.
	PutTPMRoot(ctx context.Context, r *registry.TPMRoot, audit *registry.AuditEvent) error
	registry.IDevIDStore
	PutPreregistration(ctx context.Context, p *registry.Preregistration, audit *registry.AuditEvent) error
	GetQuarantine(ctx context.Context, id string) (*registry.Quarantine, error)
	DismissQuarantine(ctx context.Context, id, by string, audit *registry.AuditEvent) (*registry.Quarantine, error)
	// Reads, denials and refusals.
	AppendAudit(ctx context.Context, ev *registry.AuditEvent) error
	// RecordRefusal counts an anonymous refusal (appendRefusal).
	RecordRefusal(ctx context.Context, r *registry.Refusal) error
}

// AdminConfig configures NewAdmin. Store and TrustDomain are required.
type AdminConfig struct {
	Store AdminStore
	// TrustDomain is the one admin certificates name (pki.AdminURI).
	TrustDomain string
	// CA are this CA's own certificates (root and issuing chain), which
	// AddIDevIDRoot refuses; nil checks nothing.
	CA []*x509.Certificate
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log receives audit appends that failed; nil means slog.Default().
	Log *slog.Logger
	// Issuer signs admin certificates ('ca admins add', renewals); nil
	// refuses them with an error. *pki.Issuer implements it.
	Issuer ComponentIssuer
	// CertLifetime is the lifetime of admin certificates; zero means
	// DefaultAdminCertLifetime.
	CertLifetime time.Duration
	// Revoker revokes a revoked admin's certificates through the one
	// revocation path (CRL and OCSP show them); nil leaves them to expire
	// (the admin is refused anyway). *Revocation implements it.
	Revoker CertificateRevoker
}

// Admin runs the admin API's actions: it authenticates admin certificates
// and makes every admin state change — tokens, TPM roots,
// pre-registrations, quarantine dismissals, rotations, reinstatements —
// with its validation, its tenant scope and its audit event. Revocations and
// quarantine releases are Revocation's. It is safe for concurrent use.
type Admin struct {
	cfg AdminConfig
}

// NewAdmin checks cfg and applies its defaults.
func NewAdmin(cfg AdminConfig) (*Admin, error) {
	var errs []error
	if cfg.Store == nil {
		errs = append(errs, errors.New("provision: admin: Store is required"))
	}
	if cfg.TrustDomain == "" {
		errs = append(errs, errors.New("provision: admin: TrustDomain is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = DefaultAdminCertLifetime
	}
	return &Admin{cfg: cfg}, nil
}

// AuthRequest is one request to the admin API, to authenticate.
type AuthRequest struct {
	// TLS is the request's connection state; nil or without a verified
	// chain means no client certificate.
	TLS *tls.ConnectionState
	// Source is the client address, for the audit log.
	Source string
	// Route names what is asked ("POST /v1/admin/tokens"), for the audit
	// log.
	Route string
	// Roles are the roles allowed; empty allows none.
	Roles []registry.Role
}

// Authenticate maps a verified client certificate to an admin allowed on
// req.Route: the certificate is an admin certificate of this trust domain,
// recorded in the registry as an admin certificate and not revoked; its
// admin exists, belongs to the certificate's tenant and holds one of
// req.Roles. It returns the admin as an Actor. Every refusal is audited
// (ActionAdminDenied) and is ErrUnauthenticated (no certificate) or
// ErrForbidden.
func (a *Admin) Authenticate(ctx context.Context, req *AuthRequest) (Actor, error) {
	who := Actor{Kind: ActorAnonymous, Source: req.Source}
	deny := func(sentinel error, why string) (Actor, error) {
		err := fmt.Errorf("%s: %w", why, sentinel)
		a.Refuse(ctx, who, ActionAdminDenied, req.Route, err)
		return Actor{}, err
	}
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 || len(req.TLS.VerifiedChains[0]) == 0 {
		return deny(ErrUnauthenticated, "an admin client certificate issued by this CA is required")
	}
	leaf := req.TLS.VerifiedChains[0][0]
	who = Actor{Kind: ActorCert, ID: leaf.SerialNumber.Text(16), Source: req.Source}
	// The same identity reading every component uses (pkg/pki/mtls).
	id, err := mtls.PeerIdentity(req.TLS, a.cfg.TrustDomain)
	if err != nil || id.Role != mtls.RoleAdmin {
		return deny(ErrForbidden, "the client certificate is not an admin certificate")
	}
	who = Actor{Kind: ActorAdmin, ID: id.AdminName, Source: req.Source}
	rec, err := a.cfg.Store.GetCertificate(ctx, id.CertSerial)
	if err != nil || rec.Kind != registry.KindAdmin || rec.Status == registry.CertRevoked {
		return deny(ErrForbidden, "the admin certificate is unknown to the registry or revoked")
	}
	adm, err := a.cfg.Store.GetAdmin(ctx, id.AdminName)
	if err != nil {
		return deny(ErrForbidden, fmt.Sprintf("no admin named %q", id.AdminName))
	}
	who.TenantID, who.Super = adm.TenantID, adm.Super
	if adm.Status == registry.AdminRevoked {
		return deny(ErrForbidden, fmt.Sprintf("admin %q is revoked", id.AdminName))
	}
	tn, err := a.cfg.Store.GetTenantByID(ctx, adm.TenantID)
	if err != nil || tn.Name != id.Tenant {
		return deny(ErrForbidden, "the certificate's tenant does not match the admin's")
	}
	if !slices.Contains(req.Roles, adm.Role) {
		return deny(ErrForbidden, fmt.Sprintf("role %q may not %s", adm.Role, req.Route))
	}
	return who, nil
}

// Read audits a successful admin read of target (ActionAdminRead). The
// answer is already decided, so a failure is only logged.
func (a *Admin) Read(ctx context.Context, who Actor, target string) {
	ev := event(who, "", ActionAdminRead, target, registry.ResultOK, "")
	if err := a.cfg.Store.AppendAudit(context.WithoutCancel(ctx), ev); err != nil {
		a.cfg.Log.Error("audit append failed", "action", ev.Action, "err", err)
	}
}

// Refuse audits a request refused before it reached an action (an
// unreadable body, a missing credential, a denied caller) as action on
// target by who. The refusal is the answer whatever happens here, so a
// failure to append is only logged.
func (a *Admin) Refuse(ctx context.Context, who Actor, action Action, target string, cause error) {
	if err := appendRefusal(ctx, a.cfg.Store, who, "", action, target, cause); err != nil {
		a.cfg.Log.Error("audit append failed", "action", action, "err", err)
	}
}

// refused audits a refused action and returns its error.
func (a *Admin) refused(ctx context.Context, who Actor, action Action, target string, err error) error {
	a.Refuse(ctx, who, action, target, err)
	return err
}

// MintToken mints a bootstrap token (see MintToken) for who, in who's tenant
// only (a super-admin: any tenant): a tenant outside it, or unknown, is
// registry.ErrNotFound. Refusals are audited.
func (a *Admin) MintToken(ctx context.Context, who Actor, spec TokenSpec) (string, *registry.Token, error) {
	if spec.Tenant == "" {
		spec.Tenant = registry.DefaultTenant
	}
	t, err := a.cfg.Store.GetTenant(ctx, spec.Tenant)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return "", nil, fmt.Errorf("tenant %q: %w", spec.Tenant, err)
	}
	if err != nil || !InScope(who, t.ID) {
		return "", nil, a.refused(ctx, who, ActionTokenCreate, spec.Tenant,
			fmt.Errorf("no tenant %q in your scope: %w", spec.Tenant, registry.ErrNotFound))
	}
	spec.Who = who
	token, tok, err := MintToken(ctx, a.cfg.Store, a.cfg.Now(), spec)
	if err != nil {
		return "", nil, a.refused(ctx, who, ActionTokenCreate, spec.Tenant, err)
	}
	return token, tok, nil
}

// device returns device id if who may act on it; another tenant's device is
// ErrNotFound, as an unknown one.
func (a *Admin) device(ctx context.Context, who Actor, id string) (*registry.Device, error) {
	d, err := a.cfg.Store.GetDevice(ctx, id)
	if err == nil && !InScope(who, d.TenantID) {
		err = registry.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("no device %q in your tenant: %w", id, err)
	}
	return d, nil
}

// RotateDevice tells device id to re-key at its next renewal (see
// registry.Device.RekeyRequired); with a deadline, which must be in the
// future, its certificates are revoked if it has not re-keyed by then
// (EnforceRekeyDeadlines). It returns the device as it now is.
func (a *Admin) RotateDevice(ctx context.Context, who Actor, id string, deadline *time.Time) (*registry.Device, error) {
	d, err := a.device(ctx, who, id)
	if err != nil {
		return nil, a.refused(ctx, who, ActionDeviceRotate, id, err)
	}
	if deadline != nil && !deadline.After(a.cfg.Now()) {
		return nil, a.refused(ctx, who, ActionDeviceRotate, id,
			fmt.Errorf("%w: deadline %s is not in the future", ErrInvalidArgument, deadline.UTC().Format(time.RFC3339)))
	}
	detail := "re-key at next renewal"
	if deadline != nil {
		detail += "; certificates revoked after " + deadline.UTC().Format(time.RFC3339)
	}
	if err := a.cfg.Store.RequireRekey(ctx, id, true, deadline,
		event(who, d.TenantID, ActionDeviceRotate, id, registry.ResultOK, detail)); err != nil {
		return nil, fmt.Errorf("rotate device %s: %w", id, err)
	}
	return a.cfg.Store.GetDevice(ctx, id)
}

// ReinstateDevice brings a device an admin revoked back to active
// (registry.Store.ReinstateDevice): its certificates stay revoked, and a
// token bound to its serial (or, for a TPM device, the same TPM's
// attestation) re-enrolls it under the same id. Another tenant's device is
// ErrNotFound; a device that is not revoked is registry.ErrNotRevoked.
// Refusals change nothing and are audited.
func (a *Admin) ReinstateDevice(ctx context.Context, who Actor, id string) (*registry.Device, error) {
	d, err := a.device(ctx, who, id)
	if err != nil {
		return nil, a.refused(ctx, who, ActionDeviceReinstate, id, err)
	}
	if d.Status != registry.DeviceRevoked {
		return nil, a.refused(ctx, who, ActionDeviceReinstate, id,
			fmt.Errorf("device %s is %s: %w", id, d.Status, registry.ErrNotRevoked))
	}
	out, err := a.cfg.Store.ReinstateDevice(ctx, id,
		event(who, d.TenantID, ActionDeviceReinstate, id, registry.ResultOK, "serial="+d.Serial))
	if err != nil {
		return nil, a.refused(ctx, who, ActionDeviceReinstate, id, fmt.Errorf("reinstate device %s: %w", id, err))
	}
	return out, nil
}

// DismissQuarantine closes held claim id: the admin looked into it and
// nothing more is to be done; the claimant stays refused. Another tenant's
// claim is ErrNotFound; a claim no longer held is registry.ErrClaimNotHeld,
// saying who closed it.
func (a *Admin) DismissQuarantine(ctx context.Context, who Actor, id string) (*registry.Quarantine, error) {
	q, err := scopedClaim(ctx, a.cfg.Store, who, id)
	if err != nil {
		return nil, a.refused(ctx, who, ActionQuarantineDismiss, id, err)
	}
	if q.Status != registry.QuarantineHeld {
		return nil, a.refused(ctx, who, ActionQuarantineDismiss, id, closedError(q))
	}
	detail := fmt.Sprintf("serial=%s ek=%s reason=%s device=%s attempts=%d", q.Serial, q.EKHash, q.Reason, q.ConflictDeviceID, q.Attempts)
	d, err := a.cfg.Store.DismissQuarantine(ctx, id, who.String(),
		event(who, q.TenantID, ActionQuarantineDismiss, id, registry.ResultOK, detail))
	if errors.Is(err, registry.ErrConflict) {
		// Closed meanwhile: say by whom.
		if q, gerr := a.cfg.Store.GetQuarantine(ctx, id); gerr == nil && q.Status != registry.QuarantineHeld {
			err = closedError(q)
		}
	}
	if err != nil {
		return nil, a.refused(ctx, who, ActionQuarantineDismiss, id, fmt.Errorf("dismiss quarantine %s: %w", id, err))
	}
	return d, nil
}

// scopedClaim returns claim id if who may act on it; another tenant's claim
// is ErrNotFound, as an unknown one.
func scopedClaim(ctx context.Context, st interface {
	GetQuarantine(ctx context.Context, id string) (*registry.Quarantine, error)
}, who Actor, id string) (*registry.Quarantine, error) {
	q, err := st.GetQuarantine(ctx, id)
	if err == nil && !InScope(who, q.TenantID) {
		err = registry.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("no quarantined claim %q in your tenant: %w", id, err)
	}
	return q, nil
}

// closedError is registry.ErrClaimNotHeld saying who closed claim q.
func closedError(q *registry.Quarantine) error {
	switch q.Status {
	case registry.QuarantineDismissed:
		return fmt.Errorf("claim %s was dismissed by %s: %w", q.ID, q.DismissedBy, registry.ErrClaimNotHeld)
	case registry.QuarantineReleased:
		return fmt.Errorf("claim %s was released by %s: %w", q.ID, q.ReleasedBy, registry.ErrClaimNotHeld)
	}
	return fmt.Errorf("claim %s is %s: %w", q.ID, q.Status, registry.ErrClaimNotHeld)
}
