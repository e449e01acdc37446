package registry

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrBadCursor is a page cursor (DeviceFilter.After, CertFilter.After) that
// no listing made.
var ErrBadCursor = errors.New("registry: bad page cursor")

// ByExpiry reports whether a ListCertificates listing with f is in
// (NotAfter, Serial) order, soonest-expiring first: one that names a
// tenant, a device or ExpiringBefore. Only a listing of every tenant's
// certificates is in serial order.
func (f CertFilter) ByExpiry() bool {
	return f.TenantID != "" || f.DeviceID != "" || !f.ExpiringBefore.IsZero()
}

// Cursor is the keyset cursor that continues a ListCertificates page after
// c: its NotAfter and serial for a listing in expiry order (ByExpiry), its
// serial otherwise. Pass it back as CertFilter.After with the same filter.
func (f CertFilter) Cursor(c *Certificate) string {
	if !f.ByExpiry() {
		return c.Serial
	}
	return c.NotAfter.UTC().Format(time.RFC3339Nano) + "/" + c.Serial
}

// ExpiryCursor splits a cursor made by CertFilter.Cursor for a listing in
// expiry order into its NotAfter and serial.
func ExpiryCursor(after string) (time.Time, string, error) {
	at, serial, ok := strings.Cut(after, "/")
	if !ok || serial == "" {
		return time.Time{}, "", fmt.Errorf("%w: %q is not <RFC 3339 time>/<serial> (use the next cursor of the previous page)", ErrBadCursor, after)
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("%w: %q: %v", ErrBadCursor, after, err)
	}
	return t, serial, nil
}
