package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"devpki/pkg/pki"
)

// EST (RFC 7030) media types and limits.
const (
	mimePKCS7    = "application/pkcs7-mime"
	mimePKCS10   = "application/pkcs10"
	mimeCSRAttrs = "application/csrattrs"
	maxESTBody   = 1 << 20 // 1 MiB: a CA bundle is a few KiB
	base64Line   = 76      // RFC 2045 line length of the request bodies
)

// EST is a client of an EST server (RFC 7030): devpki's own
// /.well-known/est or any other. It is safe for concurrent use. Build it with
// NewEST; the zero value is not usable.
//
// Errors follow the native client's: a non-2xx answer is a *ResponseError
// (EST servers answer text/plain, so its Body holds what they said), and
// IsTransient and RetryAfter classify it — 429 and 5xx are transient, as is
// 202 Accepted (the server holds the request for approval and says when to
// ask again). An answer that is not what RFC 7030 prescribes (wrong
// Content-Type, not base64, not a PKCS#7 certs-only with certificates) is a
// permanent error that says which.
type EST struct {
	c     *Client
	label string
}

// NewEST returns a client of the EST server at baseURL (https://host:port,
// with an optional path prefix before /.well-known/est). label, when not
// empty, is the additional path segment of RFC 7030 §3.2.2
// (/.well-known/est/<label>/...), such as a devpki tenant. opts are those of
// New: WithRoots for the server's trust anchor, WithClientCertificate for
// SimpleReenroll (its key may be any crypto.Signer, such as a TPM key).
func NewEST(baseURL, label string, opts ...Option) (*EST, error) {
	if err := ValidateESTLabel(label); err != nil {
		return nil, err
	}
	c, err := New(baseURL, opts...)
	if err != nil {
		return nil, err
	}
	return &EST{c: c, label: label}, nil
}

// ValidateESTLabel refuses a label that is not one path segment of
// unreserved characters (RFC 3986: letters, digits, '-', '.', '_', '~').
// The empty label (no segment) is valid.
func ValidateESTLabel(label string) error {
	if label == "." || label == ".." {
		return fmt.Errorf("client: EST label %q: not a path segment", label)
	}
	for _, r := range label {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.', r == '_', r == '~':
		default:
			return fmt.Errorf("client: EST label %q: only letters, digits, '-', '.', '_' and '~' are allowed", label)
		}
	}
	return nil
}

// estPath is the path of an EST operation under /.well-known/est.
func estPath(label, op string) string {
	if label == "" {
		return "/.well-known/est/" + op
	}
	return "/.well-known/est/" + label + "/" + op
}

// ESTAuth is how SimpleEnroll authenticates. With Password set it sends HTTP
// Basic (RFC 7617) with Username and Password — for devpki the user name is
// the device serial and the password the bootstrap token; with Bearer set it
// sends Authorization: Bearer. The zero value sends no Authorization header
// (a server that authenticates by the TLS client certificate alone).
type ESTAuth struct {
	Username string
	Password string
	Bearer   string
}

func (a ESTAuth) apply(req *http.Request) error {
	switch {
	case a.Bearer != "" && (a.Password != "" || a.Username != ""):
		return errors.New("client: EST auth: give either Basic credentials or a Bearer token, not both")
	case a.Bearer != "":
		req.Header.Set("Authorization", "Bearer "+a.Bearer)
	case a.Password != "" || a.Username != "":
		if strings.Contains(a.Username, ":") {
			return fmt.Errorf("client: EST auth: Basic user name %q must not contain ':'", a.Username)
		}
		req.SetBasicAuth(a.Username, a.Password)
	}
	return nil
}

// ESTCertificate is what an enrollment answered: the certificate for the
// CSR's key, and any other certificates the PKCS#7 carried (some servers add
// the issuing chain).
type ESTCertificate struct {
	Certificate *x509.Certificate
	Extra       []*x509.Certificate
}

