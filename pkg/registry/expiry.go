package registry

import "time"

// ExpiryFilter selects the active device certificates (status
// CertActive, kind KindDevice: the current certificate of each device, not
// those superseded by a renewal) whose NotAfter is in [From, To). An empty
// TenantID means every tenant.
type ExpiryFilter struct {
	TenantID string
	From, To time.Time
	// Limit caps a list; 0 means 100, at most 1000.
	Limit int
}

// OverdueCert is the active certificate of a device whose renewal
// window has opened (two thirds of its lifetime have passed) while the
// device has not come back to renew it. The registry sees a device only
// when it enrolls or renews, so IssuedAt, the certificate's issuance, is
// when the CA last saw it.
type OverdueCert struct {
	Serial       string
	DeviceID     string
	DeviceSerial string
	TenantID     string
	NotBefore    time.Time
	NotAfter     time.Time
	IssuedAt     time.Time
}
