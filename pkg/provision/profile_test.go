package provision_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
)

// TestSPIFFEProfile: a service configured with pki.ProfileSPIFFE issues
// device certificates whose only URI SAN is the SPIFFE ID; the default
// profile adds one urn:dev:mac URI per MAC.
func TestSPIFFEProfile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, tt := range []struct {
		profile string
		serial  string
		want    func(id *pki.Identity) []string
	}{
		{pki.ProfileSPIFFE, "SN-SVID-1", func(id *pki.Identity) []string { return []string{id.SPIFFEID().String()} }},
		{pki.ProfileDefault, "SN-DEFAULT-1", func(id *pki.Identity) []string {
			return []string{id.SPIFFEID().String(), "urn:dev:mac:020000000001", "urn:dev:mac:020000000002"}
		}},
	} {
		svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki", Profile: tt.profile})
		if err != nil {
			t.Fatal(err)
		}
		// Each device its own MACs: a MAC belongs to one active device.
		macs := []string{"02:00:00:00:00:01", "02:00:00:00:00:02"}
		if tt.profile == pki.ProfileSPIFFE {
			macs = []string{"02:00:00:00:01:01"}
		}
		_, _, csrPEM := f.ca.DeviceKeyAndCSR(t, tt.serial, macs...)
		res, err := svc.Enroll(context.Background(), provision.TokenAttestor{Store: f.store}, &provision.Request{
			Credential: f.mint(t, provision.TokenSpec{}), CSRPEM: csrPEM, SourceAddr: "127.0.0.1",
		})
		if err != nil {
			t.Fatalf("profile %q: %v", tt.profile, err)
		}
		id, err := pki.DeviceIdentity(res.Certificate, "test.devpki")
		if err != nil {
			t.Fatalf("profile %q: %v", tt.profile, err)
		}
		var got []string
		for _, u := range res.Certificate.URIs {
			got = append(got, u.String())
		}
		if want := tt.want(id); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("profile %q: URI SANs %q, want %q", tt.profile, got, want)
		}
		if id.Serial != tt.serial || id.SPIFFEID().String() != "spiffe://test.devpki/default/device/"+tt.serial {
			t.Errorf("profile %q: identity %+v", tt.profile, id)
		}
	}
}

// TestIssueComponentPolicy: component certificates take their key rule
// from pki.KeyPolicy (P-256, P-384, RSA; not Ed25519, P-521, weak or odd
// RSA) and their SPIFFE ID from pki.ComponentURI.
func TestIssueComponentPolicy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	tenant := mustTenant(t, f.store)
	svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.ca.Issuer, TrustDomain: "test.devpki"})
	if err != nil {
		t.Fatal(err)
	}
	csrOf := func(key crypto.Signer) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(key crypto.Signer, cn string) (*provision.Result, error) {
		return svc.IssueComponent(ctx, &provision.ComponentRequest{CSRPEM: csrOf(key), CommonName: cn, Who: provision.Actor{Kind: provision.ActorAdmin, ID: "root", TenantID: tenant.ID}})
	}
	for name, key := range map[string]crypto.Signer{"P-256": p256, "P-384": p384, "RSA 2048": rsa2048} {
		res, err := issue(key, "broker-1")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := res.Certificate.URIs; len(got) != 1 || got[0].String() != "spiffe://test.devpki/default/component/broker-1" {
			t.Errorf("%s: URIs %v", name, got)
		}
		if life := res.Certificate.NotAfter.Sub(res.Certificate.NotBefore); life != pki.DefaultLeafLifetime+pki.DefaultBackdate {
			t.Errorf("%s: lifetime %s, want the default %s", name, life, pki.DefaultLeafLifetime)
		}
	}
	for name, tt := range map[string]struct {
		key  crypto.Signer
		want string
	}{
		"P-521":    {p521, "curve P-521 is not allowed"},
		"Ed25519":  {ed, "Ed25519 keys are not allowed"},
		"RSA 1024": {rsa1024, "at least 2048 required"},
	} {
		if _, err := issue(tt.key, "broker-1"); !errors.Is(err, pki.ErrBadCSR) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrBadCSR containing %q", name, err, tt.want)
		}
	}
	// Component names are SPIFFE path segments, like serials.
	for _, cn := range []string{"a/b", "..", "x/../../admin/root", "broker 1", "br%2Foker", "br\u043eker", "b\x00"} {
		if _, err := issue(p256, cn); !errors.Is(err, provision.ErrInvalidArgument) {
			t.Errorf("component name %q: %v, want ErrInvalidArgument", cn, err)
		}
	}
}
