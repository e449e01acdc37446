package sqlstore

import (
	"context"
	"fmt"

	"devpki/pkg/registry"
)

// pageLimit applies the page-size defaults of the registry's filters.
func pageLimit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > 1000:
		return 1000
	}
	return n
}

// ListDevices implements registry.Store.
func (s *Store) ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error) {
	q := s.r.WithContext(ctx).Model(&deviceRow{})
	if f.TenantID != "" {
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	if f.Status != "" {
		q = q.Where("status = ?", string(f.Status))
	}
	if f.Serial != "" {
		q = q.Where("serial_folded = ?", registry.FoldSerial(f.Serial))
	}
	if f.MAC != "" {
		// macs is a JSON array of 12-hex-digit strings: match one element.
		q = q.Where("macs LIKE ?", `%"`+f.MAC+`"%`)
	}
	if f.EKHash != "" {
		q = q.Where("ek_hash = ?", f.EKHash)
	}
	if !f.RekeyDueBefore.IsZero() {
		q = q.Where("rekey_required = ? AND rekey_deadline IS NOT NULL AND rekey_deadline < ?", true, ts(f.RekeyDueBefore))
	}
	if f.After != "" {
		q = q.Where("id > ?", f.After)
	}
	var rows []deviceRow
	if err := q.Order("id").Limit(pageLimit(f.Limit)).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list devices: %w", translate(err))
	}
	out := make([]*registry.Device, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// IdentityHolders implements registry.Store with one query of two indexed
// lookups: the (tenant_id, serial_folded) index, and device_macs (primary
// key tenant_id, mac) joined to the active devices.
func (s *Store) IdentityHolders(ctx context.Context, tenantID, serial string, macs []string) ([]*registry.Device, error) {
	q := `SELECT * FROM devices WHERE tenant_id = ? AND serial_folded = ?`
	args := []any{tenantID, registry.FoldSerial(serial)}
	if len(macs) > 0 {
		q += ` UNION SELECT * FROM devices WHERE status = ? AND id IN
			(SELECT device_id FROM device_macs WHERE tenant_id = ? AND mac IN ?)`
		args = append(args, string(registry.DeviceActive), tenantID, macs)
	}
	var rows []deviceRow
	if err := s.r.WithContext(ctx).Raw(q+` ORDER BY id`, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: devices holding serial %q or MACs %v: %w", serial, macs, translate(err))
	}
	out := make([]*registry.Device, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// ListCertificates implements registry.Store.
func (s *Store) ListCertificates(ctx context.Context, f registry.CertFilter) ([]*registry.Certificate, error) {
	q := s.r.WithContext(ctx).Model(&certificateRow{})
	if f.TenantID != "" {
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	if f.DeviceID != "" {
		q = q.Where("device_id = ?", f.DeviceID)
	}
	if f.Kind != "" {
		q = q.Where("kind = ?", string(f.Kind))
	}
	if f.Status != "" {
		q = q.Where("status = ?", string(f.Status))
	}
	if !f.ExpiringBefore.IsZero() {
		q = q.Where("not_after < ?", ts(f.ExpiringBefore))
	}
	if f.After != "" {
		q = q.Where("serial > ?", f.After)
	}
	var rows []certificateRow
	if err := q.Order("serial").Limit(pageLimit(f.Limit)).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list certificates: %w", translate(err))
	}
	out := make([]*registry.Certificate, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}
