package sqlstore

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// ListTenants implements registry.Store.
func (s *Store) ListTenants(ctx context.Context) ([]*registry.Tenant, error) {
	var rows []tenantRow
	if err := s.r.WithContext(ctx).Order("name").Find(&rows).Error; err != nil {
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
