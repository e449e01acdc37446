package api_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"devpki/api/wire"
	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

const estPath = "/.well-known/est"

// estReq sends one EST request. user/pass set HTTP Basic when pass is not
// empty; hdr adds headers.
func (f *fixture) estReq(c *http.Client, method, path, contentType string, body io.Reader, hdr map[string]string) (*http.Response, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.url+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

func basic(user, pass string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

// b64CSR is the CSR PEM's DER in base64 on one line.
func b64CSR(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		t.Fatal("no PEM CSR")
	}
	return []byte(base64.StdEncoding.EncodeToString(block.Bytes))
}

// estCerts checks a 200 certs-only answer and returns its certificates.
func estCerts(t testing.TB, resp *http.Response, body []byte) []*x509.Certificate {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/pkcs7-mime; smime-type=certs-only" {
		t.Errorf("Content-Type %q", ct)
	}
	if te := resp.Header.Get("Content-Transfer-Encoding"); te != "base64" {
		t.Errorf("Content-Transfer-Encoding %q", te)
	}
	der, err := base64.StdEncoding.DecodeString(string(body)) // skips the CRLF line breaks
	if err != nil {
		t.Fatalf("body is not base64: %v\n%s", err, body)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatalf("not PKCS#7: %v", err)
	}
	return p7.Certificates
}

// estRefused checks a text/plain EST error answer with status and slug.
func estRefused(t testing.TB, resp *http.Response, body []byte, status int, slug string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	if !strings.HasPrefix(string(body), slug+": ") || len(body) < len(slug)+5 {
		t.Errorf("body %q, want %q and a reason", body, slug+": …")
	}
	if status == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") != `Basic realm="devpki EST"` {
		t.Errorf("401 without WWW-Authenticate Basic: %q", resp.Header.Get("WWW-Authenticate"))
	}
}

func TestESTCACertsAndLabels(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if _, err := provision.CreateTenant(context.Background(), f.store, provision.TenantSpec{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	want := append(append([]*x509.Certificate{}, f.ca.Issuer.Chain()...), f.ca.CA.Root)
	for _, path := range []string{estPath + "/cacerts", estPath + "/acme/cacerts", estPath + "/default/cacerts"} {
		resp, b := f.estReq(f.client, http.MethodGet, path, "", nil, nil)
		got := estCerts(t, resp, b)
		if len(got) != len(want) {
			t.Fatalf("%s: %d certificates, want %d", path, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i].Raw, want[i].Raw) {
				t.Errorf("%s: certificate %d is %s, want %s", path, i, got[i].Subject, want[i].Subject)
			}
		}
	}
	for _, path := range []string{estPath + "/nosuch/cacerts", estPath + "/nosuch/simpleenroll", estPath + "/cacerts/extra"} {
		method := http.MethodGet
		if strings.HasSuffix(path, "enroll") {
			method = http.MethodPost
		}
		resp, b := f.estReq(f.client, method, path, "application/pkcs10", strings.NewReader("AAAA"), nil)
		estRefused(t, resp, b, http.StatusNotFound, wire.SlugNotFound)
		if strings.Contains(path, "nosuch") && !strings.Contains(string(b), `"nosuch"`) {
			t.Errorf("%s: %q does not name the label", path, b)
		}
	}
	resp, b := f.estReq(f.client, http.MethodPost, estPath+"/cacerts", "", nil, nil)
	estRefused(t, resp, b, http.StatusMethodNotAllowed, wire.SlugMethodNotAllowed)
	for _, op := range []string{"serverkeygen", "fullcmc"} {
		resp, b := f.estReq(f.client, http.MethodPost, estPath+"/"+op, "application/pkcs10", strings.NewReader("AAAA"), nil)
		estRefused(t, resp, b, http.StatusNotImplemented, wire.SlugNotImplemented)
		if !strings.Contains(string(b), op) {
			t.Errorf("%s: %q", op, b)
		}
	}
}

// TestESTCSRAttrs: csrattrs parses back as a CsrAttrs (SEQUENCE OF
// AttrOrOID) naming serialNumber, extensionRequest{subjectAltName},
// id-ecPublicKey{P-256} and ecdsa-with-SHA256.
func TestESTCSRAttrs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	resp, b := f.estReq(f.client, http.MethodGet, estPath+"/csrattrs", "", nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/csrattrs" ||
		resp.Header.Get("Content-Transfer-Encoding") != "base64" {
		t.Fatalf("csrattrs: %d %q %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Transfer-Encoding"), b)
	}
	der, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		t.Fatal(err)
	}
	var items []asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &items); err != nil || len(rest) != 0 {
		t.Fatalf("CsrAttrs: %v, %d trailing bytes", err, len(rest))
	}
	var oids []string
	attrs := map[string][]string{}
	for _, it := range items {
		switch it.Tag {
		case asn1.TagOID:
			var oid asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(it.FullBytes, &oid); err != nil {
				t.Fatal(err)
			}
			oids = append(oids, oid.String())
		case asn1.TagSequence:
			var a struct {
				Type   asn1.ObjectIdentifier
				Values []asn1.ObjectIdentifier `asn1:"set"`
			}
			if rest, err := asn1.Unmarshal(it.FullBytes, &a); err != nil || len(rest) != 0 {
				t.Fatalf("attribute: %v", err)
			}
			for _, v := range a.Values {
				attrs[a.Type.String()] = append(attrs[a.Type.String()], v.String())
			}
		default:
			t.Fatalf("AttrOrOID with tag %d", it.Tag)
		}
	}
	if strings.Join(oids, " ") != "2.5.4.5 1.2.840.10045.4.3.2" {
		t.Errorf("OIDs %v, want serialNumber and ecdsa-with-SHA256", oids)
	}
	if got := attrs["1.2.840.113549.1.9.14"]; len(got) != 1 || got[0] != "2.5.29.17" {
		t.Errorf("extensionRequest %v, want subjectAltName", got)
	}
	if got := attrs["1.2.840.10045.2.1"]; len(got) != 1 || got[0] != "1.2.840.10045.3.1.7" {
		t.Errorf("id-ecPublicKey %v, want P-256", got)
	}
}

