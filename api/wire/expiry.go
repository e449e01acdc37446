package wire

import "time"

// ExpiryForecast is the reply to GET /v1/admin/certificates/expiring: the
// active device certificates (one per device) expiring in [from, to), per
// tenant and per UTC day, and the devices that will miss their renewal
// window because the CA has not seen them since it opened.
type ExpiryForecast struct {
	From    time.Time      `json:"from"`
	To      time.Time      `json:"to"`
	Total   int64          `json:"total"`
	Tenants []ExpiryTenant `json:"tenants"`
	// Overdue lists, soonest expiry first, up to the limit asked;
	// OverdueTotal counts them all.
	Overdue      []OverdueDevice `json:"overdue"`
	OverdueTotal int64           `json:"overdue_total"`
}

// ExpiryTenant is one tenant's expiring certificates.
type ExpiryTenant struct {
	Tenant string      `json:"tenant"`
	Total  int64       `json:"total"`
	Days   []ExpiryDay `json:"days"`
}

// ExpiryDay counts the certificates expiring on one UTC day.
type ExpiryDay struct {
	Day   string `json:"day"` // YYYY-MM-DD
	Count int64  `json:"count"`
}

// OverdueDevice is a device past the opening of its renewal window
// (renew_after) that the CA has not seen since: last_seen is its
// certificate's issuance, its last contact.
type OverdueDevice struct {
	DeviceID    string    `json:"device_id"`
	Serial      string    `json:"serial"` // the device's hardware serial
	Tenant      string    `json:"tenant"`
	Certificate string    `json:"certificate"` // the expiring certificate's serial
	LastSeen    time.Time `json:"last_seen"`
	RenewAfter  time.Time `json:"renew_after"`
	NotAfter    time.Time `json:"not_after"`
}
