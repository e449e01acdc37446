package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// ListTenants implements registry.Store.
func (s *Store) ListTenants(ctx context.Context) ([]*registry.Tenant, error) {
	var rows []tenantRow
	if err := s.rd(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list tenants: %w", translate(err))
	}
	out := make([]*registry.Tenant, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// SetTenantRequireTPM implements registry.Store.
func (s *Store) SetTenantRequireTPM(ctx context.Context, tenantID string, require bool, audit *registry.AuditEvent) error {
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		res := tx.Model(&tenantRow{}).Where("id = ?", tenantID).Update("require_tpm", require)
		if res.Error != nil {
			return fmt.Errorf("sqlstore: set tenant %s require_tpm: %w", tenantID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("sqlstore: set tenant %s require_tpm: %w", tenantID, registry.ErrNotFound)
		}
		return nil
	})
}

// UpdateTenantPolicy implements registry.Store.
func (s *Store) UpdateTenantPolicy(ctx context.Context, t *registry.Tenant, audit *registry.AuditEvent) error {
	row := fromTenant(t)
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		res := tx.Model(&tenantRow{}).Where("id = ?", t.ID).Updates(map[string]any{
			"require_tpm": row.RequireTPM, "methods": row.Methods, "key_types": row.KeyTypes,
			"cert_lifetime_seconds": row.CertLifetimeSeconds, "renew_grace_seconds": row.RenewGraceSeconds,
		})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: update tenant %s policy: %w", t.ID, translate(res.Error))
		}
		if res.RowsAffected != 1 {
			return fmt.Errorf("sqlstore: update tenant %s policy: %w", t.ID, registry.ErrNotFound)
		}
		return nil
	})
}

// CreateAdmin implements registry.Store.
func (s *Store) CreateAdmin(ctx context.Context, a *registry.Admin, audit *registry.AuditEvent) error {
	if a == nil || a.Name == "" {
		return errors.New("sqlstore: create admin: empty name")
	}
	row := fromAdmin(a)
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "admin "+a.Name, row, audit, func() { a.CreatedAt, a.Status = row.CreatedAt, registry.AdminStatus(row.Status) })
}

// ListAdmins implements registry.Store.
func (s *Store) ListAdmins(ctx context.Context) ([]*registry.Admin, error) {
	var rows []adminRow
	if err := s.rd(ctx).Order("name").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list admins: %w", translate(err))
	}
	out := make([]*registry.Admin, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// RevokeAdmin implements registry.Store.
func (s *Store) RevokeAdmin(ctx context.Context, name string, at time.Time, audit *registry.AuditEvent) error {
	return s.writeAudited(ctx, audit, func(tx *gorm.DB, _ *batch) error {
		at := ts(at)
		res := tx.Model(&adminRow{}).Where("name = ? AND status <> ?", name, string(registry.AdminRevoked)).
			Updates(map[string]any{"status": string(registry.AdminRevoked), "revoked_at": &at})
		if res.Error != nil {
			return fmt.Errorf("sqlstore: revoke admin %s: %w", name, translate(res.Error))
		}
		if res.RowsAffected == 1 {
			return nil
		}
		var n int64
		if err := tx.Model(&adminRow{}).Where("name = ?", name).Count(&n).Error; err != nil {
			return fmt.Errorf("sqlstore: revoke admin %s: %w", name, translate(err))
		}
		if n == 0 {
			return fmt.Errorf("sqlstore: revoke admin %s: %w", name, registry.ErrNotFound)
		}
		return fmt.Errorf("sqlstore: revoke admin %s: %w", name, registry.ErrAlreadyRevoked)
	})
}

// migrateSuperAdmins makes the admins of a registry from before
// super-admins (the bootstrap admins 'ca init' made, role admin in the
// default tenant) super-admins, as 'ca init' makes its admin now; without
// it an upgraded CA would have no admin able to create tenants or add TPM
// roots. It runs once, when the super column is added.
func migrateSuperAdmins(db *gorm.DB) error {
	err := db.Exec("UPDATE admins SET super = ? WHERE role = ? AND tenant_id = ?", true, string(registry.RoleAdmin), registry.DefaultTenant).Error
	if err != nil {
		return fmt.Errorf("sqlstore: migrate: super-admins: %w", translate(err))
	}
	return nil
}
