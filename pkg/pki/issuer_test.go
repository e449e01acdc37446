package pki_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/x509util"

	"devpki/pkg/pki"
	"devpki/pkg/pki/pkitest"
)

// constReader yields the same byte forever.
type constReader byte

func (c constReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

var (
	oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidCN       = asn1.ObjectIdentifier{2, 5, 4, 3}
	oidSerial   = asn1.ObjectIdentifier{2, 5, 4, 5}
	oidO        = asn1.ObjectIdentifier{2, 5, 4, 10}
)

func TestIssueDevice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tca := pkitest.NewCA(t)
	now := time.Now().Truncate(time.Second)
	inter := tca.CA.Intermediate
	key := keys()["p256"]
	id := pki.Identity{DeviceID: "dev-0001", Tenant: "acme", Serial: "SN-42.x_Y", MACs: []string{"aabbccddeeff", "001122334455"}}

	tests := []struct {
		name     string
		opts     pki.IssuerOptions
		req      pki.DeviceRequest
		wantURIs []string
		wantLife time.Duration
		backdate time.Duration
	}{
		{
			name:     "default profile",
			req:      pki.DeviceRequest{Identity: id},
			wantURIs: []string{"spiffe://test.devpki/acme/device/SN-42.x_Y", "urn:dev:mac:aabbccddeeff", "urn:dev:mac:001122334455"},
			wantLife: 720 * time.Hour, backdate: time.Minute,
		},
		{
			name: "spiffe profile, revocation URLs, custom backdate and lifetime",
			opts: pki.IssuerOptions{OCSPURL: "http://ca.test/ocsp", CRLURL: "http://ca.test/crl", CAIssuersURL: "http://ca.test/ca.crt",
				Backdate: 5 * time.Minute},
			req:      pki.DeviceRequest{Identity: id, Profile: pki.ProfileSPIFFE, Lifetime: 24 * time.Hour},
			wantURIs: []string{"spiffe://test.devpki/acme/device/SN-42.x_Y"},
			wantLife: 24 * time.Hour, backdate: 5 * time.Minute,
		},
		{
			name: "TPM-backed: EK hash as a PermanentIdentifier SAN",
			req: pki.DeviceRequest{Identity: pki.Identity{DeviceID: "dev-0001", Tenant: "acme", Serial: "SN-42.x_Y",
				MACs: []string{"aabbccddeeff"}, EKHash: strings.Repeat("0123456789abcdef", 4)}},
			wantURIs: []string{"spiffe://test.devpki/acme/device/SN-42.x_Y", "urn:dev:mac:aabbccddeeff"},
			wantLife: 720 * time.Hour, backdate: time.Minute,
		},
		{
			name:     "explicit trust domain, no MACs, lifetime clamped to the intermediate",
			req:      pki.DeviceRequest{Identity: pki.Identity{DeviceID: "d", Tenant: "t", Serial: "s", TrustDomain: "test.devpki"}, Lifetime: 1e6 * time.Hour},
			wantURIs: []string{"spiffe://test.devpki/t/device/s"},
			wantLife: inter.NotAfter.Sub(now), backdate: time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := tt.opts
			opts.CA, opts.TrustDomain = tca.CA, pkitest.TrustDomain
			opts.Now = func() time.Time { return now }
			opts.Rand = constReader(0xff)
			iss, err := pki.NewIssuer(opts)
			if err != nil {
				t.Fatal(err)
			}
			req := tt.req
			req.PublicKey = key.Public()
			got, err := iss.IssueDevice(ctx, &req)
			if err != nil {
				t.Fatal(err)
			}
			c := got.Certificate
			if len(got.Chain) != 1 || !got.Chain[0].Equal(inter) {
				t.Errorf("chain = %v, want [intermediate]", got.Chain)
			}
			verify := func(eku x509.ExtKeyUsage) error {
				_, err := c.Verify(x509.VerifyOptions{Roots: tca.Roots(), Intermediates: tca.Intermediates(),
					CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}})
				return err
			}
			if err := verify(x509.ExtKeyUsageClientAuth); err != nil {
				t.Errorf("verify clientAuth: %v", err)
			}
			if err := verify(x509.ExtKeyUsageServerAuth); err == nil {
				t.Error("device certificate verifies for serverAuth")
			}

			wantID := req.Identity
			wantID.TrustDomain = pkitest.TrustDomain
			// DER order as crypto/x509 encodes pkix.Name: O, CN, serialNumber; nothing else.
			wantSubject := []pkix.AttributeTypeAndValue{{Type: oidO, Value: wantID.Tenant}, {Type: oidCN, Value: wantID.DeviceID}, {Type: oidSerial, Value: wantID.Serial}}
			if !sameATVs(c.Subject.Names, wantSubject) {
				t.Errorf("subject = %v, want CN, serialNumber, O of %+v", c.Subject.Names, wantID)
			}
			if got := urisString(c.URIs); got != strings.Join(tt.wantURIs, " ") {
				t.Errorf("URIs = %s, want %s", got, strings.Join(tt.wantURIs, " "))
			}
			if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
				t.Error("unexpected DNS/IP/email SANs")
			}
			sans, err := x509util.ParseSubjectAlternativeNames(c)
			if err != nil {
				t.Fatal(err)
			}
			var wantPI []x509util.PermanentIdentifier
			if req.Identity.EKHash != "" {
				wantPI = []x509util.PermanentIdentifier{{Identifier: req.Identity.EKHash}}
			}
			if !reflect.DeepEqual(sans.PermanentIdentifiers, wantPI) {
				t.Errorf("PermanentIdentifiers = %+v, want %+v", sans.PermanentIdentifiers, wantPI)
			}
			if extCritical(c, asn1.ObjectIdentifier{2, 5, 29, 17}) {
				t.Error("SAN is critical with a non-empty subject")
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature || !extCritical(c, oidKeyUsage) {
				t.Errorf("key usage %b (critical=%v), want digitalSignature, critical", c.KeyUsage, extCritical(c, oidKeyUsage))
			}
			if !reflect.DeepEqual(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(c.UnknownExtKeyUsage) != 0 {
				t.Errorf("EKU = %v %v, want [clientAuth]", c.ExtKeyUsage, c.UnknownExtKeyUsage)
			}
			if !c.BasicConstraintsValid || c.IsCA {
				t.Errorf("basic constraints valid=%v CA=%v", c.BasicConstraintsValid, c.IsCA)
			}
			if len(c.SubjectKeyId) == 0 || !bytes.Equal(c.AuthorityKeyId, inter.SubjectKeyId) {
				t.Error("missing SKI or AKI != intermediate SKI")
			}
			wantSerial := new(big.Int).SetBytes(append([]byte{0x7f}, bytes.Repeat([]byte{0xff}, 19)...))
			if c.SerialNumber.Cmp(wantSerial) != 0 || len(c.SerialNumber.Bytes()) != 20 {
				t.Errorf("serial = %x, want %x (20 bytes, top bit clear)", c.SerialNumber, wantSerial)
			}
			if !c.NotBefore.Equal(now.Add(-tt.backdate)) || !c.NotAfter.Equal(now.Add(tt.wantLife)) {
				t.Errorf("validity %v..%v, want %v..%v", c.NotBefore, c.NotAfter, now.Add(-tt.backdate), now.Add(tt.wantLife))
			}
			if tt.opts.OCSPURL != "" {
				if !reflect.DeepEqual(c.OCSPServer, []string{tt.opts.OCSPURL}) || !reflect.DeepEqual(c.CRLDistributionPoints, []string{tt.opts.CRLURL}) ||
					!reflect.DeepEqual(c.IssuingCertificateURL, []string{tt.opts.CAIssuersURL}) {
					t.Errorf("OCSP %v CRL %v caIssuers %v", c.OCSPServer, c.CRLDistributionPoints, c.IssuingCertificateURL)
				}
			} else if len(c.OCSPServer)+len(c.CRLDistributionPoints)+len(c.IssuingCertificateURL) != 0 {
				t.Error("revocation URLs present but not configured")
			}
			if c.PublicKeyAlgorithm != x509.ECDSA || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
				t.Error("certificate does not carry the requested key")
			}

			// DeviceIdentity is the inverse (the spiffe profile drops the MACs).
			if req.Profile == pki.ProfileSPIFFE {
				wantID.MACs = nil
			}
			back, err := pki.DeviceIdentity(c, pkitest.TrustDomain)
			if err != nil {
				t.Fatalf("DeviceIdentity: %v", err)
			}
			if !reflect.DeepEqual(*back, wantID) {
				t.Errorf("DeviceIdentity = %+v, want %+v", *back, wantID)
			}
			if _, err := pki.DeviceIdentity(c, "other.domain"); !errors.Is(err, pki.ErrBadIdentity) {
				t.Errorf("DeviceIdentity in another trust domain = %v, want ErrBadIdentity", err)
			}
		})
	}
}

