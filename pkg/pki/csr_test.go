package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// keys are generated once: RSA generation dominates otherwise.
var keys = sync.OnceValue(func() map[string]crypto.Signer {
	m := map[string]crypto.Signer{}
	for name, c := range map[string]elliptic.Curve{"p256": elliptic.P256(), "p384": elliptic.P384(), "p521": elliptic.P521()} {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			panic(err)
		}
		m[name] = k
	}
	for name, bits := range map[string]int{"rsa1024": 1024, "rsa2048": 2048} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(err)
		}
		m[name] = k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	m["ed25519"] = ed
	return m
})

func macURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// csrTemplate is what NewDeviceCSR builds, for tests to bend.
func csrTemplate(t testing.TB) *x509.CertificateRequest {
	return &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "SN1", SerialNumber: "SN1"},
		URIs:    []*url.URL{macURL(t, "urn:dev:mac:aabbccddeeff")},
	}
}

func createCSR(t testing.TB, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCSRPolicyCheck(t *testing.T) {
	t.Parallel()
	k := keys()
	good := func(mod func(*x509.CertificateRequest)) []byte {
		tmpl := csrTemplate(t)
		if mod != nil {
			mod(tmpl)
		}
		return createCSR(t, tmpl, k["p256"])
	}
	basicCA, err := asn1.Marshal(struct{ IsCA bool }{true})
	if err != nil {
		t.Fatal(err)
	}
	tampered := good(nil)
	tampered[len(tampered)-1] ^= 0x01 // last byte of the ECDSA signature's s

	tests := []struct {
		name    string
		policy  pki.CSRPolicy
		der     []byte
		wantErr string // substring; "" = accepted
		wantIs  error  // also wrapped besides ErrBadCSR, when set
		want    *pki.CSRClaims
	}{
		{name: "p256 ok", der: good(nil), want: &pki.CSRClaims{Serial: "SN1", MACs: []string{"aabbccddeeff"}}},
		{name: "NewDeviceCSR ok", der: mustDeviceCSR(t, k["p256"], "A-b.c_D", "AA-BB-CC-00-11-22", "aabb.cc00.1122", "001122334455"),
			want: &pki.CSRClaims{Serial: "A-b.c_D", MACs: []string{"aabbcc001122", "001122334455"}}},
		{name: "duplicate MACs deduped", der: good(func(c *x509.CertificateRequest) {
			c.URIs = append(c.URIs, macURL(t, "urn:dev:mac:aabbccddeeff"), macURL(t, "urn:dev:mac:0a0b0c0d0e0f"))
		}), want: &pki.CSRClaims{Serial: "SN1", MACs: []string{"aabbccddeeff", "0a0b0c0d0e0f"}}},
		{name: "p384 refused", der: createCSR(t, csrTemplate(t), k["p384"]), wantErr: "P-384 keys are not allowed"},
		{name: "p384 allowed", policy: pki.CSRPolicy{AllowP384: true}, der: createCSR(t, csrTemplate(t), k["p384"])},
		{name: "p521 refused", policy: pki.CSRPolicy{AllowP384: true}, der: createCSR(t, csrTemplate(t), k["p521"]), wantErr: "curve P-521 is not allowed"},
		{name: "ed25519 refused", der: createCSR(t, csrTemplate(t), k["ed25519"]), wantErr: "Ed25519 keys are not allowed"},
		{name: "ed25519 allowed", policy: pki.CSRPolicy{AllowEd25519: true}, der: createCSR(t, csrTemplate(t), k["ed25519"])},
		{name: "rsa refused", der: createCSR(t, csrTemplate(t), k["rsa2048"]), wantErr: "RSA keys are not allowed"},
		{name: "rsa2048 allowed", policy: pki.CSRPolicy{AllowRSA: true}, der: createCSR(t, csrTemplate(t), k["rsa2048"])},
		{name: "rsa2048 e=3", policy: pki.CSRPolicy{AllowRSA: true}, der: createCSR(t, csrTemplate(t), rsaE3Key()), wantErr: "RSA public exponent is 3, only 65537 is allowed"},
		{name: "rsa e=3 refused when RSA is not allowed", der: createCSR(t, csrTemplate(t), rsaE3Key()), wantErr: "RSA keys are not allowed"},
		{name: "ed25519 allowed, p384 not", policy: pki.CSRPolicy{AllowEd25519: true}, der: createCSR(t, csrTemplate(t), k["p384"]), wantErr: "P-384 keys are not allowed"},
		{name: "rsa1024", policy: pki.CSRPolicy{AllowRSA: true}, der: createCSR(t, csrTemplate(t), k["rsa1024"]), wantErr: "RSA key is 1024 bits, at least 2048 required"},
		{name: "rsa1024 MinRSABits below floor", policy: pki.CSRPolicy{AllowRSA: true, MinRSABits: 512}, der: createCSR(t, csrTemplate(t), k["rsa1024"]), wantErr: "at least 2048 required"},
		{name: "rsa2048 under MinRSABits 3072", policy: pki.CSRPolicy{AllowRSA: true, MinRSABits: 3072}, der: createCSR(t, csrTemplate(t), k["rsa2048"]), wantErr: "RSA key is 2048 bits, at least 3072 required"},
		{name: "rsa2048 SHA1WithRSA", policy: pki.CSRPolicy{AllowRSA: true},
			der: pkitest.ResignCSR(t, createCSR(t, csrTemplate(t), k["rsa2048"]), k["rsa2048"], asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 5}, crypto.SHA1), wantErr: "signature algorithm SHA1-RSA is not allowed"},
		{name: "rsa2048 MD5WithRSA", policy: pki.CSRPolicy{AllowRSA: true},
			der: pkitest.ResignCSR(t, createCSR(t, csrTemplate(t), k["rsa2048"]), k["rsa2048"], asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}, crypto.MD5), wantErr: "signature algorithm MD5-RSA is not allowed"},
		{name: "ecdsa SHA1", der: pkitest.ResignCSR(t, good(nil), k["p256"], asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 1}, crypto.SHA1), wantErr: "signature algorithm ECDSA-SHA1 is not allowed"},
		{name: "resign helper sanity (SHA256)", der: pkitest.ResignCSR(t, good(nil), k["p256"], asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, crypto.SHA256)},
		{name: "DSA", der: dsaCSR(t), wantErr: "signature algorithm DSA-SHA256 is not allowed"},
		{name: "tampered signature", der: tampered, wantErr: "signature does not verify"},
		{name: "CA:TRUE requested", der: good(func(c *x509.CertificateRequest) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: basicCA}}
		}), wantErr: "CSR requests basicConstraints"},
		{name: "other extension requested", der: good(func(c *x509.CertificateRequest) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: []byte{0x30, 0}}}
		}), wantErr: "CSR requests extKeyUsage 2.5.29.37"},
		{name: "extra DNS SAN", der: good(func(c *x509.CertificateRequest) { c.DNSNames = []string{"evil.example.com"} }), wantErr: "subjectAltName of type dNSName not allowed"},
		{name: "extra IP SAN", der: good(func(c *x509.CertificateRequest) { c.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)} }), wantErr: "iPAddress not allowed"},
		{name: "extra email SAN", der: good(func(c *x509.CertificateRequest) { c.EmailAddresses = []string{"a@b.c"} }), wantErr: "rfc822Name (email) not allowed"},
		{name: "extra SPIFFE URI", der: good(func(c *x509.CertificateRequest) {
			c.URIs = append(c.URIs, macURL(t, "spiffe://test.devpki/acme/admin/root"))
		}), wantErr: `URI SAN "spiffe://test.devpki/acme/admin/root" is not urn:dev:mac`},
		{name: "otherName SAN", der: good(func(c *x509.CertificateRequest) {
			c.URIs = nil
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: rawSAN(t,
				asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte("urn:dev:mac:aabbccddeeff")},
				asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: []byte{0x06, 0x01, 0x2a, 0xa0, 0x02, 0x05, 0x00}})}}
		}), wantErr: "subjectAltName of type otherName not allowed"},
		{name: "bad MAC hex", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:aabbccddeezz")} }), wantErr: "MAC must be 12 lowercase hex"},
		{name: "MAC uppercase", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:AABBCCDDEEFF")} }), wantErr: "MAC must be 12 lowercase hex", wantIs: pki.ErrBadMAC},
		{name: "MAC short", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:aabbccddee")} }), wantErr: "MAC must be 12 lowercase hex", wantIs: pki.ErrBadMAC},
		{name: "MAC with separators", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:aa:bb:cc:dd:ee:ff")} }), wantErr: "MAC must be 12 lowercase hex", wantIs: pki.ErrBadMAC},
		{name: "MAC broadcast", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:ffffffffffff")} }), wantErr: "MAC must be 12 lowercase hex", wantIs: pki.ErrBadMAC},
		{name: "MAC percent-encoded NUL", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:aabbccddee%00")} }), wantErr: "MAC must be 12 lowercase hex", wantIs: pki.ErrBadMAC},
		{name: "MAC 65 characters", der: good(func(c *x509.CertificateRequest) {
			c.URIs = []*url.URL{macURL(t, "urn:dev:mac:"+strings.Repeat("a", 65))}
		}), wantErr: "MAC must be 12 lowercase hex", wantIs: pki.ErrBadMAC},
		{name: "MAC URN other NSS", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:ow:aabbccddeeff")} }), wantErr: "is not urn:dev:mac"},
		{name: "MAC URI with query", der: good(func(c *x509.CertificateRequest) { c.URIs = []*url.URL{macURL(t, "urn:dev:mac:aabbccddeeff?x")} }), wantErr: "is not urn:dev:mac"},
		{name: "no MAC", der: good(func(c *x509.CertificateRequest) { c.URIs = nil }), wantErr: "no MAC address"},
		{name: "too many MACs", policy: pki.CSRPolicy{MaxMACs: 2}, der: good(func(c *x509.CertificateRequest) {
			c.URIs = append(c.URIs, macURL(t, "urn:dev:mac:000000000001"), macURL(t, "urn:dev:mac:000000000002"))
		}), wantErr: "3 MAC URIs, at most 2 allowed"},
		{name: "default MaxMACs 8", der: good(func(c *x509.CertificateRequest) {
			for i := range 8 {
				c.URIs = append(c.URIs, macURL(t, "urn:dev:mac:00000000001"+string(rune('0'+i))))
			}
		}), wantErr: "9 MAC URIs, at most 8 allowed"},
		{name: "missing serial", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "" }), wantErr: "subject has no serialNumber"},
		{name: "invalid serial", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "has space" }), wantErr: "subject serialNumber: bad serial: serial \"has space\"", wantIs: pki.ErrBadSerial},
		{name: "serial path traversal", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "x/../../admin/root" }), wantErr: "character '/'", wantIs: pki.ErrBadSerial},
		{name: "serial dot-dot", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = ".." }), wantErr: "dot segment", wantIs: pki.ErrBadSerial},
		{name: "serial percent-encoded slash", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "x%2Fy" }), wantErr: "character '%'", wantIs: pki.ErrBadSerial},
		{name: "serial NUL", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "SN\x001" }), wantIs: pki.ErrBadSerial},
		{name: "serial CRLF", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "SN1\r\nX: y" }), wantIs: pki.ErrBadSerial},
		{name: "serial Cyrillic look-alike", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "SN-\u0410" }), wantIs: pki.ErrBadSerial},
		{name: "serial fullwidth digits", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = "SN-\uff10\uff11" }), wantIs: pki.ErrBadSerial},
		{name: "serial 65 characters", der: good(func(c *x509.CertificateRequest) { c.Subject.SerialNumber = strings.Repeat("S", 65) }), wantErr: "1 to 64 characters, got 65", wantIs: pki.ErrBadSerial},
		{name: "two serials", der: good(func(c *x509.CertificateRequest) {
			sn := asn1.ObjectIdentifier{2, 5, 4, 5}
			raw, err := asn1.Marshal(pkix.RDNSequence{{{Type: sn, Value: "SN1"}}, {{Type: sn, Value: "SN2"}}})
			if err != nil {
				t.Fatal(err)
			}
			c.RawSubject = raw
		}), wantErr: "2 serialNumber attributes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			csr, err := pki.ParseCSRPEM(pemCSR(tt.der))
			if err != nil {
				t.Fatalf("ParseCSRPEM: %v", err)
			}
			claims, err := tt.policy.Check(csr)
			if tt.wantErr != "" || tt.wantIs != nil {
				if !errors.Is(err, pki.ErrBadCSR) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Check = %v, want ErrBadCSR containing %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Fatalf("Check = %v, want it to wrap %v too", err, tt.wantIs)
				}
				if claims != nil {
					t.Errorf("claims = %+v on error", claims)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if !reflect.DeepEqual(claims.PublicKey, csr.PublicKey) {
				t.Error("claims.PublicKey is not the CSR's key")
			}
			if tt.want != nil && (claims.Serial != tt.want.Serial || !reflect.DeepEqual(claims.MACs, tt.want.MACs)) {
				t.Errorf("claims = %q %q, want %q %q", claims.Serial, claims.MACs, tt.want.Serial, tt.want.MACs)
			}
		})
	}
}

