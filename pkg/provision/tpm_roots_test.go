package provision_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"

	"devpki/pkg/pki"
	"devpki/pkg/provision"
	"devpki/pkg/registry"
	"devpki/pkg/tpm/verify"
	"devpki/pkg/tpm/verify/ektest"
)

// TestTPMRootAddedToRegistry: an EK certificate from a manufacturer that is
// neither configured nor added is refused as untrusted; once an admin adds
// the manufacturer's root to the registry, the same certificate passes the
// EK check (and the request fails later, on its made-up AK).
func TestTPMRootAddedToRegistry(t *testing.T) {
	f := newFixture(t)
	svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki",
		TPM: &provision.TPMConfig{Challenger: verify.NewChallenger(verify.Config{})}})
	if err != nil {
		t.Fatal(err)
	}
	m := ektest.New(t)
	ek, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	req := &provision.TPMChallengeRequest{EKCertDER: m.EKCert(t, &ek.PublicKey), Serial: "SN-TPMROOT", MACs: []string{"02:00:00:00:00:77"}}
	ctx := context.Background()
	if _, err := svc.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("before the root is added: %v, want ErrEKUntrusted", err)
	}
	if err := f.store.PutTPMRoot(ctx, &registry.TPMRoot{Fingerprint: pki.Fingerprint(m.Root), DER: m.Root.Raw, Subject: m.Root.Subject.String()}, nil); err != nil {
		t.Fatal(err)
	}
	// The manufacturer's issuing CA must be found too: pass it as an
	// intermediate through a new service, as ca serve would from its config.
	svc2, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki",
		TPM: &provision.TPMConfig{Challenger: verify.NewChallenger(verify.Config{}), EKIntermediates: m.Intermediates()}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc2.TPMChallenge(ctx, req)
	if err == nil || errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("after the root was added: %v, want the EK accepted and the (empty) AK refused", err)
	}
	if !errors.Is(err, verify.ErrAKInvalid) {
		t.Fatalf("after the root was added: %v, want ErrAKInvalid", err)
	}

	// The service keeps the pool it built; a root added later is still
	// seen at the next challenge.
	m2 := ektest.New(t)
	inters := m.Intermediates()
	inters.AddCert(m2.Issuing)
	svc3, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki",
		TPM: &provision.TPMConfig{Challenger: verify.NewChallenger(verify.Config{}), EKIntermediates: inters}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc3.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrAKInvalid) {
		t.Fatalf("first manufacturer: %v, want ErrAKInvalid", err)
	}
	req2 := &provision.TPMChallengeRequest{EKCertDER: m2.EKCert(t, &ek.PublicKey), Serial: "SN-TPMROOT", MACs: []string{"02:00:00:00:00:77"}}
	if _, err := svc3.TPMChallenge(ctx, req2); !errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("second manufacturer before its root is added: %v, want ErrEKUntrusted", err)
	}
	if err := f.store.PutTPMRoot(ctx, &registry.TPMRoot{Fingerprint: pki.Fingerprint(m2.Root), DER: m2.Root.Raw, Subject: m2.Root.Subject.String()}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := svc3.TPMChallenge(ctx, req2); !errors.Is(err, verify.ErrAKInvalid) {
		t.Fatalf("second manufacturer after its root was added: %v, want ErrAKInvalid", err)
	}
}
