package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"devpki/pkg/registry"
)

// PutTPMRoot implements registry.Store.
func (s *Store) PutTPMRoot(ctx context.Context, r *registry.TPMRoot, audit *registry.AuditEvent) error {
	if r == nil || r.Fingerprint == "" || len(r.DER) == 0 {
		return errors.New("sqlstore: put TPM root: fingerprint and DER are required")
	}
	row := &tpmRootRow{Fingerprint: r.Fingerprint, DER: r.DER, Subject: r.Subject, AddedBy: r.AddedBy, CreatedAt: ts(r.CreatedAt)}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = ts(s.now())
	}
	return s.insert(ctx, "TPM root "+r.Fingerprint, row, audit, func() { r.CreatedAt = row.CreatedAt })
}

// ListTPMRoots implements registry.Store.
func (s *Store) ListTPMRoots(ctx context.Context) ([]*registry.TPMRoot, error) {
	var rows []tpmRootRow
	if err := s.r.WithContext(ctx).Order("created_at, fingerprint").Limit(1000).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list TPM roots: %w", translate(err))
	}
	out := make([]*registry.TPMRoot, len(rows))
	for i, r := range rows {
		out[i] = &registry.TPMRoot{Fingerprint: r.Fingerprint, DER: r.DER, Subject: r.Subject, AddedBy: r.AddedBy, CreatedAt: r.CreatedAt.UTC()}
	}
	return out, nil
}
