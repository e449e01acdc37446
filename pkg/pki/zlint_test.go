package pki_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
	"devpki/pkg/pki/pkitest/zlinttest"
)

// zlintAllow lists the zlint warnings devpki's certificates are expected to
// raise, and why each is not a defect. Errors and fatals are never allowed.
var zlintAllow = zlinttest.Allow{}

// TestZlintEveryProfile issues one certificate of every profile devpki
// issues, through the real issuing code and with plain-HTTP CRL and OCSP
// URLs as `ca serve` names them, and the CRL, and lints each with zlint's
// RFC and community lints.
func TestZlintEveryProfile(t *testing.T) {
	ctx := context.Background()
	tca := pkitest.NewCA(t)
	iss, err := pki.NewIssuer(pki.IssuerOptions{
		CA: tca.CA, TrustDomain: pkitest.TrustDomain,
		OCSPURL: "http://127.0.0.1:8080/ocsp", CRLURL: "http://127.0.0.1:8080/crl", CAIssuersURL: "http://127.0.0.1:8080/ca.crt",
	})
	if err != nil {
		t.Fatal(err)
	}
	p256 := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	device := pki.Identity{DeviceID: "0f9c2a6e-3d4b-4f7a-9e21-5b8c7d6e4a10", Tenant: "default", Serial: "SN-0001",
		MACs: []string{"020000000001", "020000000002"}}
	tpmDevice := device
	tpmDevice.EKHash = strings.Repeat("0123456789abcdef", 4)
	component, err := pki.ComponentURI(pkitest.TrustDomain, "default", "ingest")
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		issue func() (*pki.Issued, error)
	}{
		{"device", func() (*pki.Issued, error) {
			return iss.IssueDevice(ctx, &pki.DeviceRequest{Identity: device, PublicKey: p256().Public()})
		}},
		{"device spiffe profile", func() (*pki.Issued, error) {
			return iss.IssueDevice(ctx, &pki.DeviceRequest{Identity: device, PublicKey: p256().Public(), Profile: pki.ProfileSPIFFE})
		}},
		{"TPM device", func() (*pki.Issued, error) {
			return iss.IssueDevice(ctx, &pki.DeviceRequest{Identity: tpmDevice, PublicKey: p256().Public()})
		}},
		{"TPM device spiffe profile", func() (*pki.Issued, error) {
			return iss.IssueDevice(ctx, &pki.DeviceRequest{Identity: tpmDevice, PublicKey: p256().Public(), Profile: pki.ProfileSPIFFE})
		}},
		// `ca init`'s own TLS certificate.
		{"CA TLS server", func() (*pki.Issued, error) {
			return iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: p256().Public(), CommonName: "devpki CA",
				DNSNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1").To4(), net.IPv6loopback},
				Lifetime: 365 * 24 * time.Hour})
		}},
		// Component certificates as provision.IssueComponent asks for them.
		{"component server RSA", func() (*pki.Issued, error) {
			return iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: rsa2048.Public(), CommonName: "broker.plant.example",
				DNSNames: []string{"broker.plant.example"}})
		}},
		{"component server no CN", func() (*pki.Issued, error) {
			return iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: p384.Public(), IPs: []net.IP{net.ParseIP("10.1.2.3").To4()}})
		}},
		{"component client", func() (*pki.Issued, error) {
			return iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: p384.Public(), CommonName: "ingest", Organization: "default",
				URIs: []*url.URL{component}})
		}},
		{"admin client", func() (*pki.Issued, error) {
			return iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: p256().Public(), CommonName: "admin", Organization: "default",
				URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, "default", "admin")}, Lifetime: 365 * 24 * time.Hour})
		}},
	}
	zlinttest.Certificate(t, "root CA", tca.CA.Root.Raw, zlintAllow)
	zlinttest.Certificate(t, "intermediate CA", tca.CA.Intermediate.Raw, zlintAllow)
	for _, c := range cases {
		is, err := c.issue()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		zlinttest.Certificate(t, c.name, is.Certificate.Raw, zlintAllow)
	}

	resp, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: tca.CA})
	if err != nil {
		t.Fatal(err)
	}
	zlinttest.Certificate(t, "OCSP responder", resp.Certificate().Raw, zlintAllow)
	// The responder certificate as a relying party receives it, inside a
	// signed response.
	der, err := resp.Sign(ctx, &pki.OCSPStatus{Serial: big.NewInt(7), Status: ocsp.Good,
		ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ocsp.ParseResponse(der, tca.CA.Intermediate)
	if err != nil || r.Certificate == nil {
		t.Fatalf("parse OCSP response: %v (certificate %v)", err, r != nil && r.Certificate != nil)
	}
	zlinttest.Certificate(t, "OCSP responder (from a response)", r.Certificate.Raw, zlintAllow)

	now := time.Now()
	for _, revoked := range [][]pki.RevokedCert{nil, {
		{Serial: big.NewInt(1), RevokedAt: now.Add(-time.Hour)},                                 // unspecified
		{Serial: big.NewInt(2), RevokedAt: now.Add(-time.Minute), Reason: ocsp.KeyCompromise},   // keyCompromise
		{Serial: new(big.Int).Lsh(big.NewInt(1), 150), RevokedAt: now, Reason: ocsp.Superseded}, // superseded
		{Serial: big.NewInt(4), RevokedAt: now, Reason: ocsp.CessationOfOperation},              // cessationOfOperation
		{Serial: big.NewInt(5), RevokedAt: now, Reason: ocsp.CertificateHold},                   // certificateHold
		{Serial: big.NewInt(6), RevokedAt: now, Reason: ocsp.AffiliationChanged},                // affiliationChanged
		{Serial: big.NewInt(8), RevokedAt: now, Reason: ocsp.PrivilegeWithdrawn},                // privilegeWithdrawn
	}} {
		crl, err := tca.CA.SignCRL(ctx, &pki.CRLTemplate{Number: 1 + int64(len(revoked)), ThisUpdate: now,
			NextUpdate: now.Add(24 * time.Hour), Revoked: revoked})
		if err != nil {
			t.Fatal(err)
		}
		zlinttest.CRL(t, fmt.Sprintf("CRL with %d entries", len(revoked)), crl, zlintAllow)
	}
}

// TestZlintLimits issues certificates from the longest and oddest inputs
// the issuing code is given. What it accepts must lint clean; what would not
// (each case names the lint that fired before the issuer refused it) must be
// refused.
func TestZlintLimits(t *testing.T) {
	ctx := context.Background()
	tca := pkitest.NewCA(t)
	iss, err := pki.NewIssuer(pki.IssuerOptions{
		CA: tca.CA, TrustDomain: pkitest.TrustDomain,
		OCSPURL: "http://127.0.0.1:8080/ocsp", CRLURL: "http://127.0.0.1:8080/crl", CAIssuersURL: "http://127.0.0.1:8080/ca.crt",
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public()
	long := func(n int) string { return strings.Repeat("a", n) }
	longest := long(pki.MaxSubjectValueLen) // tenant, admin and component names, serials
	comp, err := pki.ComponentURI(pkitest.TrustDomain, longest, longest)
	if err != nil {
		t.Fatal(err)
	}
	server := func(cn string, dns ...string) func() (*pki.Issued, error) {
		return func() (*pki.Issued, error) {
			return iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: pub, CommonName: cn, DNSNames: dns})
		}
	}
	cases := []struct {
		name   string
		issue  func() (*pki.Issued, error)
		refuse string // the lint the certificate failed before the issuer refused it; "" = issued
	}{
		{name: "device longest id, serial and tenant", issue: func() (*pki.Issued, error) {
			id := pki.Identity{DeviceID: strings.Repeat("a:b.", 16), Tenant: longest, Serial: long(pki.MaxSerialLen),
				MACs: []string{"020000000001", "020000000002", "020000000003", "020000000004"}}
			return iss.IssueDevice(ctx, &pki.DeviceRequest{Identity: id, PublicKey: pub})
		}},
		{name: "admin longest name", issue: func() (*pki.Issued, error) {
			return iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: pub, CommonName: longest, Organization: longest,
				URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, longest, longest)}})
		}},
		{name: "admin name 65", refuse: "e_subject_common_name_max_length", issue: func() (*pki.Issued, error) {
			return iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: pub, CommonName: long(65),
				URIs: []*url.URL{pki.AdminURI(pkitest.TrustDomain, "default", long(65))}})
		}},
		{name: "client organization 65", refuse: "e_subject_organization_name_max_length", issue: func() (*pki.Issued, error) {
			return iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: pub, CommonName: "x", Organization: long(65)})
		}},
		{name: "component client longest name", issue: func() (*pki.Issued, error) {
			return iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: pub, CommonName: longest, Organization: longest,
				URIs: []*url.URL{comp}})
		}},
		{name: "server CN 64", issue: server(longest, "a.example")},
		{name: "server CN 65", issue: server(long(65), "a.example"), refuse: "e_subject_common_name_max_length"},
		{name: "server CN with spaces", issue: server(" devpki CA ", "a.example"), refuse: "w_subject_dn_leading_whitespace"},
		{name: "server CN control character", issue: server("a\x00b", "a.example"), refuse: "e_subject_dn_not_printable_characters"},
		{name: "server CN unicode", issue: server("Prüfstand 7", "a.example")},
		{name: "server DNS label 63", issue: server("", long(63)+".example")},
		{name: "server DNS label 64", issue: server("", long(64)+".example"), refuse: "e_rfc_dnsname_label_too_long"},
		{name: "server DNS name 253", issue: server("", long(63)+"."+long(63)+"."+long(63)+"."+long(61))},
		{name: "server DNS name 254", issue: server("", long(63)+"."+long(63)+"."+long(63)+"."+long(62)), refuse: "e_ext_san_dns_name_too_long"},
		{name: "server DNS trailing dot", issue: server("", "host.example."), refuse: "e_rfc_dnsname_empty_label"},
		{name: "server DNS empty label", issue: server("", "host..example"), refuse: "e_rfc_dnsname_empty_label"},
		{name: "server DNS upper case", issue: server("", "Host.Example")},
		{name: "server DNS punycode", issue: server("", "xn--bcher-kva.example")},
		{name: "server DNS single label", issue: server("", "ca")},
		{name: "server DNS duplicate", issue: server("", "a.example", "a.example")},
		// Refused before zlint was added too, kept to hold the line.
		{name: "server DNS unicode", issue: server("", "bücher.example"), refuse: "(not encodable as IA5String)"},
		{name: "server DNS wildcard", issue: server("", "*.example"), refuse: "(STD3 rules)"},
		{name: "server DNS underscore", issue: server("", "_svc.example"), refuse: "(STD3 rules)"},
		{name: "server DNS leading hyphen", issue: server("", "-a.example"), refuse: "(hyphen rules)"},
		{name: "server DNS Kelvin sign", issue: server("", "\u212a.example"), refuse: "(not ASCII)"},
		{name: "server IP only", issue: func() (*pki.Issued, error) {
			return iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: pub, IPs: []net.IP{net.IPv6loopback}})
		}},
	}
	for _, c := range cases {
		is, err := c.issue()
		switch {
		case c.refuse != "" && err == nil:
			t.Errorf("%s: issued, want refused (%s)", c.name, c.refuse)
			zlinttest.Certificate(t, c.name, is.Certificate.Raw, zlintAllow)
		case c.refuse != "":
			t.Logf("%s: refused: %v", c.name, err)
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		default:
			zlinttest.Certificate(t, c.name, is.Certificate.Raw, zlintAllow)
		}
	}
}