// CACerts returns the CA certificates of GET cacerts (RFC 7030 §4.1), in the
// order the server sent them. Trust them only after checking them out of
// band; FetchESTCACertsPinned does that with a root fingerprint.
func (e *EST) CACerts(ctx context.Context) ([]*x509.Certificate, error) {
	req, err := e.newRequest(ctx, http.MethodGet, "cacerts", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", mimePKCS7)
	der, err := e.do(req, mimePKCS7)
	if err != nil {
		return nil, err
	}
	return parseCertsOnly(req, der)
}

// CSRAttr is one entry of a csrattrs answer (RFC 7030 §4.5.2): an OID alone
// (Values nil), or an attribute type with its DER-encoded values.
type CSRAttr struct {
	OID    asn1.ObjectIdentifier
	Values [][]byte
}

// CSRAttrs returns what the server wants the CSR to carry (GET csrattrs). A
// server with nothing to say answers 204 or 404: that is no attributes and
// no error.
func (e *EST) CSRAttrs(ctx context.Context) ([]CSRAttr, error) {
	req, err := e.newRequest(ctx, http.MethodGet, "csrattrs", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", mimeCSRAttrs)
	resp, err := e.c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	der, err := readESTBody(req, resp, mimeCSRAttrs)
	if err != nil {
		return nil, err
	}
	return parseCSRAttrs(req, der)
}

// parseCSRAttrs reads CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID, where
// AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute } and
// Attribute ::= SEQUENCE { type OID, values SET OF ANY }.
func parseCSRAttrs(req *http.Request, der []byte) ([]CSRAttr, error) {
	bad := func(why string) error {
		return fmt.Errorf("client: %s %s: csrattrs: %s", req.Method, req.URL.Redacted(), why)
	}
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, bad("not a DER SEQUENCE")
	}
	var out []CSRAttr
	for !seq.Empty() {
		var a CSRAttr
		switch {
		case seq.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER):
			if !seq.ReadASN1ObjectIdentifier(&a.OID) {
				return nil, bad("malformed OID")
			}
		case seq.PeekASN1Tag(cbasn1.SEQUENCE):
			var attr, set cryptobyte.String
			if !seq.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&a.OID) ||
				!attr.ReadASN1(&set, cbasn1.SET) || !attr.Empty() {
				return nil, bad("malformed attribute")
			}
			for !set.Empty() {
				var (
					v   cryptobyte.String
					tag cbasn1.Tag
				)
				if !set.ReadAnyASN1Element(&v, &tag) {
					return nil, bad("malformed attribute value")
				}
				a.Values = append(a.Values, []byte(v))
			}
		default:
			return nil, bad("entry is neither an OID nor an attribute")
		}
		out = append(out, a)
	}
	return out, nil
}

// SimpleEnroll sends a DER PKCS#10 CSR to POST simpleenroll (RFC 7030 §4.2.1)
// authenticated by auth, and returns the certificate the server issued for
// the CSR's key.
func (e *EST) SimpleEnroll(ctx context.Context, csrDER []byte, auth ESTAuth) (*ESTCertificate, error) {
	return e.enroll(ctx, "simpleenroll", csrDER, auth)
}

// SimpleReenroll sends a CSR to POST simplereenroll (RFC 7030 §4.2.2). The
// client must carry the current certificate (WithClientCertificate): the TLS
// handshake, signed by its key, is the credential. A CSR signed by the
// current key renews it; one signed by a new key re-keys.
func (e *EST) SimpleReenroll(ctx context.Context, csrDER []byte) (*ESTCertificate, error) {
	return e.enroll(ctx, "simplereenroll", csrDER, ESTAuth{})
}

func (e *EST) enroll(ctx context.Context, op string, csrDER []byte, auth ESTAuth) (*ESTCertificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("client: EST %s: %w", op, err)
	}
	req, err := e.newRequest(ctx, http.MethodPost, op, encodeBase64Lines(csrDER))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", mimePKCS10)
	req.Header.Set("Content-Transfer-Encoding", "base64")
	req.Header.Set("Accept", mimePKCS7)
	if err := auth.apply(req); err != nil {
		return nil, err
	}
	der, err := e.do(req, mimePKCS7)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsOnly(req, der)
	if err != nil {
		return nil, err
	}
	pub, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return nil, fmt.Errorf("client: EST %s: CSR key %T", op, csr.PublicKey)
	}
	out := &ESTCertificate{}
	for _, c := range certs {
		if out.Certificate == nil && pub.Equal(c.PublicKey) {
			out.Certificate = c
		} else {
			out.Extra = append(out.Extra, c)
		}
	}
	if out.Certificate == nil {
		return nil, fmt.Errorf("client: %s %s: the answer holds %d certificate(s), none for the CSR's key",
			req.Method, req.URL.Redacted(), len(certs))
	}
	return out, nil
}

func (e *EST) newRequest(ctx context.Context, method, op string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	u := e.c.endpoint(estPath(e.label, op))
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, u, err)
	}
	return req, nil
}

// do sends req and returns the decoded body of a 200 answer of media type
// want. A 202 (the request is held for approval) is a *ResponseError that
// IsTransient reports and RetryAfter times.
func (e *EST) do(req *http.Request, want string) ([]byte, error) {
	resp, err := e.c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return readESTBody(req, resp, want)
}

func readESTBody(req *http.Request, resp *http.Response, want string) ([]byte, error) {
	if resp.StatusCode == http.StatusAccepted {
		e := &ResponseError{
			Method: req.Method, URL: req.URL.Redacted(), StatusCode: resp.StatusCode, Status: resp.Status,
			Header: resp.Header.Clone(), received: time.Now(),
		}
		e.Body = "the server holds the request for approval"
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			e.Body += "; retry after " + ra
		}
		return nil, e
	}
	if err := checkStatus(req, resp); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("client: %s %s: %s, want 200 OK", req.Method, req.URL.Redacted(), resp.Status)
	}
	where := req.Method + " " + req.URL.Redacted()
	ct := resp.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != want {
		return nil, fmt.Errorf("client: %s: answer Content-Type %q, want %s", where, ct, want)
	}
	if st, ok := params["smime-type"]; ok && want == mimePKCS7 && !strings.EqualFold(st, "certs-only") {
		return nil, fmt.Errorf("client: %s: answer is a PKCS#7 %s, want certs-only", where, st)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxESTBody+1))
	if err != nil {
		return nil, fmt.Errorf("client: %s: read answer: %w", where, err)
	}
	if len(b) > maxESTBody {
		return nil, fmt.Errorf("client: %s: answer larger than %d bytes", where, maxESTBody)
	}
	der, err := decodeBase64Body(b)
	if err != nil {
		return nil, fmt.Errorf("client: %s: answer is not base64 (RFC 7030 §4): %w", where, err)
	}
	return der, nil
}

