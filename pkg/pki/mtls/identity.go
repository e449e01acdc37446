package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"devpki/pkg/pki"
)

// Peer roles PeerIdentity returns.
const (
	RoleDevice = "device"
	RoleAdmin  = "admin" // the admin's permissions (admin, operator, auditor) live in the registry
)

// ErrUnknownPeer means the verified peer certificate is neither a devpki
// device certificate nor an admin certificate of the trust domain.
var ErrUnknownPeer = errors.New("peer is neither a device nor an admin")

// Identity is who a verified peer is. Device fields are empty for an admin
// and AdminName is empty for a device.
type Identity struct {
	Role       string    `json:"role"` // RoleDevice or RoleAdmin
	Tenant     string    `json:"tenant"`
	DeviceID   string    `json:"device_id,omitempty"`
	Serial     string    `json:"serial,omitempty"` // the device's hardware serial
	MACs       []string  `json:"macs,omitempty"`
	AdminName  string    `json:"admin_name,omitempty"`
	CertSerial string    `json:"cert_serial"` // lowercase hex, as the registry keys certificates
	NotAfter   time.Time `json:"not_after"`
	// Certificate is the verified leaf.
	Certificate *x509.Certificate `json:"-"`
}

// PeerIdentity returns the identity of the leaf of cs's first verified
// chain (so only a peer that passed chain verification has one), read with
// pki.DeviceIdentity or pki.ParseAdminURI in trustDomain.
func PeerIdentity(cs *tls.ConnectionState, trustDomain string) (*Identity, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil, fmt.Errorf("mtls: peer identity: %w", ErrNoPeer)
	}
	if trustDomain == "" {
		return nil, errors.New("mtls: peer identity: no trust domain configured")
	}
	leaf := cs.VerifiedChains[0][0]
	id := &Identity{CertSerial: leaf.SerialNumber.Text(16), NotAfter: leaf.NotAfter, Certificate: leaf}
	for _, u := range leaf.URIs {
		if tenant, name, ok := pki.ParseAdminURI(u, trustDomain); ok {
			if leaf.IsCA || len(leaf.URIs) != 1 {
				break
			}
			id.Role, id.Tenant, id.AdminName = RoleAdmin, tenant, name
			return id, nil
		}
	}
	dev, err := pki.DeviceIdentity(leaf, trustDomain)
	if err != nil {
		return nil, fmt.Errorf("mtls: peer identity: %w: %v", ErrUnknownPeer, err)
	}
	id.Role, id.Tenant, id.DeviceID, id.Serial, id.MACs = RoleDevice, dev.Tenant, dev.DeviceID, dev.Serial, dev.MACs
	return id, nil
}

// PeerIdentity is PeerIdentity with Options.TrustDomain.
func (s *Source) PeerIdentity(cs *tls.ConnectionState) (*Identity, error) {
	return PeerIdentity(cs, s.opts.TrustDomain)
}

// RequestIdentity is PeerIdentity of the connection r arrived on.
func (s *Source) RequestIdentity(r *http.Request) (*Identity, error) {
	return PeerIdentity(r.TLS, s.opts.TrustDomain)
}
