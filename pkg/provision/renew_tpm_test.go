package provision_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/go-attestation/attest"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
)

// recordTPMDevice records a device as a TPM enrollment would (Method "tpm",
// an EK hash, akPub as its AK) with a certificate for a software key, and
// returns the certificate.
func (f *fixture) recordTPMDevice(t *testing.T, serial string, akPub []byte) *x509.Certificate {
	t.Helper()
	ctx := context.Background()
	tn := mustTenant(t, f.store)
	ek := strings.Repeat("7", 63) + serial[len(serial)-1:]
	dev := &registry.Device{
		ID: "dev-" + serial, TenantID: tn.ID, Serial: serial, MACs: []string{strings.ReplaceAll(macFor(serial), ":", "")},
		Status: registry.DeviceActive, Method: provision.MethodTPM, EKHash: ek, AKPub: akPub,
	}
	iss := f.ca.IssueDevice(t, pki.Identity{DeviceID: dev.ID, Tenant: tn.Name, Serial: serial, MACs: dev.MACs,
		TrustDomain: "test.devpki", EKHash: ek}, mustKey(t))
	err := f.store.Enroll(ctx, &registry.Enrollment{
		Device:      dev,
		Certificate: provision.CertificateRecord(iss.Certificate, registry.KindDevice, tn.ID, dev.ID, time.Now()),
		Audit:       &registry.AuditEvent{TenantID: tn.ID, Actor: "tpm:" + ek, Action: "enroll", Target: dev.ID, Result: registry.ResultOK},
	})
	if err != nil {
		t.Fatal(err)
	}
	return iss.Certificate
}

// junkCertify is a certification no TPM made.
var junkCertify = &attest.CertificationParameters{Public: []byte{1}, CreateAttestation: []byte{2}, CreateSignature: []byte{3}}

// TestRenewTPMDeviceRekeyNeedsCertify covers the refusals that need no TPM:
// a TPM device re-keying without a certification, with one no TPM made, and
// a TPM device enrolled before AKs were recorded. Each is audited and signs
// nothing; the same key still renews.
func TestRenewTPMDeviceRekeyNeedsCertify(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	ak, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	akDER, err := x509.MarshalPKIXPublicKey(ak.Public())
	if err != nil {
		t.Fatal(err)
	}
	withAK := f.recordTPMDevice(t, "SN-AK-1", akDER)
	legacy := f.recordTPMDevice(t, "SN-AK-2", nil)

	tests := []struct {
		name    string
		peer    *x509.Certificate
		serial  string
		certify *attest.CertificationParameters
		want    error
		detail  string
	}{
		{"no certify", withAK, "SN-AK-1", nil, provision.ErrTPMCertifyRequired, "enroll rekey on the device"},
		{"certify no TPM made", withAK, "SN-AK-1", junkCertify, verify.ErrCertify, ""},
		{"device enrolled before AKs were recorded", legacy, "SN-AK-2", nil, provision.ErrTPMCertifyRequired, "re-enroll by attestation"},
		{"device enrolled before AKs were recorded, with certify", legacy, "SN-AK-2", junkCertify, provision.ErrTPMCertifyRequired, "re-enroll"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signed := f.issuer.n.Load()
			_, err := f.svc.Renew(ctx, &provision.RenewRequest{
				Peer: tt.peer, CSRPEM: csrFor(t, tt.serial, macFor(tt.serial)), Certify: tt.certify, SourceAddr: "192.0.2.9",
			})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail) {
				t.Fatalf("Renew = %v, want %v containing %q", err, tt.want, tt.detail)
			}
			if f.issuer.n.Load() != signed {
				t.Error("a certificate was signed")
			}
			if rec, err := f.store.GetCertificate(ctx, tt.peer.SerialNumber.Text(16)); err != nil || rec.Status != registry.CertActive {
				t.Errorf("presented certificate = %+v, %v; want still active", rec, err)
			}
			if ev := lastAudit(t, f.store); ev.Action != "renew" || ev.Result != registry.ResultDenied {
				t.Errorf("audit = %+v, want a denied renew", ev)
			}
		})
	}

	// The same key renews as before, a certify sent along is ignored, and
	// the EK identity stays.
	for _, peer := range []*x509.Certificate{withAK, legacy} {
		res, err := f.svc.Renew(ctx, &provision.RenewRequest{Peer: peer, Certify: junkCertify})
		if err != nil {
			t.Fatalf("same-key renewal: %v", err)
		}
		if id, err := pki.DeviceIdentity(res.Certificate, "test.devpki"); err != nil || id.EKHash == "" {
			t.Errorf("same-key renewal identity = %+v, %v; want the EK", id, err)
		}
	}
	if err := f.store.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRenewSoftwareDeviceIgnoresCertify: a device not enrolled by TPM
// attestation re-keys without a certification, and one it sends is ignored.
func TestRenewSoftwareDeviceIgnoresCertify(t *testing.T) {
	f := newFixture(t)
	first, err := f.enroll(t, f.mint(t, provision.TokenSpec{}), "SN-SW-1", "02:00:00:00:00:11")
	if err != nil {
		t.Fatal(err)
	}
	second, err := f.svc.Renew(context.Background(), &provision.RenewRequest{
		Peer: first.Certificate, CSRPEM: csrFor(t, "SN-SW-1", "020000000011"), Certify: junkCertify,
	})
	if err != nil {
		t.Fatalf("software re-key with a certify: %v", err)
	}
	if keyEq(second.Certificate, first.Certificate) {
		t.Fatal("re-key kept the old key")
	}
	if _, err := f.renew(t, second.Certificate, csrFor(t, "SN-SW-1", "020000000011")); err != nil {
		t.Fatalf("software re-key without a certify: %v", err)
	}
}