// decodeBase64Body decodes standard base64 with or without line breaks
// (RFC 2045 wraps at 76 characters; RFC 8951 allows any) and with or without
// padding.
func decodeBase64Body(b []byte) ([]byte, error) {
	s := strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, string(b))
	if s == "" {
		return nil, errors.New("empty body")
	}
	if strings.HasSuffix(s, "=") || len(s)%4 == 0 {
		return base64.StdEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// encodeBase64Lines is base64 in CRLF-terminated lines of base64Line characters.
func encodeBase64Lines(der []byte) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var b bytes.Buffer
	for len(s) > base64Line {
		b.WriteString(s[:base64Line])
		b.WriteString("\r\n")
		s = s[base64Line:]
	}
	b.WriteString(s)
	b.WriteString("\r\n")
	return b.Bytes()
}

// parseCertsOnly reads a PKCS#7 certs-only (a degenerate SignedData) and
// returns its certificates; one without certificates is an error.
func parseCertsOnly(req *http.Request, der []byte) ([]*x509.Certificate, error) {
	where := req.Method + " " + req.URL.Redacted()
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("client: %s: answer is not a PKCS#7 SignedData: %w", where, err)
	}
	if len(p7.Certificates) == 0 {
		return nil, fmt.Errorf("client: %s: the PKCS#7 answer holds no certificate", where)
	}
	return p7.Certificates, nil
}

// FetchESTCACertsPinned bootstraps trust in an EST server known only by the
// SHA-256 fingerprint of its CA's root (RFC 7030 §4.1.1: the cacerts answer
// checked out of band). It fetches GET cacerts without verifying the server
// (this call only), and accepts the answer only if
//
//   - one certificate in the bundle is a CA certificate with fingerprint
//     fingerprintHex (pki.Fingerprint; case-insensitive, ':' allowed), and
//   - the chain the server presented in the TLS handshake verifies to that
//     root for the host of baseURL (serverAuth), with the bundle's other
//     certificates as intermediates — a man in the middle relaying the real
//     bundle over its own TLS connection is refused.
//
// It returns the pinned root and the bundle's certificates that chain to it
// (the issuing intermediates; the rest are dropped). Nothing secret is sent.
func FetchESTCACertsPinned(ctx context.Context, baseURL, label, fingerprintHex string) (root *x509.Certificate, intermediates []*x509.Certificate, err error) {
	pin, err := NormalizeFingerprint(fingerprintHex)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	if err := ValidateESTLabel(label); err != nil {
		return nil, nil, err
	}
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, nil, err
	}
	if u.Scheme != "https" {
		return nil, nil, fmt.Errorf("client: EST cacerts: base URL %q must be https", baseURL)
	}
	c, conns := bootstrapClient(u)
	defer c.hc.CloseIdleConnections()
	bundle, err := (&EST{c: c, label: label}).CACerts(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range bundle {
		if pki.Fingerprint(b) == pin {
			root = b
			break
		}
	}
	if root == nil {
		return nil, nil, fmt.Errorf("client: EST cacerts of %s: none of its %d certificate(s) [%s] has fingerprint %s: %w",
			u.Host, len(bundle), describeBundle(bundle), pin, ErrPinMismatch)
	}
	if !root.BasicConstraintsValid || !root.IsCA {
		return nil, nil, fmt.Errorf("client: EST cacerts of %s: the certificate with fingerprint %s (%s) is not a CA certificate: %w",
			u.Host, pin, root.Subject, ErrPinMismatch)
	}
	intermediates = chainingTo(root, bundle)
	if err := conns.verify(u, root, intermediates); err != nil {
		return nil, nil, err
	}
	return root, intermediates, nil
}

// chainingTo returns the CA certificates of bundle, other than root, that
// verify to root (with the rest of bundle as intermediates).
func chainingTo(root *x509.Certificate, bundle []*x509.Certificate) []*x509.Certificate {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	pool := x509.NewCertPool()
	for _, c := range bundle {
		pool.AddCert(c)
	}
	var out []*x509.Certificate
	for _, c := range bundle {
		if c.Equal(root) || !c.BasicConstraintsValid || !c.IsCA {
			continue
		}
		if _, err := c.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// describeBundle names each certificate of a bundle by subject and
// fingerprint, for a pin-mismatch error.
func describeBundle(certs []*x509.Certificate) string {
	s := make([]string, len(certs))
	for i, c := range certs {
		s[i] = fmt.Sprintf("%q %s", c.Subject.String(), pki.Fingerprint(c))
	}
	return strings.Join(s, ", ")
}
