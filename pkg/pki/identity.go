package pki

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"

	"go.step.sm/crypto/x509util"
)

// Identity is a device identity as encoded in its certificate (DESIGN.md
// "Identity in a certificate"): Subject CN=DeviceID, serialNumber=Serial,
// O=Tenant; SAN URIs spiffe://TrustDomain/Tenant/device/Serial and one
// urn:dev:mac:<mac> per MAC. An empty TrustDomain means the issuer's.
// A TPM-backed device also carries its EK identity as a PermanentIdentifier
// SAN (RFC 4043) whose identifierValue is EKHash.
type Identity struct {
	DeviceID    string
	Tenant      string
	Serial      string
	MACs        []string // 12 lowercase hex digits each
	TrustDomain string
	// EKHash is the hex SHA-256 of the TPM EK public key (see
	// pkg/tpm/verify.EKHash), 64 lowercase hex digits; empty for a device
	// whose key is not TPM-attested (no PermanentIdentifier SAN then).
	EKHash string
}

// SPIFFEID returns spiffe://<td>/<tenant>/device/<serial>. Tenant and
// serial are single SPIFFE path segments (see ValidateTenant and
// ValidateSerial), so the ID needs no escaping and is what it reads as.
func (id Identity) SPIFFEID() *url.URL {
	return spiffeURL(id.TrustDomain, id.Tenant, "device", id.Serial)
}

// AdminURI returns spiffe://<td>/<tenant>/admin/<name>, the identity carried
// by admin client certificates. Tenant and name must pass ValidateTenant and
// ValidateAdminName: the URI of any other input is one ParseAdminURI (and
// every SPIFFE parser) refuses.
func AdminURI(trustDomain, tenant, name string) *url.URL {
	return spiffeURL(trustDomain, tenant, "admin", name)
}

// ComponentURI returns spiffe://<td>/<tenant>/component/<name>, the identity
// carried by the client certificates of the fleet's other components
// (brokers, ingest services). It refuses (wrapping ErrBadIdentity) a trust
// domain, tenant or name that is not valid (see ValidateComponentName).
func ComponentURI(trustDomain, tenant, name string) (*url.URL, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("component URI: %w: %v", ErrBadIdentity, err)
	}
	if err := ValidateTenant(tenant); err != nil {
		return nil, fmt.Errorf("component URI: %w: %v", ErrBadIdentity, err)
	}
	if err := ValidateComponentName(name); err != nil {
		return nil, fmt.Errorf("component URI: %w: %v", ErrBadIdentity, err)
	}
	return spiffeURL(trustDomain, tenant, "component", name), nil
}

// spiffeURL builds spiffe://<td>/<tenant>/<kind>/<name> from parts that are
// SPIFFE path segments already: nothing is escaped (the spec forbids
// percent-encoding), so Path and the string form are the same.
func spiffeURL(td, tenant, kind, name string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: td, Path: "/" + tenant + "/" + kind + "/" + name}
}

// parseSPIFFE splits spiffe://<td>/<tenant>/<kind>/<name> into its parts.
// ok is false for any other shape, for any '%' in the path (the SPIFFE spec
// allows no percent-encoding) and for any segment that is not a SPIFFE path
// segment: 1 or more of [A-Za-z0-9._-], not "." or "..".
func parseSPIFFE(u *url.URL, trustDomain string) (tenant, kind, name string, ok bool) {
	if u == nil || u.Scheme != "spiffe" || u.Host != trustDomain || u.User != nil ||
		u.Opaque != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" ||
		u.RawFragment != "" || u.OmitHost {
		return "", "", "", false
	}
	p := u.EscapedPath()
	if p != u.Path || strings.ContainsRune(p, '%') || u.RawPath != "" || !strings.HasPrefix(p, "/") {
		return "", "", "", false
	}
	parts := strings.Split(p[1:], "/")
	if len(parts) != 3 {
		return "", "", "", false
	}
	for _, seg := range parts {
		if checkSegment("segment", seg, len(seg)) != nil {
			return "", "", "", false
		}
	}
	return parts[0], parts[1], parts[2], true
}

// ParseAdminURI is the inverse of AdminURI: ok is true only for
// spiffe://<trustDomain>/<tenant>/admin/<name> with a valid tenant and name.
func ParseAdminURI(u *url.URL, trustDomain string) (tenant, name string, ok bool) {
	tenant, kind, name, ok := parseSPIFFE(u, trustDomain)
	if !ok || kind != "admin" || ValidateTenant(tenant) != nil || ValidateAdminName(name) != nil {
		return "", "", false
	}
	return tenant, name, true
}

