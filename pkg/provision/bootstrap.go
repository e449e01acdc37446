package provision

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"devpki/pkg/registry"
)

// CertificateRecorder records a certificate the CA issued outside an
// enrollment (its own TLS and OCSP certificates, admin certificates).
type CertificateRecorder interface {
	RecordCertificate(ctx context.Context, c *registry.Certificate, audit *registry.AuditEvent) error
}

// RecordIssued records a certificate of kind issued for the CA's own use or
// an admin, with its cert.issue audit event by who, before it is handed to
// anyone. tenantID is empty for the CA's infrastructure certificates.
func RecordIssued(ctx context.Context, st CertificateRecorder, who Actor, c *x509.Certificate, kind registry.CertKind, tenantID string, now time.Time) error {
	rec := CertificateRecord(c, kind, tenantID, "", now)
	detail := fmt.Sprintf("kind=%s subject=%s not_after=%s", kind, rec.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	if err := st.RecordCertificate(ctx, rec, event(who, tenantID, ActionCertIssue, rec.Serial, registry.ResultOK, detail)); err != nil {
		return fmt.Errorf("record %s certificate %s: %w", kind, rec.Serial, err)
	}
	return nil
}

// AdminRecorder records an admin.
type AdminRecorder interface {
	PutAdmin(ctx context.Context, a *registry.Admin, audit *registry.AuditEvent) error
}

// PutAdmin records admin a (name, tenant, role) with its audit event by who.
// 'ca init' makes the first admin with it.
func PutAdmin(ctx context.Context, st AdminRecorder, who Actor, a *registry.Admin) error {
	switch a.Role {
	case registry.RoleAdmin, registry.RoleOperator, registry.RoleAuditor:
	default:
		return fmt.Errorf("%w: role %q is not admin, operator or auditor", ErrInvalidArgument, a.Role)
	}
	if a.Name == "" || a.TenantID == "" {
		return fmt.Errorf("%w: an admin needs a name and a tenant", ErrInvalidArgument)
	}
	detail := fmt.Sprintf("role=%s super=%t", a.Role, a.Super)
	if err := st.PutAdmin(ctx, a, event(who, a.TenantID, ActionAdminPut, a.Name, registry.ResultOK, detail)); err != nil {
		return fmt.Errorf("record admin %q: %w", a.Name, err)
	}
	return nil
}
