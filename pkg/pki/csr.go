package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// MaxCSRSize is the largest PEM input ParseCSRPEM accepts.
const MaxCSRSize = 64 << 10

var (
	oidSerialNumber  = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidExtSAN        = asn1.ObjectIdentifier{2, 5, 29, 17}
	extensionsByName = map[string]string{
		"2.5.29.19":         "basicConstraints",
		"2.5.29.15":         "keyUsage",
		"2.5.29.37":         "extKeyUsage",
		"2.5.29.14":         "subjectKeyIdentifier",
		"2.5.29.35":         "authorityKeyIdentifier",
		"2.5.29.30":         "nameConstraints",
		"2.5.29.32":         "certificatePolicies",
		"1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
		"2.5.29.31":         "cRLDistributionPoints",
	}
	generalNameTypes = [...]string{"otherName", "rfc822Name (email)", "dNSName", "x400Address", "directoryName", "ediPartyName", "URI", "iPAddress", "registeredID"}
)

// NewDeviceCSR builds the DER enrollment CSR a device sends: Subject
// CN=<serial>, serialNumber=<serial>; one URI SAN urn:dev:mac:<mac> per
// (normalized, deduplicated) MAC; nothing else. The signature algorithm
// follows the signer's key (ECDSA P-256 → ECDSA-SHA256, P-384 → SHA384, RSA →
// SHA256WithRSA, Ed25519).
func NewDeviceCSR(signer crypto.Signer, serial string, macs []string) ([]byte, error) {
	if err := ValidateSerial(serial); err != nil {
		return nil, fmt.Errorf("new device CSR: %w", err)
	}
	norm, err := NormalizeMACs(macs)
	if err != nil {
		return nil, fmt.Errorf("new device CSR: %w", err)
	}
	if len(norm) == 0 {
		return nil, fmt.Errorf("new device CSR: at least one MAC address is required")
	}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: serial, SerialNumber: serial},
		URIs:    make([]*url.URL, len(norm)),
	}
	for i, m := range norm {
		tmpl.URIs[i] = MACURI(m)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, signer)
	if err != nil {
		return nil, fmt.Errorf("new device CSR: %w", err)
	}
	return der, nil
}

// NormalizeMACs normalizes every MAC (NormalizeMAC) and drops repeats,
// keeping the first occurrence's order. The first bad MAC is the error
// (wrapping ErrBadMAC).
func NormalizeMACs(macs []string) ([]string, error) {
	out := make([]string, 0, len(macs))
outer:
	for _, m := range macs {
		n, err := NormalizeMAC(m)
		if err != nil {
			return nil, err
		}
		for _, seen := range out {
			if seen == n {
				continue outer
			}
		}
		out = append(out, n)
	}
	return out, nil
}

func badCSR(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadCSR}, args...)...)
}

// ParseCSRPEM parses exactly one "CERTIFICATE REQUEST" PEM block with only
// whitespace around it, no PEM headers, and DER that is one ASN.1 SEQUENCE
// with nothing after it. Every failure wraps ErrBadCSR. It does not verify
// the signature; CSRPolicy.Check does.
func ParseCSRPEM(b []byte) (*x509.CertificateRequest, error) {
	if len(b) > MaxCSRSize {
		return nil, badCSR("PEM is %d bytes, at most %d allowed", len(b), MaxCSRSize)
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, badCSR("empty input")
	}
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
		return nil, badCSR("input does not start with a PEM block (only whitespace may precede it)")
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, badCSR("malformed PEM block")
	}
	if block.Type != "CERTIFICATE REQUEST" {
		return nil, badCSR("PEM type is %q, want \"CERTIFICATE REQUEST\"", block.Type)
	}
	if len(block.Headers) != 0 {
		return nil, badCSR("PEM block has headers; none are allowed")
	}
	if rest = bytes.TrimSpace(rest); len(rest) != 0 {
		if bytes.Contains(rest, []byte("-----BEGIN ")) {
			return nil, badCSR("more than one PEM block")
		}
		return nil, badCSR("%d bytes of trailing data after the PEM block", len(rest))
	}
	return ParseCSRDER(block.Bytes)
}

// ParseCSRDER parses a DER CSR that must be exactly one ASN.1 SEQUENCE.
// Every failure wraps ErrBadCSR; the signature is not verified.
func ParseCSRDER(der []byte) (*x509.CertificateRequest, error) {
	s := cryptobyte.String(der)
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) {
		return nil, badCSR("DER is not an ASN.1 SEQUENCE")
	}
	if len(s) != 0 {
		return nil, badCSR("%d bytes of trailing data after the DER", len(s))
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		// crypto/x509 refuses a URI SAN with control characters before
		// Check could see it: name the refused MAC when that is the cause.
		for _, raw := range csrURIs(seq) {
			if strings.HasPrefix(raw, "urn:"+macURNPrefix) && !isCanonicalMAC(raw[len("urn:"+macURNPrefix):]) {
				return nil, fmt.Errorf("%w: %w: URI SAN %s: MAC must be 12 lowercase hex digits, not all-zero or broadcast",
					ErrBadCSR, ErrBadMAC, clip(raw))
			}
		}
		return nil, badCSR("parse: %v", err)
	}
	return csr, nil
}