func mustDeviceCSR(t testing.TB, key crypto.Signer, serial string, macs ...string) []byte {
	t.Helper()
	der, err := pki.NewDeviceCSR(key, serial, macs)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func rawSAN(t testing.TB, names ...asn1.RawValue) []byte {
	t.Helper()
	b, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dsaCSR is an OpenSSL-made DSA-2048/SHA-256 CSR (crypto/x509 cannot create
// DSA CSRs). CSRs do not expire.
func dsaCSR(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/dsa.csr")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	return block.Bytes
}

func TestNewDeviceCSR(t *testing.T) {
	t.Parallel()
	k := keys()
	for _, name := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		der := mustDeviceCSR(t, k[name], "SN-9", "aa:bb:cc:dd:ee:01", "AABBCCDDEE01", "aa-bb-cc-dd-ee-02")
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if csr.Subject.CommonName != "SN-9" || csr.Subject.SerialNumber != "SN-9" || len(csr.Subject.Names) != 2 {
			t.Errorf("%s: subject %v", name, csr.Subject)
		}
		if got := urisString(csr.URIs); got != "urn:dev:mac:aabbccddee01 urn:dev:mac:aabbccddee02" {
			t.Errorf("%s: URIs %s", name, got)
		}
		if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 || len(csr.Extensions) != 1 {
			t.Errorf("%s: unexpected SANs or extensions: %+v", name, csr.Extensions)
		}
	}
	for _, bad := range []struct {
		serial string
		macs   []string
	}{{"", []string{"aabbccddeeff"}}, {"SN 1", []string{"aabbccddeeff"}}, {"SN1", nil}, {"SN1", []string{"nope"}}} {
		if _, err := pki.NewDeviceCSR(k["p256"], bad.serial, bad.macs); err == nil {
			t.Errorf("NewDeviceCSR(%q, %q) succeeded", bad.serial, bad.macs)
		}
	}
}

func urisString(us []*url.URL) string {
	s := make([]string, len(us))
	for i, u := range us {
		s[i] = u.String()
	}
	return strings.Join(s, " ")
}

func TestParseCSRPEM(t *testing.T) {
	t.Parallel()
	der := mustDeviceCSR(t, keys()["p256"], "SN1", "aabbccddeeff")
	p := pemCSR(der)
	tests := []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"ok", p, ""},
		{"surrounding whitespace ok", append(append([]byte("\n \t\r\n"), p...), "\n\n  "...), ""},
		{"empty", nil, "empty input"},
		{"whitespace only", []byte(" \n"), "empty input"},
		{"not PEM", der, "does not start with a PEM block"},
		{"leading garbage", append([]byte("hello\n"), p...), "does not start with a PEM block"},
		{"trailing garbage", append(append([]byte{}, p...), "garbage"...), "7 bytes of trailing data after the PEM block"},
		{"two PEM blocks", append(append([]byte{}, p...), p...), "more than one PEM block"},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), `PEM type is "CERTIFICATE"`},
		{"NEW CERTIFICATE REQUEST", pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: der}), `PEM type is "NEW CERTIFICATE REQUEST"`},
		{"PEM headers", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Headers: map[string]string{"X": "y"}, Bytes: der}), "PEM block has headers"},
		{"truncated PEM", p[:len(p)-10], "malformed PEM block"},
		{"DER trailing bytes", pemCSR(append(append([]byte{}, der...), 0, 0)), "2 bytes of trailing data after the DER"},
		{"DER not a sequence", pemCSR([]byte{0x04, 0x01, 0x00}), "not an ASN.1 SEQUENCE"},
		{"DER truncated", pemCSR(der[:len(der)-5]), "not an ASN.1 SEQUENCE"},
		{"DER garbage sequence", pemCSR([]byte{0x30, 0x03, 0x02, 0x01, 0x00}), "parse:"},
		{"oversized", append(bytes.Repeat([]byte(" "), pki.MaxCSRSize), p...), "at most 65536 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			csr, err := pki.ParseCSRPEM(tt.in)
			if tt.wantErr == "" {
				if err != nil || !bytes.Equal(csr.Raw, der) {
					t.Fatalf("ParseCSRPEM = %v", err)
				}
				return
			}
			if !errors.Is(err, pki.ErrBadCSR) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseCSRPEM = %v, want ErrBadCSR containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestParseCSRHostileMAC: a MAC URI that crypto/x509 cannot even parse
// (control characters) is refused as a bad MAC as well as a bad CSR.
func TestParseCSRHostileMAC(t *testing.T) {
	t.Parallel()
	for _, mac := range []string{"0200000000\x0001", "020000000001\r\n", "02\n0000000001"} {
		tmpl := csrTemplate(t)
		tmpl.URIs = []*url.URL{{Scheme: "urn", Opaque: "dev:mac:" + mac}}
		_, err := pki.ParseCSRPEM(pemCSR(createCSR(t, tmpl, keys()["p256"])))
		if !errors.Is(err, pki.ErrBadCSR) || !errors.Is(err, pki.ErrBadMAC) {
			t.Errorf("MAC %q: %v, want ErrBadCSR and ErrBadMAC", mac, err)
		}
	}
	// Another unparsable URI is a bad CSR, not a bad MAC.
	tmpl := csrTemplate(t)
	tmpl.URIs = append(tmpl.URIs, &url.URL{Scheme: "urn", Opaque: "x:\x00"})
	_, err := pki.ParseCSRPEM(pemCSR(createCSR(t, tmpl, keys()["p256"])))
	if !errors.Is(err, pki.ErrBadCSR) || errors.Is(err, pki.ErrBadMAC) {
		t.Errorf("other URI with NUL: %v, want ErrBadCSR only", err)
	}
}