func sameATVs(got, want []pkix.AttributeTypeAndValue) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !got[i].Type.Equal(want[i].Type) || got[i].Value != want[i].Value {
			return false
		}
	}
	return true
}

func extCritical(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	return false
}

func TestIssueDeviceRejects(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tca := pkitest.NewCA(t)
	k := keys()
	good := pki.Identity{DeviceID: "dev1", Tenant: "acme", Serial: "SN1", MACs: []string{"aabbccddeeff"}}
	with := func(f func(*pki.Identity)) pki.Identity {
		id := good
		id.MACs = append([]string(nil), good.MACs...)
		f(&id)
		return id
	}
	tests := []struct {
		name string
		req  pki.DeviceRequest
		want string
	}{
		{"other trust domain", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.TrustDomain = "evil.local" })}, "trust domain"},
		{"empty device id", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.DeviceID = "" })}, "device id"},
		{"device id with comma", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.DeviceID = "a,O=x" })}, "device id"},
		{"tenant with slash", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.Tenant = "a/b" })}, "tenant"},
		{"empty tenant", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.Tenant = "" })}, "tenant"},
		{"bad serial", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.Serial = "a b" })}, "serial"},
		{"uppercase MAC", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.MACs = []string{"AABBCCDDEEFF"} })}, "MAC"},
		{"duplicate MAC", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.MACs = []string{"aabbccddeeff", "aabbccddeeff"} })}, "listed twice"},
		{"EK hash not hex", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.EKHash = strings.Repeat("g", 64) })}, "EK hash"},
		{"EK hash uppercase", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.EKHash = strings.Repeat("AB", 32) })}, "EK hash"},
		{"EK hash short", pki.DeviceRequest{Identity: with(func(id *pki.Identity) { id.EKHash = "abcd" })}, "EK hash"},
		{"unknown profile", pki.DeviceRequest{Identity: good, Profile: "svid"}, "unknown profile"},
		{"no key", pki.DeviceRequest{Identity: good}, "public key is required"},
		{"weak RSA key", pki.DeviceRequest{Identity: good, PublicKey: k["rsa1024"].Public()}, "at least 2048"},
		{"negative lifetime", pki.DeviceRequest{Identity: good, Lifetime: -time.Hour}, "negative lifetime"},
	}
	for _, tt := range tests {
		req := tt.req
		if req.PublicKey == nil && tt.name != "no key" {
			req.PublicKey = k["p256"].Public()
		}
		if got, err := tca.Issuer.IssueDevice(ctx, &req); err == nil || got != nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: IssueDevice = %v, want error containing %q", tt.name, err, tt.want)
		}
	}

	expired, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: pkitest.TrustDomain,
		Now: func() time.Time { return tca.CA.Intermediate.NotAfter.Add(time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := expired.IssueDevice(ctx, &pki.DeviceRequest{Identity: good, PublicKey: k["p256"].Public()}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after intermediate expiry: %v", err)
	}
	zeros, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: pkitest.TrustDomain, Rand: constReader(0)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zeros.IssueDevice(ctx, &pki.DeviceRequest{Identity: good, PublicKey: k["p256"].Public()}); err == nil || !strings.Contains(err.Error(), "serial number") {
		t.Errorf("all-zero Rand: %v", err)
	}
	short, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: pkitest.TrustDomain, Rand: strings.NewReader("short")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.IssueDevice(ctx, &pki.DeviceRequest{Identity: good, PublicKey: k["p256"].Public()}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short Rand: %v", err)
	}
}

func TestNewIssuerOptions(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	for _, tt := range []struct {
		name string
		opts pki.IssuerOptions
	}{
		{"no CA", pki.IssuerOptions{TrustDomain: "a.b"}},
		{"no trust domain", pki.IssuerOptions{CA: tca.CA}},
		{"uppercase trust domain", pki.IssuerOptions{CA: tca.CA, TrustDomain: "Devpki.local"}},
		{"relative OCSP URL", pki.IssuerOptions{CA: tca.CA, TrustDomain: "a.b", OCSPURL: "/ocsp"}},
		{"ldap CRL URL", pki.IssuerOptions{CA: tca.CA, TrustDomain: "a.b", CRLURL: "ldap://x/crl"}},
		{"hostless caIssuers URL", pki.IssuerOptions{CA: tca.CA, TrustDomain: "a.b", CAIssuersURL: "http:///ca.crt"}},
		{"negative backdate", pki.IssuerOptions{CA: tca.CA, TrustDomain: "a.b", Backdate: -time.Minute}},
	} {
		if _, err := pki.NewIssuer(tt.opts); err == nil {
			t.Errorf("%s: NewIssuer succeeded", tt.name)
		}
	}
}

func TestSerialsDiffer(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	id := pki.Identity{DeviceID: "d", Tenant: "t", Serial: "s"}
	seen := map[string]bool{}
	for range 50 {
		c := tca.IssueDevice(t, id, keys()["p256"]).Certificate
		if seen[c.SerialNumber.String()] || c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 159 {
			t.Fatalf("bad or repeated serial %x", c.SerialNumber)
		}
		seen[c.SerialNumber.String()] = true
	}
}

func TestIssueServerAndClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tca := pkitest.NewCA(t)
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: pkitest.TrustDomain, OCSPURL: "https://ca.test/ocsp", CRLURL: "https://ca.test/crl"})
	if err != nil {
		t.Fatal(err)
	}
	k := keys()

	srv, err := iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: k["rsa2048"].Public(), CommonName: "ca.test",
		DNSNames: []string{"ca.test", "localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Certificate
	for _, host := range []string{"ca.test", "localhost", "127.0.0.1"} {
		if _, err := c.Verify(x509.VerifyOptions{DNSName: host, Roots: tca.Roots(), Intermediates: tca.Intermediates()}); err != nil {
			t.Errorf("server cert for %s: %v", host, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: tca.Roots(), Intermediates: tca.Intermediates()}); err == nil {
		t.Error("server cert verifies for other.test")
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment || !reflect.DeepEqual(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("server KU %b EKU %v", c.KeyUsage, c.ExtKeyUsage)
	}
	if c.IsCA || len(c.OCSPServer)+len(c.CRLDistributionPoints) != 0 || len(c.URIs) != 0 {
		t.Error("server cert: CA, revocation URLs or URIs present")
	}
	if c.NotAfter.Sub(c.NotBefore) != time.Hour+time.Minute {
		t.Errorf("server validity %v", c.NotAfter.Sub(c.NotBefore))
	}
	if _, err := iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: k["p256"].Public(), CommonName: "x"}); err == nil {
		t.Error("server cert without names issued")
	}
	if _, err := iss.IssueServer(ctx, &pki.ServerRequest{PublicKey: k["p256"].Public(), DNSNames: []string{"bad name"}}); err == nil {
		t.Error("server cert with invalid DNS name issued")
	}

	admin := pki.AdminURI(pkitest.TrustDomain, "acme", "alice")
	cl, err := iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: k["ed25519"].Public(), CommonName: "alice", Organization: "acme", URIs: []*url.URL{admin}})
	if err != nil {
		t.Fatal(err)
	}
	c = cl.Certificate
	if _, err := c.Verify(x509.VerifyOptions{Roots: tca.Roots(), Intermediates: tca.Intermediates(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client cert: %v", err)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature || !reflect.DeepEqual(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("client KU %b EKU %v", c.KeyUsage, c.ExtKeyUsage)
	}
	if c.Subject.CommonName != "alice" || !reflect.DeepEqual(c.Subject.Organization, []string{"acme"}) || len(c.URIs) != 1 {
		t.Errorf("client subject %v URIs %v", c.Subject, c.URIs)
	}
	if tenant, name, ok := pki.ParseAdminURI(c.URIs[0], pkitest.TrustDomain); !ok || tenant != "acme" || name != "alice" {
		t.Errorf("ParseAdminURI(cert URI) = %q %q %v", tenant, name, ok)
	}
	if !reflect.DeepEqual(c.OCSPServer, []string{"https://ca.test/ocsp"}) || !reflect.DeepEqual(c.CRLDistributionPoints, []string{"https://ca.test/crl"}) {
		t.Errorf("client OCSP %v CRL %v", c.OCSPServer, c.CRLDistributionPoints)
	}
	// An admin certificate is not a device identity.
	if _, err := pki.DeviceIdentity(c, pkitest.TrustDomain); !errors.Is(err, pki.ErrBadIdentity) {
		t.Errorf("DeviceIdentity(admin cert) = %v", err)
	}
	// Nor is a client certificate that claims a device SPIFFE ID without a matching subject.
	forged, err := iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: k["p256"].Public(), CommonName: "dev1", Organization: "acme",
		URIs: []*url.URL{pki.Identity{Tenant: "acme", Serial: "SN1", TrustDomain: pkitest.TrustDomain}.SPIFFEID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.DeviceIdentity(forged.Certificate, pkitest.TrustDomain); !errors.Is(err, pki.ErrBadIdentity) {
		t.Errorf("DeviceIdentity(subject without serialNumber) = %v", err)
	}
	if _, err := iss.IssueClient(ctx, &pki.ClientRequest{PublicKey: k["p256"].Public()}); err == nil {
		t.Error("client cert without CN or URI issued")
	}
	if got := pki.Fingerprint(c); len(got) != 64 || strings.ToLower(got) != got {
		t.Errorf("Fingerprint = %q", got)
	}
}

// TestDeviceIdentityPermanentIdentifier: DeviceIdentity accepts at most one
// PermanentIdentifier SAN, and only an EK hash.
func TestDeviceIdentityPermanentIdentifier(t *testing.T) {
	t.Parallel()
	key := keys()["p256"]
	id := pki.Identity{DeviceID: "dev1", Tenant: "acme", Serial: "SN1", TrustDomain: pkitest.TrustDomain}
	ek := strings.Repeat("ab", 32)
	mk := func(values ...string) *x509.Certificate {
		t.Helper()
		raw := []asn1.RawValue{{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte(id.SPIFFEID().String())}}
		for _, v := range values {
			rv, err := x509util.SubjectAlternativeName{Type: x509util.PermanentIdentifierType, Value: v}.RawValue()
			if err != nil {
				t.Fatal(err)
			}
			raw = append(raw, rv)
		}
		der, err := asn1.Marshal(raw)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
			Subject:         pkix.Name{CommonName: id.DeviceID, SerialNumber: id.Serial, Organization: []string{id.Tenant}},
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: der}},
		}
		cder, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(cder)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got, err := pki.DeviceIdentity(mk(ek), pkitest.TrustDomain); err != nil || got.EKHash != ek {
		t.Errorf("one EK hash: %+v, %v", got, err)
	}
	if got, err := pki.DeviceIdentity(mk(), pkitest.TrustDomain); err != nil || got.EKHash != "" {
		t.Errorf("none: %+v, %v", got, err)
	}
	for name, values := range map[string][]string{"two": {ek, ek}, "not an EK hash": {"SN1"}} {
		if _, err := pki.DeviceIdentity(mk(values...), pkitest.TrustDomain); !errors.Is(err, pki.ErrBadIdentity) {
			t.Errorf("%s: %v, want ErrBadIdentity", name, err)
		}
	}
}

