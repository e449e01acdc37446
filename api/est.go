package api

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/smallstep/pkcs7"

	"devpki/api/wire"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

// EST (RFC 7030) is one more front door onto the enrollment pipeline: this
// file only decodes (base64 PKCS#10 in), picks the attestor, calls
// provision, and encodes (base64 PKCS#7 certs-only out). The rules —
// identity, token spending, clone checks, audit — are provision's; errors
// are classified in errors.go like every other route's and written as
// text/plain there (estError).

// ESTPrefix is the path every EST route starts with (RFC 7030 §3.2.2):
// /.well-known/est/<operation>, or /.well-known/est/<label>/<operation>
// where the label is a tenant name.
const ESTPrefix = "/.well-known/est"

const (
	mimePKCS10    = "application/pkcs10"
	mimeCertsOnly = "application/pkcs7-mime; smime-type=certs-only"
	mimeCSRAttrs  = "application/csrattrs"
	// estRealm is the realm of the 401 challenge.
	estRealm = `Basic realm="devpki EST"`
)

// OIDs of the CSR attributes (RFC 7030 §4.5.2) this CA asks for.
var (
	oidSubjectSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}                  // the device serial, in the subject
	oidExtensionRequest    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14} // PKCS #9 extensionRequest
	oidSubjectAltName      = asn1.ObjectIdentifier{2, 5, 29, 17}                // urn:dev:mac:<12 hex> URIs
	oidECPublicKey         = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}      // id-ecPublicKey
	oidP256                = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}   // secp256r1
	oidECDSAWithSHA256     = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
)

// csrAttribute is the Attribute choice of AttrOrOID (RFC 7030 §4.5.2):
// a type and a SET of values, here object identifiers, as in the RFC's
// example (id-ecPublicKey with its curve, extensionRequest with the
// extension wanted).
type csrAttribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.ObjectIdentifier `asn1:"set"`
}

// estCSRAttrs is the DER CsrAttrs (SEQUENCE OF AttrOrOID) this CA answers:
// a subject serialNumber, an extensionRequest for subjectAltName (the MAC
// URIs), an EC P-256 key, signed with ecdsa-with-SHA256.
func estCSRAttrs() ([]byte, error) {
	return asn1.Marshal([]any{
		oidSubjectSerialNumber,
		csrAttribute{Type: oidExtensionRequest, Values: []asn1.ObjectIdentifier{oidSubjectAltName}},
		csrAttribute{Type: oidECPublicKey, Values: []asn1.ObjectIdentifier{oidP256}},
		oidECDSAWithSHA256,
	})
}

// estCerts is the precomputed body of GET cacerts and GET csrattrs.
type estBodies struct {
	cacerts  []byte // base64 PKCS#7 certs-only: the issuing chain, then the root
	csrattrs []byte // base64 DER CsrAttrs
}

func newESTBodies(root *x509.Certificate, chain []*x509.Certificate) (*estBodies, error) {
	var der []byte
	for _, c := range chain {
		if !bytes.Equal(c.Raw, root.Raw) {
			der = append(der, c.Raw...)
		}
	}
	der = append(der, root.Raw...)
	p7, err := pkcs7.DegenerateCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("EST cacerts: %w", err)
	}
	attrs, err := estCSRAttrs()
	if err != nil {
		return nil, fmt.Errorf("EST csrattrs: %w", err)
	}
	return &estBodies{cacerts: estBase64(p7), csrattrs: estBase64(attrs)}, nil
}

func (s *Server) routesEST(e *echo.Echo) error {
	b, err := newESTBodies(s.cfg.Root, s.cfg.Chain)
	if err != nil {
		return err
	}
	s.est = b
	s.static.cacerts = b.cacerts
	for _, prefix := range []string{ESTPrefix, ESTPrefix + "/:label"} {
		// Route middleware, not group middleware: a group's catch-all
		// would read "/.well-known/est/cacerts" as the label "cacerts".
		g := e.Group(prefix)
		g.GET("/cacerts", s.estCACerts, s.estLabel)
		g.GET("/csrattrs", s.estCSRAttrs, s.estLabel)
		g.POST("/simpleenroll", s.estEnroll, s.door("est"), s.auditRefusals(provision.ActionEnroll), s.estLabel)
		g.POST("/simplereenroll", s.estReenroll, s.door("est-reenroll"), s.auditRefusals(provision.ActionRenew), s.estLabel)
		g.POST("/serverkeygen", s.estNotImplemented, s.estLabel)
		g.POST("/fullcmc", s.estNotImplemented, s.estLabel)
	}
	return nil
}

