package registry

import (
	"errors"
	"time"
)

// IssuerState is where a CA issuer stands in a rollover.
type IssuerState string

// Issuer states, in the order a rollover walks them. At most one issuer is
// active, at most one prepared, at most one previous.
const (
	// IssuerPrepared: made by 'ca rollover prepare'; its trust bundle is
	// served, it signs nothing yet.
	IssuerPrepared IssuerState = "prepared"
	// IssuerActive signs every new certificate.
	IssuerActive IssuerState = "active"
	// IssuerPrevious was active before the last activate: it signs no new
	// certificate, its CRL and OCSP are served, its chain stays trusted.
	IssuerPrevious IssuerState = "previous"
	// IssuerRetired: 'ca rollover retire' ended its overlap; it signs only
	// its CRL and OCSP answers until its certificates have expired.
	IssuerRetired IssuerState = "retired"
)

// Issuer kinds: what 'ca rollover prepare' made.
const (
	IssuerKindIntermediate = "intermediate" // under the current root
	IssuerKindRoot         = "root"         // a new root (cross-signed by the old one) and an intermediate under it
)

// ErrRolloverOrder: a rollover step was asked out of order (activate before
// prepare, retire before activate, prepare twice); nothing was changed.
var ErrRolloverOrder = errors.New("registry: rollover step out of order")

// CAIssuer is one issuing CA the service has used or will use. KeyID names
// it everywhere: the hex of its certificate's subject key identifier, which
// is also the authority key identifier of what it signs.
type CAIssuer struct {
	KeyID string
	State IssuerState
	Kind  string // IssuerKindIntermediate or IssuerKindRoot; "" for the CA from 'ca init'
	// CertPEM is the issuing intermediate; RootPEM the root it chains to;
	// CrossPEM, for a new root, that root's certificate signed by the
	// previous root (its subject and key, the old root as issuer).
	CertPEM, RootPEM, CrossPEM string
	// KeyURI is where the intermediate's key is: an encrypted PEM file
	// (softkms path, decrypted with the CA passphrase) or a KMS URI.
	KeyURI string
	// RootKeyURI is where the root's key is (as KeyURI): a later
	// intermediate rollover signs with it, a root rollover cross-signs.
	RootKeyURI  string
	NotAfter    time.Time
	CreatedAt   time.Time
	ActivatedAt *time.Time
	RetiredAt   *time.Time
}

// RolloverTenant is the adoption of one issuer in one tenant.
type RolloverTenant struct {
	TenantID string
	// Devices is the tenant's active devices.
	Devices int64
	// OnIssuer is how many of them hold an active, unexpired certificate
	// signed by the issuer.
	OnIssuer int64
	// FetchedBundle is how many fetched a trust bundle naming the issuer.
	FetchedBundle int64
}
