package provision_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
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

// TestTPMIntermediateAddedAtRuntime: with only the manufacturer's root
// configured, an EK certificate issued by its intermediate (which the
// device does not send) is refused as untrusted until an admin adds the
// intermediate with AddTPMRoot; the same running service then accepts the
// EK chain (and the request fails later, on its made-up AK). An
// intermediate adds no trust by itself: one of a manufacturer whose root is
// neither configured nor added leaves its EKs untrusted.
func TestTPMIntermediateAddedAtRuntime(t *testing.T) {
	f := newAdminFixture(t)
	m := ektest.New(t)
	svc, err := provision.New(provision.Config{Store: f.store, Issuer: f.issuer, TrustDomain: "test.devpki",
		TPM: &provision.TPMConfig{Challenger: verify.NewChallenger(verify.Config{}), EKRoots: m.Roots()}})
	if err != nil {
		t.Fatal(err)
	}
	ek, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := &provision.TPMChallengeRequest{EKCertDER: m.EKCert(t, &ek.PublicKey), Serial: "SN-EKINTER", MACs: []string{"02:00:00:00:00:78"}}
	if _, err := svc.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("before the intermediate is added: %v, want ErrEKUntrusted", err)
	}
	f.alice.Super = true // TPM CAs are trusted for every tenant: super-admins add them
	in, err := f.adm.AddTPMRoot(ctx, f.alice, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Issuing.Raw}))
	if err != nil {
		t.Fatal(err)
	}
	if in.Kind != registry.TPMIntermediate {
		t.Fatalf("added as %q, want intermediate", in.Kind)
	}
	if _, err := svc.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrAKInvalid) {
		t.Fatalf("after the intermediate was added: %v, want the EK accepted and the (empty) AK refused", err)
	}

	// Another manufacturer's intermediate alone: still untrusted.
	m2 := ektest.New(t)
	if _, err := f.adm.AddTPMRoot(ctx, f.alice, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m2.Issuing.Raw})); err != nil {
		t.Fatal(err)
	}
	req2 := &provision.TPMChallengeRequest{EKCertDER: m2.EKCert(t, &ek.PublicKey), Serial: "SN-EKINTER", MACs: []string{"02:00:00:00:00:78"}}
	if _, err := svc.TPMChallenge(ctx, req2); !errors.Is(err, verify.ErrEKUntrusted) {
		t.Fatalf("intermediate without its root: %v, want ErrEKUntrusted", err)
	}
	// Its root added as well (the registry now holds both kinds): trusted.
	if _, err := f.adm.AddTPMRoot(ctx, f.alice, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m2.Root.Raw})); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.TPMChallenge(ctx, req2); !errors.Is(err, verify.ErrAKInvalid) {
		t.Fatalf("after its root was added: %v, want ErrAKInvalid", err)
	}
	// The first manufacturer still verifies (the pools were rebuilt).
	if _, err := svc.TPMChallenge(ctx, req); !errors.Is(err, verify.ErrAKInvalid) {
		t.Fatalf("first manufacturer after the rebuild: %v, want ErrAKInvalid", err)
	}
}