// oidExtensionRequest is PKCS #9 extensionRequest.
var oidExtensionRequest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14}

// csrURIs returns, best effort, the raw URI SANs requested by the contents
// of a CertificationRequest SEQUENCE, for error messages about CSRs that
// crypto/x509 cannot parse.
func csrURIs(req cryptobyte.String) []string {
	var info, version, subject, spki, attrs cryptobyte.String
	if !req.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.ReadASN1(&version, cbasn1.INTEGER) ||
		!info.ReadASN1(&subject, cbasn1.SEQUENCE) ||
		!info.ReadASN1(&spki, cbasn1.SEQUENCE) ||
		!info.ReadASN1(&attrs, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil
	}
	var uris []string
	for !attrs.Empty() {
		var attr, values cryptobyte.String
		var oid asn1.ObjectIdentifier
		if !attrs.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) {
			return uris
		}
		if !oid.Equal(oidExtensionRequest) {
			continue
		}
		for !values.Empty() {
			var exts cryptobyte.String
			if !values.ReadASN1(&exts, cbasn1.SEQUENCE) {
				return uris
			}
			for !exts.Empty() {
				var ext, value, names cryptobyte.String
				var id asn1.ObjectIdentifier
				if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1ObjectIdentifier(&id) ||
					!ext.SkipOptionalASN1(cbasn1.BOOLEAN) || !ext.ReadASN1(&value, cbasn1.OCTET_STRING) {
					return uris
				}
				if !id.Equal(oidExtSAN) || !value.ReadASN1(&names, cbasn1.SEQUENCE) {
					continue
				}
				for !names.Empty() {
					var name cryptobyte.String
					var tag cbasn1.Tag
					if !names.ReadAnyASN1(&name, &tag) {
						return uris
					}
					if tag == cbasn1.Tag(6).ContextSpecific() {
						uris = append(uris, string(name))
					}
				}
			}
		}
	}
	return uris
}

// CSRPolicy says which device CSRs Check accepts. The zero value accepts
// ECDSA P-256 keys only, with at most 8 MACs. Its key fields are a KeyPolicy
// (see Keys), which decides every key rule.
type CSRPolicy struct {
	AllowP384    bool // also accept ECDSA P-384
	AllowEd25519 bool // also accept Ed25519
	AllowRSA     bool // also accept RSA keys (MinRSABits to MaxRSABits bits, exponent 65537)
	MinRSABits   int  // default and floor 2048
	MaxMACs      int  // default 8
}

// CSRClaims is what a checked CSR asks for: the only things a device
// certificate takes from it.
type CSRClaims struct {
	Serial    string
	MACs      []string // normalized, deduplicated, in CSR order
	PublicKey crypto.PublicKey
}

// Check verifies a device CSR against the policy and returns its claims.
// It refuses (wrapping ErrBadCSR): weak (MD5/SHA-1/DSA) or unknown signature
// algorithms; keys the policy does not allow; a signature that does not
// verify; a missing, repeated or invalid subject serialNumber; no MAC, a
// malformed urn:dev:mac URI or more than MaxMACs; any other SAN (DNS, IP,
// email, other URIs, other name types); and any requested extension other
// than subjectAltName (such as basicConstraints CA:TRUE). A refused serial
// also wraps ErrBadSerial, and a refused MAC ErrBadMAC, so errors.Is finds
// either the specific or the general reason.
func (p CSRPolicy) Check(csr *x509.CertificateRequest) (*CSRClaims, error) {
	if _, err := p.CheckKey(csr); err != nil {
		return nil, err
	}
	serial, err := csrSerial(csr.Subject.Names)
	if err != nil {
		return nil, err
	}
	if err := checkCSRExtensions(csr.Extensions); err != nil {
		return nil, err
	}
	switch {
	case len(csr.DNSNames) > 0:
		return nil, badCSR("DNS SANs %q not allowed", csr.DNSNames)
	case len(csr.IPAddresses) > 0:
		return nil, badCSR("IP SANs %v not allowed", csr.IPAddresses)
	case len(csr.EmailAddresses) > 0:
		return nil, badCSR("email SANs %q not allowed", csr.EmailAddresses)
	case len(csr.URIs) == 0:
		return nil, badCSR("no MAC address (urn:dev:mac URI SAN)")
	}
	maxMACs := p.MaxMACs
	if maxMACs <= 0 {
		maxMACs = 8
	}
	if len(csr.URIs) > maxMACs {
		return nil, badCSR("%d MAC URIs, at most %d allowed", len(csr.URIs), maxMACs)
	}
	claims := &CSRClaims{Serial: serial, MACs: make([]string, 0, len(csr.URIs)), PublicKey: csr.PublicKey}
outer:
	for _, u := range csr.URIs {
		mac, err := parseMACURI(u)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCSR, err) // with ErrBadMAC for a refused MAC
		}
		for _, seen := range claims.MACs {
			if seen == mac {
				continue outer
			}
		}
		claims.MACs = append(claims.MACs, mac)
	}
	return claims, nil
}

