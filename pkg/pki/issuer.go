package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"go.step.sm/crypto/x509util"
)

// Defaults for issued certificates.
const (
	// DefaultLeafLifetime is the lifetime of device, server and client
	// certificates when nothing else is configured: the one default every
	// package (provision, cmd/ca) uses.
	DefaultLeafLifetime = 720 * time.Hour
	// DefaultBackdate is how far notBefore is set before the signing time.
	DefaultBackdate = time.Minute
)

// Certificate profiles for DeviceRequest.Profile.
const (
	ProfileDefault = ""       // SPIFFE ID and one urn:dev:mac URI per MAC
	ProfileSPIFFE  = "spiffe" // the SPIFFE ID only, one URI SAN (X.509-SVID compatible)
)

// IssuerOptions configures NewIssuer. CA and TrustDomain are required.
type IssuerOptions struct {
	CA          *CA
	TrustDomain string // e.g. "devpki.local"
	OCSPURL     string // optional; device and client certs then carry AIA OCSP
	CRLURL      string // optional; device and client certs then carry a CRL DP
	// CRLPartitions, when positive (at most MaxCRLPartitions) and CRLURL
	// is set, spreads device and client certificates over that many
	// partition CRLs: each names CRLPartitionURL(CRLURL, CRLPartition(serial,
	// CRLPartitions)) as its CRL DP instead of CRLURL. Zero: every
	// certificate names CRLURL (the full CRL).
	CRLPartitions int
	// CAIssuersURL is optional; device and client certs then carry AIA
	// caIssuers naming it: where the issuing CA certificate (DER) is
	// served, for relying parties that meet a leaf without its chain.
	CAIssuersURL string
	Backdate     time.Duration // default 1m: notBefore = now - Backdate
	Now          func() time.Time
	Rand         io.Reader // serial numbers; nil = crypto/rand; must be safe for concurrent use
}

// Issuer issues leaf certificates from a CA's intermediate. It is safe for
// concurrent use.
type Issuer struct {
	ca       *CA
	td       string
	ocsp     []string
	crl      []string
	parts    int
	issuers  []string
	backdate time.Duration
	now      func() time.Time
	rand     io.Reader
}

// NewIssuer checks opts and returns an Issuer.
func NewIssuer(opts IssuerOptions) (*Issuer, error) {
	if opts.CA == nil || opts.CA.CAS == nil || opts.CA.Intermediate == nil || opts.CA.Root == nil {
		return nil, errors.New("new issuer: CA with Root, Intermediate and CAS is required")
	}
	if err := ValidateTrustDomain(opts.TrustDomain); err != nil {
		return nil, fmt.Errorf("new issuer: %w", err)
	}
	i := &Issuer{ca: opts.CA, td: opts.TrustDomain, backdate: opts.Backdate, now: opts.Now, rand: opts.Rand}
	for _, u := range []struct {
		name, v string
		dst     *[]string
	}{{"OCSPURL", opts.OCSPURL, &i.ocsp}, {"CRLURL", opts.CRLURL, &i.crl}, {"CAIssuersURL", opts.CAIssuersURL, &i.issuers}} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("new issuer: %s %q is not an absolute http(s) URL", u.name, u.v)
		}
		*u.dst = []string{u.v}
	}
	if opts.CRLPartitions < 0 || opts.CRLPartitions > MaxCRLPartitions {
		return nil, fmt.Errorf("new issuer: CRLPartitions %d is not in 0..%d", opts.CRLPartitions, MaxCRLPartitions)
	}
	if len(i.crl) > 0 {
		i.parts = opts.CRLPartitions
	}
	if i.backdate == 0 {
		i.backdate = DefaultBackdate
	}
	if i.backdate < 0 {
		return nil, errors.New("new issuer: Backdate must not be negative")
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.rand == nil {
		i.rand = rand.Reader
	}
	return i, nil
}

// Chain returns the certificates sent with leaf certificates: [intermediate].
func (i *Issuer) Chain() []*x509.Certificate { return []*x509.Certificate{i.ca.Intermediate} }

// Root returns the root certificate devices and clients trust.
func (i *Issuer) Root() *x509.Certificate { return i.ca.Root }

// TrustDomain returns the SPIFFE trust domain of issued identities.
func (i *Issuer) TrustDomain() string { return i.td }

// DeviceRequest asks for a device certificate. The public key must already
// have passed CSRPolicy.Check (or come from an attested TPM key).
type DeviceRequest struct {
	Identity  Identity // TrustDomain empty or equal to the issuer's
	PublicKey crypto.PublicKey
	Lifetime  time.Duration // zero means DefaultLeafLifetime
	Profile   string        // ProfileDefault or ProfileSPIFFE
	// SubjectKeyID is PublicKey's key identifier when the caller holds a
	// certificate of this CA for that same key: a renewal that keeps its
	// key passes the renewed certificate's, which the CA computed from
	// that key (SHA-1 of the key's bits, RFC 5280 §4.2.1.2). Empty: it is
	// computed (x509util marshals the key, parses it back and hashes it).
	SubjectKeyID []byte
}