// estLabel answers 404 for a label that names no tenant, before anything
// else is read.
func (s *Server) estLabel(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		label := c.Param("label")
		if label == "" {
			return next(c)
		}
		if _, err := s.cfg.Store.GetTenant(c.Request().Context(), label); err != nil {
			if errors.Is(err, registry.ErrNotFound) {
				return problem(http.StatusNotFound, wire.SlugNotFound, "Unknown EST label",
					fmt.Sprintf("unknown EST label %q: no tenant has that name", label))
			}
			return err
		}
		return next(c)
	}
}

// estCACerts is GET cacerts (RFC 7030 §4.1): the issuing chain and the
// root, as a base64 PKCS#7 certs-only message.
func (s *Server) estCACerts(c echo.Context) error {
	s.recordBundleFetch(c)
	return estWrite(c, mimeCertsOnly, s.trust().cacerts)
}

// estCSRAttrs is GET csrattrs (RFC 7030 §4.5): what the CSR must carry.
func (s *Server) estCSRAttrs(c echo.Context) error {
	return estWrite(c, mimeCSRAttrs, s.est.csrattrs)
}

// estEnroll is POST simpleenroll (RFC 7030 §4.2.1). The credential is a
// bootstrap token — the password of HTTP Basic (the user name is ignored:
// a token bound to a serial already names its device, and EST clients
// often send a fixed user name), or Authorization: Bearer — or, without
// one, a factory IDevID client certificate (Attestors.IDevID). The label's
// tenant must be the credential's (provision.Request.Tenant).
func (s *Server) estEnroll(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	label := c.Param("label")
	var a provision.Attestor
	req := &provision.Request{SourceAddr: c.RealIP(), Tenant: label}
	if token, ok := estToken(r); ok {
		a, req.Credential = s.cfg.Attestors.Token, token
	} else if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && len(r.TLS.VerifiedChains) == 0 {
		if s.cfg.Attestors.IDevID == nil {
			return s.refuse(c, provision.Actor{Kind: provision.ActorAnonymous}, provision.ActionEnroll, "",
				fmt.Errorf("the client certificate %q is not one of this CA and IDevID enrollment is not enabled; "+
					"send a bootstrap token as the HTTP Basic password: %w", r.TLS.PeerCertificates[0].Subject, provision.ErrUnauthenticated))
		}
		a, req.PeerCerts = s.cfg.Attestors.IDevID, r.TLS.PeerCertificates
	} else {
		// No credential: the token admission refuses it (audited).
		_, err := s.cfg.Provision.Enroll(ctx, s.cfg.Attestors.Token, req)
		return err
	}
	csr, err := estReadCSR(c)
	if err != nil {
		return err
	}
	req.CSRPEM = csr
	res, err := s.cfg.Provision.Enroll(ctx, a, req)
	if err != nil {
		return err
	}
	return s.estIssued(c, res)
}

// estReenroll is POST simplereenroll (RFC 7030 §4.2.2): the device's
// current certificate over mutual TLS (the leaf alone is enough) is the
// credential; the CSR names the same identity (its serial and MACs, or the
// certificate's own subject and subjectAltName), with the same key or a new
// one. provision.Renew refuses revoked and superseded certificates.
func (s *Server) estReenroll(c echo.Context) error {
	r := c.Request()
	req := &provision.RenewRequest{SourceAddr: c.RealIP(), Tenant: c.Param("label")}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		_, err := s.cfg.Provision.Renew(r.Context(), req) // refused and audited: no certificate of this CA
		return err
	}
	req.Peer = r.TLS.VerifiedChains[0][0]
	csr, err := estReadCSR(c)
	if err != nil {
		return err
	}
	req.CSRPEM = csr
	res, err := s.cfg.Provision.Renew(r.Context(), req)
	if err != nil {
		return err
	}
	return s.estIssued(c, res)
}