// CheckKey verifies what Check verifies of a CSR's key and signature — the
// signature algorithm, the key policy and the signature — and returns the
// CSR's public key. It reads nothing of the identity the CSR asks for.
func (p CSRPolicy) CheckKey(csr *x509.CertificateRequest) (crypto.PublicKey, error) {
	if csr == nil {
		return nil, badCSR("no CSR")
	}
	if err := p.checkSignatureAlgorithm(csr.SignatureAlgorithm); err != nil {
		return nil, err
	}
	if err := p.Keys().Check(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, badCSR("signature does not verify: %v", err)
	}
	return csr.PublicKey, nil
}

// RepeatsIdentity reports whether csr asks for exactly the identity of cert:
// the same subject (byte for byte), and either no extension when cert has no
// subjectAltName, or one extension, cert's subjectAltName with the same
// value. This is the CSR an EST client re-enrolls with (RFC 7030 §4.2.2:
// "the Subject field and SubjectAltName extension MUST be identical to the
// corresponding fields in the certificate being renewed").
func RepeatsIdentity(csr *x509.CertificateRequest, cert *x509.Certificate) bool {
	if csr == nil || cert == nil || !bytes.Equal(csr.RawSubject, cert.RawSubject) {
		return false
	}
	var san []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidExtSAN) {
			san = e.Value
		}
	}
	switch {
	case len(csr.Extensions) == 0:
		return san == nil
	case len(csr.Extensions) == 1:
		return san != nil && csr.Extensions[0].Id.Equal(oidExtSAN) && bytes.Equal(csr.Extensions[0].Value, san)
	}
	return false
}

func (p CSRPolicy) checkSignatureAlgorithm(a x509.SignatureAlgorithm) error {
	switch a {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS,
		x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.PureEd25519:
		return nil
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1,
		x509.DSAWithSHA1, x509.DSAWithSHA256:
		return badCSR("signature algorithm %v is not allowed (MD5, SHA-1 and DSA are refused)", a)
	default:
		return badCSR("unknown or unsupported signature algorithm")
	}
}

// Keys returns the policy's key rule.
func (p CSRPolicy) Keys() KeyPolicy {
	return KeyPolicy{AllowP384: p.AllowP384, AllowEd25519: p.AllowEd25519, AllowRSA: p.AllowRSA, MinRSABits: p.MinRSABits}
}

// csrSerial returns the one subject serialNumber (2.5.4.5) attribute.
func csrSerial(names []pkix.AttributeTypeAndValue) (string, error) {
	var serial string
	var n int
	for _, atv := range names {
		if !atv.Type.Equal(oidSerialNumber) {
			continue
		}
		n++
		s, ok := atv.Value.(string)
		if !ok {
			return "", badCSR("subject serialNumber is not a string")
		}
		serial = s
	}
	switch {
	case n == 0:
		return "", badCSR("subject has no serialNumber (2.5.4.5)")
	case n > 1:
		return "", badCSR("subject has %d serialNumber attributes, want 1", n)
	}
	if err := ValidateSerial(serial); err != nil {
		return "", fmt.Errorf("%w: subject serialNumber: %w", ErrBadCSR, err) // err wraps ErrBadSerial
	}
	return serial, nil
}

// checkCSRExtensions allows one subjectAltName extension holding only URIs.
func checkCSRExtensions(exts []pkix.Extension) error {
	var sans int
	for _, e := range exts {
		if !e.Id.Equal(oidExtSAN) {
			name := extensionsByName[e.Id.String()]
			if name == "" {
				name = "extension"
			}
			if e.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}) {
				return badCSR("CSR requests basicConstraints (CA certificates are never issued); only subjectAltName may be requested")
			}
			return badCSR("CSR requests %s %s; only subjectAltName may be requested", name, e.Id)
		}
		if sans++; sans > 1 {
			return badCSR("more than one subjectAltName extension")
		}
		s := cryptobyte.String(e.Value)
		var seq cryptobyte.String
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || len(s) != 0 {
			return badCSR("malformed subjectAltName extension")
		}
		for !seq.Empty() {
			var (
				tag cbasn1.Tag
				gn  cryptobyte.String
			)
			if !seq.ReadAnyASN1(&gn, &tag) {
				return badCSR("malformed subjectAltName extension")
			}
			n := int(tag & 0x1f)
			if tag&0xc0 != 0x80 || n >= len(generalNameTypes) {
				return badCSR("subjectAltName has an invalid GeneralName")
			}
			if n != 6 {
				return badCSR("subjectAltName of type %s not allowed; only urn:dev:mac URIs", generalNameTypes[n])
			}
		}
	}
	return nil
}
