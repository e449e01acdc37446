package api_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"devpki/api"
	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

func TestEnrollOverTLS(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tok := f.mint(provision.TokenSpec{})
	_, csr, csrPEM := f.keyAndCSR("SN-HAPPY-1", "02:00:00:00:00:01", "02-00-00-00-00-02")
	before := f.counts()

	req, err := http.NewRequest(http.MethodPost, f.url+"/v1/enroll", bytes.NewReader(enrollBody(t, csrPEM)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	// Spoofed client addresses must not reach the audit log.
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Real-IP", "203.0.113.8")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if resp.TLS == nil || resp.TLS.Version < 0x0303 {
		t.Fatalf("not served over TLS ≥ 1.2: %+v", resp.TLS)
	}
	var er wire.EnrollResponse
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&er); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}

	certs := parsePEMCerts(t, []byte(er.Certificate))
	if len(certs) != 1 {
		t.Fatalf("certificate field holds %d certificates", len(certs))
	}
	leaf := certs[0]
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(csr.PublicKey) {
		t.Error("certificate public key is not the CSR's")
	}
	inter := x509.NewCertPool()
	if len(er.Chain) == 0 {
		t.Fatal("empty chain")
	}
	for _, p := range er.Chain {
		for _, c := range parsePEMCerts(t, []byte(p)) {
			if c.Equal(f.ca.CA.Root) {
				t.Error("chain includes the root")
			}
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: f.ca.Roots(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		t.Fatalf("chain does not verify to the root: %v", err)
	}
	if !er.RenewAfter.After(leaf.NotBefore) || !er.RenewAfter.Before(leaf.NotAfter) {
		t.Errorf("renew_after %s not within [%s, %s]", er.RenewAfter, leaf.NotBefore, leaf.NotAfter)
	}
	id, err := pki.DeviceIdentity(leaf, pkitest.TrustDomain)
	if err != nil {
		t.Fatal(err)
	}
	if id.DeviceID != er.DeviceID || id.Serial != "SN-HAPPY-1" || id.Tenant != registry.DefaultTenant ||
		strings.Join(id.MACs, ",") != "020000000001,020000000002" {
		t.Errorf("identity %+v, device_id %q", id, er.DeviceID)
	}

	// Recorded before it was returned: device, certificate, spent token, audit.
	dev := f.device("SN-HAPPY-1")
	if dev == nil || dev.ID != er.DeviceID || dev.Method != "token" || dev.Status != registry.DeviceActive {
		t.Fatalf("device %+v", dev)
	}
	recs, err := f.store.ListDeviceCertificates(t.Context(), dev.ID)
	if err != nil || len(recs) != 1 || recs[0].Serial != leaf.SerialNumber.Text(16) || !bytes.Equal(recs[0].DER, leaf.Raw) ||
		recs[0].Kind != registry.KindDevice || recs[0].Status != registry.CertActive {
		t.Fatalf("certificate records %+v, %v", recs, err)
	}
	if after := f.counts(); after.devices != before.devices+1 || after.certs != before.certs+1 {
		t.Errorf("counts %+v -> %+v, want one device and one certificate more", before, after)
	}
	if n := f.usesLeft(tok); n != 0 {
		t.Errorf("token uses left %d, want 0", n)
	}
	var ok bool
	for _, ev := range f.auditSince(0) {
		if ev.Action == "enroll" && ev.Result == registry.ResultOK && ev.Target == dev.ID && ev.SourceAddr == "127.0.0.1" {
			ok = true
		}
	}
	if !ok {
		t.Error("no ok enroll audit event for the device")
	}
}

// TestEnrollBadInputChangesNothing: every refused enrollment answers with the
// right problem and writes nothing but audit events: no device, no
// certificate, no token use. A refused request with a live token leaves the
// token working.
//
// The cases run one after another on one fixture (not in parallel) because
// each checks table-wide row counts, and the follow-up good enrollments of
// other cases would add rows.
func TestEnrollBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	type tokenKind int
	const (
		live    tokenKind = iota // fresh single-use token
		none                     // no Authorization header
		unknown                  // well-formed, never minted
		expired
		spent
		bound // bound to "SN-BOUND-<i>"
	)
	goodKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	deviceDER := func(key crypto.Signer, serial string) []byte {
		der, err := pki.NewDeviceCSR(key, serial, []string{mac})
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	csrPEM := func(der []byte) []byte { return pemOf("CERTIFICATE REQUEST", der) }
	// custom makes a CSR from a template that starts as a good device CSR.
	custom := func(serial string, mod func(*x509.CertificateRequest)) []byte {
		tmpl := &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: serial, SerialNumber: serial},
			URIs:    []*url.URL{pki.MACURI("020000000001")},
		}
		mod(tmpl)
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, goodKey)
		if err != nil {
			t.Fatal(err)
		}
		return csrPEM(der)
	}
	flipSig := func(der []byte) []byte {
		der = bytes.Clone(der)
		der[len(der)-1] ^= 0x01 // last byte of the ECDSA signature's s
		return der
	}
	basicCA, err := asn1.Marshal(struct{ IsCA bool }{true})
	if err != nil {
		t.Fatal(err)
	}
	jsonOf := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	type tc struct {
		name   string
		token  tokenKind
		serial string // the serial the request names (must stay unenrolled)
		csr    []byte // sent as {"csr": ...} unless body is set
		body   []byte
		// chunked hides the length so the body goes out chunked.
		chunked     bool
		contentType string // default application/json; "-" sends none
		status      int
		slug        string
		detail      string // substring of the problem detail
		// httpLayer: refused by the HTTP/JSON layer before the provision
		// service sees it; such refusals are not audited.
		httpLayer bool
	}
	var cases []tc
	add := func(c tc) { cases = append(cases, c) }
	sn := func(i int) string { return fmt.Sprintf("SN-BAD-%02d", i) }
	i := 0
	next := func() string { i++; return sn(i) }

	s := next()
	add(tc{name: "malformed PEM", serial: s, csr: []byte("-----BEGIN CERTIFICATE REQUEST-----\n!!! not base64 !!!\n-----END CERTIFICATE REQUEST-----\n"),
		status: 400, slug: "bad-csr", detail: "malformed PEM block"})
	s = next()
	add(tc{name: "PEM with trailing garbage", serial: s, csr: append(csrPEM(deviceDER(goodKey, s)), "trailing garbage\n"...),
		status: 400, slug: "bad-csr", detail: "trailing data after the PEM block"})
	s = next()
	add(tc{name: "two PEM blocks", serial: s, csr: append(csrPEM(deviceDER(goodKey, s)), csrPEM(deviceDER(goodKey, s))...),
		status: 400, slug: "bad-csr", detail: "more than one PEM block"})
	s = next()
	add(tc{name: "wrong PEM type", serial: s, csr: pemOf("CERTIFICATE", deviceDER(goodKey, s)),
		status: 400, slug: "bad-csr", detail: `PEM type is "CERTIFICATE"`})
	s = next()
	add(tc{name: "DER with trailing bytes", serial: s, csr: csrPEM(append(deviceDER(goodKey, s), 0x05, 0x00)),
		status: 400, slug: "bad-csr", detail: "trailing data after the DER"})
	s = next()
	add(tc{name: "signature does not verify", serial: s, csr: csrPEM(flipSig(deviceDER(goodKey, s))),
		status: 400, slug: "bad-csr", detail: "signature does not verify"})
	s = next()
	add(tc{name: "RSA-1024 key", serial: s, csr: csrPEM(deviceDER(rsa1024, s)),
		status: 400, slug: "bad-csr", detail: "RSA key is 1024 bits"})
	add(tc{name: "DSA key", serial: "SN1", csr: []byte(dsaCSRPEM),
		status: 400, slug: "bad-csr", detail: "DSA-SHA256 is not allowed"})
	s = next()
	add(tc{name: "SHA-1 signature (RSA-2048)", serial: s,
		csr:    csrPEM(pkitest.ResignCSR(t, deviceDER(rsa2048, s), rsa2048, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, crypto.SHA1)),
		status: 400, slug: "bad-csr", detail: "SHA1-RSA is not allowed"})
	s = next()
	add(tc{name: "missing serial", serial: s, csr: custom(s, func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "" }),
		status: 400, slug: "bad-csr", detail: "no serialNumber"})
	s = next()
	add(tc{name: "malformed MAC URI", serial: s, csr: custom(s, func(c *x509.CertificateRequest) {
		c.URIs = []*url.URL{{Scheme: "urn", Opaque: "dev:mac:02000000zz01"}}
	}), status: 400, slug: "bad-mac", detail: "MAC must be 12 lowercase hex"})
	for _, hostile := range []string{"0200000000\x0001", "020000000001\r\n", strings.Repeat("0", 65)} {
		s = next()
		add(tc{name: fmt.Sprintf("hostile MAC %q", hostile), serial: s, csr: custom(s, func(c *x509.CertificateRequest) {
			c.URIs = []*url.URL{{Scheme: "urn", Opaque: "dev:mac:" + hostile}}
		}), status: 400, slug: "bad-mac", detail: "MAC must be 12 lowercase hex"})
	}
	// Hostile serials are refused, never escaped into the SPIFFE ID.
	for _, hostile := range []string{"x/../../admin/root", "SN%2F1", "..", ".", "SN\x00", "SN\r\nX-A: b", "SN-\u0410", "SN-\uff10\uff11",
		strings.Repeat("S", 65), "a:b"} {
		s = next()
		add(tc{name: fmt.Sprintf("hostile serial %q", hostile), serial: s, csr: custom(s, func(c *x509.CertificateRequest) {
			c.Subject.SerialNumber = hostile
		}), status: 400, slug: "bad-serial", detail: "bad serial"})
	}
	s = next()
	add(tc{name: "no MAC", serial: s, csr: custom(s, func(c *x509.CertificateRequest) { c.URIs = nil }),
		status: 400, slug: "bad-csr", detail: "no MAC address"})
	s = next()
	add(tc{name: "CA:TRUE requested", serial: s, csr: custom(s, func(c *x509.CertificateRequest) {
		c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: basicCA}}
	}), status: 400, slug: "bad-csr", detail: "basicConstraints"})
	s = next()
	add(tc{name: "extra DNS SAN", serial: s, csr: custom(s, func(c *x509.CertificateRequest) { c.DNSNames = []string{"ca.example.com"} }),
		status: 400, slug: "bad-csr", detail: "dNSName not allowed"})
	s = next()
	add(tc{name: "extra URI SAN (admin SPIFFE ID)", serial: s, csr: custom(s, func(c *x509.CertificateRequest) {
		c.URIs = append(c.URIs, pki.AdminURI("test.devpki", registry.DefaultTenant, "root"))
	}), status: 400, slug: "bad-csr", detail: "is not urn:dev:mac"})
	s = next()
	add(tc{name: "expired token", token: expired, serial: s, csr: f.csr(s),
		status: 401, slug: "token-expired", detail: "expired"})
	s = next()
	add(tc{name: "unknown token", token: unknown, serial: s, csr: f.csr(s),
		status: 401, slug: "token-invalid", detail: "unknown bootstrap token"})
	s = next()
	add(tc{name: "no Authorization header", token: none, serial: s, csr: f.csr(s),
		status: 401, slug: "token-invalid"})
	s = next()
	add(tc{name: "spent token (replay)", token: spent, serial: s, csr: f.csr(s),
		status: 401, slug: "token-spent"})
	s = next()
	add(tc{name: "token bound to another serial", token: bound, serial: s, csr: f.csr(s),
		status: 403, slug: "token-mismatch", detail: "bound to serial"})
	s = next()
	add(tc{name: "unknown JSON field", serial: s, body: jsonOf(map[string]string{"csr": string(f.csr(s)), "serial": s}),
		status: 400, slug: "bad-request", detail: "unknown field", httpLayer: true})
	s = next()
	add(tc{name: "trailing JSON after the object", serial: s, body: append(enrollBody(t, f.csr(s)), ` {"csr":""}`...),
		status: 400, slug: "bad-request", detail: "trailing data", httpLayer: true})
	s = next()
	add(tc{name: "not JSON", serial: s, body: f.csr(s), status: 400, slug: "bad-request", httpLayer: true})
	s = next()
	add(tc{name: "empty csr", serial: s, body: []byte(`{"csr":""}`), status: 400, slug: "bad-csr", httpLayer: true})
	s = next()
	add(tc{name: "no csr field", serial: s, body: []byte(`{}`), status: 400, slug: "bad-csr", httpLayer: true})
	s = next()
	add(tc{name: "wrong content type", serial: s, csr: f.csr(s), contentType: "text/plain",
		status: 415, slug: "bad-request", httpLayer: true})
	big := append([]byte(`{"csr":"`), bytes.Repeat([]byte("A"), api.MaxBodyBytes)...)
	big = append(big, `"}`...)
	s = next()
	add(tc{name: "body over 64 KiB with Content-Length", serial: s, body: big,
		status: 413, slug: "payload-too-large", httpLayer: true})
	s = next()
	add(tc{name: "body over 64 KiB chunked", serial: s, body: big, chunked: true,
		status: 413, slug: "payload-too-large", httpLayer: true})

	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tok, boundSerial string
			switch c.token {
			case live:
				tok = f.mint(provision.TokenSpec{})
			case unknown:
				tok = provision.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
			case expired:
				tok = f.mintAt(f.now.Add(-48*time.Hour), provision.TokenSpec{TTL: time.Hour})
			case spent:
				tok = f.mint(provision.TokenSpec{})
				f.mustEnroll(tok, fmt.Sprintf("SN-SPENDER-%02d", i))
			case bound:
				boundSerial = fmt.Sprintf("SN-BOUND-%02d", i)
				tok = f.mint(provision.TokenSpec{Serial: boundSerial})
			}
			body := c.body
			if body == nil {
				body = enrollBody(t, c.csr)
			}
			var r io.Reader = bytes.NewReader(body)
			if c.chunked {
				r = io.MultiReader(r) // no length known: sent chunked
			}
			ct := c.contentType
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			before, uses, seq, hits := f.counts(), f.usesLeft(tok), f.lastSeq(), f.refusalHits("")

			req, err := http.NewRequest(http.MethodPost, f.url+"/v1/enroll", r)
			if err != nil {
				t.Fatal(err)
			}
			if c.chunked {
				req.ContentLength = -1 // unknown: net/http sends Transfer-Encoding: chunked
			}
			if ct != "" {
				req.Header.Set("Content-Type", ct)
			}
			if c.token != none {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			rb, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			p := problemOf(t, resp, rb, c.status)
			if p.Slug() != c.slug {
				t.Errorf("problem type %q, want %s%s", p.Type, wire.ProblemTypePrefix, c.slug)
			}
			if !strings.Contains(p.Detail, c.detail) {
				t.Errorf("problem detail %q, want it to contain %q", p.Detail, c.detail)
			}
			if c.token == none && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}

			if after := f.counts(); after != before {
				t.Errorf("rows changed by a refused request: %+v -> %+v", before, after)
			}
			if f.device(c.serial) != nil {
				t.Errorf("device %q recorded by a refused request", c.serial)
			}
			if got := f.usesLeft(tok); got != uses {
				t.Errorf("token uses left %d -> %d", uses, got)
			}

			// The secret never shows up in the answer or the audit log.
			if tok != "" && bytes.Contains(rb, []byte(tok)) {
				t.Error("problem echoes the bootstrap token")
			}
			var denied int
			for _, ev := range f.auditSince(seq) {
				if tok != "" && strings.Contains(fmt.Sprintf("%+v", *ev), tok) {
					t.Errorf("audit event %d holds the bootstrap token", ev.Seq)
				}
				if ev.Action == "enroll" && ev.Result == registry.ResultDenied && ev.SourceAddr == "127.0.0.1" {
					denied++
				}
			}
			// Every refusal leaves one trace: a chained event when the
			// token is known (spent, bound elsewhere), else a count in the
			// refusal log (no token, unknown or expired, and what the HTTP
			// layer refuses before the token is looked at).
			if refused := f.refusalHits("") - hits; denied+int(refused) != 1 {
				t.Errorf("%d denied enroll audit events and %d refusals counted, want one trace", denied, refused)
			}
			for _, r := range f.refusals() {
				if tok != "" && strings.Contains(r.Sample, tok) {
					t.Errorf("refusal %d holds the bootstrap token", r.ID)
				}
			}

			// A live token survives the refusal: it still enrolls a good CSR.
			switch c.token {
			case live:
				f.mustEnroll(tok, c.serial)
			case bound:
				f.mustEnroll(tok, boundSerial)
			default:
				return
			}
			if got := f.usesLeft(tok); got != uses-1 {
				t.Errorf("token uses left %d after the good enrollment, want %d", got, uses-1)
			}
		})
	}
}