// Issued is a signed certificate and the chain to send with it (without the
// root).
type Issued struct {
	Certificate *x509.Certificate
	Chain       []*x509.Certificate
}

// IssueDevice issues a device certificate: Subject CN=<DeviceID>,
// serialNumber=<Serial>, O=<Tenant>; URI SANs the SPIFFE ID then each
// urn:dev:mac (spiffe profile: SPIFFE ID only), then, when Identity.EKHash is
// set, a PermanentIdentifier otherName SAN (RFC 4043) with identifierValue
// EKHash and no assigner; digitalSignature; clientAuth;
// CA:false; SKI/AKI; AIA OCSP and caIssuers and CRL DP when configured; a fresh 20-byte
// serial; notBefore now-Backdate; notAfter now+Lifetime clamped to the
// intermediate's notAfter.
func (i *Issuer) IssueDevice(ctx context.Context, req *DeviceRequest) (*Issued, error) {
	if req == nil {
		return nil, errors.New("issue device: nil request")
	}
	id := req.Identity
	if id.TrustDomain == "" {
		id.TrustDomain = i.td
	} else if id.TrustDomain != i.td {
		return nil, fmt.Errorf("issue device: %w: trust domain %q, issuer's is %q", ErrBadIdentity, id.TrustDomain, i.td)
	}
	if err := id.validate(); err != nil {
		return nil, fmt.Errorf("issue device: %w", err)
	}
	var uris []*url.URL
	switch req.Profile {
	case ProfileDefault:
		uris = make([]*url.URL, 1, 1+len(id.MACs))
		for j, m := range id.MACs {
			for _, prev := range id.MACs[:j] {
				if prev == m {
					return nil, fmt.Errorf("issue device: %w: MAC %s listed twice", ErrBadIdentity, m)
				}
			}
			uris = append(uris, MACURI(m))
		}
	case ProfileSPIFFE:
		uris = make([]*url.URL, 1)
	default:
		return nil, fmt.Errorf("issue device: unknown profile %q", req.Profile)
	}
	uris[0] = id.SPIFFEID()
	tmpl := x509util.Certificate{
		Subject: x509util.Subject{
			CommonName:   id.DeviceID,
			SerialNumber: id.Serial,
			Organization: []string{id.Tenant},
		},
		URIs:        uris,
		KeyUsage:    x509util.KeyUsage(x509.KeyUsageDigitalSignature),
		ExtKeyUsage: x509util.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(req.SubjectKeyID) > 0 {
		tmpl.SubjectKeyID = x509util.SubjectKeyID(req.SubjectKeyID)
	}
	if id.EKHash != "" {
		ext, err := deviceSANExtension(uris, id.EKHash)
		if err != nil {
			return nil, fmt.Errorf("issue device: %w", err)
		}
		tmpl.Extensions = []x509util.Extension{ext}
	}
	return i.issue(ctx, "issue device", &tmpl, req.PublicKey, req.Lifetime, true)
}

// ServerRequest asks for a TLS server certificate; at least one DNS name or
// IP is required.
type ServerRequest struct {
	PublicKey  crypto.PublicKey
	CommonName string // optional
	DNSNames   []string
	IPs        []net.IP
	Lifetime   time.Duration // zero means DefaultLeafLifetime
}

// IssueServer issues a server certificate: serverAuth and clientAuth,
// digitalSignature (plus keyEncipherment for RSA keys), no AIA or CRL DP.
// Each DNS name must pass ValidateDNSName and a CommonName
// ValidateSubjectValue.
func (i *Issuer) IssueServer(ctx context.Context, req *ServerRequest) (*Issued, error) {
	if req == nil {
		return nil, errors.New("issue server: nil request")
	}
	if len(req.DNSNames)+len(req.IPs) == 0 {
		return nil, errors.New("issue server: at least one DNS name or IP is required")
	}
	for _, d := range req.DNSNames {
		if err := ValidateDNSName(d); err != nil {
			return nil, fmt.Errorf("issue server: %w", err)
		}
	}
	for _, ip := range req.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, fmt.Errorf("issue server: invalid IP %v", ip)
		}
	}
	ku := x509.KeyUsageDigitalSignature
	if _, ok := req.PublicKey.(*rsa.PublicKey); ok {
		ku |= x509.KeyUsageKeyEncipherment
	}
	tmpl := x509util.Certificate{
		Subject:     x509util.Subject{CommonName: req.CommonName},
		DNSNames:    req.DNSNames,
		IPAddresses: req.IPs,
		KeyUsage:    x509util.KeyUsage(ku),
		ExtKeyUsage: x509util.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return i.issue(ctx, "issue server", &tmpl, req.PublicKey, req.Lifetime, false)
}

// ClientRequest asks for a TLS client certificate (such as an admin's, with
// an AdminURI). A CommonName or at least one URI is required.
type ClientRequest struct {
	PublicKey    crypto.PublicKey
	CommonName   string
	Organization string // optional
	URIs         []*url.URL
	Lifetime     time.Duration // zero means DefaultLeafLifetime
}

