package wire

import "time"

// RolloverPrepareRequest is POST /v1/admin/rollover/prepare.
type RolloverPrepareRequest struct {
	// Root: make a new root, cross-signed by the current one, and an
	// intermediate under it; false: a new intermediate under the current root.
	Root bool `json:"root,omitempty"`
}

// RolloverIssuer is one CA issuer.
type RolloverIssuer struct {
	KeyID           string     `json:"key_id"`
	State           string     `json:"state"` // prepared, active, previous, retired
	Kind            string     `json:"kind,omitempty"`
	Subject         string     `json:"subject"`
	RootFingerprint string     `json:"root_fingerprint"`
	CrossSigned     bool       `json:"cross_signed,omitempty"`
	NotAfter        time.Time  `json:"not_after"`
	CreatedAt       time.Time  `json:"created_at"`
	ActivatedAt     *time.Time `json:"activated_at,omitempty"`
	RetiredAt       *time.Time `json:"retired_at,omitempty"`
}

// RolloverStepResponse answers prepare, activate and retire.
type RolloverStepResponse struct {
	Issuer   RolloverIssuer  `json:"issuer"`
	Previous *RolloverIssuer `json:"previous,omitempty"`
	Files    []string        `json:"files,omitempty"`
}

// RolloverTenant is the adoption of the target issuer in one tenant.
type RolloverTenant struct {
	Tenant        string `json:"tenant"`
	Devices       int64  `json:"devices"`
	OnNewIssuer   int64  `json:"on_new_issuer"`
	FetchedBundle int64  `json:"fetched_bundle"`
}

// RolloverStatusResponse is GET /v1/admin/rollover/status.
type RolloverStatusResponse struct {
	Issuers []RolloverIssuer `json:"issuers"`
	// Target is the issuer adoption is counted for: the prepared one,
	// else the active one.
	Target  string           `json:"target,omitempty"`
	Tenants []RolloverTenant `json:"tenants"`
}
