package sqlstore

import (
	"context"
	"fmt"
	"strings"

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

// devicesQuery is the query of a ListDevices page: in id order, each filter
// served by an index that also yields that order (models.go), so a page
// reads about Limit rows whatever the registry's size:
//
//   - serial: the tenant's unique ux_devices_tenant_serial_folded; a serial
//     without a tenant has no index of its own (migration 00012): the admin
//     API always names a tenant, and every enrollment would pay for one;
//   - MAC: device_mac_history (mac, device_id), each hit checked against the
//     device's current macs;
//   - EK: the partial unique ux_devices_ek_hash (non-empty EKs only, which
//     the query repeats so that the index serves it);
//   - re-key deadline passed: idx_devices_rekey_due (partial: only devices
//     with a deadline), its few rows sorted;
//   - tenant, tenant and status: idx_devices_tenant_id,
//     idx_devices_tenant_status_id;
//   - none: the primary key. A status without a tenant has no index of its
//     own (migration 00010): the admin API always names a tenant, and every
//     enrollment would pay for one.
//
// With a serial, MAC, EK or re-key filter the status and cursor terms, and
// the tenant but beside a serial, are residual (see residual): the few rows
// found are checked, never scanned for in id order. TestListPlans asserts
// these plans on SQLite.
func (s *Store) devicesQuery(f registry.DeviceFilter) (string, []any) {
	var w where
	narrow := f.Serial != "" || f.MAC != "" || f.EKHash != "" || !f.RekeyDueBefore.IsZero()
	col := func(c string) string {
		if narrow {
			return s.residual(c)
		}
		return c
	}
	if f.TenantID != "" {
		tenant := col("tenant_id")
		if f.Serial != "" {
			tenant = "tenant_id" // ux_devices_tenant_serial_folded's first column
		}
		w.add(tenant+" = ?", f.TenantID)
	}
	if f.Status != "" {
		w.add(col("status")+" = ?", string(f.Status))
	}
	if f.Serial != "" {
		w.add("serial_folded = ?", registry.FoldSerial(f.Serial))
	}
	if f.MAC != "" {
		// macs is a JSON array of 12-hex-digit strings: the history finds
		// the devices that ever named the MAC, LIKE keeps those naming it now.
		w.add("id IN (SELECT device_id FROM device_mac_history WHERE mac = ?)", f.MAC)
		w.add("macs LIKE ?", `%"`+f.MAC+`"%`)
	}
	if f.EKHash != "" {
		w.add("ek_hash = ? AND ek_hash <> ''", f.EKHash)
	}
	if !f.RekeyDueBefore.IsZero() {
		w.add("rekey_required = ? AND rekey_deadline IS NOT NULL AND rekey_deadline < ?", true, ts(f.RekeyDueBefore))
	}
	if f.After != "" {
		// With a narrowing filter the cursor too is checked on the few rows
		// found: as an index range it would walk the primary key from the
		// cursor to the end (the re-key sweep pages with it).
		w.add(col("id")+" > ?", f.After)
	}
	return "SELECT * FROM devices" + w.sql() + " ORDER BY id LIMIT ?", append(w.args, pageLimit(f.Limit))
}

// ListDevices implements registry.Store (see devicesQuery).
func (s *Store) ListDevices(ctx context.Context, f registry.DeviceFilter) ([]*registry.Device, error) {
	q, args := s.devicesQuery(f)
	var rows []deviceRow
	if err := s.rdBounded(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list devices: %w", translate(err))
	}
	out := make([]*registry.Device, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// identityHoldersQuery is IdentityHolders' one query of two indexed
// lookups: the (tenant_id, serial_folded) index, and device_macs (primary
// key tenant_id, mac) joined to the devices by primary key. The status is
// checked on those few rows (residual): as an index term it would walk
// every active device (idx_devices_status_tenant) — every enrollment asks
// this, so it would grow with the fleet (TestIdentityHoldersPlan).
func (s *Store) identityHoldersQuery(tenantID, serial string, macs []string) (string, []any) {
	q := `SELECT * FROM devices WHERE tenant_id = ? AND serial_folded = ?`
	args := []any{tenantID, registry.FoldSerial(serial)}
	if len(macs) > 0 {
		q += ` UNION SELECT * FROM devices WHERE ` + s.residual("status") + ` = ? AND id IN
			(SELECT device_id FROM device_macs WHERE tenant_id = ? AND mac IN ?)`
		args = append(args, string(registry.DeviceActive), tenantID, macs)
	}
	return q + ` ORDER BY id`, args
}

// IdentityHolders implements registry.Store (see identityHoldersQuery).
func (s *Store) IdentityHolders(ctx context.Context, tenantID, serial string, macs []string) ([]*registry.Device, error) {
	q, args := s.identityHoldersQuery(tenantID, serial, macs)
	var rows []deviceRow
	if err := s.rdBounded(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: devices holding serial %q or MACs %v: %w", serial, macs, translate(err))
	}
	out := make([]*registry.Device, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// certificatesQuery is the query of a ListCertificates page: soonest-expiring
// first, in (not_after, serial) order, for a listing that names a tenant, a
// device or an expiry (registry.CertFilter.ByExpiry); in serial order for
// one of every tenant. Each filter is served by an index that also yields
// that order (models.go):
//
//   - device: idx_certificates_device_id (a device has few certificates:
//     they are sorted);
//   - tenant and status: idx_certificates_tenant_status_not_after, an
//     expiring-before time a range in it;
//   - tenant: idx_certificates_tenant_not_after_serial, likewise;
//   - none: the primary key. A status or expiring-before listing without a
//     tenant has no index of its own (migration 00010): the admin API
//     always names a tenant, and every enrollment and renewal would pay
//     for one.
//
// Serial order, which these listings had before migration 00013, cost
// every enrollment and renewal a random leaf of the tenant-and-status
// index; expiry order writes it at the right edge, and soonest first is
// what an operator pages certificates for. Terms that no chosen index
// serves are residual (see residual). TestListPlans asserts the plans on
// SQLite.
func (s *Store) certificatesQuery(f registry.CertFilter) (string, []any, error) {
	var w where
	byDevice, expiring := f.DeviceID != "", !f.ExpiringBefore.IsZero()
	col := func(c string, residual bool) string {
		if residual {
			return s.residual(c)
		}
		return c
	}
	if f.TenantID != "" {
		w.add(col("tenant_id", byDevice)+" = ?", f.TenantID)
	}
	if byDevice {
		w.add("device_id = ?", f.DeviceID)
	}
	if f.Kind != "" {
		w.add("kind = ?", string(f.Kind))
	}
	if f.Status != "" {
		w.add(col("status", byDevice)+" = ?", string(f.Status))
	}
	if expiring {
		w.add(col("not_after", byDevice)+" < ?", ts(f.ExpiringBefore))
	}
	order := "serial"
	if f.ByExpiry() {
		order = "not_after, serial"
		if f.After != "" {
			at, serial, err := registry.ExpiryCursor(f.After)
			if err != nil {
				return "", nil, fmt.Errorf("sqlstore: list certificates: %w", err)
			}
			w.add("(not_after, serial) > (?, ?)", ts(at), serial)
		}
	} else if f.After != "" {
		w.add("serial > ?", f.After)
	}
	return "SELECT * FROM certificates" + w.sql() + " ORDER BY " + order + " LIMIT ?", append(w.args, pageLimit(f.Limit)), nil
}

// ListCertificates implements registry.Store (see certificatesQuery).
func (s *Store) ListCertificates(ctx context.Context, f registry.CertFilter) ([]*registry.Certificate, error) {
	q, args, err := s.certificatesQuery(f)
	if err != nil {
		return nil, err
	}
	var rows []certificateRow
	if err := s.rdBounded(ctx).Raw(q, args...).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("sqlstore: list certificates: %w", translate(err))
	}
	out := make([]*registry.Certificate, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// residual writes column c so that the planner does not use an index for
// the term: a check on rows found through another index. SQLite plans
// without statistics (nothing runs ANALYZE), so an equality on a column of
// a few values (tenant, status) can look as selective as a serial and win;
// its unary + keeps the term out of index selection. PostgreSQL plans from
// statistics and has no unary + for text.
func (s *Store) residual(c string) string {
	if s.driver == DriverPostgres {
		return c
	}
	return "+" + c
}

// where collects the AND-ed terms of a query and their arguments.
type where struct {
	terms []string
	args  []any
}

func (w *where) add(term string, args ...any) {
	w.terms = append(w.terms, term)
	w.args = append(w.args, args...)
}

func (w *where) sql() string {
	if len(w.terms) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.terms, " AND ")
}