func TestEnrollMethodAndRouteErrorsAreProblems(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tt := range []struct {
		method, path string
		status       int
		slug         string
	}{
		{http.MethodGet, "/v1/enroll", http.StatusMethodNotAllowed, "method-not-allowed"},
		{http.MethodGet, "/v1/nope", http.StatusNotFound, "not-found"},
		{http.MethodGet, "/v1/admin/tokens", http.StatusMethodNotAllowed, "method-not-allowed"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			resp, b, err := f.do(f.client, tt.method, tt.path, "", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			if p := problemOf(t, resp, b, tt.status); p.Slug() != tt.slug {
				t.Errorf("slug %q, want %q", p.Slug(), tt.slug)
			}
		})
	}
}

// TestEnrollContentType: JSON bodies are accepted with or without a
// Content-Type naming JSON; anything else is 415.
func TestEnrollContentType(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for i, tt := range []struct {
		ct     string
		status int
		why    string
	}{
		{"application/json", http.StatusCreated, ""},
		{"application/json; charset=utf-8", http.StatusCreated, ""},
		{"", http.StatusCreated, ""},
		{"text/plain", http.StatusUnsupportedMediaType, ""},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType, ""},
		{"application/x-pem-file", http.StatusUnsupportedMediaType, ""},
		{"APPLICATION/JSON", http.StatusCreated,
			"media types are case-insensitive (RFC 9110 8.3.1)"},
		{"Application/Json; charset=utf-8", http.StatusCreated,
			"media types are case-insensitive (RFC 9110 8.3.1)"},
		{"application/jsonx", http.StatusUnsupportedMediaType,
			"only application/json itself is JSON here"},
		{"application/json-patch+json", http.StatusUnsupportedMediaType,
			"only application/json itself is JSON here"},
	} {
		t.Run(fmt.Sprintf("%q", tt.ct), func(t *testing.T) {
			t.Parallel()
			serial := fmt.Sprintf("SN-CT-%02d", i)
			tok := f.mint(provision.TokenSpec{})
			resp, b, err := f.do(f.client, http.MethodPost, "/v1/enroll", tok, tt.ct, bytes.NewReader(enrollBody(t, f.csr(serial))))
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("Content-Type %q got %d, want %d (%s): %s", tt.ct, resp.StatusCode, tt.status, tt.why, b)
			}
			if tt.status != http.StatusCreated {
				if p := problemOf(t, resp, b, tt.status); p.Slug() != "bad-request" {
					t.Errorf("slug %q", p.Slug())
				}
				if f.device(serial) != nil || f.usesLeft(tok) != 1 {
					t.Error("a 415 wrote something")
				}
				return
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
		})
	}
}