// TestZlintLongCAName: the longest CA name CreateCA takes gives a root, an
// intermediate (CN of 64 characters) and an OCSP responder that lint clean;
// one character more is refused.
func TestZlintLongCAName(t *testing.T) {
	ctx := context.Background()
	name := strings.Repeat("n", pki.MaxSubjectValueLen-len(" Intermediate CA"))
	_, ca, err := pki.CreateCA(ctx, pki.CAOptions{Dir: t.TempDir(), Name: name, Password: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	zlinttest.Certificate(t, "root CA", ca.Root.Raw, zlintAllow)
	zlinttest.Certificate(t, "intermediate CA", ca.Intermediate.Raw, zlintAllow)
	resp, err := pki.NewOCSPResponder(ctx, pki.OCSPResponderOptions{CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	zlinttest.Certificate(t, "OCSP responder", resp.Certificate().Raw, zlintAllow)
	if cn := resp.Certificate().Subject.CommonName; cn != "OCSP Responder" {
		t.Errorf("responder of a 64-character intermediate CN: CN %q, want \"OCSP Responder\"", cn)
	}
	for _, bad := range []string{name + "n", " devpki"} {
		if _, _, err := pki.CreateCA(ctx, pki.CAOptions{Dir: t.TempDir(), Name: bad, Password: []byte("pw")}); err == nil {
			t.Errorf("CreateCA Name %q: created, want refused", bad)
		}
	}
}
