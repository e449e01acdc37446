package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"devpki/pkg/registry"
)

// PutTPMRoot implements registry.Store.
func (s *Store) PutTPMRoot(ctx context.Context, r *registry.TPMRoot, audit *registry.AuditEvent) error {
	if r == nil || r.Fingerprint == "" || len(r.DER) == 0 {
		return errors.New("sqlstore: put TPM root: fingerprint and DER are required")
	}
	kind := r.Kind
	switch kind {
	case "":
		kind = registry.TPMRootCA
	case registry.TPMRootCA, registry.TPMIntermediate:
	default:
		return fmt.Errorf("sqlstore: put TPM root: unknown kind %q", r.Kind)
	}
	row := &tpmRootRow{Fingerprint: r.Fingerprint, DER: r.DER, Subject: r.Subject, Kind: string(kind), AddedBy: r.AddedBy, CreatedAt: ts(r.CreatedAt)}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "TPM root "+r.Fingerprint, row, audit, func() { r.CreatedAt, r.Kind = row.CreatedAt, kind })
}

// ListTPMRoots implements registry.Store.
func (s *Store) ListTPMRoots(ctx context.Context) ([]*registry.TPMRoot, error) {
	var rows []tpmRootRow
	if err := s.rd(ctx).Order("created_at, fingerprint").Limit(1000).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list TPM roots: %w", translate(err))
	}
	out := make([]*registry.TPMRoot, len(rows))
	for i, r := range rows {
		out[i] = &registry.TPMRoot{Fingerprint: r.Fingerprint, DER: r.DER, Subject: r.Subject, Kind: registry.TPMCAKind(r.Kind),
			AddedBy: r.AddedBy, CreatedAt: r.CreatedAt.UTC()}
	}
	return out, nil
}

// migrateTPMRootKind marks rows from before tpm_roots.kind as roots (the
// column's default already does on both dialects; this covers a column
// added without one).
func migrateTPMRootKind(db *gorm.DB) error {
	if err := db.Exec("UPDATE tpm_roots SET kind = ? WHERE kind IS NULL OR kind = ''", string(registry.TPMRootCA)).Error; err != nil {
		return fmt.Errorf("sqlstore: migrate: TPM root kinds: %w", translate(err))
	}
	return nil
}
