package sqlstore

import (
	"context"
	"fmt"
	"time"

	"devpki/pkg/registry"
)

// The expiry queries read the certificates index idx_certificates_expiry
// (not_after, tenant_id, not_before of the active device certificates,
// migration 00008): a count is a range scan of that index alone, whatever
// the size of the table. They name the status and kind as literals
// (activeDevice): a partial index serves only a query whose WHERE clause
// repeats its own, which a bound parameter does not.

// certificatesBy is the certificates table (as alias, when set) read
// through index: SQLite plans without statistics and would take an
// equality on status through a list index (status, serial) over a range
// of a partial index, so it is told (INDEXED BY; the query fails rather
// than scan if the index cannot serve it). PostgreSQL plans from
// statistics and has no such clause.
func (s *Store) certificatesBy(alias, index string) string {
	t := "certificates"
	if alias != "" {
		t += " " + alias
	}
	if s.driver == DriverPostgres {
		return t
	}
	return t + " INDEXED BY " + index
}

// activeDevice is idx_certificates_expiry's condition, as the queries
// must write it (prefix: the table alias and its dot, or "").
func activeDevice(prefix string) string {
	return prefix + "status = '" + string(registry.CertActive) + "' AND " + prefix + "kind = '" + string(registry.KindDevice) + "'"
}

const idxExpiry = "idx_certificates_expiry"

// expiringQuery is the count of the active device certificates whose
// NotAfter is in [from, to), per tenant when perTenant, of one tenant
// when tenantID is set.
func (s *Store) expiringQuery(from, to time.Time, tenantID string, perTenant bool) (string, []any) {
	sel, group := "COUNT(*)", ""
	if perTenant {
		sel, group = "tenant_id, COUNT(*) AS n", " GROUP BY tenant_id"
	}
	q := "SELECT " + sel + " FROM " + s.certificatesBy("", idxExpiry) + " WHERE " + activeDevice("") +
		" AND not_after >= ? AND not_after < ?"
	args := []any{ts(from), ts(to)}
	if tenantID != "" {
		q += " AND tenant_id = ?"
		args = append(args, tenantID)
	}
	return q + group, args
}

// CountExpiring counts the active device certificates of every tenant
// whose NotAfter is in [from, to).
func (s *Store) CountExpiring(ctx context.Context, from, to time.Time) (int64, error) {
	var n int64
	q, args := s.expiringQuery(from, to, "", false)
	if err := s.rd(ctx).Raw(q, args...).Scan(&n).Error; err != nil {
		return 0, fmt.Errorf("sqlstore: count expiring certificates: %w", translate(err))
	}
	return n, nil
}

// CountExpiringByTenant counts, per tenant id, the certificates f selects
// (f.Limit is ignored).
func (s *Store) CountExpiringByTenant(ctx context.Context, f registry.ExpiryFilter) (map[string]int64, error) {
	var rows []struct {
		TenantID string
		N        int64
	}
	q, args := s.expiringQuery(f.From, f.To, f.TenantID, true)
	if err := s.rd(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: count expiring certificates per tenant: %w", translate(err))
	}
	out := make(map[string]int64, len(rows))
	for _, r := range rows {
		out[r.TenantID] = r.N
	}
	return out, nil
}

// overdueWhere is the condition ListOverdue selects its certificates
// (alias c) by, and its arguments.
func (s *Store) overdueWhere(f registry.ExpiryFilter, now time.Time) (string, []any) {
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
	where := activeDevice("c.") + " AND c.not_after >= ? AND c.not_after < ? AND " + cond
	args := []any{ts(f.From), ts(f.To), bound}
	if f.TenantID != "" {
		where += " AND c.tenant_id = ?"
		args = append(args, f.TenantID)
	}
	return where, args
}

// overdueQueries are ListOverdue's count and page queries and their
// arguments.
func (s *Store) overdueQueries(f registry.ExpiryFilter, now time.Time) (count, page string, args, pageArgs []any) {
	where, args := s.overdueWhere(f, now)
	count = "SELECT COUNT(*) FROM " + s.certificatesBy("c", idxExpiry) + " WHERE " + where
	page = "SELECT c.serial, c.device_id, d.serial AS device_serial, c.tenant_id, c.not_before, c.not_after, c.created_at" +
		" FROM " + s.certificatesBy("c", idxExpiry) + " JOIN devices d ON d.id = c.device_id WHERE " + where +
		" ORDER BY c.not_after LIMIT ?"
	return count, page, args, append(append([]any(nil), args...), pageLimit(f.Limit))
}

// ListOverdue lists, soonest expiry first, up to f.Limit of the
// certificates f selects whose renewal window opened by now (NotBefore +
// 2/3 of the lifetime, as provision.RenewAt), and counts all of them. The
// count reads idx_certificates_expiry alone (it holds not_before too); the
// list walks it in not_after order and stops at the limit.
func (s *Store) ListOverdue(ctx context.Context, f registry.ExpiryFilter, now time.Time) ([]*registry.OverdueCert, int64, error) {
	countQ, pageQ, args, pageArgs := s.overdueQueries(f, now)
	db := s.rd(ctx)
	var total int64
	if err := db.Raw(countQ, args...).Scan(&total).Error; err != nil {
		return nil, 0, fmt.Errorf("sqlstore: count overdue certificates: %w", translate(err))
	}
	var rows []struct {
		Serial, DeviceID, DeviceSerial, TenantID string
		NotBefore, NotAfter, CreatedAt           time.Time
	}
	err := db.Raw(pageQ, pageArgs...).Scan(&rows).Error
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