// DeviceIdentity reads the device identity from a certificate issued by
// IssueDevice (either profile) and checks that its parts agree: exactly one
// SPIFFE URI in trustDomain whose tenant and serial match the subject's O and
// serialNumber, MAC URIs well formed, at most one PermanentIdentifier (the
// EK hash), no other SANs, not a CA.
func DeviceIdentity(c *x509.Certificate, trustDomain string) (*Identity, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrBadIdentity)
	}
	if c.IsCA {
		return nil, fmt.Errorf("%w: certificate is a CA", ErrBadIdentity)
	}
	if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: device certificate has DNS, IP or email SANs", ErrBadIdentity)
	}
	id := &Identity{DeviceID: c.Subject.CommonName, Serial: c.Subject.SerialNumber, TrustDomain: trustDomain}
	if len(c.Subject.Organization) != 1 {
		return nil, fmt.Errorf("%w: subject has %d organizations, want 1 (the tenant)", ErrBadIdentity, len(c.Subject.Organization))
	}
	id.Tenant = c.Subject.Organization[0]
	var spiffe int
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			spiffe++
			tenant, kind, serial, ok := parseSPIFFE(u, trustDomain)
			if !ok || kind != "device" {
				return nil, fmt.Errorf("%w: URI SAN %q is not a device SPIFFE ID in trust domain %q", ErrBadIdentity, u, trustDomain)
			}
			if tenant != id.Tenant || serial != id.Serial {
				return nil, fmt.Errorf("%w: SPIFFE ID %q disagrees with subject O=%q serialNumber=%q", ErrBadIdentity, u, id.Tenant, id.Serial)
			}
			continue
		}
		mac, err := parseMACURI(u)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
		}
		id.MACs = append(id.MACs, mac)
	}
	if spiffe != 1 {
		return nil, fmt.Errorf("%w: certificate has %d SPIFFE IDs, want 1", ErrBadIdentity, spiffe)
	}
	ek, err := permanentIdentifier(c)
	if err != nil {
		return nil, err
	}
	id.EKHash = ek
	if err := id.validate(); err != nil {
		return nil, err
	}
	return id, nil
}

// validate checks every field of a fully specified identity.
func (id *Identity) validate() error {
	if err := validateDeviceID(id.DeviceID); err != nil {
		return err
	}
	if err := ValidateTenant(id.Tenant); err != nil {
		return fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if err := ValidateSerial(id.Serial); err != nil {
		return fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if id.EKHash != "" && !isEKHash(id.EKHash) {
		return fmt.Errorf("%w: EK hash %q is not 64 lowercase hex digits", ErrBadIdentity, id.EKHash)
	}
	for _, m := range id.MACs {
		if !isCanonicalMAC(m) {
			return fmt.Errorf("%w: MAC %q is not 12 lowercase hex digits (nor all-zero or broadcast)", ErrBadIdentity, m)
		}
	}
	return nil
}

// NormalizeMAC accepts aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF, aabb.ccdd.eeff
// or 12 hex digits (any case) and returns 12 lowercase hex digits. It rejects
// every other form and the all-zero and broadcast (ff..ff) addresses with an
// error wrapping ErrBadMAC.
func NormalizeMAC(s string) (string, error) {
	var hex []byte
	switch len(s) {
	case 12:
		hex = []byte(s)
	case 14: // aabb.ccdd.eeff
		if s[4] != '.' || s[9] != '.' {
			return "", badMAC(s, "")
		}
		hex = []byte(s[0:4] + s[5:9] + s[10:14])
	case 17: // aa:bb:.. or aa-bb-..
		sep := s[2]
		if sep != ':' && sep != '-' {
			return "", badMAC(s, "")
		}
		hex = make([]byte, 0, 12)
		for i := 0; i < 17; i += 3 {
			if i+2 < 17 && s[i+2] != sep {
				return "", badMAC(s, "")
			}
			hex = append(hex, s[i], s[i+1])
		}
	default:
		return "", badMAC(s, "")
	}
	for i, c := range hex {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			hex[i] = c + ('a' - 'A')
		default:
			return "", badMAC(s, "")
		}
	}
	out := string(hex)
	switch out {
	case "000000000000":
		return "", badMAC(s, ": all zero")
	case "ffffffffffff":
		return "", badMAC(s, ": broadcast")
	}
	return out, nil
}

// badMAC is NormalizeMAC's refusal of s.
func badMAC(s, why string) error {
	return fmt.Errorf("%w: invalid MAC address %s%s", ErrBadMAC, clip(s), why)
}

// isCanonicalMAC reports whether m is what NormalizeMAC returns.
func isCanonicalMAC(m string) bool {
	if len(m) != 12 {
		return false
	}
	n, err := NormalizeMAC(m)
	return err == nil && n == m
}

const macURNPrefix = "dev:mac:"

// MACURI returns urn:dev:mac:<mac> (RFC 9039); mac should be normalized.
func MACURI(mac string) *url.URL {
	return &url.URL{Scheme: "urn", Opaque: macURNPrefix + mac}
}

// parseMACURI returns the MAC of a urn:dev:mac:<12 lowercase hex> URI.
func parseMACURI(u *url.URL) (string, error) {
	if u.Scheme != "urn" || !strings.HasPrefix(u.Opaque, macURNPrefix) ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("URI SAN %q is not urn:dev:mac:<12 hex>", u)
	}
	mac := u.Opaque[len(macURNPrefix):]
	if !isCanonicalMAC(mac) {
		return "", fmt.Errorf("%w: URI SAN %s: MAC must be 12 lowercase hex digits, not all-zero or broadcast", ErrBadMAC, clip(u.String()))
	}
	return mac, nil
}

