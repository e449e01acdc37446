package provision_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"

	"go.step.sm/crypto/x509util"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
)

func (f *fixture) renew(t *testing.T, peer *x509.Certificate, csr []byte) (*provision.Result, error) {
	t.Helper()
	return f.svc.Renew(context.Background(), &provision.RenewRequest{Peer: peer, CSRPEM: csr, SourceAddr: "127.0.0.1"})
}

func csrFor(t *testing.T, serial string, macs ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewDeviceCSR(key, serial, macs)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestRenewSameKeyAndReplay(t *testing.T) {
	f := newFixture(t)
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-R1", "02:00:00:00:00:01")
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.renew(t, first.Certificate, nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.DeviceID != first.DeviceID || !keyEq(second.Certificate, first.Certificate) {
		t.Fatal("same-key renewal changed the device or the key")
	}
	if second.Certificate.Subject.String() != first.Certificate.Subject.String() {
		t.Fatalf("subject %s, want %s", second.Certificate.Subject, first.Certificate.Subject)
	}
	// The key identifier is the renewed certificate's, handed to the
	// issuer rather than computed again, and it is the key's.
	if kid := *f.issuer.lastKID.Load(); !bytes.Equal(kid, first.Certificate.SubjectKeyId) {
		t.Fatalf("issuer asked for key identifier %x, want the renewed certificate's %x", kid, first.Certificate.SubjectKeyId)
	}
	if want, _ := x509util.GenerateSubjectKeyID(second.Certificate.PublicKey); !bytes.Equal(second.Certificate.SubjectKeyId, want) {
		t.Fatalf("renewed certificate's key identifier %x, want %x", second.Certificate.SubjectKeyId, want)
	}
	rec, _ := f.store.GetCertificate(context.Background(), second.Certificate.SerialNumber.Text(16))
	if rec.ReplacesSerial != first.Certificate.SerialNumber.Text(16) {
		t.Fatalf("new record replaces %q", rec.ReplacesSerial)
	}
	// The answer was lost: the same request again gets the same certificate.
	signed := f.issuer.n.Load()
	again, err := f.renew(t, first.Certificate, nil)
	if err != nil || !again.Certificate.Equal(second.Certificate) {
		t.Fatalf("replayed renewal: %v", err)
	}
	if f.issuer.n.Load() != signed {
		t.Fatal("a replayed renewal signed a new certificate")
	}
	// But the superseded certificate cannot get a new key.
	if _, err := f.renew(t, first.Certificate, csrFor(t, "SN-R1", "02:00:00:00:00:01")); !errors.Is(err, registry.ErrNotRenewable) {
		t.Fatalf("re-key with a superseded certificate: %v", err)
	}
}

func TestRenewRekeyAndRotate(t *testing.T) {
	f := newFixture(t)
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-R2", "02:00:00:00:00:02")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.RequireRekey(context.Background(), first.DeviceID, true, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.renew(t, first.Certificate, nil); !errors.Is(err, registry.ErrRekeyRequired) {
		t.Fatalf("same-key renewal after rotate: %v, want ErrRekeyRequired", err)
	}
	for _, bad := range [][]byte{
		csrFor(t, "SN-OTHER", "02:00:00:00:00:02"),
		csrFor(t, "SN-R2", "02:00:00:00:00:99"),
		[]byte("not a CSR"),
	} {
		if _, err := f.renew(t, first.Certificate, bad); !errors.Is(err, pki.ErrBadCSR) {
			t.Fatalf("CSR for another identity: %v, want ErrBadCSR", err)
		}
	}
	next, err := f.renew(t, first.Certificate, csrFor(t, "SN-R2", "02:00:00:00:00:02"))
	if err != nil {
		t.Fatal(err)
	}
	if keyEq(next.Certificate, first.Certificate) {
		t.Fatal("re-key kept the old key")
	}
	// A new key's identifier is computed for it, not carried over.
	if kid := *f.issuer.lastKID.Load(); len(kid) != 0 {
		t.Fatalf("re-key handed the issuer key identifier %x", kid)
	}
	if want, _ := x509util.GenerateSubjectKeyID(next.Certificate.PublicKey); !bytes.Equal(next.Certificate.SubjectKeyId, want) ||
		bytes.Equal(next.Certificate.SubjectKeyId, first.Certificate.SubjectKeyId) {
		t.Fatalf("re-keyed certificate's key identifier %x, want %x", next.Certificate.SubjectKeyId, want)
	}
	if d, _ := f.store.GetDevice(context.Background(), first.DeviceID); d.RekeyRequired {
		t.Fatal("re-key did not clear the rotate flag")
	}
	if err := f.store.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRenewRefusedAfterRevocation(t *testing.T) {
	f := newFixture(t)
	res, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-R3", "02:00:00:00:00:03")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.RevokeDevice(context.Background(), res.DeviceID, registry.ReasonKeyCompromise, nil); err != nil {
		t.Fatal(err)
	}
	_, err = f.renew(t, res.Certificate, nil)
	if !errors.Is(err, registry.ErrNotRenewable) && !errors.Is(err, registry.ErrDeviceNotActive) {
		t.Fatalf("renewal after revocation: %v", err)
	}
	other := f.ca.IssueDevice(t, pki.Identity{DeviceID: "x", Tenant: "default", Serial: "SN-X", MACs: []string{"020000000009"}, TrustDomain: "test.devpki"},
		mustKey(t))
	if _, err := f.renew(t, other.Certificate, nil); !errors.Is(err, registry.ErrNotRenewable) {
		t.Fatalf("renewal of a certificate the registry never recorded: %v", err)
	}
}

func keyEq(a, b *x509.Certificate) bool {
	return a.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(b.PublicKey)
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