// dsaCSRPEM is pkg/pki/testdata/dsa.csr: an OpenSSL-made DSA-2048/SHA-256
// CSR for serial SN1 (crypto/x509 cannot create DSA CSRs; CSRs do not expire).
const dsaCSRPEM = `-----BEGIN CERTIFICATE REQUEST-----
MIID9DCCA6ACAQAwHDEMMAoGA1UEAwwDU04xMQwwCgYDVQQFEwNTTjEwggNDMIIC
NQYHKoZIzjgEATCCAigCggEBAL1F0cmDdjVO9np+azr7EAQeZRBo2WfuhvKxBU1G
ua3T9GaomuL/u2PJBN3TafdWO/ErRbV0GMvFuJEaaZzfj7u9xv8Csqx9u3pulqX/
IqXeS1Vlq8NR730skw5x2bFjGrrDXuRRYIqTFIb9jS9ud+N0QOA2RcRWn1iC23WS
eWGBN1+X+BuSwkQJKe5LUp6fTQqiDw5pfm7XCiClVG/hI885VorT2Wec5PR0uMVI
85dII/oo9islF2n8AWtFhYXVudDHU1hjtEjX7btLwWogZ6z4jrPbcPnhvhBndn46
Azc9K2S/dUa2eh4Vw2RuzsfAmTF9RC65sWSTwjcrZACFUwUCHQD/cQqGiQMEfgm9
pZtceUlgUVyHuy6p70Pk7eZJAoIBADFamlBf4/JOkJZykZsHlWZ/rc4TH7/ZYCbt
KGLz44Nr3/n+F1RKQ1HKH5LRJUzhuBBExJd2yPW+6vGrw2QDXS424msj67MiLCiP
y4GgUPK/u6ROhnpR0vCORPINck8RltMomvb3NEEaaq3CFjKohxGuNjkcGF7xVXEw
sDww5bky6lKqUCc63XsWd3iEtBjXYjjPHEOVTI6STgY78YdEffvYgp2cod25vim6
92kNi13cMfv/wMoG2DrUO+RlPmk1Og463cN+fSr1kg4RpP7NfjhVzoHjvVyOdBhA
GcvjoTMAboVOa/SlvwXeBVaX3pQnsayZH2eZ/lIWxL9OJXcy20QDggEGAAKCAQEA
pSGEeKevC3Xtz3DjJjYoGdzp2+yxP8PnGYX1lOVDw/9H3MQ/F1PZFRxR9aVdLWMc
P93b8tPA6ohWzg5Ih8zKivdFASmHZNUBIhI1kdNg84hY5rBRGWZGLfKr87KNhVeq
D92tLMr/WRpJlvsMe26h7GKoIPShZPLkuqS/7xDXz4vQ0Fz1DKMLLucnsBVPrgyI
nH2sFOEh6GrDaq9BP0JNcmxW2On7rxTZDPWAzJN9W+8yf7MogNzBWMRoIqAwSniu
Oam0BeY+TGz/adPSFzw1fWVaoVVPtWh2K1Jt4tLKpYyHG+3cHRPb4v9ZkM3LI+Oe
OALkUkLzqHcJUx88E5Tio6A2MDQGCSqGSIb3DQEJDjEnMCUwIwYDVR0RBBwwGoYY
dXJuOmRldjptYWM6YWFiYmNjZGRlZWZmMAsGCWCGSAFlAwQDAgNBADA+Ah0A03A+
PFIJMmHPmqaxXPwQT9uL5SRlgF0fVkrYcQIdAIrfgZteqhyZDG6+rjfN4aYnrra4
UrDqRpjcEYQ=
-----END CERTIFICATE REQUEST-----
`