// TestESTSimpleEnroll: the token as the Basic password (any user name) or
// as a Bearer token; base64 with or without line breaks, CRLF, padding.
func TestESTSimpleEnroll(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	wrap := func(b []byte, n int, eol string) []byte {
		var out []byte
		for len(b) > n {
			out = append(append(out, b[:n]...), eol...)
			b = b[n:]
		}
		return append(out, b...)
	}
	for i, tt := range []struct {
		name string
		body func([]byte) []byte
		hdr  func(tok string) map[string]string
	}{
		{"basic, one line", func(b []byte) []byte { return b }, func(tok string) map[string]string { return basic("anyone", tok) }},
		{"basic, empty user, 64 LF", func(b []byte) []byte { return wrap(b, 64, "\n") }, func(tok string) map[string]string { return basic("", tok) }},
		{"bearer, 76 CRLF", func(b []byte) []byte { return append(wrap(b, 76, "\r\n"), "\r\n"...) }, func(tok string) map[string]string {
			return map[string]string{"Authorization": "Bearer " + tok}
		}},
		{"basic, no padding", func(b []byte) []byte { return bytes.TrimRight(b, "=") }, func(tok string) map[string]string { return basic("x", tok) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			serial := "SN-EST-" + string(rune('A'+i))
			tok := f.mint(provision.TokenSpec{})
			_, csr, p := f.keyAndCSR(serial)
			resp, b := f.estReq(f.client, http.MethodPost, estPath+"/simpleenroll", "application/pkcs10",
				bytes.NewReader(tt.body(b64CSR(t, p))), tt.hdr(tok))
			certs := estCerts(t, resp, b)
			if len(certs) != 1 {
				t.Fatalf("%d certificates, want the issued one alone", len(certs))
			}
			c := certs[0]
			if c.Subject.SerialNumber != serial || !c.PublicKey.(crypto.PublicKey).(*ecdsa.PublicKey).Equal(csr.PublicKey) {
				t.Errorf("certificate %s for another serial or key", c.Subject)
			}
			if _, err := c.Verify(x509.VerifyOptions{Roots: f.ca.Roots(), Intermediates: f.ca.Intermediates(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Error(err)
			}
			if f.usesLeft(tok) != 0 || f.device(serial) == nil {
				t.Errorf("token uses left %d, device %v: want spent and recorded", f.usesLeft(tok), f.device(serial))
			}
		})
	}
}

// TestESTSimpleEnrollBadInput: every malformed or unauthenticated
// simpleenroll gets a clear 4xx with a text/plain reason, writes no device,
// certificate or token change, and spends nothing.
func TestESTSimpleEnrollBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	if _, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	tok := f.mint(provision.TokenSpec{})
	good := b64CSR(t, f.csr("SN-EST-BAD"))
	der, _ := base64.StdEncoding.DecodeString(string(good))
	garbage := []byte(base64.StdEncoding.EncodeToString(append(append([]byte{}, der...), 0x05, 0x00)))
	other := pkitest.NewCA(t)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	foreign := other.IssueDevice(t, pkitestIdentity("SN-EST-FOREIGN"), otherKey)
	foreignClient := f.newClient(&tls.Certificate{Certificate: [][]byte{foreign.Certificate.Raw}, PrivateKey: otherKey})
	huge := bytes.Repeat([]byte("A"), 70<<10)

	for _, tt := range []struct {
		name   string
		client *http.Client
		path   string
		ct     string
		body   io.Reader
		hdr    map[string]string
		status int
		slug   string
	}{
		{"no credential", nil, "", "application/pkcs10", bytes.NewReader(good), nil, http.StatusUnauthorized, wire.SlugTokenInvalid},
		{"unknown token", nil, "", "application/pkcs10", bytes.NewReader(good), basic("u", provision.TokenPrefix+"nope"), http.StatusUnauthorized, wire.SlugTokenInvalid},
		{"empty password", nil, "", "application/pkcs10", bytes.NewReader(good), basic("u", ""), http.StatusUnauthorized, wire.SlugTokenInvalid},
		{"foreign client certificate, IDevID door closed", foreignClient, "", "application/pkcs10", bytes.NewReader(good), nil, http.StatusUnauthorized, wire.SlugUnauthorized},
		{"wrong content type", nil, "", "application/json", bytes.NewReader(good), basic("u", tok), http.StatusUnsupportedMediaType, wire.SlugBadRequest},
		{"no content type", nil, "", "", bytes.NewReader(good), basic("u", tok), http.StatusUnsupportedMediaType, wire.SlugBadRequest},
		{"not base64", nil, "", "application/pkcs10", strings.NewReader("this is not base64!"), basic("u", tok), http.StatusBadRequest, wire.SlugBadCSR},
		{"PEM instead of base64 DER", nil, "", "application/pkcs10", bytes.NewReader(f.csr("SN-EST-PEM")), basic("u", tok), http.StatusBadRequest, wire.SlugBadCSR},
		{"empty body", nil, "", "application/pkcs10", strings.NewReader("\r\n"), basic("u", tok), http.StatusBadRequest, wire.SlugBadCSR},
		{"base64 of garbage", nil, "", "application/pkcs10", strings.NewReader("AAECAwQF"), basic("u", tok), http.StatusBadRequest, wire.SlugBadCSR},
		{"PKCS#10 with trailing garbage", nil, "", "application/pkcs10", bytes.NewReader(garbage), basic("u", tok), http.StatusBadRequest, wire.SlugBadCSR},
		{"oversized", nil, "", "application/pkcs10", bytes.NewReader(huge), basic("u", tok), http.StatusRequestEntityTooLarge, wire.SlugPayloadTooLarge},
		{"oversized, chunked", nil, "", "application/pkcs10", io.MultiReader(bytes.NewReader(huge)), basic("u", tok), http.StatusRequestEntityTooLarge, wire.SlugPayloadTooLarge},
		{"unknown label", nil, "/nosuch", "application/pkcs10", bytes.NewReader(good), basic("u", tok), http.StatusNotFound, wire.SlugNotFound},
		{"token of another tenant's label", nil, "/acme", "application/pkcs10", bytes.NewReader(good), basic("u", tok), http.StatusForbidden, wire.SlugTokenMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, seq, hits := f.counts(), f.lastSeq(), f.refusalHits("")
			c := tt.client
			if c == nil {
				c = f.client
			}
			resp, b := f.estReq(c, http.MethodPost, estPath+tt.path+"/simpleenroll", tt.ct, tt.body, tt.hdr)
			estRefused(t, resp, b, tt.status, tt.slug)
			if after := f.counts(); after != before {
				t.Errorf("rows %+v -> %+v: a refused request wrote", before, after)
			}
			if f.usesLeft(tok) != 1 {
				t.Errorf("token uses left %d, want 1", f.usesLeft(tok))
			}
			// Every refusal leaves one trace: a chained denial when the
			// caller is known (a real token for another tenant's label),
			// else a count in the anonymous refusal log (no or unknown
			// credential, and what the door refuses before the token is
			// looked at: content type, base64, size, label).
			denied := 0
			for _, ev := range f.auditSince(seq) {
				if ev.Result == registry.ResultDenied {
					denied++
				}
			}
			if counted := f.refusalHits("") - hits; denied+int(counted) != 1 {
				t.Errorf("%d chained denials and %d refusals counted, want one trace", denied, counted)
			}
		})
	}
	// The token still works afterwards.
	resp, b := f.estReq(f.client, http.MethodPost, estPath+"/simpleenroll", "application/pkcs10", bytes.NewReader(good), basic("u", tok))
	estCerts(t, resp, b)
}