// MaxSerialLen is the longest hardware serial ValidateSerial accepts.
const MaxSerialLen = 64

// ValidateSerial checks a hardware serial: 1 to MaxSerialLen characters of
// [A-Za-z0-9._-], and not "." or "..", so that it is one SPIFFE path segment
// as the SPIFFE spec defines it (no '/', no percent-encoding, no dot
// segment) and the SPIFFE ID of a device is its serial verbatim. Anything
// else (NUL, CR/LF, '/', '%', ':', spaces, non-ASCII look-alikes) is refused
// with an error wrapping ErrBadSerial; serials are never escaped or mapped.
func ValidateSerial(s string) error {
	if err := checkSegment("serial", s, MaxSerialLen); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSerial, err)
	}
	return nil
}

// ValidateTenant checks a tenant name as used in O= and the SPIFFE path:
// 1..64 characters of [A-Za-z0-9._-], not "." or "..".
func ValidateTenant(s string) error {
	return checkSegment("tenant", s, 64)
}

// ValidateAdminName checks an admin name as used in AdminURI: 1..64
// characters of [A-Za-z0-9._-], not "." or ".." (one SPIFFE path segment).
// The name is also the admin certificate's CN, which RFC 5280 bounds at 64
// characters (MaxSubjectValueLen).
func ValidateAdminName(s string) error {
	return checkSegment("admin name", s, MaxSubjectValueLen)
}

// ValidateComponentName checks a component name as used in ComponentURI:
// 1..64 characters of [A-Za-z0-9._-], not "." or ".." (one SPIFFE path
// segment), such as "broker-1" or "ingest.eu-west".
func ValidateComponentName(s string) error {
	return checkSegment("component name", s, 64)
}

// checkSegment checks that s is one SPIFFE path segment of at most maxLen
// characters: [A-Za-z0-9._-] only, not empty, not "." or "..".
func checkSegment(what, s string, maxLen int) error {
	if len(s) == 0 || len(s) > maxLen {
		return fmt.Errorf("%s must be 1 to %d characters, got %d", what, maxLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%s %s: character %q at %d not allowed (only A-Z a-z 0-9 . _ -)", what, clip(s), c, i)
		}
	}
	if s == "." || s == ".." {
		return fmt.Errorf("%s %q not allowed (a dot segment)", what, s)
	}
	return nil
}

// clip quotes s for an error message, cut to a readable length.
func clip(s string) string {
	const n = 80
	if len(s) > n {
		return fmt.Sprintf("%q…", s[:n])
	}
	return fmt.Sprintf("%q", s)
}

// ValidateTrustDomain checks a SPIFFE trust domain: 1..255 characters of
// [a-z0-9._-].
func ValidateTrustDomain(s string) error {
	if len(s) == 0 || len(s) > 255 {
		return fmt.Errorf("trust domain must be 1 to 255 characters, got %d", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("trust domain %q: character %q at %d not allowed (only a-z 0-9 . _ -)", s, c, i)
		}
	}
	return nil
}

// validateDeviceID checks the opaque device id used as CN: 1..64 characters
// of [A-Za-z0-9._:-].
func validateDeviceID(s string) error {
	if len(s) == 0 || len(s) > 64 {
		return fmt.Errorf("%w: device id must be 1 to 64 characters, got %d", ErrBadIdentity, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && c != '_' && c != ':' && c != '-' {
			return fmt.Errorf("%w: device id %q: character %q at %d not allowed", ErrBadIdentity, s, c, i)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isEKHash reports whether s is 64 lowercase hex digits.
func isEKHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// permanentIdentifier returns the identifierValue of the certificate's one
// PermanentIdentifier SAN, or "" when it has none.
func permanentIdentifier(c *x509.Certificate) (string, error) {
	sans, err := x509util.ParseSubjectAlternativeNames(c)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	switch len(sans.PermanentIdentifiers) {
	case 0:
		return "", nil
	case 1:
		p := sans.PermanentIdentifiers[0]
		if p.Identifier == "" {
			return "", fmt.Errorf("%w: PermanentIdentifier SAN without a value", ErrBadIdentity)
		}
		return p.Identifier, nil
	default:
		return "", fmt.Errorf("%w: certificate has %d PermanentIdentifier SANs, want at most 1", ErrBadIdentity, len(sans.PermanentIdentifiers))
	}
}
