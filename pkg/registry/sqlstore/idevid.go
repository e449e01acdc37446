package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"devpki/pkg/registry"
)

// idevidCARow is a manufacturer CA certificate for IDevID verification
// (registry.IDevIDCA), unique per tenant and fingerprint.
type idevidCARow struct {
	ID          string     `gorm:"primaryKey;size:128"`
	TenantID    string     `gorm:"size:128;not null;uniqueIndex:ux_idevid_cas_tenant_fp,priority:1"`
	Tenant      *tenantRow `gorm:"foreignKey:TenantID;references:ID;constraint:OnUpdate:RESTRICT,OnDelete:RESTRICT"`
	Fingerprint string     `gorm:"size:64;not null;uniqueIndex:ux_idevid_cas_tenant_fp,priority:2"`
	DER         []byte     `gorm:"column:der;not null"`
	Subject     string     `gorm:"not null"`
	Kind        string     `gorm:"size:32;not null"`
	AddedBy     string     `gorm:"size:256;not null"`
	CreatedAt   time.Time
}

func (idevidCARow) TableName() string { return "idevid_cas" }

func (r *idevidCARow) domain() *registry.IDevIDCA {
	return &registry.IDevIDCA{
		ID: r.ID, TenantID: r.TenantID, Fingerprint: r.Fingerprint, DER: r.DER, Subject: r.Subject,
		Kind: registry.IDevIDCAKind(r.Kind), AddedBy: r.AddedBy, CreatedAt: r.CreatedAt.UTC(),
	}
}

// PutIDevIDCA implements registry.Store.
func (s *Store) PutIDevIDCA(ctx context.Context, c *registry.IDevIDCA, audit *registry.AuditEvent) error {
	switch {
	case c == nil || c.ID == "" || c.TenantID == "" || c.Fingerprint == "" || len(c.DER) == 0:
		return errors.New("sqlstore: put IDevID CA: id, tenant, fingerprint and DER are required")
	case c.Kind != registry.IDevIDRoot && c.Kind != registry.IDevIDIntermediate:
		return fmt.Errorf("sqlstore: put IDevID CA: unknown kind %q", c.Kind)
	}
	row := &idevidCARow{
		ID: c.ID, TenantID: c.TenantID, Fingerprint: c.Fingerprint, DER: c.DER, Subject: c.Subject,
		Kind: string(c.Kind), AddedBy: c.AddedBy, CreatedAt: ts(c.CreatedAt),
	}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "IDevID CA "+c.Fingerprint+" of tenant "+c.TenantID, row, audit,
		func() { c.CreatedAt = row.CreatedAt })
}

// ListIDevIDCAs implements registry.Store.
func (s *Store) ListIDevIDCAs(ctx context.Context, tenantID string) ([]*registry.IDevIDCA, error) {
	q := s.rd(ctx).Model(&idevidCARow{})
	if tenantID != "" {
		q = q.Where("tenant_id = ?", tenantID)
	}
	var rows []idevidCARow
	if err := q.Order("created_at, id").Limit(1000).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list IDevID CAs: %w", translate(err))
	}
	out := make([]*registry.IDevIDCA, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}