// A device request's SubjectKeyID is the certificate's key identifier;
// without one the identifier is computed from the key.
func TestIssueDeviceSubjectKeyID(t *testing.T) {
	t.Parallel()
	tca := pkitest.NewCA(t)
	iss, err := pki.NewIssuer(pki.IssuerOptions{CA: tca.CA, TrustDomain: pkitest.TrustDomain})
	if err != nil {
		t.Fatal(err)
	}
	key := keys()["p256"]
	id := pki.Identity{DeviceID: "d", Tenant: "t", Serial: "s"}
	computed, err := iss.IssueDevice(context.Background(), &pki.DeviceRequest{Identity: id, PublicKey: key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := x509util.GenerateSubjectKeyID(key.Public()); !bytes.Equal(computed.Certificate.SubjectKeyId, want) {
		t.Fatalf("computed key identifier %x, want %x", computed.Certificate.SubjectKeyId, want)
	}
	given := []byte("0123456789abcdefghij")
	got, err := iss.IssueDevice(context.Background(), &pki.DeviceRequest{Identity: id, PublicKey: key.Public(), SubjectKeyID: given})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Certificate.SubjectKeyId, given) {
		t.Fatalf("key identifier %x, want the request's %x", got.Certificate.SubjectKeyId, given)
	}
}