// estNotImplemented answers the EST operations this CA does not offer.
func (s *Server) estNotImplemented(c echo.Context) error {
	op := c.Path()[strings.LastIndexByte(c.Path(), '/')+1:]
	return problem(http.StatusNotImplemented, wire.SlugNotImplemented, "Not implemented",
		fmt.Sprintf("EST %s is not offered by this CA: device keys are made on the device (simpleenroll with a CSR), "+
			"and full CMC is not supported", op))
}

// estIssued answers an enrollment: the new certificate alone, as a base64
// PKCS#7 certs-only message (the chain is at cacerts).
func (s *Server) estIssued(c echo.Context, res *provision.Result) error {
	p7, err := pkcs7.DegenerateCertificate(res.Certificate.Raw)
	if err != nil {
		return fmt.Errorf("encode the issued certificate as PKCS#7: %w", err)
	}
	return estWrite(c, mimeCertsOnly, estBase64(p7))
}

// estToken returns the bootstrap token of a request: the password of HTTP
// Basic (any user name), or a Bearer token.
func estToken(r *http.Request) (string, bool) {
	if _, pass, ok := r.BasicAuth(); ok {
		return pass, true
	}
	return bearer(r)
}

// estReadCSR reads a simpleenroll or simplereenroll body: Content-Type
// application/pkcs10 (else 415), base64 with or without line breaks (any
// ASCII white space is dropped; padding optional), and returns the DER as
// PEM for provision, which refuses anything but exactly one PKCS#10 (no
// trailing data). The Content-Transfer-Encoding header is ignored (RFC
// 8951 §3.2.2: the body is base64 whatever it says).
func estReadCSR(c echo.Context) ([]byte, error) {
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != mimePKCS10 {
		return nil, problem(http.StatusUnsupportedMediaType, wire.SlugBadRequest, "Unsupported media type",
			fmt.Sprintf("Content-Type is %q; send the base64 PKCS#10 request as %s", ct, mimePKCS10))
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, problem(http.StatusBadRequest, wire.SlugBadRequest, "Unreadable body", err.Error())
	}
	der, err := decodeBase64(body)
	if err != nil {
		return nil, problem(http.StatusBadRequest, wire.SlugBadCSR, "Body is not base64",
			fmt.Sprintf("the body must be a base64 PKCS#10 request: %v", err))
	}
	if len(der) == 0 {
		return nil, problem(http.StatusBadRequest, wire.SlugBadCSR, "Empty request", "the body holds no PKCS#10 request")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// decodeBase64 decodes standard base64 ignoring ASCII white space, with or
// without padding.
func decodeBase64(b []byte) ([]byte, error) {
	clean := make([]byte, 0, len(b))
	for _, ch := range b {
		switch ch {
		case ' ', '\t', '\r', '\n', '\v', '\f':
		default:
			clean = append(clean, ch)
		}
	}
	return base64.RawStdEncoding.Strict().DecodeString(string(bytes.TrimRight(clean, "=")))
}

// estBase64 is b in base64 with CRLF line breaks every 64 characters (RFC
// 2045 §6.8), which every EST client and 'openssl base64 -d' read.
func estBase64(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	out := make([]byte, 0, len(enc)+len(enc)/64*2+2)
	for len(enc) > 64 {
		out = append(out, enc[:64]...)
		out = append(out, '\r', '\n')
		enc = enc[64:]
	}
	out = append(out, enc...)
	return append(out, '\r', '\n')
}

// estWrite writes a 200 EST answer: a base64 body of type contentType.
func estWrite(c echo.Context, contentType string, body []byte) error {
	c.Response().Header().Set("Content-Transfer-Encoding", "base64")
	return c.Blob(http.StatusOK, contentType, body)
}