// IssueClient issues a client certificate: clientAuth, digitalSignature, AIA
// OCSP and caIssuers and CRL DP when configured. CommonName and
// Organization must pass ValidateSubjectValue.
func (i *Issuer) IssueClient(ctx context.Context, req *ClientRequest) (*Issued, error) {
	if req == nil {
		return nil, errors.New("issue client: nil request")
	}
	if req.CommonName == "" && len(req.URIs) == 0 {
		return nil, errors.New("issue client: a CommonName or a URI is required")
	}
	tmpl := x509util.Certificate{
		Subject:     x509util.Subject{CommonName: req.CommonName},
		URIs:        req.URIs,
		KeyUsage:    x509util.KeyUsage(x509.KeyUsageDigitalSignature),
		ExtKeyUsage: x509util.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if req.Organization != "" {
		tmpl.Subject.Organization = []string{req.Organization}
	}
	return i.issue(ctx, "issue client", &tmpl, req.PublicKey, req.Lifetime, true)
}

// issue fills in what every leaf shares and signs through the CAS.
func (i *Issuer) issue(ctx context.Context, op string, tmpl *x509util.Certificate, pub crypto.PublicKey, lifetime time.Duration, revocationInfo bool) (*Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if pub == nil {
		return nil, fmt.Errorf("%s: public key is required", op)
	}
	// The caller's policy (CSRPolicy, component issuance) chose among these;
	// whatever it was, nothing outside KeyPolicy's rules is ever signed.
	if err := issuerKeys.Check(pub); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if lifetime == 0 {
		lifetime = DefaultLeafLifetime
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("%s: negative lifetime %v", op, lifetime)
	}
	if err := checkSubject(tmpl.Subject); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	sn, err := newSerial(i.rand)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	now := i.now()
	tmpl.NotBefore = now.Add(-i.backdate)
	tmpl.NotAfter = now.Add(lifetime)
	if ia := i.ca.Intermediate.NotAfter; tmpl.NotAfter.After(ia) {
		tmpl.NotAfter = ia
	}
	if !tmpl.NotAfter.After(now) {
		return nil, fmt.Errorf("%s: intermediate CA expired at %v", op, i.ca.Intermediate.NotAfter)
	}
	tmpl.SerialNumber = x509util.SerialNumber{Int: sn}
	tmpl.BasicConstraints = &x509util.BasicConstraints{IsCA: false}
	tmpl.AuthorityKeyID = i.ca.Intermediate.SubjectKeyId
	tmpl.PublicKey = pub
	if revocationInfo {
		tmpl.OCSPServer = i.ocsp
		tmpl.CRLDistributionPoints = i.crl
		if i.parts > 0 {
			tmpl.CRLDistributionPoints = []string{CRLPartitionURL(i.crl[0], CRLPartition(sn, i.parts))}
		}
		tmpl.IssuingCertificateURL = i.issuers
	}
	resp, err := i.ca.CAS.CreateCertificate(&apiv1.CreateCertificateRequest{
		Template: tmpl.GetCertificate(),
		Lifetime: tmpl.NotAfter.Sub(now),
		Backdate: i.backdate,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: sign: %w", op, err)
	}
	return &Issued{Certificate: resp.Certificate, Chain: i.Chain()}, nil
}

// checkSubject refuses a subject attribute that RFC 5280 does not allow
// (see ValidateSubjectValue); empty attributes are left out of the
// certificate and need no check.
func checkSubject(sub x509util.Subject) error {
	vals := append([]string{sub.CommonName, sub.SerialNumber}, sub.Organization...)
	for _, v := range vals {
		if v == "" {
			continue
		}
		if err := ValidateSubjectValue(v); err != nil {
			return err
		}
	}
	return nil
}

// oidSubjectAltName is id-ce-subjectAltName.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// deviceSANExtension encodes a (non-critical: the subject is not empty) SAN
// extension with uris followed by a PermanentIdentifier of ekHash. Go's
// crypto/x509 cannot write otherName SANs, so the whole extension is built
// here.
func deviceSANExtension(uris []*url.URL, ekHash string) (x509util.Extension, error) {
	raw := make([]asn1.RawValue, 0, len(uris)+1)
	for _, u := range uris {
		v, err := x509util.SubjectAlternativeName{Type: x509util.URIType, Value: u.String()}.RawValue()
		if err != nil {
			return x509util.Extension{}, fmt.Errorf("encode URI SAN %q: %w", u, err)
		}
		raw = append(raw, v)
	}
	v, err := x509util.SubjectAlternativeName{Type: x509util.PermanentIdentifierType, Value: ekHash}.RawValue()
	if err != nil {
		return x509util.Extension{}, fmt.Errorf("encode PermanentIdentifier SAN: %w", err)
	}
	raw = append(raw, v)
	der, err := asn1.Marshal(raw)
	if err != nil {
		return x509util.Extension{}, fmt.Errorf("encode SAN extension: %w", err)
	}
	return x509util.Extension{ID: x509util.ObjectIdentifier(oidSubjectAltName), Value: der}, nil
}
