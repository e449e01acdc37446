package sqlstore

import (
	"context"
	"fmt"
	"time"

	"devpki/pkg/registry"
)

// The expiry queries read the certificates index idx_certificates_expiry
// (status, kind, not_after, tenant_id, not_before): a count is a range
// scan of that index alone, whatever the size of the table.

// CountExpiring counts the active device certificates of every tenant
// whose NotAfter is in [from, to).
func (s *Store) CountExpiring(ctx context.Context, from, to time.Time) (int64, error) {
	var n int64
	err := s.rd(ctx).Model(&certificateRow{}).
		Where("status = ? AND kind = ? AND not_after >= ? AND not_after < ?",
			string(registry.CertActive), string(registry.KindDevice), ts(from), ts(to)).
		Count(&n).Error
	if err != nil {
		return 0, fmt.Errorf("sqlstore: count expiring certificates: %w", translate(err))
	}
	return n, nil
}

// CountExpiringByTenant counts, per tenant id, the certificates f selects
// (f.Limit is ignored).
func (s *Store) CountExpiringByTenant(ctx context.Context, f registry.ExpiryFilter) (map[string]int64, error) {
	q := s.rd(ctx).Model(&certificateRow{}).Select("tenant_id, COUNT(*) AS n").
		Where("status = ? AND kind = ? AND not_after >= ? AND not_after < ?",
			string(registry.CertActive), string(registry.KindDevice), ts(f.From), ts(f.To))
	if f.TenantID != "" {
		q = q.Where("tenant_id = ?", f.TenantID)
	}
	var rows []struct {
		TenantID string
		N        int64
	}
	if err := q.Group("tenant_id").Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: count expiring certificates per tenant: %w", translate(err))
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.TenantID] = r.N
	}
	return out, nil
}

// ListOverdue lists, soonest expiry first, up to f.Limit of the
// certificates f selects whose renewal window opened by now (NotBefore +
// 2/3 of the lifetime, as provision.RenewAt), and counts all of them. The
// count reads idx_certificates_expiry alone (it holds not_before too); the
// list walks it in not_after order and stops at the limit.
func (s *Store) ListOverdue(ctx context.Context, f registry.ExpiryFilter, now time.Time) ([]*registry.OverdueCert, int64, error) {
	// renew_after <= now  ⟺  not_before + 2·not_after <= 3·now, in a
	// number each dialect computes from a timestamp.
	var cond string
	var bound float64
	if s.driver == DriverPostgres {
		cond = "EXTRACT(EPOCH FROM c.not_before) + 2 * EXTRACT(EPOCH FROM c.not_after) <= ?"
		bound = 3 * float64(now.UnixMicro()) / 1e6
	} else {
		cond = "julianday(c.not_before) + 2 * julianday(c.not_after) <= ?"
		bound = 3 * (float64(now.UnixMicro())/86400e6 + 2440587.5)
	}
	where := "c.status = ? AND c.kind = ? AND c.not_after >= ? AND c.not_after < ? AND " + cond
	args := []any{string(registry.CertActive), string(registry.KindDevice), ts(f.From), ts(f.To), bound}
	if f.TenantID != "" {
		where += " AND c.tenant_id = ?"
		args = append(args, f.TenantID)
	}
	db := s.rd(ctx)
	var total int64
	if err := db.Raw("SELECT COUNT(*) FROM certificates c WHERE "+where, args...).Scan(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("sqlstore: count overdue certificates: %w", translate(err))
	}
	var rows []struct {
		Serial, DeviceID, DeviceSerial, TenantID string
		NotBefore, NotAfter, CreatedAt           time.Time
	}
	err := db.Raw("SELECT c.serial, c.device_id, d.serial AS device_serial, c.tenant_id, c.not_before, c.not_after, c.created_at"+
		" FROM certificates c JOIN devices d ON d.id = c.device_id WHERE "+where+" ORDER BY c.not_after LIMIT ?",
		append(args, pageLimit(f.Limit))...).Scan(&rows).Error
	if err != nil {
		return nil, 0, fmt.Errorf("sqlstore: list overdue certificates: %w", translate(err))
	}
	out := make([]*registry.OverdueCert, len(rows))
	for i, r := range rows {
		out[i] = &registry.OverdueCert{Serial: r.Serial, DeviceID: r.DeviceID, DeviceSerial: r.DeviceSerial, TenantID: r.TenantID,
			NotBefore: r.NotBefore.UTC(), NotAfter: r.NotAfter.UTC(), IssuedAt: r.CreatedAt.UTC()}
	}
	return out, total, nil
}