// TestESTLabelTenant: a token of tenant acme enrolls at /est/acme/ into
// acme; the same at /est/ (no label) too.
func TestESTLabelTenant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	acme, err := provision.CreateTenant(ctx, f.store, provision.TenantSpec{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{estPath + "/acme", estPath} {
		serial := "SN-EST-ACME" + strings.ReplaceAll(path, "/", "-")
		tok := f.mint(provision.TokenSpec{Tenant: "acme"})
		resp, b := f.estReq(f.client, http.MethodPost, path+"/simpleenroll", "application/pkcs10",
			bytes.NewReader(b64CSR(t, f.csr(serial))), basic(serial, tok))
		c := estCerts(t, resp, b)[0]
		if len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "acme" {
			t.Errorf("%s: certificate subject %s, want O=acme", path, c.Subject)
		}
		if _, err := f.store.GetDeviceBySerial(ctx, acme.ID, serial); err != nil {
			t.Errorf("%s: device not in acme: %v", path, err)
		}
	}
}

// pkitestIdentity is a device identity in the default tenant.
func pkitestIdentity(serial string) pki.Identity {
	return pki.Identity{DeviceID: "dev-" + serial, Tenant: registry.DefaultTenant, Serial: serial,
		MACs: []string{mustMAC(macFor(serial))}, TrustDomain: pkitest.TrustDomain}
}

func mustMAC(m string) string {
	n, err := pki.NormalizeMAC(m)
	if err != nil {
		panic(err)
	}
	return n
}
